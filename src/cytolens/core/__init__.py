"""What every part of cytolens stands on: errors, atomic writes, the config base, the registry, the console and
argument validation. Imports nothing else of cytolens."""
