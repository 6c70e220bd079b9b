"""The command line: help, version, exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cytolens import __version__
from cytolens.cli.app import main
from cytolens.core.errors import CytolensError


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out, captured.err


def test_version(capsys) -> None:
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and __version__ in out


@pytest.mark.parametrize("args", [["--help"], ["data", "check", "--help"], ["synth", "microtubules", "--help"], ["demo", "--help"]])
def test_help_everywhere(capsys, args: list[str]) -> None:
    code, out, _ = run(args, capsys)
    assert code == 0 and "Usage" in out


def test_data_check_clean(capsys, class_folders, tmp_path: Path) -> None:
    root = class_folders({"0": 2, "0.1": 2, "1": 1})
    code, out, _ = run(["data", "check", str(root), "--manifest", str(tmp_path / "m.parquet")], capsys)
    assert code == 0
    assert "class_folders" in out and "0.1" in out and "all 5 images are readable" in out
    manifest = pd.read_parquet(tmp_path / "m.parquet")
    assert manifest["class"].tolist() == ["0", "0", "0.1", "0.1", "1"]


def test_data_check_json_and_class_order(capsys, class_folders) -> None:
    root = class_folders({"0": 1, "0.1": 1, "1": 1})
    code, out, _ = run(["data", "check", str(root), "--classes", "1,0.1,0", "--json"], capsys)
    assert code == 0
    assert json.loads(out)["classes"] == ["1", "0.1", "0"]


def test_data_check_reports_bad_files_and_exits_1(capsys, class_folders) -> None:
    root = class_folders({"0": 2})
    (root / "0" / "zero.tif").write_bytes(b"")
    code, out, err = run(["data", "check", str(root)], capsys)
    assert code == 1
    assert "zero.tif" in out and "empty" in out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["data", "check", "/definitely/not/here"], "/definitely/not/here: dataset folder not found"),
        (["data", "check"], "Missing argument"),
        (["data", "check", ".", "--bogus"], "No such option: --bogus"),
        (["synth", "microtubules", "x", "--per-class", "0"], "--per-class"),
        (["nonsense"], "No such command"),
    ],
)
def test_user_errors_are_one_line_with_status_2(capsys, args: list[str], fragment: str) -> None:
    code, _, err = run(args, capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert fragment in lines[0] and "Traceback" not in err


def test_unknown_class_names_the_folder(capsys, class_folders) -> None:
    root = class_folders({"0": 1})
    code, _, err = run(["data", "check", str(root), "--classes", "0,7"], capsys)
    assert code == 2 and str(root) in err and "'7'" in err


def test_debug_shows_the_traceback(class_folders) -> None:
    with pytest.raises(CytolensError):
        main(["--debug", "data", "check", "/definitely/not/here"])


def test_unwritable_output_is_one_line(capsys, class_folders, tmp_path: Path) -> None:
    root = class_folders({"0": 1})
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(["data", "check", str(root), "--manifest", str(blocker / "sub" / "m.parquet")], capsys)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_console_script_is_installed() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cytolens", "--version"], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0 and __version__ in result.stdout


@pytest.mark.parametrize("rename", ["file", "class folder"])
def test_a_name_that_is_not_utf8_is_one_line_naming_it(capsys, class_folders, rename: str) -> None:
    import os

    root = class_folders({"0": 2, "1": 2})
    if rename == "file":
        image = sorted((root / "0").iterdir())[0]
        os.rename(os.fsencode(image), os.fsencode(root / "0") + b"/caf\xe9.tif")
        shown = "caf\\xe9.tif"
    else:
        os.rename(os.fsencode(root / "1"), os.fsencode(root) + b"/gr\xfcn")
        shown = "gr\\xfcn"
    code, _, err = run(["data", "check", str(root)], capsys)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert shown in err and "not valid UTF-8" in err


def test_ctrl_c_is_one_line_and_status_130(capsys, class_folders, monkeypatch) -> None:
    import cytolens.data.datacheck as datacheck

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(datacheck, "check_dataset", interrupted)
    code, _, err = run(["data", "check", str(class_folders({"0": 1, "1": 1}))], capsys)
    assert code == 130 and err.strip() == "error: interrupted"


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_sigint_and_sigterm_interrupt_even_when_sigint_was_inherited_ignored(signame: str) -> None:
    import os
    import signal
    import time

    from cytolens.cli.app import _interrupt_on_signals

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a script's background job inherits
    try:
        _interrupt_on_signals()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), getattr(signal, signame))
            time.sleep(5)  # the handler runs at once and interrupts the sleep
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)


@pytest.mark.parametrize("command", ["classify", "segment"])
def test_a_negative_seed_is_refused_by_the_option(capsys, class_folders, command: str) -> None:
    code, _, err = run([command, "train", str(class_folders({"0": 1, "1": 1})), "--config", "x", "--out", "o",
                        "--seed", "-1"], capsys)
    assert code == 2 and "--seed" in err and "Traceback" not in err
