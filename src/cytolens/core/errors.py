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
        return f"{display_path(self.path)}: {self.message}" if self.path is not None else self.message


def display_path(path: str | Path) -> str:
    """``path`` as printable text: bytes of a name that are not UTF-8 (a file from an old file server, decoded by
    Python as lone surrogates, which no UTF-8 console or file can take) are shown as ``\\xe9`` escapes."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def check_utf8_name(path: Path) -> Path:
    """Return ``path``, or raise :class:`CytolensError` if its name is not valid UTF-8.

    Such names cannot be stored in the manifests, tables and reports every run writes, so they are refused
    when a folder is scanned, with the name shown escaped.
    """
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        raise CytolensError("name is not valid UTF-8 (bytes of another system's encoding); rename it",
                            path=path) from None
    return path


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
