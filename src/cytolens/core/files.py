"""Reading the JSON and Parquet files cytolens itself wrote: a damaged one is one line naming it.

Run folders, cell stores and profiles hold such files; a disk error, a copy cut short or a hand edit can damage
them, and the user then needs the file's name and what to do, not a decoder's traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from cytolens.core.errors import CytolensError

__all__ = ["read_json_object", "read_parquet_table"]


def read_json_object(path: str | Path, what: str | None = None) -> dict[str, Any]:
    """The JSON object in ``path``.

    Raises
    ------
    CytolensError
        If the file cannot be read, is not JSON, or holds something other than an object.
    """
    path = Path(path)
    what = what or path.name
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CytolensError(f"{what} is unreadable or damaged ({type(exc).__name__})", path=path) from exc
    if not isinstance(data, dict):
        raise CytolensError(f"{what} is damaged: not a JSON object", path=path)
    return data


def read_parquet_table(path: str | Path, what: str | None = None) -> pd.DataFrame:
    """The table in the Parquet file ``path``.

    Raises
    ------
    CytolensError
        If the file cannot be read or is not a complete Parquet file (pyarrow's errors are ``OSError`` or
        ``ValueError`` subclasses).
    """
    path = Path(path)
    what = what or path.name
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CytolensError(f"{what} is unreadable or damaged ({detail[:160]})", path=path) from exc
