"""Atomic writes: a file is absent or complete, and a full disk is one line naming the file."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from cytolens.core.atomic import atomic_path, write_text_atomic
from cytolens.core.errors import CytolensError


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("failure", [
    OSError(errno.ENOSPC, "No space left on device"),
    OSError("IOError: error writing parquet: No space left on device"),  # pyarrow's words, no errno
    RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: "
                 "file write failed"),  # torch.save's
])
def test_a_full_disk_is_one_line_naming_the_file_and_keeps_the_old_one(tmp_path: Path, failure: Exception) -> None:
    target = write_text_atomic(tmp_path / "metrics.json", "old")
    with pytest.raises(CytolensError, match=r"metrics.json: no space left on the device") as caught:
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise failure
    assert "\n" not in str(caught.value)
    assert target.read_text() == "old" and _leftovers(tmp_path) == []


def test_other_errors_pass_through_untouched(tmp_path: Path) -> None:
    with pytest.raises(PermissionError):
        with atomic_path(tmp_path / "x.csv"):
            raise PermissionError(errno.EACCES, "Permission denied")
    assert _leftovers(tmp_path) == []


def test_torch_save_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cytolens.engine import save_checkpoint

    real_save = torch.save

    def full(obj, f, *args, **kwargs):  # noqa: ANN001
        real_save(obj, f, *args, **kwargs)
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CytolensError, match="last.pt: no space left"):
        save_checkpoint({"w": torch.ones(2)}, tmp_path / "last.pt")
    assert list(tmp_path.iterdir()) == []


def test_memory_mapped_outputs_reserve_their_blocks_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Writing into a sparse memory map on a full disk is a SIGBUS; reserving the blocks makes it an error up front.
    from cytolens.segment.outputs import SegmentationWriter

    if not hasattr(os, "posix_fallocate"):
        pytest.skip("no posix_fallocate on this platform")

    def full(fd: int, offset: int, size: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(CytolensError, match=r"field\.tif: no space left on the device"):
        with SegmentationWriter(tmp_path, "field", 64, 64, 3, overlay=False) as writer:
            writer.add(0, np.zeros((64, 64), np.uint8))
    assert list(tmp_path.iterdir()) == []
