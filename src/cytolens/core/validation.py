"""One checker for the numeric arguments of public functions: errors name the argument, the rule and the value.

``check_int("patch_size", 0, low=1)`` raises ``OptionError("`patch_size` must be an integer >= 1, got 0")``.
``bool`` is never accepted as a number (``turns=True`` is always a mistake), nor is NaN or infinity.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cytolens.core.errors import OptionError

__all__ = ["check_int", "check_number"]


def _bounds(low: float | None, high: float | None, *, low_open: bool = False, high_open: bool = False) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high}"
    return ""


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as an ``int`` if it is an integer within ``[low, high]``; otherwise raise.

    Parameters
    ----------
    name : str
        The argument's name, for the message.
    value : object
    low, high : int, optional
        Inclusive bounds; None leaves that side open.

    Raises
    ------
    OptionError
        If ``value`` is not an integer (``bool`` included) or lies outside the bounds.
    """
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
            or (low is not None and value < low) or (high is not None and value > high)):
        rule = _bounds(low, high)
        raise OptionError(f"`{name}` must be an integer{' ' + rule if rule else ''}, got {value!r}")
    return int(value)


def check_number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
    """Return ``value`` as a ``float`` if it is a finite number within the bounds; otherwise raise.

    Parameters
    ----------
    name : str
    value : object
    low, high : float, optional
        Bounds; None leaves that side open.
    low_open, high_open : bool, default False
        Exclude the bound itself (``low=0, low_open=True``: positive).

    Raises
    ------
    OptionError
        If ``value`` is not a number (``bool`` included), is NaN or infinite, or lies outside the bounds.
    """
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.number)) and math.isfinite(float(value))
    if ok:
        number = float(value)
        ok = ((low is None or (number > low if low_open else number >= low))
              and (high is None or (number < high if high_open else number <= high)))
    if not ok:
        rule = _bounds(low, high, low_open=low_open, high_open=high_open)
        raise OptionError(f"`{name}` must be a finite number{' ' + rule if rule else ''}, got {value!r}")
    return float(value)
