"""The options every command shares, defined once: config, out, classes, seed, task, tta, workers and the engine's
(devices, precision, ...), and the old spellings that keep working for one release.

One grammar across commands: American spelling; ``--out`` is a folder wherever a command writes several files;
one task syntax (``all`` or ``"A vs B"``) in classify and experts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from typing import TYPE_CHECKING

from cytolens.core.errors import check_choice
from cytolens.engine.precision import PRECISIONS

if TYPE_CHECKING:
    from cytolens.engine.runtime import EngineOptions

__all__ = ["AcceleratorOption", "ClassesOption", "ConfigOption", "DEPRECATED_SPELLINGS", "DeterministicOption",
           "DevicesOption", "ForceOption", "NumNodesOption", "PrecisionOption", "RandomSeedOption", "RunFolderOption", "SeedOption",
           "TaskOption", "TtaOption", "WorkersOption", "engine_options", "modernize_arguments"]

ConfigOption = Annotated[
    Path,
    typer.Option("--config", help="Experiment config: a YAML file, or a shipped config's name (shpilman2017-quick, "
                                  "midl2019-unet, cytogan-lsgan, ...; the -cpu and -quick variants too)."),
]
RunFolderOption = Annotated[
    Path,
    typer.Option("--out", help="Run folder (an interrupted run in it resumes with the same config; --force "
                               "starts afresh)."),
]
ClassesOption = Annotated[
    str | None,
    typer.Option("--classes", help="Class names in label order, comma-separated (e.g. hela,cho). Default: the "
                                   "data's classes (the config's order when they are exactly its classes)."),
]
TaskOption = Annotated[
    str,
    typer.Option("--task", help="'all' (every class at once) or a pair of classes such as '0 vs 1' (or '0,1')."),
]
TtaOption = Annotated[
    bool | None,
    typer.Option("--tta/--no-tta", help="Average over the 8 rotations/flips (default: the run's config)."),
]
WorkersOption = Annotated[int, typer.Option("--workers", min=1, help="Processes working in parallel.")]

DevicesOption = Annotated[
    int, typer.Option("--devices", min=1, help="Processes on this machine (one per GPU; CPU ranks use gloo).")
]
NumNodesOption = Annotated[
    int, typer.Option("--num-nodes", min=1, help="Machines (start the processes with torchrun or srun).")
]
PrecisionOption = Annotated[
    str | None,
    typer.Option("--precision", help=f"{' | '.join(PRECISIONS)}; default: the config's (auto = bf16-mixed where "
                                     "the hardware runs bf16 natively, else 32-true)."),
]
AcceleratorOption = Annotated[
    str, typer.Option("--accelerator", help="auto | cpu | cuda (auto: a CUDA GPU when present).")
]
DeterministicOption = Annotated[
    bool, typer.Option("--deterministic", help="Deterministic algorithms: the same seed gives the same numbers.")
]
SeedOption = Annotated[int | None, typer.Option("--seed", min=0, help="Override the config's seed (0 or more).")]
RandomSeedOption = Annotated[
    int, typer.Option("--seed", min=0, help="Random seed (0 or more); the same seed gives the same result.")
]
ForceOption = Annotated[
    bool, typer.Option("--force", help="Delete the run in --out and train again from scratch (default: resume it).")
]


def engine_options(*, devices: int = 1, num_nodes: int = 1, precision: str | None = None,
                   config_precision: str = "auto", accelerator: str = "auto",
                   deterministic: bool = False) -> EngineOptions:
    """:class:`EngineOptions` from the command line; ``--precision`` wins over the config's ``precision``."""
    from cytolens.engine.runtime import EngineOptions  # torch and Fabric only once a command runs

    chosen = precision if precision is not None else config_precision
    check_choice("precision", chosen, PRECISIONS)
    return EngineOptions(devices=devices, num_nodes=num_nodes, precision=chosen, accelerator=accelerator,
                         deterministic=deterministic)


#: Old spellings that still work for one release, per command: (group, command) -> {old option: new option}.
DEPRECATED_SPELLINGS: dict[tuple[str, str], dict[str, str]] = {
    ("profile", "crop"): {
        "--normalisation": "--normalization",
        "--mask-neighbours": "--mask-neighbors",
        "--keep-neighbours": "--keep-neighbors",
    },
    ("segment", "predict"): {"--model": "--final-model"},
}


def modernize_arguments(args: list[str]) -> tuple[list[str], list[str]]:
    """Replace deprecated option spellings in a command line by today's, and say which were replaced.

    Parameters
    ----------
    args : list of str
        The command line after ``cytolens`` (root options such as ``--debug`` may come first).

    Returns
    -------
    args : list of str
        The same command line with every old spelling (``--opt`` or ``--opt=value``) of its command replaced.
    notices : list of str
        One deprecation line per replaced option.
    """
    words = [arg for arg in args if not arg.startswith("-")][:2]
    renames = DEPRECATED_SPELLINGS.get((words[0], words[1])) if len(words) == 2 else None
    if not renames:
        return list(args), []
    modern: list[str] = []
    notices: list[str] = []
    for arg in args:
        name, equals, value = arg.partition("=")
        if arg == "--":
            break
        if name in renames:
            notices.append(f"{name} is deprecated and will be removed in the next release; use {renames[name]}")
            arg = renames[name] + equals + value
        modern.append(arg)
    return modern + args[len(modern):], notices
