"""``cytolens profile train``: train a CytoGAN GAN on a cell store, as a step-based task of the engine's fit loop.

A run folder (:class:`~cytolens.engine.RunFolder` of kind ``profile-gan``) holds::

    RUN/config.yaml, RUN/run.json  the resolved config; the sessions, precision, ranks and data fingerprint
    RUN/checkpoints/last.pt        the fit loop's resume checkpoint: the loop's position and history, and under
                                   ``"task"`` the generator, discriminator and both optimisers (tensors only)
    RUN/samples/step0001000.png    generated cells from a fixed set of noise vectors, every ``sample_every`` steps
    RUN/losses.csv                 losses, mean discriminator outputs and seconds per step, every ``log_every``
    RUN/figures/loss_curves.png    the same as curves, redrawn at every checkpoint
    RUN/done.json                  summary, written last when the planned steps are done (or time ran out)

One step of the loop is one generator update after ``critic_steps`` discriminator updates; an epoch has
``batches_per_epoch // critic_steps`` steps. Step ``s`` trains on the real batches ``(s - 1) * critic_steps + k``
of :class:`~cytolens.profile.gan.batches.ChunkShuffledBatches`, whose order depends only on ``(seed, epoch)``,
and the loop seeds every step's randomness from ``(seed, step, rank)``: a run interrupted and resumed continues
exactly as it would have (with ``--deterministic``, to the last bit). Under DDP every rank takes
``batch[rank::world_size]`` of each global batch, and the noise vectors of a step are drawn for the whole batch
and split the same way, so any number of ranks sees the same cells and latent vectors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cytolens.core.atomic import write_text_atomic
from cytolens.core.console import console
from cytolens.engine.optimizers import create_optimizer
from cytolens.engine import (
    EngineOptions, FitLoop, FitResult, LoopSettings, Position, RunFolder, Runtime, TrainTask, configure_threads,
    data_fingerprint, derive_seed, launch, seed_everything,
)
from cytolens.core.errors import CytolensError, OptionError
from cytolens.profile.crops.cell_store import CROPS_NAME, INDEX_NAME, CellStore
from cytolens.profile.gan.models import GAN, count_gan_parameters, gan_from_config, tensor_to_images
from cytolens.profile.gan.batches import ChunkShuffledBatches
from cytolens.profile.gan.config import GanConfig
from cytolens.profile.gan.figures import plot_gan_losses, save_image_grid
from cytolens.profile.gan.losses import discriminator_loss, generator_loss, gradient_penalty

__all__ = ["CHECKPOINT", "KIND", "GanTask", "store_fingerprint", "train"]

CHECKPOINT = Path("checkpoints") / "last.pt"
KIND = "profile-gan"
#: Keys the latent vectors' seeds apart from the loop's per-step seeds ``(seed, step, rank)``.
_NOISE_STREAM = 0x6E6F6973


def store_fingerprint(store: CellStore) -> str:
    """A hash of the cell store's CONTENTS (its index and every file of its crops array) and its size."""
    crops = sorted(p for p in (store.path / CROPS_NAME).rglob("*") if p.is_file())
    table = f"cells={len(store)} crop={store.crop_size}\n" + "\n".join(
        str(p.relative_to(store.path)) for p in crops)
    return data_fingerprint([store.path / INDEX_NAME, *crops], table)


