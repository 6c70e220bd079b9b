"""The command-line options of the engine, defined once for every command that trains, predicts or embeds."""

from __future__ import annotations

from typing import Annotated

import typer

from cytolens.engine.precision import PRECISIONS
from cytolens.engine.runtime import EngineOptions
from cytolens.core.errors import check_choice

__all__ = ["AcceleratorOption", "DeterministicOption", "DevicesOption", "ForceOption", "NumNodesOption",
           "PrecisionOption", "SeedOption", "engine_options"]

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
ForceOption = Annotated[
    bool, typer.Option("--force", help="Delete the run in --out and train again from scratch (default: resume it).")
]


def engine_options(*, devices: int = 1, num_nodes: int = 1, precision: str | None = None,
                   config_precision: str = "auto", accelerator: str = "auto",
                   deterministic: bool = False) -> EngineOptions:
    """:class:`EngineOptions` from the command line; ``--precision`` wins over the config's ``precision``."""
    chosen = precision if precision is not None else config_precision
    check_choice("precision", chosen, PRECISIONS)
    return EngineOptions(devices=devices, num_nodes=num_nodes, precision=chosen, accelerator=accelerator,
                         deterministic=deterministic)
