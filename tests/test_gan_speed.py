"""The GAN step's speed rewrites equal their references: the sub-pixel upsampling convolution, fused Adam, and a
bf16-mixed training step against a 32-true one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cytolens.engine import EngineOptions, Position, launch
from cytolens.profile.gan.config import GanConfig
from cytolens.profile.gan.models import Generator, gaussian_like, UpsampleConv2d, gan_from_config
from cytolens.engine.optimizers import create_optimizer
from cytolens.profile.gan.training import GanTask

SMALL = {"generator_filters": [8, 4, 4, 4], "discriminator_filters": [4, 4, 4, 8]}


@pytest.mark.parametrize("kernel", [3, 5, 7])
def test_upsample_conv_equals_nearest_upsampling_then_the_convolution(kernel: int) -> None:
    torch.manual_seed(0)
    layer = UpsampleConv2d(5, 3, kernel).double()
    reference = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                              nn.Conv2d(5, 3, kernel, padding=kernel // 2)).double()
    reference[1].load_state_dict(layer.state_dict())
    x = torch.randn(2, 5, 6, 7, dtype=torch.double, requires_grad=True)
    out = layer(x)
    torch.testing.assert_close(out, reference(x))
    grads = torch.autograd.grad(out.square().sum(), (x, layer.weight, layer.bias))
    expected = torch.autograd.grad(reference(x).square().sum(), (x, reference[1].weight, reference[1].bias))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)


def test_generator_checkpoints_keep_the_reference_layer_names() -> None:
    # The layer names of the [Upsample, Conv2d, BatchNorm, LeakyReLU] blocks: older checkpoints load unchanged.
    names = set(Generator(filters=(8, 4, 4)).state_dict())
    assert {"blocks.1.weight", "blocks.1.bias", "blocks.2.running_mean", "blocks.5.weight"} <= names
    assert not any(name.startswith("blocks.0.") for name in names)


def test_fused_adam_takes_the_reference_steps() -> None:
    torch.manual_seed(0)
    fused, plain = nn.Linear(6, 3), nn.Linear(6, 3)
    plain.load_state_dict(fused.state_dict())
    opt_fused = create_optimizer(fused.parameters(), "adam", lr=1e-2, betas=(0.5, 0.999))
    opt_plain = torch.optim.Adam(plain.parameters(), lr=1e-2, betas=(0.5, 0.999), foreach=False)
    assert opt_fused.param_groups[0]["fused"]
    for _ in range(4):
        x = torch.randn(5, 6)
        for model, optimizer in ((fused, opt_fused), (plain, opt_plain)):
            optimizer.zero_grad()
            model(x).square().sum().backward()
            optimizer.step()
    torch.testing.assert_close(fused.weight, plain.weight)


class _FixedBatches:
    """One fixed uint8 batch for every index (the step's arithmetic does not depend on the store)."""

    def __init__(self, batch: int) -> None:
        self.batch_size, self.batches_per_epoch = batch, 100
        self.crops = np.random.default_rng(0).integers(0, 256, (batch, 96, 96, 3), dtype=np.uint8)

    def batch(self, index: int) -> np.ndarray:
        return self.crops


def _two_steps(runtime, config: GanConfig) -> list[dict[str, float]]:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    task = GanTask(runtime, gan_from_config(config), config, _FixedBatches(config.batch_size), Path("."))
    rows = []
    for step in (1, 2):
        torch.manual_seed(step)  # instance noise and soft labels, as the loop seeds each step
        record = task.train_step(Position(1, step - 1, step))
        rows.append({k: float(v) for k, v in record.items() if k in ("d_loss", "g_loss", "gradient_penalty")})
    return rows


@pytest.mark.parametrize("name", ["lsgan", "wgan-gp"])
def test_bf16_mixed_and_32_true_steps_give_the_same_losses(name: str) -> None:
    config = GanConfig.model_validate({"model": name, "model_options": SMALL, "batch_size": 4, "steps": 2,
                                       "num_threads": 1})
    rows = {p: launch(_two_steps, EngineOptions(accelerator="cpu", precision=p), config)
            for p in ("32-true", "bf16-mixed")}
    for fp32, bf16 in zip(rows["32-true"], rows["bf16-mixed"], strict=True):
        assert fp32.keys() == bf16.keys()
        for key in fp32:
            # bf16 keeps 8 bits of mantissa: a few per mille per layer on these tiny networks.
            assert bf16[key] == pytest.approx(fp32[key], rel=0.05, abs=0.02), key


def test_the_penalty_differentiates_the_bf16_critic_twice() -> None:
    # The WGAN-GP penalty's weight gradient through the bf16 critic matches the fp32 one.
    torch.manual_seed(0)
    config = GanConfig.model_validate({"model": "wgan-gp", "model_options": SMALL})
    critic = gan_from_config(config).discriminator.to(memory_format=torch.channels_last)
    critic.instance_noise = 0.0
    x = torch.rand(3, 3, 96, 96).contiguous(memory_format=torch.channels_last) * 2 - 1

    def penalty_grad(bf16: bool) -> torch.Tensor:
        mix = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            scores = critic(mix)
        (grads,) = torch.autograd.grad(scores.float().sum(), mix, create_graph=True)
        penalty = ((grads.float().flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()
        return torch.autograd.grad(penalty, critic.convs[0].weight)[0]

    fp32, bf16 = penalty_grad(False), penalty_grad(True)
    assert float(F.cosine_similarity(fp32.flatten(), bf16.flatten(), dim=0)) > 0.99


@pytest.mark.parametrize("channels_last", [False, True])
def test_instance_noise_keeps_the_layout_and_is_standard_normal(channels_last: bool) -> None:
    torch.manual_seed(0)
    x = torch.zeros(4, 3, 40, 40)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    noise = gaussian_like(x)
    assert noise.shape == x.shape and noise.dtype == x.dtype
    assert noise.stride() == x.stride()  # no layout conversion downstream
    assert abs(float(noise.mean())) < 0.03 and float(noise.std()) == pytest.approx(1.0, abs=0.03)
    # Independent across channels too (a wrong view would repeat values along one axis).
    flat = noise.permute(1, 0, 2, 3).reshape(3, -1)
    assert float(torch.corrcoef(flat).fill_diagonal_(0).abs().max()) < 0.03


def test_the_generator_runs_channels_last_when_set_up_so() -> None:
    # Every convolution of a channels-last generator gets a channels-last input (the reshaped Dense output is
    # NCHW, which would make each layer convert its input or run NCHW) and the images equal the NCHW model's.
    torch.manual_seed(0)
    generator = Generator(filters=(8, 4, 4), base_size=3).eval()
    z = torch.randn(2, generator.noise_size)
    expected = generator(z)
    generator = generator.to(memory_format=torch.channels_last)
    layouts: list[bool] = []
    for module in generator.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_pre_hook(
                lambda _m, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    out = generator(z)
    assert layouts and all(layouts)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
