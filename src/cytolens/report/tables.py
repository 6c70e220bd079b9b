"""Tables for a report: readable column names, numbers as people read them, intervals beside their value.

A table is rendered inside its own ``<div class="table-box">``, which scrolls sideways when the table is wider
than the page, so a wide table never widens the page itself.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

__all__ = ["format_interval", "format_number", "format_percent", "readable_name", "table_html"]

#: Shown for a missing value (NaN, None, empty string).
MISSING = "—"
#: Cells with more characters than this are prose and wrap; shorter ones (numbers, intervals) do not.
TEXT_CELL = 32


def _missing(value: Any) -> bool:
    if value is None or (isinstance(value, str) and not value.strip()):
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # arrays and other containers are values, not missing
        return False


def format_percent(value: float | None, *, scale: float = 100.0, digits: int = 1) -> str:
    """``value * scale`` as a percentage, ``"57.0 %"``; a missing value gives ``"—"``.

    Parameters
    ----------
    value : float or None
        A fraction (``scale=100``, the default) or a percentage already (``scale=1``).
    scale : float, default 100
        Multiplier that turns ``value`` into percent.
    digits : int, default 1
        Decimals shown.
    """
    if _missing(value):
        return MISSING
    return f"{float(value) * scale:.{digits}f} %"


def format_interval(value: float | None, low: float | None, high: float | None, *, scale: float = 100.0,
                    digits: int = 1, unit: str = " %") -> str:
    """A value with its interval, ``"57.0 % (51.2–62.6)"``; without an interval just the value.

    Parameters
    ----------
    value, low, high : float or None
        The estimate and its interval's bounds, in the same unit.
    scale : float, default 100
        Multiplier applied to all three (100 turns fractions into percent; 1 keeps them).
    digits : int, default 1
        Decimals shown.
    unit : str, default " %"
        Written after the value (``""`` for a dice score).
    """
    if _missing(value):
        return MISSING
    shown = f"{float(value) * scale:.{digits}f}{unit}"
    if _missing(low) or _missing(high):
        return shown
    return f"{shown} ({float(low) * scale:.{digits}f}–{float(high) * scale:.{digits}f})"


def format_number(value: Any, *, digits: int = 4) -> str:
    """A table cell as text: integers with thousands separators, floats to ``digits`` significant digits."""
    if _missing(value):
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1000):
        return f"{int(value):,}"
    if isinstance(value, float):
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        return f"{value:.{digits}g}"
    try:  # numpy scalars
        return format_number(value.item(), digits=digits)
    except AttributeError:
        return str(value)


def readable_name(column: str) -> str:
    """A column name for people: ``per_compound_mean_accuracy`` -> ``per compound mean accuracy``."""
    return str(column).replace("_", " ").strip()


def table_html(frame: pd.DataFrame, *, columns: Mapping[str, str] | None = None, caption: str | None = None,
               index: bool = False, digits: int = 4) -> str:
    """A DataFrame as an HTML table in a sideways-scrolling box.

    Parameters
    ----------
    frame : pandas.DataFrame
        The table; strings are shown as they are (format intervals with :func:`format_interval` first), other
        values with :func:`format_number`. Not modified.
    columns : mapping of str to str, optional
        Readable names for columns (``{"ci95_low": "95 % interval, low"}``); other columns are shown with
        :func:`readable_name`. Only the columns present in ``frame`` are rendered, so a table without the
        paper's columns simply has none.
    caption : str, optional
        A sentence above the table saying what it shows.
    index : bool, default False
        Show the index as the first column.
    digits : int, default 4
        Significant digits of floats.

    Returns
    -------
    str
        The caption paragraph and ``<div class="table-box"><table>...</table></div>``, every value escaped.
    """
    names = dict(columns or {})
    shown = frame.reset_index() if index else frame
    header = "".join(f"<th scope=\"col\">{html.escape(names.get(str(c), readable_name(str(c))))}</th>"
                     for c in shown.columns)
    body = []
    for row in shown.itertuples(index=False):
        cells = []
        for position, value in enumerate(row):
            text = value if isinstance(value, str) else format_number(value, digits=digits)
            tag = "th scope=\"row\"" if position == 0 else "td"
            # Numbers and intervals stay on one line (the box scrolls instead); sentences wrap.
            wrap = ' class="text"' if len(text) > TEXT_CELL else ""
            cells.append(f"<{tag}{wrap}>{html.escape(text or MISSING)}</{tag.split()[0]}>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    # The caption sits above the box, not in the table: a <caption> is as wide as its table and would scroll away.
    caption_html = f'<p class="table-caption">{html.escape(caption)}</p>' if caption else ""
    return (f'{caption_html}<div class="table-box"><table><thead><tr>{header}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')
