"""``python -m cytolens.bench ...`` is ``cytolens bench ...``."""

import sys

from cytolens.cli.app import main

main(["bench", *sys.argv[1:]])
