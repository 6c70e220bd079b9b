"""Shared fixtures: tiny datasets written in tmp_path, never shared between tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from cytolens.cli.app import main
from cytolens.data.io import write_png, write_tiff


@dataclass(frozen=True)
class CliResult:
    """What one ``cytolens`` command line did: its exit status, stdout and stderr."""

    code: int
    out: str
    err: str

    @property
    def error(self) -> str:
        """The one error line (without its ``error:`` prefix)."""
        return next(line for line in self.err.splitlines() if line.startswith("error: ")).removeprefix("error: ")


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run ``cytolens ARGS...`` through :func:`cytolens.cli.app.main`, the console script's entry point.

    ``cli(*args, code=0)`` checks the exit status (``code=None``: any). Every run that exits with status 2 (a user
    error) is also checked for what the brief promises: exactly one ``error:`` line naming the problem, and no
    traceback.
    """

    def run(*args: str | Path, code: int | None = 0) -> CliResult:
        with pytest.raises(SystemExit) as info:
            main([str(arg) for arg in args])
        captured = capsys.readouterr()
        result = CliResult(int(info.value.code or 0), captured.out, captured.err)
        if result.code == 2:
            errors = [line for line in result.err.splitlines() if line.startswith("error: ")]
            assert len(errors) == 1 and "Traceback" not in result.err, result.err
        if code is not None:
            assert result.code == code, f"exit status {result.code}, expected {code}; stderr: {result.err}"
        return result

    return run


def _write_class_folders(root: Path, classes: dict[str, int], *, size: int = 16, split: str = "") -> Path:
    rng = np.random.default_rng(len(classes) + size)
    for name, count in classes.items():
        folder = root / split / name if split else root / name
        for i in range(count):
            image = rng.integers(0, 16384, (size, size)).astype(np.uint16)
            write_tiff(folder / f"cell_{i:03d}.tif", image)
    return root


@pytest.fixture
def class_folders(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``class_folders({"0": 3, "0.1": 2}, split="train")`` writes 16-bit TIFF cells, returns root."""

    def make(classes: dict[str, int], *, size: int = 16, split: str = "", root: Path | None = None) -> Path:
        return _write_class_folders(root or tmp_path / "data", classes, size=size, split=split)

    return make


@pytest.fixture
def png8(tmp_path: Path) -> Callable[[Path], Path]:
    """Factory writing an 8-bit PNG at a path."""

    def make(path: Path) -> Path:
        return write_png(path, np.full((16, 16), 7, np.uint8))

    return make


#: Debian's chromium, driven by Playwright; never a downloaded browser.
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """A headless Debian chromium through Playwright; the test skips (saying why) without either."""
    if not CHROMIUM.is_file():
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the dev extra) is not installed")
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield instance
        finally:
            instance.close()
