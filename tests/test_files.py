"""Files cytolens wrote and reads back: a damaged one is one line naming it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cytolens.core.errors import CytolensError
from cytolens.core.files import read_json_object, read_parquet_table


def test_a_truncated_parquet_table_is_named(tmp_path: Path) -> None:
    path = tmp_path / "manifest.parquet"
    pd.DataFrame({"path": ["a.tif", "b.tif"], "fold": [0, 1]}).to_parquet(path)
    assert read_parquet_table(path)["fold"].tolist() == [0, 1]
    path.write_bytes(path.read_bytes()[:120])
    with pytest.raises(CytolensError, match=r"manifest.parquet: manifest.parquet is unreadable or damaged") as caught:
        read_parquet_table(path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("text", "words"), [('{"units": ', "unreadable or damaged"), ("[1, 2]", "damaged: not a JSON object")])
def test_a_damaged_json_file_is_named(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "done.json"
    path.write_text(text)
    with pytest.raises(CytolensError, match=f"done.json: done.json is {words}"):
        read_json_object(path)


def test_a_cell_store_with_a_damaged_index_is_named(tmp_path: Path) -> None:
    from cytolens.profile.crops.cell_store import CellStore

    store = tmp_path / "cells"
    store.mkdir()
    (store / "store.json").write_text("{}")
    (store / "cells.parquet").write_bytes(b"PAR1 cut short")
    with pytest.raises(CytolensError, match="cells.parquet: cells.parquet is unreadable"):
        CellStore(store)
