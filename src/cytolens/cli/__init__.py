"""The ``cytolens`` command line (:mod:`cytolens.cli.app`) and the options every command shares
(:mod:`cytolens.cli.options`). Kept import-free, so a capability's commands can import the shared options."""
