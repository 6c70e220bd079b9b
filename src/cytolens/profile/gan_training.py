"""``cytolens profile train``: train a CytoGAN GAN on a cell store into a run folder that resumes.

A run folder holds::

    RUN/config.yaml               the resolved config
    RUN/data_fingerprint.txt      which cell store it trains on (a resumed run must use the same)
    RUN/checkpoints/last.pt       step, generator, discriminator and both optimisers (tensors only)
    RUN/samples/step0001000.png   generated cells from a fixed set of noise vectors, every ``sample_every`` steps
    RUN/losses.csv                losses, mean discriminator outputs and seconds per step, every ``log_every``
    RUN/figures/loss_curves.png   the same as curves, redrawn at every checkpoint
    RUN/done.json                 summary, written when the planned steps are done (or time ran out)

Every step's randomness (noise, instance noise, soft labels, the penalty's mixing weights) is seeded from
``(seed, step)`` and every batch from ``(seed, epoch)``, so a run interrupted and resumed from a checkpoint
continues exactly as it would have (on the same machine and library versions).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from cytolens.atomic import write_text_atomic
from cytolens.config import save_config
from cytolens.console import console
from cytolens.errors import CytolensError, OptionError
from cytolens.profile.cell_store import INDEX_NAME, CellStore
from cytolens.profile.gan import GAN, count_gan_parameters, gan_from_config, images_to_tensor, tensor_to_images
from cytolens.profile.gan_batches import ChunkShuffledBatches
from cytolens.profile.gan_config import SCHEDULE_KEYS, GanConfig
from cytolens.profile.gan_figures import plot_gan_losses, save_image_grid
from cytolens.profile.gan_losses import discriminator_loss, generator_loss, gradient_penalty
from cytolens.run_folder import check_same_data
from cytolens.training import load_checkpoint, save_checkpoint, seed_everything, select_device

__all__ = ["GanTrainer", "check_resumable", "configure_cpu_threads", "store_fingerprint", "train"]

CHECKPOINT = Path("checkpoints") / "last.pt"


class GanTrainer:
    """One training step of a GAN: ``critic_steps`` discriminator updates, then one generator update.

    Parameters
    ----------
    gan : GAN
        The networks (moved to ``device``).
    config : GanConfig
        Losses and optimiser settings.
    device : torch.device
    """

    def __init__(self, gan: GAN, config: GanConfig, device: torch.device) -> None:
        # oneDNN's convolutions run 25-45% faster on channels-last tensors on the CPU (measured at batch 16).
        self.memory_format = torch.channels_last if device.type == "cpu" else torch.contiguous_format
        self.gan = gan.to(device).to(memory_format=self.memory_format).train()
        self.config = config
        self.device = device
        recipe = config.recipe()
        betas = tuple(recipe["betas"])  # type: ignore[arg-type]
        self.opt_d = torch.optim.Adam(gan.discriminator.parameters(), lr=float(recipe["lr_discriminator"]), betas=betas)
        self.opt_g = torch.optim.Adam(gan.generator.parameters(), lr=float(recipe["lr_generator"]), betas=betas)

    def noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.gan.noise_size, device=self.device)

    def step(self, real_batches: list[torch.Tensor]) -> dict[str, float]:
        """Update D once per real batch (images in [-1, 1], NCHW), then G once; return the step's numbers.

        The generator's update scores the batch generated for the last discriminator update again, with the
        updated discriminator (as PyTorch's DCGAN example does): one generator forward pass per step instead of
        two, about 15% of a CPU step; CytoGAN's code drew fresh noise for it.
        """
        g, d, config = self.gan.generator, self.gan.discriminator, self.config
        record: dict[str, float] = {}
        fake = torch.empty(0)
        for i, real in enumerate(real_batches):
            real = real.contiguous(memory_format=self.memory_format)
            if i == len(real_batches) - 1:
                fake = g(self.noise(len(real)))
            else:
                with torch.no_grad():
                    fake = g(self.noise(len(real)))
            scores = d(torch.cat([fake.detach(), real]))
            fake_out, real_out = scores[: len(real)], scores[len(real) :]
            penalty = None
            if self.gan.loss == "wgan-gp":
                def penalty(real: torch.Tensor = real, fake: torch.Tensor = fake) -> torch.Tensor:
                    return gradient_penalty(d, real, fake, interpolation=config.gp_interpolation)
            loss_d, parts = discriminator_loss(
                self.gan.loss, real_out, fake_out, real_label_range=config.real_label_range, penalty=penalty,
                penalty_weight=config.gradient_penalty,
            )
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
            record = {"d_loss": float(loss_d.detach()), **parts}
        # D's parameters get gradients here too, but only opt_g steps (and opt_d zeroes them before its next step).
        loss_g = generator_loss(self.gan.loss, d(fake))
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        record["g_loss"] = float(loss_g.detach())
        return record

    def state(self, step: int) -> dict:
        """Everything a resumed run needs, tensors on the CPU."""
        def cpu(state: dict) -> dict:
            return {k: v.detach().cpu().contiguous() for k, v in state.items()}

        return {
            "step": int(step),
            "generator": cpu(self.gan.generator.state_dict()),
            "discriminator": cpu(self.gan.discriminator.state_dict()),
            "optimizer_generator": self.opt_g.state_dict(),
            "optimizer_discriminator": self.opt_d.state_dict(),
        }

    def load_state(self, state: dict) -> int:
        """Restore :meth:`state`; return its step."""
        self.gan.generator.load_state_dict(state["generator"])
        self.gan.discriminator.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["optimizer_generator"])
        self.opt_d.load_state_dict(state["optimizer_discriminator"])
        return int(state["step"])

    @torch.no_grad()
    def generate(self, z: torch.Tensor) -> np.ndarray:
        """Images (n, S, S, 3) in [0, 1] from noise ``z``, BatchNorm in inference mode (as CytoGAN sampled)."""
        g = self.gan.generator
        g.eval()
        try:
            return tensor_to_images(g(z.to(self.device)))
        finally:
            g.train()


def configure_cpu_threads(num_threads: int | None) -> int:
    """Set torch's CPU threads: ``num_threads``, else ``OMP_NUM_THREADS`` if set, else the CPUs this process may use.

    torch's own default counts the machine's cores, not the ones a container or ``taskset`` grants.
    """
    if num_threads is None and not os.environ.get("OMP_NUM_THREADS"):
        num_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if num_threads is not None:
        torch.set_num_threads(max(1, int(num_threads)))
    return torch.get_num_threads()


def store_fingerprint(store: CellStore) -> str:
    """A hash of the store's index and size: a run resumes only on the same cells."""
    digest = hashlib.sha1((store.path / INDEX_NAME).read_bytes()).hexdigest()
    return f"cells={len(store)} crop={store.crop_size} index_sha1={digest}"


def check_resumable(out: Path, config: GanConfig) -> None:
    """Refuse to resume a run folder whose config differs from ``config`` in anything but the schedule.

    The schedule (:data:`~cytolens.profile.gan_config.SCHEDULE_KEYS`: steps, epochs, cadences, threads) may
    change, so ``--steps 2000`` continues a run that stopped at 1000.
    """
    saved = Path(out) / "config.yaml"
    if not saved.is_file():
        return
    old = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
    new = config.model_dump(mode="json")
    differing = sorted(k for k in set(old) | set(new) if k not in SCHEDULE_KEYS and old.get(k) != new.get(k))
    if differing:
        raise CytolensError(
            f"run folder holds a run with a different config ({', '.join(differing)}); choose a new --out or "
            "delete the folder", path=out,
        )


def _step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7_919) % (2**63 - 1)


