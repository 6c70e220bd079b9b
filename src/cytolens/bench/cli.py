"""``cytolens bench`` (the whole bench) and ``cytolens bench train MODEL`` (one training figure, rerun alone)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from cytolens.core.console import console

app = typer.Typer(
    help="Measure this machine: training and inference speed of every model, memory, FLOP/s against the "
    "matrix-multiply peak, and the papers' Keras stack side by side (benchmarks/README.md).",
    invoke_without_command=True,
    no_args_is_help=False,
)

ThreadsOption = Annotated[
    int | None, typer.Option("--threads", min=1, help="torch threads (default: the CPUs this process may use).")
]
StepsOption = Annotated[
    int | None,
    typer.Option("--steps", min=1, help="Timed training steps (default: at least 5 steps and 10 s, at most 20)."),
]


@app.callback(invoke_without_command=True)
def bench(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Folder of <date>-<host>.json and .md.")] = Path(
        "benchmarks/results"),
    quick: Annotated[bool, typer.Option("--quick", help="Tiny sizes and 2 steps, in one process: seconds, "
                                                        "for checking that the bench works.")] = False,
    only: Annotated[str | None, typer.Option("--only", help="Comma-separated parts: training, inference, "
                                                             "peer (default: all).")] = None,
    threads: ThreadsOption = None,
    steps: StepsOption = None,
    peer_rounds: Annotated[int, typer.Option("--peer-rounds", min=1, help="Alternating cytolens/Keras rounds.")] = 3,
    models: Annotated[str | None, typer.Option("--models", help="Comma-separated models to train (default: all).")
                      ] = None,
    baseline: Annotated[str | None, typer.Option(
        "--baseline", help="A git revision of this checkout to measure too, alternating with this one (training "
        "and segment predict): the ratios a speed claim needs.")] = None,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="With --baseline: take each training figure this "
                                        "many times on each side, alternating; ratios are the rounds' medians.")
                      ] = 1,
) -> None:
    """Run the whole bench and write OUT/<date>-<host>.json plus a markdown table (OUT/<date>-<host>.md)."""
    if ctx.invoked_subcommand is not None:
        return
    from cytolens.bench.runner import run_bench

    json_path, md_path, _ = run_bench(out, quick=quick, only=only, threads=threads, steps=steps,
                                      peer_rounds=peer_rounds, progress=lambda line: console.print(line, markup=False),
                                      models=[m.strip() for m in models.split(",")] if models else None,
                                      baseline=baseline, rounds=rounds)
    console.print(f"wrote {json_path} and {md_path}", markup=False)


@app.command("train")
def train(
    model: Annotated[str, typer.Argument(help="shpilman2017, unet, fcdensenet103, deeplabv3plus_xception65, dcgan, "
                                              "wgan or lsgan.")],
    precision: Annotated[str, typer.Option("--precision", help="32-true | bf16-mixed | auto.")] = "32-true",
    batch: Annotated[int | None, typer.Option("--batch", min=1, help="Samples per step (default: the paper's).")
                     ] = None,
    steps: StepsOption = None,
    warmup: Annotated[int, typer.Option("--warmup", min=1, help="Untimed steps first (the first counts FLOPs).")] = 2,
    threads: ThreadsOption = None,
    quick: Annotated[bool, typer.Option("--quick", help="Tiny inputs and widths (a check, not a figure).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    op_times: Annotated[int, typer.Option(
        "--op-times", min=0, help="After the timed steps, time this many more operation by operation and say "
        "where a step's time goes (benchmarks/README.md).")] = 0,
) -> None:
    """Time the training steps of MODEL's real training task at one precision and batch size."""
    from cytolens.bench.workloads import measure_training

    row = measure_training(model, precision=precision, batch=batch, steps=steps, warmup=warmup, threads=threads,
                           quick=quick, op_time_steps=op_times)
    if as_json:
        # Plain print: one line, so a parent process reads it as the last JSON line of stdout.
        print(json.dumps(row))
        return
    data = "n/a" if row["data_wait_fraction"] is None else f"{100 * row['data_wait_fraction']:.1f}%"
    typer.echo(
        f"{model} {row['precision']} batch {row['batch_size']}: {row['samples_per_s']:.2f} samples/s "
        f"({row['seconds_per_step_median']:.3f} s/step median of {row['steps']}), data wait {data}, "
        f"{row['achieved_gflops']} GFLOP/s, peak RSS {row['peak_rss_mb']:.0f} MB, {row['threads']} threads"
    )
    if row["op_times"]:
        typer.echo(_op_table(row["op_times"]))


def _op_table(op_times: dict[str, Any]) -> str:
    """The per-operation breakdown of ``bench train --op-times`` as plain text."""
    lines = [f"where a step's time goes ({op_times['steps']} step(s) timed op by op: "
             f"{1e3 * op_times['seconds_per_step_timed']:.0f} ms a step under the timer, "
             f"{1e3 * op_times['ops_seconds_per_step']:.0f} ms of it in the operations):"]
    lines += [f"  {1e3 * r['seconds_per_step']:9.1f} ms {100 * r['share']:5.1f}%  {r['calls_per_step']:7.1f} calls  "
              f"{r['op']}" for r in op_times["by_op"]]
    lines.append("by input shapes:")
    lines += [f"  {1e3 * r['seconds_per_step']:9.1f} ms {100 * r['share']:5.1f}%  {r['op']} "
              f"{' '.join('x'.join(map(str, s)) or 'scalar' for s in r['shapes'])}" for r in op_times["by_shape"]]
    return "\n".join(lines)
