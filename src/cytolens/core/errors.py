"""Errors that are the user's to fix.

A :class:`CytolensError` is printed by the CLI as one line (``path: problem``) with exit status 2 and no
traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class CytolensError(Exception):
    """A problem with the user's input or options, reported as one line.

    Parameters
    ----------
    message : str
        What is wrong, phrased for the user.
    path : str or Path, optional
        The file or folder the problem is in; printed first.
    """

    def __init__(self, message: str, *, path: str | Path | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = None if path is None else Path(path)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path is not None else self.message


class ImageReadError(CytolensError):
    """An image file that cannot be used: empty, truncated, corrupt, unknown format or bad values."""


class LayoutError(CytolensError):
    """A dataset folder whose layout is not one cytolens knows, or that is inconsistent."""


class OptionError(CytolensError, ValueError):
    """An option with a value outside its valid choices or range."""


def check_choice(name: str, value: str, choices: list[str] | tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``; otherwise raise with a "did you mean" hint.

    Parameters
    ----------
    name : str
        The option's name, used in the message.
    value : str
        The value given.
    choices : sequence of str
        The valid values.

    Returns
    -------
    str
        ``value`` unchanged.

    Raises
    ------
    OptionError
        If ``value`` is not a valid choice.
    """
    if value in choices:
        return value
    import difflib

    close = difflib.get_close_matches(value, choices, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise OptionError(f"`{name}` must be one of {', '.join(map(repr, choices))}, got {value!r}.{hint}")
