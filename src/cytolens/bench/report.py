"""The markdown side of a bench result: one table row per measurement."""

from __future__ import annotations

from typing import Any

__all__ = ["markdown_report"]


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:,.0f}"
    return str(value)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def markdown_report(result: dict[str, Any]) -> str:
    """Render a bench result (the JSON object) as markdown: machine, peak, training, inference, peer, ratios.

    Parameters
    ----------
    result : dict
        What :func:`cytolens.bench.runner.run_bench` writes as JSON.

    Returns
    -------
    str
    """
    machine, peak = result["machine"], result["matmul_peak"]
    title = f"# cytolens bench — {machine['date'][:10]} on {machine['host']}" + (" (quick)" if result["quick"] else "")
    lines = [title, "",
             f"{machine['cpu_model']}, {machine['available_cpus']} CPUs available, {machine['threads']} torch threads, "
             f"native bf16: {'yes' if machine['bf16_native'] else 'no'}; torch {machine['torch']}, python "
             f"{machine['python']}, cytolens {machine['cytolens']}; load average before "
             f"{_num((machine.get('load_average') or [None])[0])}, after "
             f"{_num((machine.get('load_average_after') or [None])[0])}.", "",
             f"Matrix-multiply peak ({peak['size']}×{peak['size']}, median of {peak['repeats']}): "
             f"**{_num(peak['fp32_gflops'], 4)} GFLOP/s fp32**, **{_num(peak['bf16_gflops'], 4)} GFLOP/s bf16**"
             + (f" (bf16 emulated, timed at {peak['bf16_size']}×{peak['bf16_size']})"
                if peak.get("bf16_size", peak["size"]) != peak["size"] else "") + ".", ""]
    if result["quick"]:
        lines += ["*Quick mode: tiny inputs and widths, a couple of steps, everything in one process — these "
                  "figures only show that the bench works.*", ""]
    if result["training"]:
        lines += ["## Training", ""]
        rows = []
        for row in result["training"]:
            shape = "×".join(str(s) for s in row.get("input_shape", [])) or "–"
            if "error" in row:
                rows.append([row["model"], row["precision"], str(row["batch_size"]), shape,
                             f"failed: {row['error']}", "", "", "", "", "", ""])
                continue
            model = (row["model"] + (" (baseline)" if row.get("code") == "baseline" else "")
                     + (f", round {row['round']}" if "round" in row else ""))
            rows.append([model, row["precision"], str(row["batch_size"]), shape, _num(row["samples_per_s"]),
                         _num(row["seconds_per_step_median"]), str(row["steps"]), _pct(row["data_wait_fraction"])
                         + ("*" if row.get("data_wait_source") == "bench" else ""),
                         _num(row.get("achieved_gflops")), _pct(row.get("fraction_of_matmul_peak")),
                         _num(row.get("peak_rss_mb"), 4)])
        lines += _table(["model", "precision", "batch", "input (C×H×W)", "samples/s", "s/step (median)", "steps",
                         "data wait", "GFLOP/s", "of matmul peak", "peak RSS MB"], rows)
        lines += ["Data wait marked * is the batch fetch timed by the bench (the task does not report it).", ""]
        if result.get("precision_note"):
            lines += [result["precision_note"][0].upper() + result["precision_note"][1:] + ".", ""]
    inference = result.get("inference") or {}
    if inference:
        lines += ["## Inference, profiling and simulators", ""]
        rows = []
        for row in inference.get("classify", []):
            rows.append([f"classify predict ({row['model']}, {row['precision']}, batch {row['batch_size']})",
                         "×".join(map(str, row["input_shape"])), f"{_num(row['images_per_s'])} images/s", "–", "–"])
        for row in inference.get("segment_predict", []):
            size = f"{row['height']}×{row['width']}"
            if row.get("returncode") != 0:
                rows.append([f"segment predict, {row['model']}", size, f"failed: {row.get('error', '')}", "–", "–"])
                continue
            what = (f"segment predict, {row['model']}" + (" (fixed cost)" if "role" in row else "")
                    + (", OME-Zarr output" if row.get("format") == "ome-zarr" else "")
                    + (" (baseline)" if row.get("code") == "baseline" else ""))
            net = f"{_num(row.get('megapixels_per_s_net'))} MP/s net" if "megapixels_per_s_net" in row else ""
            rows.append([what, size, f"{_num(row['megapixels_per_s'])} MP/s " + (f"({net})" if net else ""),
                         f"{_num(row['seconds'], 4)} s", _num(row["peak_rss_mb"], 4)])
        for row in [*inference.get("throughput", []), *inference.get("simulators", [])]:
            rows.append([row["what"], row.get("size", f"{row['items']} {row['unit']}"),
                         f"{_num(row['items_per_s'])} {row['unit']}/s", f"{_num(row['seconds'], 4)} s", "–"])
        lines += _table(["what", "size", "throughput", "time", "peak RSS MB"], rows)
    peer = result.get("peer") or {}
    lines += ["## Keras peer", ""]
    if peer.get("rows"):
        rows = []
        for row in peer["rows"]:
            rows.append([row["model"], str(row["batch_size"]), _num(row["keras_samples_per_s"]),
                         _num(row["cytolens_32_true_samples_per_s"]), _num(row["cytolens_bf16_mixed_samples_per_s"]),
                         _num(row["cytolens_32_true_over_keras"]), _num(row["cytolens_bf16_mixed_over_keras"])])
        lines += _table(["model", "batch", "Keras fp32 samples/s", "cytolens 32-true", "cytolens bf16-mixed",
                         "32-true ÷ Keras", "bf16-mixed ÷ Keras"], rows)
        lines += [f"Medians of {peer['rounds']} alternating rounds, each side in its own process.", ""]
    else:
        lines += [f"Keras peer: {peer.get('status', 'not measured')}.", ""]
    ratios = result.get("ratios") or {}
    if ratios.get("bf16_over_fp32"):
        lines += ["## bf16-mixed ÷ 32-true", ""]
        lines += _table(["model", "batch", "speed-up"],
                        [[r["model"], str(r["batch_size"]), _num(r["ratio"])] for r in ratios["bf16_over_fp32"]])
    if ratios.get("ome_zarr_over_tiff"):
        lines += ["## segment predict: OME-Zarr ÷ TIFF output", "",
                  "The same command on the same image, `--format ome-zarr` over the default TIFF.", ""]
        lines += _table(["image", "peak RSS", "time"], [[r["size"].replace("x", "×"), _num(r["peak_rss"]),
                                                        _num(r["seconds"])] for r in ratios["ome_zarr_over_tiff"]])
    if ratios.get("over_baseline"):
        baseline = result.get("baseline") or {}
        rounds = int(baseline.get("rounds", 1))
        lines += [f"## This revision ÷ the baseline ({baseline.get('ref', '?')}, {baseline.get('commit', '?')[:10]})",
                  "", "Samples/s of this revision over the baseline's, each measured right after the other"
                  + (f"; medians of {rounds} alternating rounds, the 32-true ratios of each round in the last "
                     "column." if rounds > 1 else "."), ""]
        columns = ["model", "batch", "32-true", "bf16-mixed", "fastest ÷ baseline 32-true",
                   "fastest ÷ baseline fastest"]
        lines += _table(columns + (["32-true, each round"] if rounds > 1 else []),
                        [[r["model"], str(r["batch_size"]), _num(r.get("32-true")), _num(r.get("bf16-mixed")),
                          _num(r.get("best_over_baseline_32_true")), _num(r.get("best_over_baseline_best"))]
                         + ([", ".join(_num(e.get("32-true")) for e in r.get("rounds", []))] if rounds > 1 else [])
                         for r in ratios["over_baseline"]])
    if ratios.get("segment_predict"):
        seg = ratios["segment_predict"]
        lines += [f"Peak RSS of `segment predict`, {seg['sizes'][1]} ÷ {seg['sizes'][0]}: "
                  f"{_num(seg['peak_rss_large_over_small'])}.", ""]
        for size, ratio in (seg.get("megapixels_per_s_over_baseline") or {}).items():
            lines += [f"`segment predict` {size}: megapixels/s ÷ the baseline's: {_num(ratio)}.", ""]
    lines += [f"Bench time {result['seconds']:.0f} s.", ""]
    if result.get("note"):  # a correction made to a results file after its run, said where it is read
        lines += [f"Note: {result['note']}", ""]
    return "\n".join(lines)