def _summary(history: list[dict]) -> dict[str, float]:
    frame = pd.DataFrame(history)
    return {k: float(v) for k, v in frame.mean(numeric_only=True).items()}


def train(
    cells: str | Path,
    config: GanConfig,
    out: str | Path,
    *,
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
        Run folder; resumed from ``checkpoints/last.pt`` when it holds a run with the same config (up to the
        schedule) and the same cells.
    progress : callable, optional
        Called with the number of steps done after each step.

    Returns
    -------
    Path
        The run folder.
    """
    started = time.perf_counter()
    store = CellStore(cells)
    seed_everything(config.seed)  # the initial weights; a resumed run replaces them from its checkpoint
    gan = gan_from_config(config)
    size = gan.discriminator.image_size
    if store.crop_size != size:
        raise OptionError(f"the cell store holds {store.crop_size}px crops but the {config.gan} model needs {size}px")
    out = Path(out)
    check_resumable(out, config)
    threads = configure_cpu_threads(config.num_threads)
    device = select_device()
    batches = ChunkShuffledBatches(store, batch_size=config.batch_size, seed=config.seed,
                                   buffer_cells=config.shuffle_buffer)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    check_same_data(out, store_fingerprint(store))
    (out / "done.json").unlink(missing_ok=True)  # a continued run is not done until it finishes again

    trainer = GanTrainer(gan, config, device)
    step = trainer.load_state(load_checkpoint(out / CHECKPOINT)) if (out / CHECKPOINT).is_file() else 0
    total = config.total_steps(len(store))
    history = _read_history(out, step)
    fixed_noise = torch.randn(config.sample_count, gan.noise_size,
                              generator=torch.Generator().manual_seed(config.seed + 1))
    if step == 0:
        save_image_grid(trainer.generate(fixed_noise), out / "samples" / f"step{0:07d}.png")
    counts = count_gan_parameters(gan)
    console.print(
        f"{config.gan}: {len(store)} cells, batch {config.batch_size}, steps {step} -> {total} "
        f"({batches.batches_per_epoch} batches per epoch), device {device}, {threads} CPU threads; "
        f"G {counts['generator']['trainable']:,} / D {counts['discriminator']['trainable']:,} parameters",
        markup=False,
    )
    window: list[dict] = []
    stopped = "steps"
    first_step = step
    saved = completed = step
    try:
        while step < total:
            step += 1
            step_started = time.perf_counter()
            torch.manual_seed(_step_seed(config.seed, step))
            indices = [(step - 1) * config.critic_steps + k for k in range(config.critic_steps)]
            real = [images_to_tensor(batches.batch(i), device) for i in indices]
            data_seconds = time.perf_counter() - step_started
            record = trainer.step(real)
            record.update(seconds_per_step=time.perf_counter() - step_started, data_seconds=data_seconds)
            completed = step  # the networks and optimisers now hold exactly `step` updates
            window.append(record)
            out_of_time = config.max_minutes is not None and time.perf_counter() - started > 60 * config.max_minutes
            last = step == total or out_of_time
            if step % config.log_every == 0 or last:
                row = {"step": step, "epoch": batches.epoch_of(indices[-1]) + 1, **_summary(window)}
                history.append(row)
                window = []
                console.print(
                    f"step {step}/{total} epoch {row['epoch']}: D {row['d_loss']:.4f} G {row['g_loss']:.4f} "
                    f"D(real) {row['d_real']:.3f} D(fake) {row['d_fake']:.3f}, {row['seconds_per_step']:.2f} s/step",
                    markup=False,
                )
            if step % config.sample_every == 0 or last:
                save_image_grid(trainer.generate(fixed_noise), out / "samples" / f"step{step:07d}.png")
            if step % config.checkpoint_every == 0 or last:
                save_checkpoint(trainer.state(step), out / CHECKPOINT)
                _write_history(out, history, config)
                saved = step
            if progress is not None:
                progress(1)
            if out_of_time and step < total:
                stopped = "max_minutes"
                break
    except KeyboardInterrupt:
        # Ctrl-C keeps the steps done since the last checkpoint, unless it fell inside an update (which leaves the
        # weights half-updated): then the last checkpoint stands.
        if completed == step > saved:
            save_checkpoint(trainer.state(step), out / CHECKPOINT)
            _write_history(out, history, config)
            console.print(f"interrupted: checkpoint at step {step} saved in {out}", markup=False)
        raise
    seconds = time.perf_counter() - started
    trained = [row for row in history if row["step"] > first_step]
    done = {
        "gan": config.gan,
        "steps": step,
        "steps_planned": total,
        "steps_this_session": step - first_step,
        "stopped": stopped,
        "cells": len(store),
        "cells_path": str(Path(cells).resolve()),
        "batch_size": config.batch_size,
        "epochs": round(step * config.critic_steps / batches.batches_per_epoch, 3),
        "seconds_this_session": round(seconds, 2),
        "seconds_per_step": round(float(np.mean([r["seconds_per_step"] for r in trained])), 4) if trained else None,
        "device": str(device),
        "threads": threads,
        "parameters": counts,
        "last": history[-1] if history else None,
    }
    # done.json is written last: its presence means the checkpoint, samples and curves are complete.
    write_text_atomic(out / "done.json", json.dumps(done, indent=2) + "\n")
    return out


def _read_history(out: Path, step: int) -> list[dict]:
    path = out / "losses.csv"
    if not path.is_file() or step == 0:
        return []
    frame = pd.read_csv(path)
    # Rows logged after the checkpoint a run resumes from are recomputed, not kept twice.
    return frame[frame["step"] <= step].to_dict("records")


def _write_history(out: Path, history: list[dict], config: GanConfig) -> None:
    if not history:
        return
    frame = pd.DataFrame(history)
    write_text_atomic(out / "losses.csv", frame.to_csv(index=False))
    plot_gan_losses(frame, out / "figures" / "loss_curves.png", title=f"{config.name} ({config.gan})")
