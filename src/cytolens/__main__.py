"""``python -m cytolens`` runs the command line."""

from cytolens.cli.app import main

main()
