"""``python -m cytolens.bench ...`` is ``cytolens bench ...``, also inside an older revision's tree that has no bench
command of its own (``cytolens bench --baseline`` runs its children so)."""

import sys

from cytolens.cli import app as cli

if not any(group.name == "bench" for group in cli.app.registered_groups):
    from cytolens.bench.cli import app as bench_app

    cli.app.add_typer(bench_app, name="bench")
cli.main(["bench", *sys.argv[1:]])
