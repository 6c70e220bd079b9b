"""A tiny classification task on the engine, importable by spawned ranks (tests/ is on their sys.path)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cytolens.engine import FitLoop, LoopSettings, Position, Runtime, TrainTask, derive_seed


def toy_data(n: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    return x, y


class ToyTask(TrainTask):
    """An MLP with dropout on toy data: each global batch is split over the ranks."""

    def __init__(self, runtime: Runtime, *, seed: int, batch: int = 8, sleep: float = 0.0) -> None:
        torch.manual_seed(seed)
        self.runtime = runtime
        self.seed = seed
        self.batch = batch
        self.sleep = sleep
        self.x, self.y = toy_data()
        net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))
        optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
        self.net = net
        self.model, self.optimizer = runtime.setup(net, optimizer)

    def steps_per_epoch(self) -> int:
        return len(self.x) // self.batch

    def train_step(self, position: Position) -> dict[str, float]:
        order = np.random.default_rng(derive_seed(self.seed, position.epoch)).permutation(len(self.x))
        batch = order[position.index * self.batch:(position.index + 1) * self.batch]
        mine = batch[self.runtime.rank::self.runtime.world_size]
        x = torch.from_numpy(self.x[mine]).to(self.runtime.device)
        y = torch.from_numpy(self.y[mine]).to(self.runtime.device)
        loss = nn.functional.cross_entropy(self.model(x), y)
        self.optimizer.zero_grad()
        self.runtime.backward(loss)
        self.optimizer.step()
        if self.sleep:
            time.sleep(self.sleep)
        return {"train_loss": float(loss.detach()), "samples": len(batch)}

    def validate(self, epoch: int) -> dict[str, float]:
        rows = self.runtime.shard(len(self.x))
        self.model.eval()
        with torch.no_grad():
            logits = self.model(torch.from_numpy(self.x[rows.start:rows.stop]).to(self.runtime.device))
        self.model.train()
        correct = float((logits.argmax(1).cpu().numpy() == self.y[rows.start:rows.stop]).sum())
        total = self.runtime.all_reduce_sum([correct, len(rows)])
        return {"val_accuracy": float(total[0] / total[1])}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def model_state(self) -> dict[str, torch.Tensor]:
        return self.net.state_dict()


def fit_toy(runtime: Runtime, checkpoint: Path, epochs: int, checkpoint_every: int | None = None,
            sleep: float = 0.0, patience: int | None = None) -> dict[str, Any]:
    """Fit the toy task; return what the test compares (on rank 0)."""
    task = ToyTask(runtime, seed=3, sleep=sleep)
    settings = LoopSettings(seed=3, max_epochs=epochs, monitor="val_accuracy", patience=patience,
                            checkpoint_every=checkpoint_every)
    result = FitLoop(runtime, settings, checkpoint, label="toy").fit(task)
    weights = torch.cat([p.detach().cpu().flatten() for p in task.net.parameters()]).numpy()
    return {"epochs": result.epochs, "weights": weights, "world_size": runtime.world_size,
            "precision": runtime.precision, "resumed_from": result.resumed_from, "stopped": result.stopped}


if __name__ == "__main__":  # the SIGKILL test runs this as a subprocess
    import json
    import os
    import sys

    from cytolens.engine import EngineOptions, launch

    out = Path(sys.argv[1])
    # Under torchrun every rank runs this; launch() takes the ranks from the environment and only rank 0
    # comes back from it (the others exit), so the file below is written once.
    result = launch(fit_toy, EngineOptions(precision="32-true", deterministic=True), out / "resume.pt", 4, 1, 0.15)
    if (out / "result.json").exists():
        raise SystemExit("result.json written twice")
    (out / "result.json").write_text(json.dumps({
        "epochs": result["epochs"], "resumed_from": result["resumed_from"], "weights": result["weights"].tolist(),
        "world_size": result["world_size"], "rank": int(os.environ.get("RANK", "0")),
    }))
