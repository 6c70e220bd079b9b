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
from cytolens.cli.options import DEPRECATED_SPELLINGS, modernize_arguments
from cytolens.core.errors import CytolensError


def test_version(cli) -> None:
    assert __version__ in cli("--version").out


@pytest.mark.parametrize("args", [["--help"], ["data", "check", "--help"], ["synth", "microtubules", "--help"], ["demo", "--help"]])
def test_help_everywhere(cli, args: list[str]) -> None:
    assert "Usage" in cli(*args).out


def test_data_check_clean(cli, class_folders, tmp_path: Path) -> None:
    root = class_folders({"0": 2, "0.1": 2, "1": 1})
    out = cli("data", "check", root, "--manifest", tmp_path / "m.parquet").out
    assert "class_folders" in out and "0.1" in out and "all 5 images are readable" in out
    manifest = pd.read_parquet(tmp_path / "m.parquet")
    assert manifest["class"].tolist() == ["0", "0", "0.1", "0.1", "1"]


def test_data_check_json_and_class_order(cli, class_folders) -> None:
    root = class_folders({"0": 1, "0.1": 1, "1": 1})
    out = cli("data", "check", root, "--classes", "1,0.1,0", "--json").out
    assert json.loads(out)["classes"] == ["1", "0.1", "0"]


def test_data_check_reports_bad_files_and_exits_1(cli, class_folders) -> None:
    root = class_folders({"0": 2})
    (root / "0" / "zero.tif").write_bytes(b"")
    out = cli("data", "check", root, code=1).out
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
def test_user_errors_are_one_line_with_status_2(cli, args: list[str], fragment: str) -> None:
    result = cli(*args, code=2)
    assert fragment in result.error
    assert [line for line in result.err.splitlines() if line.strip()] == [f"error: {result.error}"]  # nothing else


def test_unknown_class_names_the_folder(cli, class_folders) -> None:
    root = class_folders({"0": 1})
    error = cli("data", "check", root, "--classes", "0,7", code=2).error
    assert str(root) in error and "'7'" in error


def test_debug_shows_the_traceback(class_folders) -> None:
    with pytest.raises(CytolensError):
        main(["--debug", "data", "check", "/definitely/not/here"])


def test_unwritable_output_is_one_line(cli, class_folders, tmp_path: Path) -> None:
    root = class_folders({"0": 1})
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cli("data", "check", root, "--manifest", blocker / "sub" / "m.parquet", code=2)


def test_console_script_is_installed() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cytolens", "--version"], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0 and __version__ in result.stdout


@pytest.mark.parametrize("rename", ["file", "class folder"])
def test_a_name_that_is_not_utf8_is_one_line_naming_it(cli, class_folders, rename: str) -> None:
    import os

    root = class_folders({"0": 2, "1": 2})
    if rename == "file":
        image = sorted((root / "0").iterdir())[0]
        os.rename(os.fsencode(image), os.fsencode(root / "0") + b"/caf\xe9.tif")
        shown = "caf\\xe9.tif"
    else:
        os.rename(os.fsencode(root / "1"), os.fsencode(root) + b"/gr\xfcn")
        shown = "gr\\xfcn"
    error = cli("data", "check", root, code=2).error
    assert shown in error and "not valid UTF-8" in error


def test_ctrl_c_is_one_line_and_status_130(cli, class_folders, monkeypatch) -> None:
    import cytolens.data.datacheck as datacheck

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(datacheck, "check_dataset", interrupted)
    assert cli("data", "check", class_folders({"0": 1, "1": 1}), code=130).err.strip() == "error: interrupted"


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
def test_a_negative_seed_is_refused_by_the_option(cli, class_folders, command: str) -> None:
    result = cli(command, "train", class_folders({"0": 1, "1": 1}), "--config", "x", "--out", "o", "--seed", "-1",
                 code=2)
    assert "--seed" in result.error


# -- old option spellings: replaced by today's for one release, with a warning line ------------------------------
def test_modernize_arguments_replaces_the_old_spellings_of_the_command_only() -> None:
    args, notices = modernize_arguments(["profile", "crop", "data", "--normalisation", "plate_percentile",
                                         "--mask-neighbours", "--out", "cells"])
    assert args == ["profile", "crop", "data", "--normalization", "plate_percentile", "--mask-neighbors", "--out",
                    "cells"]
    assert notices == [
        "--normalisation is deprecated and will be removed in the next release; use --normalization",
        "--mask-neighbours is deprecated and will be removed in the next release; use --mask-neighbors",
    ]
    # The --opt=value form, after a root option such as --debug.
    args, notices = modernize_arguments(["--debug", "segment", "predict", "run", "images", "--model=best"])
    assert args == ["--debug", "segment", "predict", "run", "images", "--final-model=best"]
    assert notices == ["--model is deprecated and will be removed in the next release; use --final-model"]
    args, _ = modernize_arguments(["profile", "crop", "data", "--keep-neighbours"])
    assert args == ["profile", "crop", "data", "--keep-neighbors"]


@pytest.mark.parametrize("args", [
    ["segment", "train", "data", "--model", "unet"],  # another command: its --model is today's
    ["profile", "embed", "cells", "--normalisation", "x"],
    ["data", "check", "."],
    ["--version"],
    [],
])
def test_modernize_arguments_leaves_other_commands_untouched(args: list[str]) -> None:
    assert modernize_arguments(args) == (args, [])


def test_modernize_arguments_stops_at_the_double_dash() -> None:
    args, notices = modernize_arguments(["profile", "crop", "--", "--normalisation", "--mask-neighbours"])
    assert args == ["profile", "crop", "--", "--normalisation", "--mask-neighbours"] and notices == []
    args, notices = modernize_arguments(["segment", "predict", "--model", "m", "--", "--model"])
    assert args == ["segment", "predict", "--final-model", "m", "--", "--model"] and len(notices) == 1


def test_every_deprecated_spelling_names_an_option_of_its_command() -> None:
    import typer

    from cytolens.cli.app import app

    root = typer.main.get_command(app)
    for (group, command), renames in DEPRECATED_SPELLINGS.items():
        names = {name for param in root.commands[group].commands[command].params
                 for name in (*param.opts, *param.secondary_opts)}
        for old, new in renames.items():
            assert new in names and old not in names, (group, command, old)


def test_an_old_spelling_still_works_with_one_warning_line(cli, tmp_path: Path) -> None:
    # The old spelling parses (no "No such option"): the command goes on to its own checks of the arguments.
    result = cli("profile", "crop", tmp_path / "none", "--out", tmp_path / "cells", "--normalisation", "crop_max",
                 code=2)
    warnings = [line for line in result.err.splitlines() if line.startswith("warning: ")]
    assert warnings == ["warning: --normalisation is deprecated and will be removed in the next release; use "
                        "--normalization"]
    assert "No such option" not in result.error and str(tmp_path / "none") in result.error