def _to_images(batch: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """uint8 crops (n, S, S, C) on the device → float (n, C, S, S) in [-1, 1]."""
    images = batch.float().mul_(2.0 / 255.0).sub_(1.0).permute(0, 3, 1, 2)
    return images.contiguous(memory_format=memory_format)


class GanTask(TrainTask):
    """A GAN's training as a :class:`~cytolens.engine.TrainTask`: ``critic_steps`` D updates, then one G update.

    Parameters
    ----------
    runtime : Runtime
    gan : GAN
        The networks (initial weights; a resumed run replaces them from its checkpoint).
    config : GanConfig
    batches : ChunkShuffledBatches
        The real batches, by global index.
    out : Path
        The run folder (samples, losses.csv, figures; written by rank 0).
    progress : callable, optional
        Called with 1 after each step on rank 0.
    """

    def __init__(self, runtime: Runtime, gan: GAN, config: GanConfig, batches: ChunkShuffledBatches, out: Path, *,
                 progress: Callable[[int], None] | None = None) -> None:
        self.runtime = runtime
        self.config = config
        self.batches = batches
        self.out = out
        self.progress = progress
        self.loss = gan.loss
        self.noise_size = gan.noise_size
        # The runtime's layout (channels-last on the CPU): runtime.setup puts the networks in it.
        self.memory_format = runtime.memory_format
        self.g_net = gan.generator.train()
        self.d_net = gan.discriminator.train()
        recipe = config.recipe()
        betas = tuple(recipe["betas"])  # type: ignore[arg-type]
        opt_d = create_optimizer(self.d_net.parameters(), "adam", lr=float(recipe["lr_discriminator"]), betas=betas)
        opt_g = create_optimizer(self.g_net.parameters(), "adam", lr=float(recipe["lr_generator"]), betas=betas)
        self.g, self.opt_g = runtime.setup(self.g_net, opt_g)
        self.d, self.opt_d = runtime.setup(self.d_net, opt_d)
        self.fixed_noise = torch.randn(config.sample_count, gan.noise_size,
                                       generator=torch.Generator().manual_seed(config.seed + 1))

    def steps_per_epoch(self) -> int:
        return max(1, self.batches.batches_per_epoch // self.config.critic_steps)

    def _noise(self, step: int, k: int, n_global: int) -> torch.Tensor:
        # Drawn for the whole global batch and split like the cells, so every world size sees the same vectors.
        generator = torch.Generator().manual_seed(derive_seed(self.config.seed, _NOISE_STREAM, step, k))
        z = torch.randn(n_global, self.noise_size, generator=generator)
        return self.runtime.to_device(z[self.runtime.rank :: self.runtime.world_size])

    def train_step(self, position: Position) -> dict[str, float]:
        """Update D once per real batch, then G once; return the step's numbers (averaged by the loop).

        The generator's update scores the batch generated for the last discriminator update again, with the
        updated discriminator (as PyTorch's DCGAN example does): one generator forward pass per step instead of
        two; CytoGAN's code drew fresh noise for it.
        """
        runtime, config = self.runtime, self.config
        rank, world = runtime.rank, runtime.world_size
        data_seconds = 0.0
        fake = torch.empty(0)
        parts: dict[str, torch.Tensor] = {}
        loss_d = torch.zeros(())
        for k in range(config.critic_steps):
            started = time.perf_counter()
            index = (position.step - 1) * config.critic_steps + k
            batch = torch.from_numpy(np.ascontiguousarray(self.batches.batch(index)[rank::world]))
            real = _to_images(runtime.to_device(batch), self.memory_format)
            data_seconds += time.perf_counter() - started
            z = self._noise(position.step, k, self.batches.batch_size)
            with runtime.autocast():
                if k == config.critic_steps - 1:
                    fake = self.g(z)
                else:
                    with torch.no_grad():
                        fake = self.g(z)
                scores = self.d(torch.cat([fake.detach(), real]))
                fake_out, real_out = scores[: len(real)], scores[len(real) :]
                penalty = None
                if self.loss == "wgan-gp":
                    def penalty(real: torch.Tensor = real, fake: torch.Tensor = fake) -> torch.Tensor:
                        # The unwrapped critic: one DDP forward per backward, and no torch.autograd.grad through
                        # DDP (which its documentation does not support). The penalty's parameter gradients
                        # still reach DDP's all-reduce: backward accumulates them with the wrapped forward's
                        # before the parameters' hooks fire.
                        return gradient_penalty(self.d_net, real, fake,
                                                interpolation=config.gp_interpolation)
                loss_d, parts = discriminator_loss(
                    self.loss, real_out.float(), fake_out.float(), real_label_range=config.real_label_range,
                    penalty=penalty, penalty_weight=config.gradient_penalty,
                )
            self.opt_d.zero_grad(set_to_none=True)
            runtime.backward(loss_d)
            self.opt_d.step()
        # The generator's update needs the gradient through D to its input, not D's parameter gradients: with D's
        # parameters frozen the backward skips every weight gradient of D (a third of D's backward work). The
        # unwrapped D scores: under DDP nothing of D is synchronised here, and G's wrapper syncs G's gradients.
        self.d_net.requires_grad_(False)
        try:
            with runtime.autocast():
                loss_g = generator_loss(self.loss, self.d_net(fake).float())
            self.opt_g.zero_grad(set_to_none=True)
            runtime.backward(loss_g)
        finally:
            self.d_net.requires_grad_(True)
        self.opt_g.step()
        # The numbers stay on the device: the loop sums them there and reads them back once per log row.
        record: dict[str, Any] = {"d_loss": loss_d.detach().float(), **parts, "g_loss": loss_g.detach().float()}
        record.update(samples=self.batches.batch_size * config.critic_steps, data_seconds=data_seconds)
        return record

    @torch.no_grad()
    def generate(self, z: torch.Tensor) -> np.ndarray:
        """Images (n, S, S, 3) in [0, 1] from noise ``z``, BatchNorm in inference mode (as CytoGAN sampled).

        Uses the unwrapped generator: rank 0 alone draws the sample grids, with no collective.
        """
        self.g_net.eval()
        try:
            with self.runtime.autocast():
                return tensor_to_images(self.g_net(self.runtime.to_device(z)))
        finally:
            self.g_net.train()

    def after_step(self, position: Position, *, last: bool) -> None:
        if not self.runtime.is_main:
            return
        if position.step % self.config.sample_every == 0 or last:
            save_image_grid(self.generate(self.fixed_noise), self.out / "samples" / f"step{position.step:07d}.png")
        if self.progress is not None:
            self.progress(1)

    def after_checkpoint(self, epochs: list[dict[str, Any]], steps_log: list[dict[str, Any]]) -> None:
        write_losses(self.out, steps_log, self.config)

    def state_dict(self) -> dict[str, Any]:
        def cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {k: v.detach().cpu().contiguous() for k, v in state.items()}

        return {
            "generator": cpu(self.g_net.state_dict()),
            "discriminator": cpu(self.d_net.state_dict()),
            "optimizer_generator": self.opt_g.state_dict(),
            "optimizer_discriminator": self.opt_d.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.g_net.load_state_dict(state["generator"])
        self.d_net.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["optimizer_generator"])
        self.opt_d.load_state_dict(state["optimizer_discriminator"])


def write_losses(out: Path, rows: list[dict[str, Any]], config: GanConfig) -> None:
    """``losses.csv`` and ``figures/loss_curves.png`` from the loop's step-log rows."""
    if not rows:
        return
    frame = pd.DataFrame(rows)
    write_text_atomic(out / "losses.csv", frame.to_csv(index=False))
    plot_gan_losses(frame, out / "figures" / "loss_curves.png", title=f"{config.name} ({config.model})")


def train(
    cells: str | Path,
    config: GanConfig,
    out: str | Path,
    *,
    options: EngineOptions | None = None,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Train ``config``'s GAN on the cell store ``cells`` into the run folder ``out``.

    Parameters
    ----------
    cells : str or Path
        A cell store (``cytolens profile crop``).
    config : GanConfig
        The settings; ``config.steps`` (or ``epochs``) says how long.
    out : str or Path
        Run folder; resumed from ``checkpoints/last.pt`` when it holds a run with the same config (up to
        :attr:`GanConfig.SCHEDULE_KEYS`), the same cells and the same precision.
    options : EngineOptions, optional
        Devices, precision, ranks (default: one process at the config's precision).
    progress : callable, optional
        Called with 1 after each step (one process only: spawned ranks cannot call back).

    Returns
    -------
    Path
        The run folder.
    """
    options = options or EngineOptions()
    if options.precision is None:
        options = replace(options, precision=config.precision)
    if options.devices > 1:
        progress = None
    launch(_train_on_rank, options, Path(cells), config, Path(out), progress)
    return Path(out)


def _train_on_rank(runtime: Runtime, cells: Path, config: GanConfig, out: Path,
                   progress: Callable[[int], None] | None) -> dict[str, Any] | None:
    """One rank's training (see :func:`train`); rank 0 returns the ``done.json`` summary, the others None."""
    store = CellStore(cells)
    seed_everything(config.seed)  # the initial weights, the same on every rank; a resumed run replaces them
    gan = gan_from_config(config)
    size = gan.discriminator.image_size
    if store.crop_size != size:
        raise OptionError(f"the cell store holds {store.crop_size}px crops but the {config.model} model needs {size}px")
    if config.batch_size < runtime.world_size:
        raise OptionError(f"`batch_size` {config.batch_size} is smaller than the {runtime.world_size} ranks")
    threads = configure_threads(config.num_threads, local_processes=runtime.local_processes)
    batches = ChunkShuffledBatches(store, batch_size=config.batch_size, seed=config.seed,
                                   buffer_cells=config.shuffle_buffer)
    total = config.total_steps(len(store))
    folder = RunFolder(out, KIND)
    _start_folder(runtime, folder, config, store)
    task = GanTask(runtime, gan, config, batches, out, progress=progress)
    if runtime.is_main and not (out / CHECKPOINT).is_file():
        save_image_grid(task.generate(task.fixed_noise), out / "samples" / f"step{0:07d}.png")
    counts = count_gan_parameters(gan)
    if runtime.is_main:
        console.print(
            f"{config.model}: {len(store)} cells, batch {config.batch_size}, {total} steps "
            f"({task.steps_per_epoch()} per epoch), {runtime.world_size} rank(s) on {runtime.device}, "
            f"{runtime.precision}, {threads} CPU threads per rank; G {counts['generator']['trainable']:,} / "
            f"D {counts['discriminator']['trainable']:,} parameters", markup=False,
        )
    settings = LoopSettings(seed=config.seed, max_steps=total, validate_every=0, max_minutes=config.max_minutes,
                            budget_unit="step", checkpoint_every=config.checkpoint_every, log_every=config.log_every)
    result = FitLoop(runtime, settings, out / CHECKPOINT, label=config.model).fit(task)
    done = _summary(runtime, config, result, store, batches, total, threads, counts) if runtime.is_main else None
    if done is not None:
        # done.json is written last: its presence means the checkpoint, samples and curves are complete.
        folder.finish(done)
    runtime.barrier()  # no rank returns (and reads done.json) before it exists
    return done


def _summary(runtime: Runtime, config: GanConfig, result: FitResult, store: CellStore, batches: ChunkShuffledBatches,
             total: int, threads: int, counts: dict[str, Any]) -> dict[str, Any]:
    """``done.json``: what the report, the demo and the CLI read, and how fast the session trained."""
    trained = [row for row in result.steps_log if row["step"] > result.resumed_from]
    return {
        "gan": config.model,
        "steps": result.step,
        "steps_planned": total,
        "steps_this_session": result.step - result.resumed_from,
        "stopped": result.stopped,
        "cells": len(store),
        "cells_path": str(store.path.resolve()),
        "batch_size": config.batch_size,
        "epochs": round(result.step * config.critic_steps / batches.batches_per_epoch, 3),
        "seconds_this_session": round(result.seconds, 2),
        "seconds_per_step": round(float(np.mean([r["seconds_per_step"] for r in trained])), 4) if trained else None,
        "samples_per_s": round(result.samples_per_s, 2) if result.samples_per_s else None,
        "data_wait_fraction": (round(result.data_wait_fraction, 4) if result.data_wait_fraction is not None
                               else None),
        "device": str(runtime.device),
        "precision": runtime.precision,
        "world_size": runtime.world_size,
        "threads": threads,
        "parameters": counts,
        "last": result.steps_log[-1] if result.steps_log else None,
    }


def _start_folder(runtime: Runtime, folder: RunFolder, config: GanConfig, store: CellStore) -> None:
    """Rank 0 checks the resume rule and writes the run folder; every rank fails alike if it refuses."""
    refusal = None
    if runtime.is_main:
        try:
            folder.start(config, data_fingerprint=store_fingerprint(store), runtime=runtime.describe(),
                         extra={"cells": str(store.path.resolve()), "n_cells": len(store)})
        except CytolensError as exc:
            refusal = exc
    message = runtime.broadcast(str(refusal) if refusal is not None else None)
    if refusal is not None:
        raise refusal
    if message is not None:
        raise CytolensError(message)
