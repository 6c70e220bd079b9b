"""``cytolens classify search``: choose a topology from the paper's search space by cross-validation.

The test set is held out exactly as in the protocol and never touched; each sampled topology is scored by
grouped K-fold cross-validation on the training images (all-classes task, the plain CNN variant), under a
budget of trials and of compute per image. The paper's own topology is always the first trial, so the search
reports how it compares. Results stream to ``search.csv`` (one row per finished trial; a rerun resumes) and the
winner is written as a config snippet, ``best_topology.yaml``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from cytolens.core.atomic import write_text_atomic
from cytolens.classify.config import ClassifyConfig
from cytolens.classify.data import load_inputs
from cytolens.data.tasks import build_tasks
from cytolens.classify.models import create_model
from cytolens.engine.parameters import count_parameters
from cytolens.classify.training import prepare_manifest
from cytolens.classify.search_space import SearchSpace, Topology, estimate_cost, paper_topology
from cytolens.classify.fit import fit_classifier
from cytolens.core.console import console, progress_bar
from cytolens.engine import EngineOptions, Runtime, configure_threads, launch
from cytolens.core.errors import CytolensError
from cytolens.data.layouts import write_manifest
from cytolens.data.splits import iter_folds


def run_search(
    data: str | Path,
    config: ClassifyConfig,
    out: str | Path,
    *,
    trials: int,
    folds: int = 3,
    max_mflops: float | None = None,
    space: SearchSpace | None = None,
    classes: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Cross-validate ``trials`` topologies and return the results table, best first.

    Parameters
    ----------
    data : str or Path
        A class-folder dataset.
    config : ClassifyConfig
        Data, intensity and training settings; its model settings are replaced by each topology.
    out : str or Path
        Folder for ``search.csv``, ``best_topology.yaml`` and the manifest.
    trials : int
        Topologies to try, the paper's first (unless it is over ``max_mflops``).
    folds : int, default 3
        Cross-validation folds per topology (fewer than the protocol's 10 keeps a search affordable).
    max_mflops : float, optional
        Skip topologies costing more forward MFLOPs per image (the compute budget).
    space : SearchSpace, optional
        The ranges; the paper's by default.
    classes : sequence of str, optional
        The classes to use, in label order (default: the dataset's, as ``classify train`` chooses them).
    """
    # One process: trials depend on each other only through search.csv, which one writer keeps consistent.
    return launch(_search, EngineOptions(precision=config.precision), data, config, Path(out), trials, folds,
                  max_mflops, space or SearchSpace(), None if classes is None else list(classes))


def _search(runtime: Runtime, data: str | Path, config: ClassifyConfig, out: Path, trials: int, folds: int,
            max_mflops: float | None, space: SearchSpace, classes: list[str] | None) -> pd.DataFrame:
    out.mkdir(parents=True, exist_ok=True)
    configure_threads(config.num_threads, local_processes=runtime.local_processes)
    search_config = config.model_copy(update={"folds": folds})
    manifest, used, _ = prepare_manifest(data, search_config, classes=classes)
    write_manifest(manifest, out / "manifest.parquet")
    task = build_tasks(used, ["all"])[0]
    train = manifest[manifest["split"] == "train"].reset_index(drop=True)
    labels = train["label"].to_numpy()

    rng = np.random.default_rng(config.seed)
    paper = paper_topology()
    # The paper's topology is the reference trial, unless it is over the compute budget.
    candidates: list[Topology] = [] if max_mflops is not None and estimate_cost(paper) > max_mflops else [paper]
    for _ in range(100 * trials):  # a small space may hold fewer distinct topologies than asked for
        if len(candidates) >= trials:
            break
        topology = space.sample(rng, max_mflops=max_mflops)
        if topology not in candidates:
            candidates.append(topology)

    results_path = out / "search.csv"
    done = pd.read_csv(results_path) if results_path.is_file() else pd.DataFrame()
    cache: dict[int, np.ndarray] = {}
    with progress_bar("searching", len(candidates)) as advance:
        for trial, topology in enumerate(candidates):
            settled = done[(done["trial"] == trial)] if len(done) else done
            if len(settled) and settled["topology_yaml"].iloc[0] == _topology_yaml(topology):
                advance(1)  # finished in an earlier run with the same topology
                continue
            if len(settled):
                raise CytolensError(
                    f"search.csv holds another topology for trial {trial}; the search settings changed — use a "
                    "new --out", path=out,
                )
            if topology.input_size not in cache:
                sized = config.model_copy(update={"input_size": topology.input_size})
                cache[topology.input_size] = load_inputs(train["path"].tolist(), sized, sharpened=False)
            resume = out / "resume" / f"trial{trial}"
            row = _evaluate(runtime, topology, cache[topology.input_size], labels, train["fold"].to_numpy(), config,
                            len(task.classes), resume)
            row["trial"] = trial
            done = pd.concat([done, pd.DataFrame([row])], ignore_index=True)
            write_text_atomic(results_path, done.to_csv(index=False))
            for checkpoint in resume.glob("fold*.pt"):  # the trial is in search.csv: its folds are settled
                checkpoint.unlink()
            console.print(f"trial {trial}: {row['topology']} → CV accuracy {row['cv_accuracy']:.3f}", markup=False)
            advance(1)
    ranked = done.sort_values(["cv_accuracy", "mflops"], ascending=[False, True]).reset_index(drop=True)
    best = Topology.from_dict(yaml.safe_load(ranked.loc[0, "topology_yaml"]))
    options = best.to_model_options()
    snippet = {"model": "convnet", "input_size": options.pop("input_size"), "model_options": options}
    write_text_atomic(out / "best_topology.yaml", yaml.safe_dump(snippet, sort_keys=False))
    return ranked


def _evaluate(
    runtime: Runtime, topology: Topology, inputs: np.ndarray, labels: np.ndarray, folds: np.ndarray,
    config: ClassifyConfig, num_classes: int, resume: Path,
) -> dict[str, object]:
    started = time.perf_counter()
    options = topology.to_model_options()
    input_size = options.pop("input_size")
    scores = []
    for fold, train_index, val_index in iter_folds(folds):
        torch.manual_seed(config.seed + fold)  # the same trial starts from the same weights, resumed or not
        model = create_model("convnet", num_classes=num_classes, in_chans=1, input_size=input_size, **options)
        result = fit_classifier(
            runtime, model, inputs[train_index], labels[train_index], inputs[val_index], labels[val_index],
            training=config.training, seed=config.seed + fold, checkpoint=resume / f"fold{fold}.pt",
            checkpoint_every=config.checkpoint_every, label=f"{topology.describe()} · fold {fold}",
        )
        scores.append(result.best_val_accuracy)
    probe = create_model("convnet", num_classes=num_classes, in_chans=1, input_size=input_size, **options)
    return {
        "topology": topology.describe(),
        "cv_accuracy": float(np.mean(scores)),
        "cv_accuracy_sd": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0,
        "parameters": count_parameters(probe)["trainable"],
        "mflops": round(estimate_cost(topology, num_classes=num_classes), 2),
        "seconds": round(time.perf_counter() - started, 1),
        "topology_yaml": _topology_yaml(topology),
    }


def _topology_yaml(topology: Topology) -> str:
    return yaml.safe_dump(topology.to_dict(), default_flow_style=True).strip()
