"""Terminal output shared by the commands: progress bars and the one-line error format."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# Messages and progress go to stderr so that stdout stays clean for results a user may pipe on. soft_wrap: a
# message naming a long path stays one line (grep-able, and rich would otherwise break it at 80 columns in logs).
console = Console(stderr=True, highlight=False, soft_wrap=True)
stdout = Console(highlight=False)


@contextlib.contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Show a progress bar for ``total`` steps; yield the function that advances it.

    Parameters
    ----------
    description : str
        What is being done, shown left of the bar.
    total : int
        Number of steps.

    Yields
    ------
    callable
        ``advance(n)`` moves the bar by ``n`` steps.
    """
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    # A bar redrawn into a log file is noise: off when stderr is not a terminal.
    with Progress(*columns, console=console, transient=False, disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)


def error_line(message: str) -> None:
    """Print a user error as one line on stderr."""
    from rich.text import Text

    # Text, not markup: a message may contain brackets such as "[0, 1]".
    console.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)


def warning_line(message: str) -> None:
    """Print a warning as one line on stderr (the data is usable, but the user should know)."""
    from rich.text import Text

    console.print(Text.assemble(("warning: ", "bold yellow"), message), soft_wrap=True)
