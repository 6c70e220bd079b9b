"""``python -m cytolens`` runs the command line."""

from cytolens.cli import main

main()
