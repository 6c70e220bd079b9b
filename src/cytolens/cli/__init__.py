"""The ``cytolens`` command line (:mod:`cytolens.cli.app`) and the options every command shares
(:mod:`cytolens.cli.options`).

The app is imported only when :func:`main` runs, so a capability's commands can import the shared options from
here without importing every other capability first.
"""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``cytolens`` command (see :func:`cytolens.cli.app.main`)."""
    from cytolens.cli.app import main as run

    run(argv)
