"""``cytolens bench``: the quick bench writes the documented JSON and a markdown table; ``bench train`` prints one
JSON object. Only structure and consistency are checked, never speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cytolens.bench.op_times import OpTimer
from cytolens.bench.peer import child_json
from cytolens.bench.runner import parse_sections, result_paths
from cytolens.bench.workloads import measure_training
from cytolens.core.errors import OptionError

TRAIN_KEYS = {"model", "precision", "batch_size", "samples_per_s", "peak_rss_mb", "data_wait_fraction",
              "flops_per_sample", "seconds_per_step_median", "threads"}


def test_quick_bench_writes_the_documented_json_and_markdown(tmp_path: Path, cli) -> None:
    cli("bench", "--quick", "--out", tmp_path)
    json_path, md_path = result_paths(tmp_path, quick=True)
    assert json_path.is_file() and md_path.is_file()
    result = json.loads(json_path.read_text())
    assert {"machine", "matmul_peak", "training", "inference", "peer", "ratios"} <= set(result)
    machine = result["machine"]
    assert {"cpu_model", "available_cpus", "threads", "torch", "bf16_native", "date", "host"} <= set(machine)
    assert result["matmul_peak"]["fp32_gflops"] > 0 and result["matmul_peak"]["bf16_gflops"] > 0

    rows = result["training"]
    assert {(r["model"], r["precision"]) for r in rows} == {
        (m, p) for m in ("shpilman2017", "unet", "wgan") for p in ("32-true", "bf16-mixed")}
    for row in rows:
        assert "error" not in row, row
        assert TRAIN_KEYS <= set(row)
        assert row["samples_per_s"] > 0 and row["steps"] == 2
        # Throughput is the median step's: samples ÷ median seconds.
        assert row["samples_per_s"] == pytest.approx(row["batch_size"] / row["seconds_per_step_median"], rel=1e-2)
        assert 0 <= row["data_wait_fraction"] < 1
        assert row["flops_per_sample"] > 0  # the counter saw the convolutions (and WGAN-GP's double backward)
        ceiling = result["matmul_peak"]["bf16_gflops" if row["precision"] == "bf16-mixed" else "fp32_gflops"]
        assert row["fraction_of_matmul_peak"] == pytest.approx(row["achieved_gflops"] / ceiling, abs=1e-3)
    # The segmentation and GAN tasks report their data wait; a task that does not has its fetch timed by the bench.
    assert {r["data_wait_source"] for r in rows if r["model"] == "shpilman2017"} <= {"task", "bench"}
    assert {r["data_wait_source"] for r in rows if r["model"] != "shpilman2017"} == {"task"}

    inference = result["inference"]
    assert [r["precision"] for r in inference["classify"]] == ["32-true", "bf16-mixed"]
    predicts = inference["segment_predict"]
    assert [(r["height"], r["width"], r["format"]) for r in predicts] == [
        (64, 64, "tiff"), (96, 128, "tiff"), (96, 128, "ome-zarr")]
    assert all(r["returncode"] == 0 and r["megapixels_per_s"] > 0 for r in predicts)
    (zarr,) = result["ratios"]["ome_zarr_over_tiff"]
    assert zarr["size"] == "96x128" and zarr["peak_rss"] > 0 and zarr["seconds"] > 0
    whats = [r["what"] for r in inference["throughput"] + inference["simulators"]]
    for name in ("profile crop", "classical features", "synthetic microtubules", "synthetic brightfield",
                 "synthetic cellpainting"):
        assert name in whats
    assert any(w.startswith("profile embed") for w in whats)
    assert all(r["items"] > 0 and r["items_per_s"] > 0 for r in inference["throughput"] + inference["simulators"])

    assert result["peer"] == {"status": "not measured (--quick)", "rows": []}
    speedups = {r["model"]: r["ratio"] for r in result["ratios"]["bf16_over_fp32"]}
    assert set(speedups) == {"shpilman2017", "unet", "wgan"}
    assert result["ratios"]["segment_predict"] is None  # one image size in quick mode: no growth to report

    table = md_path.read_text()
    assert "| shpilman2017 | bf16-mixed |" in table and "segment predict" in table and "OME-Zarr output" in table
    assert "## segment predict: OME-Zarr ÷ TIFF output" in table
    assert table.count("| wgan | 32-true |") == table.count("| wgan | bf16-mixed |") == 1


def test_bench_train_prints_one_json_object() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cytolens", "bench", "train", "shpilman2017", "--quick", "--steps", "1", "--warmup",
         "1", "--json"], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    row = json.loads(lines[0])
    assert TRAIN_KEYS <= set(row)
    assert (row["model"], row["precision"], row["batch_size"], row["steps"]) == ("shpilman2017", "32-true", 32, 1)
    assert row["peak_rss_mb"] > 0


def test_op_times_attribute_a_steps_time_to_the_operations_it_ran(cli) -> None:
    printed = cli("bench", "train", "unet", "--quick", "--steps", "1", "--warmup", "1", "--op-times", "2").out
    assert "where a step's time goes (2 step(s) timed op by op" in printed and "convolution_backward" in printed
    assert "by input shapes:" in printed

    row = measure_training("unet", quick=True, steps=1, warmup=1, op_time_steps=1)
    ops = row["op_times"]
    assert ops["steps"] == 1
    names = [r["op"] for r in ops["by_op"]]
    assert {"convolution", "convolution_backward", "_fused_adam_"} <= set(names)
    # Sorted by time; shares of the timed operations' sum; the operations fit inside the step's wall time.
    assert [r["seconds_per_step"] for r in ops["by_op"]] == sorted((r["seconds_per_step"] for r in ops["by_op"]),
                                                                   reverse=True)
    assert 0 < sum(r["share"] for r in ops["by_op"]) <= 1.0001
    assert 0 < ops["ops_seconds_per_step"] <= ops["seconds_per_step_timed"]
    # Each convolution module (the transposed ones too) calls aten.convolution once a step: counted, not guessed.
    convolutions = next(r for r in ops["by_op"] if r["op"] == "convolution")
    assert convolutions["calls_per_step"] == sum(
        isinstance(m, torch.nn.modules.conv._ConvNd) for m in _quick_unet().modules())
    assert all(len(r["shapes"]) <= 3 for r in ops["by_shape"])
    assert measure_training("unet", quick=True, steps=1, warmup=1)["op_times"] is None


def _quick_unet() -> torch.nn.Module:
    from cytolens.bench.workloads import _QUICK_SEGMENT
    from cytolens.segment.unet import unet

    return unet(num_classes=3, **_QUICK_SEGMENT["unet_options"])


def test_op_timer_counts_each_call_and_divides_by_the_steps() -> None:
    conv = torch.nn.Conv2d(2, 3, 3)
    x = torch.randn(1, 2, 8, 8)
    timer = OpTimer()
    with timer:
        for _ in range(2):
            conv(x).sum().backward()
    summary = timer.summary(steps=2)
    by_op = {r["op"]: r for r in summary["by_op"]}
    assert by_op["convolution"]["calls_per_step"] == 1 and by_op["convolution_backward"]["calls_per_step"] == 1
    assert summary["ops_seconds_per_step"] == pytest.approx(sum(timer.seconds.values()) / 2, abs=1e-6)
    assert next(r["shapes"] for r in summary["by_shape"] if r["op"] == "convolution")[:2] == [[1, 2, 8, 8],
                                                                                              [3, 2, 3, 3]]
    with pytest.raises(ValueError):
        timer.summary(steps=0)


def test_bench_errors_are_one_line(cli) -> None:
    assert "unknown bench model 'unett'" in cli("bench", "train", "unett", "--quick", "--json", code=2).error
    assert "--only" in cli("bench", "--only", "trainingg", "--quick", code=2).error
    assert parse_sections("peer, training") == ["training", "peer"]
    with pytest.raises(OptionError):
        parse_sections(",")


def test_child_json_reads_the_last_json_line_or_the_error() -> None:
    ok = {"returncode": 0, "stdout": "log line\n{\"samples_per_s\": 3.5}\n", "stderr": ""}
    assert child_json(ok) == {"samples_per_s": 3.5}
    failed = {"returncode": 1, "stdout": "", "stderr": "Traceback ...\nRuntimeError: out of memory\n"}
    assert child_json(failed) == {"error": "RuntimeError: out of memory"}


def test_peer_alternates_sides_and_reports_median_ratios(monkeypatch) -> None:
    import cytolens.bench.peer as peer

    calls: list[tuple[str, str]] = []
    speeds = {"keras": [10.0, 30.0, 20.0], "32-true": [15.0, 5.0, 10.0], "bf16-mixed": [40.0, 60.0, 50.0]}

    def fake_run(args: list[str], *, timeout: float | None = None) -> dict:
        side = "keras" if "cytolens.bench.keras_peer" in args else args[args.index("--precision") + 1]
        model = args[args.index("train") + 1]
        calls.append((model, side))
        value = speeds[side][sum(1 for m, s in calls if s == side and m == model) - 1]
        return {"returncode": 0, "stdout": json.dumps({"samples_per_s": value, "tensorflow": "x"}) + "\n",
                "stderr": "", "seconds": 1.0, "peak_rss_mb": 1.0}

    monkeypatch.setattr(peer, "run_command", fake_run)
    monkeypatch.setattr(peer, "PEER_WORKLOADS", (("shpilman2017", 32),))
    (row,) = peer.run_peer(rounds=3, steps=2, threads=2)
    # Each round runs cytolens fp32, Keras, cytolens bf16, in that order, in separate children.
    assert [side for _, side in calls] == ["32-true", "keras", "bf16-mixed"] * 3
    assert row["keras_samples_per_s"] == 20.0 and row["cytolens_32_true_samples_per_s"] == 10.0
    assert row["cytolens_32_true_over_keras"] == 0.5 and row["cytolens_bf16_mixed_over_keras"] == 2.5
    assert row["errors"] == [] and row["keras"]["tensorflow"] == "x"


def test_full_plan_runs_every_model_in_a_child_and_derives_fractions_and_ratios(tmp_path: Path, monkeypatch) -> None:
    import cytolens.bench.machine as machine
    import cytolens.bench.runner as runner

    commands: list[list[str]] = []

    def fake_child(args: list[str], *, timeout: float | None = None, env: dict | None = None) -> dict:
        commands.append(args)
        model, precision = args[args.index("train") + 1], args[args.index("--precision") + 1]
        batch = int(args[args.index("--batch") + 1])
        if model == "deeplabv3plus_xception65" and batch == 16 and precision == "bf16-mixed":
            return {"returncode": 1, "stdout": "", "stderr": "RuntimeError: out of memory\n", "seconds": 1.0,
                    "peak_rss_mb": 1.0}
        speed = 2.0 if precision == "bf16-mixed" else 1.0
        row = {"model": model, "precision": precision, "batch_size": batch, "samples_per_s": speed,
               "seconds_per_step_median": batch / speed, "steps": 5, "data_wait_fraction": 0.01,
               "flops_per_sample": 1e10 if precision == "32-true" else 7e9, "achieved_gflops": 0.0,
               "peak_rss_mb": 100.0, "input_shape": [1, 8, 8]}
        return {"returncode": 0, "stdout": "progress\n" + json.dumps(row) + "\n", "stderr": "", "seconds": 1.0,
                "peak_rss_mb": 1.0}

    monkeypatch.setattr(runner, "run_command", fake_child)
    monkeypatch.setattr(machine, "matmul_peak", lambda *a, **k: {"size": 8, "repeats": 1, "threads": 1,
                                                                   "fp32_gflops": 100.0, "bf16_gflops": 400.0})
    monkeypatch.setattr("cytolens.engine.precision.cpu_has_native_bf16", lambda: True)
    json_path, md_path, result = runner.run_bench(tmp_path, only="training", threads=1)
    assert all(a[a.index("--threads") + 1] == "1" and "--json" in a for a in commands)
    rows = result["training"]
    assert len(rows) == 20 and {r["model"] for r in rows} == {
        "shpilman2017", "unet", "fcdensenet103", "deeplabv3plus_xception65", "dcgan", "wgan", "lsgan"}
    assert {r["batch_size"] for r in rows if r["model"] == "unet"} == {3, 16}
    failed = [r for r in rows if "error" in r]
    assert len(failed) == 1 and failed[0]["error"] == "RuntimeError: out of memory"
    ok = [r for r in rows if "error" not in r]
    assert all(r["rss_scope"] == "child process" for r in ok)
    # One FLOP count per model (its 32-true row's): 10 GFLOP/s of 100 at fp32, 20 of 400 at bf16.
    assert {r["flops_per_sample"] for r in ok} == {1e10}
    assert {r["fraction_of_matmul_peak"] for r in ok} == {0.1, 0.05}
    assert len(result["ratios"]["bf16_over_fp32"]) == 9  # deeplab at 16 has no bf16 figure
    assert {r["ratio"] for r in result["ratios"]["bf16_over_fp32"]} == {2.0}
    assert result["inference"] == {} and result["peer"]["status"] == "not measured (--only)"
    assert "failed: RuntimeError: out of memory" in md_path.read_text()


def test_a_cpu_without_bf16_trains_the_full_bench_in_fp32_and_says_why(tmp_path: Path, monkeypatch) -> None:
    import cytolens.bench.machine as machine
    import cytolens.bench.peer as peer
    import cytolens.bench.runner as runner

    precisions: list[str] = []

    def fake_child(args: list[str], *, timeout: float | None = None, env: dict | None = None) -> dict:
        precisions.append(args[args.index("--precision") + 1])
        row = {"model": args[args.index("train") + 1], "precision": precisions[-1], "samples_per_s": 1.0,
               "batch_size": int(args[args.index("--batch") + 1]), "seconds_per_step_median": 1.0, "steps": 2,
               "data_wait_fraction": 0.0, "peak_rss_mb": 1.0}
        return {"returncode": 0, "stdout": json.dumps(row) + "\n", "stderr": "", "seconds": 1.0, "peak_rss_mb": 1.0}

    monkeypatch.setattr(runner, "run_command", fake_child)
    monkeypatch.setattr(machine, "matmul_peak", lambda *a, **k: {"size": 8, "repeats": 1, "threads": 1,
                                                                   "fp32_gflops": 180.0, "bf16_gflops": 1.4})
    monkeypatch.setattr("cytolens.engine.precision.cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    _, md_path, result = runner.run_bench(tmp_path, only="training", threads=1)
    assert set(precisions) == {"32-true"} and result["precisions"] == ["32-true"]
    assert "1.4 GFLOP/s against 180.0 fp32" in result["precision_note"]
    assert "Bf16-mixed not measured" in md_path.read_text()
    # The Keras peer then skips its bf16 side too, and its bf16 figures are None.
    monkeypatch.setattr(peer, "PEER_WORKLOADS", (("unet", 3),))
    sides: list[str] = []
    monkeypatch.setattr(peer, "run_command", lambda args, timeout=None: sides.append(
        "keras" if "cytolens.bench.keras_peer" in args else args[args.index("--precision") + 1]) or {
        "returncode": 0, "stdout": json.dumps({"samples_per_s": 2.0}) + "\n", "stderr": "", "seconds": 1.0})
    (row,) = peer.run_peer(rounds=2, steps=1, threads=1, bf16=False)
    assert sides == ["32-true", "keras"] * 2
    assert row["cytolens_bf16_mixed_samples_per_s"] is None and row["cytolens_32_true_over_keras"] == 1.0


def test_run_command_reports_the_childs_own_peak_rss() -> None:
    from cytolens.bench.inference import run_command

    grow = "import time; b = bytearray(300 * 2**20); time.sleep(0.3); print('done')"
    big = run_command([sys.executable, "-c", grow])
    small = run_command([sys.executable, "-c", "import time; time.sleep(0.3)"])
    assert big["returncode"] == 0 and big["stdout"].strip() == "done"
    assert big["peak_rss_mb"] >= 300
    # Not this (large) test process's image, which ru_maxrss of a forked child would include.
    assert small["peak_rss_mb"] < 100
    failed = run_command([sys.executable, "-c", "raise SystemExit(3)"])
    assert failed["returncode"] == 3


def test_a_baseline_revision_is_exported_with_this_bench_and_run_first_on_the_path(tmp_path: Path) -> None:
    from cytolens.bench.baseline import prepare_baseline

    baseline = prepare_baseline("HEAD", tmp_path / "baseline")
    assert (baseline.src / "cytolens" / "engine").is_dir()
    assert (baseline.src / "cytolens" / "bench" / "baseline.py").is_file()  # this harness, whatever HEAD holds
    assert len(baseline.commit) == 40 and baseline.describe()["ref"] == "HEAD"
    where = subprocess.run([sys.executable, "-c", "import cytolens; print(cytolens.__file__)"], env=baseline.env(),
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).resolve().is_relative_to(baseline.src.resolve())
    with pytest.raises(OptionError, match="revision"):
        prepare_baseline("no-such-revision-anywhere", tmp_path / "other")


def test_ratios_compare_each_revision_and_precision_with_the_baseline() -> None:
    from cytolens.bench.runner import _ratios

    def row(code: str, precision: str, speed: float) -> dict:
        return {"model": "wgan", "batch_size": 64, "precision": precision, "samples_per_s": speed, "code": code}

    training = [row("current", "32-true", 10.0), row("baseline", "32-true", 5.0),
                row("current", "bf16-mixed", 30.0), row("baseline", "bf16-mixed", 6.0)]
    ratios = _ratios({"training": training})
    assert ratios["over_baseline"] == [{"model": "wgan", "batch_size": 64, "32-true": 2.0, "bf16-mixed": 5.0,
                                        "best_over_baseline_32_true": 6.0, "best_over_baseline_best": 5.0}]
    assert ratios["bf16_over_fp32"] == [{"model": "wgan", "batch_size": 64, "ratio": 3.0}]


def test_baseline_rounds_alternate_the_sides_and_report_the_median_of_the_rounds_ratios(tmp_path: Path,
                                                                                         monkeypatch) -> None:
    import cytolens.bench.machine as machine
    import cytolens.bench.runner as runner
    from cytolens.bench.baseline import Baseline

    order: list[str] = []
    # This revision's samples/s over three rounds, and the baseline's: per-round ratios 2.0, 1.0 and 1.5.
    speeds = {"current": iter([4.0, 3.0, 3.0]), "baseline": iter([2.0, 3.0, 2.0])}

    def fake_child(args: list[str], *, timeout: float | None = None, env: dict | None = None) -> dict:
        side = "baseline" if env is not None else "current"
        order.append(side)
        row = {"model": args[args.index("train") + 1], "precision": "32-true", "batch_size": 3,
               "samples_per_s": next(speeds[side]), "seconds_per_step_median": 1.0, "steps": 2,
               "data_wait_fraction": 0.0, "peak_rss_mb": 1.0}
        return {"returncode": 0, "stdout": json.dumps(row) + "\n", "stderr": "", "seconds": 1.0, "peak_rss_mb": 1.0}

    monkeypatch.setattr(runner, "run_command", fake_child)
    monkeypatch.setattr(runner, "prepare_baseline", lambda ref: Baseline(ref, "c" * 40, tmp_path))
    monkeypatch.setattr("cytolens.bench.workloads.full_plan", lambda: [("unet", 3)])
    monkeypatch.setattr(machine, "matmul_peak", lambda *a, **k: {"size": 8, "repeats": 1, "threads": 1,
                                                                   "fp32_gflops": 180.0, "bf16_gflops": 1.4})
    monkeypatch.setattr("cytolens.engine.precision.cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    _, md_path, result = runner.run_bench(tmp_path, only="training", threads=1, baseline="HEAD~1", rounds=3)
    assert order == ["current", "baseline"] * 3
    assert [r["round"] for r in result["training"]] == [1, 1, 2, 2, 3, 3]
    (entry,) = result["ratios"]["over_baseline"]
    assert entry["32-true"] == 1.5 and [r["32-true"] for r in entry["rounds"]] == [2.0, 1.0, 1.5]
    assert result["baseline"]["rounds"] == 3
    text = md_path.read_text()
    assert "medians of 3 alternating rounds" in text and "2, 1, 1.5" in text and "unet (baseline), round 2" in text
    with pytest.raises(OptionError, match="--rounds"):
        runner.run_bench(tmp_path, only="training", threads=1, baseline="HEAD~1", rounds=0)


def test_peak_fractions_count_each_revisions_own_work() -> None:
    from cytolens.bench.runner import _peak_fractions

    def row(code: str, precision: str, flops: float, speed: float) -> dict:
        return {"model": "lsgan", "batch_size": 64, "precision": precision, "code": code,
                "flops_per_sample": flops, "samples_per_s": speed}

    # The baseline's generator does more multiply-adds for the same model; the bf16 count differs slightly.
    rows = [row("current", "32-true", 9e9, 10.0), row("baseline", "32-true", 15e9, 5.0),
            row("current", "bf16-mixed", 9.1e9, 20.0), row("baseline", "bf16-mixed", 15.2e9, 8.0)]
    _peak_fractions(rows, {"fp32_gflops": 200.0, "bf16_gflops": 400.0})
    assert [r["flops_per_sample"] for r in rows] == [9e9, 15e9, 9e9, 15e9]
    assert [r["achieved_gflops"] for r in rows] == [90.0, 75.0, 180.0, 120.0]
    assert [r["fraction_of_matmul_peak"] for r in rows] == [0.45, 0.375, 0.45, 0.3]
    assert rows[2]["flops_per_sample_counted"] == 9.1e9


@pytest.mark.parametrize("conv", [
    torch.nn.Conv2d(8, 8, 3, groups=8, bias=False),  # depthwise, as in Xception
    torch.nn.Conv2d(8, 8, 3, groups=2, bias=False),
    torch.nn.Conv2d(8, 16, 3, stride=2, bias=False),
    torch.nn.ConvTranspose2d(8, 4, 3, stride=2, bias=False),
])
def test_a_convolutions_training_flops_are_three_forward_passes(conv: torch.nn.Module) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from cytolens.bench.workloads import conv_backward_flops

    x = torch.randn(2, 8, 10, 10, requires_grad=True)
    forward = FlopCounterMode(display=False)
    with forward:
        conv(x)
    step = FlopCounterMode(display=False,
                           custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flops})
    with step:
        conv(x).sum().backward()
    # Forward, input gradient and weight gradient: the same multiply-adds each.
    assert step.get_total_flops() == 3 * forward.get_total_flops()


def test_matmul_peak_keeps_emulated_bf16_small(monkeypatch: pytest.MonkeyPatch) -> None:
    from cytolens.bench import machine

    monkeypatch.setattr(machine, "cpu_has_native_bf16", lambda: False)
    emulated = machine.matmul_peak(size=1024, repeats=1)
    assert (emulated["size"], emulated["bf16_size"]) == (1024, 512)
    assert emulated["fp32_gflops"] > 0 and emulated["bf16_gflops"] > 0
    monkeypatch.setattr(machine, "cpu_has_native_bf16", lambda: True)
    assert machine.matmul_peak(size=64, repeats=1)["bf16_size"] == 64
