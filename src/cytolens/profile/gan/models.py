"""CytoGAN's generator and discriminator (Goldsborough et al. 2017), a registry of the three GANs, and the
discriminator's 100-d layer as a cell feature extractor.

Architecture (``shared/REFERENCE.md``; the authors' public Keras code fills in the rest):

- Generator: z ~ N(0, I), 100-d → Dense 12·12·256 → BatchNorm (over the 36,864 dense units, as Keras'
  BatchNormalization on the flat Dense output) → LeakyReLU(0.2) → reshape to 256×12×12 → three times
  [nearest upsample ×2 → conv 5×5 'same' (128, 64, 32) → BatchNorm → LeakyReLU(0.2)] → conv 5×5 → 3 → tanh.
  BatchNorm as the original ``tf.layers.batch_normalization``: momentum 0.9 (torch ``momentum=0.1``), eps 1e-3.
- Discriminator: Gaussian instance noise σ = 0.1 on the input (training only here; see
  :class:`FeatureExtractor`) → conv 5×5 with 32 (stride 1), 64, 128, 256 (stride 2) filters, each followed by
  LeakyReLU(0.2), no BatchNorm → flatten (12·12·256 = 36,864) → Dense 100, linear: the representation →
  Dense 1. The head's output is a logit for all three GANs; the DCGAN loss applies the sigmoid (the same
  function as the paper's sigmoid + cross-entropy, computed stably).
- Initialisation as Keras: Glorot-uniform kernels, zero biases.

Counted the Keras way (trainable + BatchNorm running statistics) the generator has 4,949,443 parameters and the
discriminator 4,764,681, as in REFERENCE.md; :func:`count_gan_parameters` reports both ways.

``'same'`` padding: for stride-2 convolutions TensorFlow pads 1 pixel top/left and 2 bottom/right; we pad 2 on
every side, which gives the same output size and the same parameters (only the sampling grid shifts by a pixel).

Speed: each generator block's "nearest upsample ×2 → conv 5×5" runs as :class:`UpsampleConv2d`, the same function
computed on the small map (a 3×3 convolution into the four output phases, then a pixel shuffle): 2.8× fewer
multiply-adds, identical parameters and outputs up to rounding. Activations are in place (their inputs, the
outputs of convolutions and BatchNorms, are not needed by those layers' backward passes).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cytolens.core.registry import Registry

__all__ = [
    "GANS", "GAN", "Discriminator", "FeatureExtractor", "Generator", "UpsampleConv2d", "count_gan_parameters",
    "create_model", "list_models",
    "images_to_tensor", "load_feature_extractor", "load_gan", "random_feature_extractor", "tensor_to_images",
]

NOISE_SIZE = 100
LATENT_SIZE = 100


def _keras_init(module: nn.Module) -> None:
    # Keras' defaults: glorot_uniform kernels and zero biases (PyTorch's defaults are Kaiming-uniform).
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def _batch_norm(features: int, dims: int) -> nn.Module:
    # tf.layers.batch_normalization(momentum=0.9) keeps 0.9 of the old statistic; torch's momentum is the new part.
    cls = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
    return cls(features, momentum=0.1, eps=1e-3)


def _phase_taps(kernel_size: int, padding: int) -> torch.Tensor:
    """0/1 matrix (2, taps, kernel_size): which taps of a 'same' kernel on a ×2 nearest-upsampled row land on
    each small-map offset, for the even (0) and odd (1) output phase.

    Output pixel ``2i + p`` of the upsampled convolution reads upsampled pixel ``2i + p + k - padding``, i.e. small
    pixel ``i + floor((p + k - padding) / 2)``; the offsets run from ``-ceil(padding / 2)`` to ``ceil(padding / 2)``.
    """
    reach = -(-padding // 2)
    taps = torch.zeros(2, 2 * reach + 1, kernel_size)
    for phase in range(2):
        for k in range(kernel_size):
            taps[phase, (phase + k - padding) // 2 + reach, k] = 1.0
    return taps


def _is_channels_last(x: torch.Tensor) -> bool:
    """Whether a 4-D tensor is laid out channels-last (and not also plain contiguous, as 1×1 maps are)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class UpsampleConv2d(nn.Conv2d):
    """``conv(upsample_nearest(x, 2))`` with a 'same' odd kernel, computed without the upsampled map.

    A drop-in for ``nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(cin, cout, k, padding=k // 2))``: the
    parameters are that convolution's ``weight`` (cout, cin, k, k) and ``bias``, so Adam updates and checkpoints
    are the reference layer's. Each output phase (row and column parity) of the upsampled convolution is a
    convolution of the small map with the sum of the taps that fall on the same small pixel; the four phase
    kernels (3×3 for k = 5) are built from ``weight`` at every forward and their outputs interleaved by a pixel
    shuffle. For k = 5 that is 36 instead of 100 multiply-adds per output pixel and channel pair.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int
        Odd kernel side of the reference convolution (padding ``kernel_size // 2``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        if kernel_size % 2 != 1:
            raise ValueError(f"`kernel_size` must be odd for 'same' padding, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.register_buffer("taps", _phase_taps(kernel_size, kernel_size // 2), persistent=False)

    def phase_weight(self) -> torch.Tensor:
        """The phase kernels (4·cout, cin, t, t), ordered as :func:`torch.nn.functional.pixel_shuffle` reads them."""
        # Summed in the parameters' precision (fp32) outside autocast; the convolution then casts the result once.
        with torch.autocast(self.weight.device.type, enabled=False):
            weight = torch.einsum("pak,qbl,oikl->opqiab", self.taps, self.taps, self.weight)
        out, _, _, cin, t, _ = weight.shape
        return weight.reshape(out * 4, cin, t, t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.phase_weight()
        if _is_channels_last(self.weight) or _is_channels_last(x):
            weight = weight.contiguous(memory_format=torch.channels_last)
        bias = None if self.bias is None else self.bias.repeat_interleave(4)
        return F.pixel_shuffle(F.conv2d(x, weight, bias, padding=self.taps.shape[1] // 2), 2)


def gaussian_like(x: torch.Tensor) -> torch.Tensor:
    """Standard normal noise of ``x``'s shape, dtype, device and memory format.

    ``torch.randn_like`` of a channels-last tensor fills it element by element through strided indexing, 8x slower
    on the CPU than filling a contiguous block; i.i.d. noise does not care which order it is drawn in, so a 4-D
    channels-last ``x`` gets a contiguous (n, h, w, c) draw viewed as (n, c, h, w).
    """
    if _is_channels_last(x):
        n, c, h, w = x.shape
        return torch.randn(n, h, w, c, dtype=x.dtype, device=x.device).permute(0, 3, 1, 2)
    return torch.randn_like(x)


class Generator(nn.Module):
    """CytoGAN's generator: noise (n, ``noise_size``) → images (n, ``out_chans``, S, S) in [-1, 1].

    Parameters
    ----------
    noise_size : int, default 100
        Size of z.
    base_size : int, default 12
        Side of the first feature map; the image side is ``base_size * 2 ** (len(filters) - 1)`` (96).
    filters : sequence of int, default (256, 128, 64, 32)
        Channels of the first feature map, then of each upsampling block.
    out_chans : int, default 3
        Image channels (R = DNA, G = tubulin, B = actin).
    """

    def __init__(
        self, *, noise_size: int = NOISE_SIZE, base_size: int = 12, filters: Sequence[int] = (256, 128, 64, 32),
        out_chans: int = 3,
    ) -> None:
        super().__init__()
        if len(filters) < 1:
            raise ValueError(f"`filters` needs at least one entry, got {filters!r}")
        self.noise_size = int(noise_size)
        self.base_shape = (int(filters[0]), int(base_size), int(base_size))
        units = int(np.prod(self.base_shape))
        self.project = nn.Sequential(
            nn.Linear(noise_size, units), _batch_norm(units, 1), nn.LeakyReLU(0.2, inplace=True))
        # The layers keep the names they had when each block was [Upsample, Conv2d, BatchNorm, LeakyReLU] (index 0,
        # the parameter-free upsampling, is now inside UpsampleConv2d), so checkpoints load either way.
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        for i, (previous, current) in enumerate(zip(filters[:-1], filters[1:], strict=True)):
            blocks[str(4 * i + 1)] = UpsampleConv2d(previous, current, 5)
            blocks[str(4 * i + 2)] = _batch_norm(current, 2)
            blocks[str(4 * i + 3)] = nn.LeakyReLU(0.2, inplace=True)
        self.blocks = nn.Sequential(blocks)
        self.to_image = nn.Sequential(nn.Conv2d(filters[-1], out_chans, 5, padding=2), nn.Tanh())
        self.image_size = int(base_size) * 2 ** (len(filters) - 1)
        _keras_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(-1, *self.base_shape)
        if _is_channels_last(self.to_image[0].weight):
            # The model was set up channels-last (engine.Runtime does on the CPU): the reshaped Dense output is
            # NCHW, and left so every convolution of the generator would run NCHW or convert its input.
            x = x.contiguous(memory_format=torch.channels_last)
        return self.to_image(self.blocks(x))


class Discriminator(nn.Module):
    """CytoGAN's discriminator; :meth:`features` is the 100-d representation, :meth:`forward` the logit.

    Parameters
    ----------
    in_chans : int, default 3
        Image channels.
    image_size : int, default 96
        Image side; the flattened map is ``(image_size / prod(strides))² · filters[-1]`` units.
    filters, strides : sequence of int
        Conv 5×5 layers, default 32, 64, 128, 256 filters with strides 1, 2, 2, 2.
    latent_size : int, default 100
        Units of the linear representation layer.
    instance_noise : float, default 0.1
        Standard deviation of the Gaussian noise added to inputs in training mode.
    """

    def __init__(
        self, *, in_chans: int = 3, image_size: int = 96, filters: Sequence[int] = (32, 64, 128, 256),
        strides: Sequence[int] = (1, 2, 2, 2), latent_size: int = LATENT_SIZE, instance_noise: float = 0.1,
    ) -> None:
        super().__init__()
        if len(filters) != len(strides):
            raise ValueError(f"`filters` and `strides` must have the same length, got {filters!r} and {strides!r}")
        layers: list[nn.Module] = []
        channels, side = in_chans, int(image_size)
        for width, stride in zip(filters, strides, strict=True):
            layers += [nn.Conv2d(channels, width, 5, stride=stride, padding=2), nn.LeakyReLU(0.2, inplace=True)]
            channels, side = width, -(-side // stride)
        self.convs = nn.Sequential(*layers, nn.Flatten())
        self.latent = nn.Linear(channels * side * side, latent_size)
        self.head = nn.Linear(latent_size, 1)
        self.instance_noise = float(instance_noise)
        self.in_chans, self.image_size, self.latent_size = int(in_chans), int(image_size), int(latent_size)
        _keras_init(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The representation (n, ``latent_size``) of images ``x`` (n, C, S, S) in [-1, 1]."""
        if self.training and self.instance_noise > 0:
            x = x + self.instance_noise * gaussian_like(x)
        return self.latent(self.convs(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logit (n,) that ``x`` is real (the critic's score for WGAN-GP)."""
        return self.head(self.features(x)).squeeze(1)


class GAN(nn.Module):
    """A generator, a discriminator and the name of the loss that trains them."""

    def __init__(self, name: str, loss: str, generator: Generator, discriminator: Discriminator) -> None:
        super().__init__()
        self.name, self.loss = name, loss
        self.generator = generator
        self.discriminator = discriminator

    @property
    def noise_size(self) -> int:
        return self.generator.noise_size


#: The three GANs of CytoGAN, by name; metadata holds the paper's optimiser ``recipe`` (Adam, lr for D and G).
GANS: Registry[GAN] = Registry("gan")


def _build(
    name: str, loss: str, *, noise_size: int, generator_filters: Sequence[int], discriminator_filters: Sequence[int],
    discriminator_strides: Sequence[int], latent_size: int, instance_noise: float, image_size: int, in_chans: int,
) -> GAN:
    levels = len(generator_filters) - 1
    if image_size % (2**levels):
        raise ValueError(f"`image_size` {image_size} is not divisible by 2**{levels} (the generator's upsamplings)")
    generator = Generator(
        noise_size=noise_size, base_size=image_size // 2**levels, filters=generator_filters, out_chans=in_chans
    )
    discriminator = Discriminator(
        in_chans=in_chans, image_size=image_size, filters=discriminator_filters, strides=discriminator_strides,
        latent_size=latent_size, instance_noise=instance_noise,
    )
    return GAN(name, loss, generator, discriminator)


_ARCHITECTURE: dict[str, Any] = {
    "noise_size": NOISE_SIZE, "generator_filters": (256, 128, 64, 32), "discriminator_filters": (32, 64, 128, 256),
    "discriminator_strides": (1, 2, 2, 2), "latent_size": LATENT_SIZE, "instance_noise": 0.1, "image_size": 96,
    "in_chans": 3,
}
_ADAM_BETAS = (0.5, 0.999)  # β1 = 0.5 in the paper's code; β2 is TensorFlow's default.


@GANS.register(recipe={"lr_discriminator": 5e-5, "lr_generator": 1e-5, "betas": _ADAM_BETAS}, paper_nsc=0.51)
def dcgan(
    *, noise_size: int = NOISE_SIZE, generator_filters: Sequence[int] = (256, 128, 64, 32),
    discriminator_filters: Sequence[int] = (32, 64, 128, 256), discriminator_strides: Sequence[int] = (1, 2, 2, 2),
    latent_size: int = LATENT_SIZE, instance_noise: float = 0.1, image_size: int = 96, in_chans: int = 3,
) -> GAN:
    """DCGAN: cross-entropy, real labels softened to U[0.8, 1]; Adam lr D 5e-5, G 1e-5."""
    return _build("dcgan", "dcgan", **locals())


@GANS.register(recipe={"lr_discriminator": 7e-5, "lr_generator": 2e-4, "betas": _ADAM_BETAS}, paper_nsc=0.68)
def lsgan(
    *, noise_size: int = NOISE_SIZE, generator_filters: Sequence[int] = (256, 128, 64, 32),
    discriminator_filters: Sequence[int] = (32, 64, 128, 256), discriminator_strides: Sequence[int] = (1, 2, 2, 2),
    latent_size: int = LATENT_SIZE, instance_noise: float = 0.1, image_size: int = 96, in_chans: int = 3,
) -> GAN:
    """LSGAN: squared error to targets fake 0, real U[0.8, 1], generator 1; Adam lr D 7e-5, G 2e-4."""
    return _build("lsgan", "lsgan", **locals())


@GANS.register("wgan-gp", recipe={"lr_discriminator": 7e-5, "lr_generator": 2e-4, "betas": _ADAM_BETAS},
               paper_nsc=0.56)
def wgan_gp(
    *, noise_size: int = NOISE_SIZE, generator_filters: Sequence[int] = (256, 128, 64, 32),
    discriminator_filters: Sequence[int] = (32, 64, 128, 256), discriminator_strides: Sequence[int] = (1, 2, 2, 2),
    latent_size: int = LATENT_SIZE, instance_noise: float = 0.1, image_size: int = 96, in_chans: int = 3,
) -> GAN:
    """WGAN-GP: critic score difference + λ·(‖∇‖ − 1)² (λ = 10, one critic step); Adam lr D 7e-5, G 2e-4."""
    return _build("wgan-gp", "wgan-gp", **locals())


def list_models() -> list[str]:
    """Return the names of all registered GANs (``dcgan``, ``lsgan``, ``wgan-gp``), sorted."""
    return GANS.names()


def create_model(name: str, /, **options: Any) -> GAN:
    """Build a registered GAN (``dcgan``, ``lsgan``, ``wgan-gp``) with optional architecture options."""
    return GANS.create(name, **options)


def count_gan_parameters(gan: GAN) -> dict[str, dict[str, int]]:
    """Parameters of the generator and the discriminator, PyTorch's way and Keras' way (+ BN statistics)."""
    counts = {}
    for part in ("generator", "discriminator"):
        module = getattr(gan, part)
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        stats = sum(
            m.running_mean.numel() + m.running_var.numel()
            for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
        )
        counts[part] = {"trainable": trainable, "bn_statistics": stats, "keras": trainable + stats}
    return counts


# --- images in and out ---


def images_to_tensor(crops: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """Crops (n, S, S, C) in [0, 1] (float, or uint8 0..255) → tensor (n, C, S, S) in [-1, 1]."""
    array = np.asarray(crops)
    if array.ndim != 4:
        raise ValueError(f"`crops` must have shape (n, S, S, C), got {array.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(array)).to(device)
    tensor = tensor.float() / 255.0 if array.dtype == np.uint8 else tensor.float()
    return (tensor * 2.0 - 1.0).permute(0, 3, 1, 2).contiguous()


def tensor_to_images(images: torch.Tensor) -> np.ndarray:
    """Generator output (n, C, S, S) in [-1, 1] → float32 (n, S, S, C) in [0, 1]."""
    return ((images.detach().float().cpu().permute(0, 2, 3, 1) + 1.0) / 2.0).clamp(0, 1).numpy()


# --- the representation ---


class FeatureExtractor:
    """The discriminator's 100-d linear layer as a function of crops (eval mode: no instance noise).

    Parameters
    ----------
    discriminator : Discriminator
        The network; it is put in eval mode.
    name : str
        Shown in tables and reports.
    batch_size : int, default 256
        Crops per forward pass.
    device : torch.device, optional
        Default: CUDA if present, else the CPU (``CYTOLENS_DEVICE`` overrides); a rank passes its own.

    Calling it with ``crops`` (n, 96, 96, 3) float32 in [0, 1] returns float32 (n, 100).

    CytoGAN's Keras encoder kept the σ = 0.1 instance noise when encoding (its noise layer ignores the learning
    phase); here encoding is noise-free, so a cell's profile is deterministic.
    """

    def __init__(
        self, discriminator: Discriminator, *, name: str, batch_size: int = 256, device: torch.device | None = None,
    ) -> None:
        from cytolens.engine import EngineOptions

        self.device = device or torch.device(EngineOptions().device_type())
        self.discriminator = discriminator.to(self.device).eval()
        self.name = name
        self.batch_size = int(batch_size)

    @property
    def dim(self) -> int:
        return self.discriminator.latent_size

    def __repr__(self) -> str:
        return f"FeatureExtractor(name={self.name!r}, dim={self.dim})"

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        d = self.discriminator
        shape = (d.image_size, d.image_size, d.in_chans)
        array = np.asarray(crops)
        if array.ndim != 4 or tuple(array.shape[1:]) != shape:
            raise ValueError(f"`crops` must have shape (n, {shape[0]}, {shape[1]}, {shape[2]}), got {array.shape}")
        out = np.empty((len(array), self.dim), dtype=np.float32)
        with torch.no_grad():
            for start in range(0, len(array), self.batch_size):
                batch = images_to_tensor(array[start : start + self.batch_size], self.device)
                out[start : start + len(batch)] = d.features(batch).float().cpu().numpy()
        return out


def gan_from_config(config: Any) -> GAN:
    """The untrained GAN a :class:`~cytolens.profile.gan.config.GanConfig` describes."""
    return create_model(config.model, **config.model_options)


def load_gan(run: str | Path) -> tuple[GAN, Any, int]:
    """Load a run folder's GAN from its resume checkpoint; return ``(gan, config, step)`` (eval mode, CPU).

    The checkpoint is the fit loop's: the networks are under ``"task"``, the step under ``"loop"``.

    Raises
    ------
    CytolensError
        If the folder is not a ``profile train`` run or has no checkpoint.
    """
    from cytolens.engine import load_checkpoint, load_run, loading_state_from
    from cytolens.core.errors import CytolensError
    from cytolens.profile.gan.config import GanConfig
    from cytolens.profile.gan.training import CHECKPOINT, KIND

    record = load_run(run, KIND, GanConfig)
    payload = load_checkpoint(Path(run) / CHECKPOINT)
    if "task" not in payload or "loop" not in payload:
        raise CytolensError("not a checkpoint of 'profile train' (no task state)", path=Path(run) / CHECKPOINT)
    gan = gan_from_config(record.config)
    with loading_state_from(Path(run) / CHECKPOINT):
        gan.generator.load_state_dict(payload["task"]["generator"])
        gan.discriminator.load_state_dict(payload["task"]["discriminator"])
    return gan.eval(), record.config, int(payload["loop"]["step"])


def load_feature_extractor(run: str | Path, *, batch_size: int = 256,
                           device: torch.device | None = None) -> FeatureExtractor:
    """The trained discriminator of a ``profile train`` run folder (its last checkpoint) as a feature extractor."""
    gan, config, step = load_gan(run)
    return FeatureExtractor(gan.discriminator, name=f"{config.model} ({Path(run).name}, step {step})",
                            batch_size=batch_size, device=device)


def random_feature_extractor(config_name_or_path: str, seed: int = 0, *, batch_size: int = 256,
                             device: torch.device | None = None) -> FeatureExtractor:
    """The control: the config's discriminator with random initial weights (seeded), never trained."""
    from cytolens.core.config import load_config
    from cytolens.profile.gan.config import GanConfig

    config = load_config(config_name_or_path, GanConfig)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gan = gan_from_config(config)
    return FeatureExtractor(gan.discriminator, name=f"{config.model} random init (seed {seed})", batch_size=batch_size,
                            device=device)
