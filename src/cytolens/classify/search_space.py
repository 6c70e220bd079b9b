"""The topology search space of Shpilman et al. 2017 (section IV).

The authors chose their network by cross-validation over 1-5 convolutional layers of 8-256 filters with
2×2-5×5 kernels, max pooling on or off, 1-4 dense layers of 16-512 units and inputs of 100×100-300×300 pixels.
A :class:`Topology` is one point of that space and builds with ``create_model("convnet", ...)``; a
:class:`SearchSpace` samples them reproducibly from a ``numpy.random.Generator``. The search loop (which
cross-validates each sample) lives with the training protocol, not here.

>>> from cytolens.classify import create_model
>>> space = SearchSpace()
>>> topology = space.sample(np.random.default_rng(0))
>>> model = create_model("convnet", num_classes=3, **topology.to_model_options())
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from cytolens.classify.models import CONVNET_LIMITS, convnet_feature_sizes
from cytolens.core.errors import OptionError, check_choice

__all__ = ["SearchSpace", "Topology", "estimate_cost", "estimate_parameters", "paper_topology"]


@dataclass(frozen=True)
class Topology:
    """One network of the ``convnet`` family.

    Parameters
    ----------
    conv_filters : tuple of int
        Filters per convolution.
    kernel_sizes : tuple of int
        Kernel side per convolution.
    pooling : bool
        2×2/2 max pooling after every convolution.
    dense_units : tuple of int
        Units per hidden dense layer.
    dropout : float
        Dropout rate after each hidden dense layer.
    input_size : int
        Side of the square input in pixels.
    """

    conv_filters: tuple[int, ...]
    kernel_sizes: tuple[int, ...]
    pooling: bool
    dense_units: tuple[int, ...]
    dropout: float
    input_size: int

    def __post_init__(self) -> None:
        # Lists from YAML become tuples so topologies stay hashable and comparable.
        for name in ("conv_filters", "kernel_sizes", "dense_units"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))

    def to_model_options(self) -> dict[str, Any]:
        """Keyword arguments for ``create_model("convnet", num_classes=..., **options)`` (includes input_size)."""
        return {
            "conv_filters": list(self.conv_filters), "kernel_sizes": list(self.kernel_sizes), "pooling": self.pooling,
            "dense_units": list(self.dense_units), "dropout": self.dropout, "input_size": self.input_size,
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (lists, not tuples), ready for ``yaml.safe_dump``."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Topology:
        """Inverse of :meth:`to_dict`; unknown or missing keys are an :class:`OptionError`."""
        names = list(cls.__dataclass_fields__)
        for key in data:
            check_choice("topology key", key, names)
        missing = [name for name in names if name not in data]
        if missing:
            raise OptionError(f"topology is missing {', '.join(missing)}")
        return cls(**data)

    def describe(self) -> str:
        """Short label, e.g. ``conv16k2-conv64k3-pool/fc32-fc32@300`` ("-pool": pooling after every conv)."""
        convs = "-".join(f"conv{f}k{k}" for f, k in zip(self.conv_filters, self.kernel_sizes))
        dense = "-".join(f"fc{units}" for units in self.dense_units)
        return f"{convs}{'-pool' if self.pooling else ''}/{dense}@{self.input_size}"


def paper_topology() -> Topology:
    """The network Shpilman et al. 2017 published (section IV, Fig. 4)."""
    return Topology(conv_filters=(16, 64), kernel_sizes=(2, 3), pooling=True, dense_units=(32, 32), dropout=0.5,
                    input_size=300)


def _layer_sizes(topology: Topology) -> list[int]:
    return convnet_feature_sizes(topology.input_size, topology.kernel_sizes, topology.pooling)


def estimate_parameters(topology: Topology, *, num_classes: int = 3, in_chans: int = 1) -> int:
    """Trainable parameters of the built ``convnet`` (exact, without building it)."""
    sizes = _layer_sizes(topology)
    if min(sizes) <= 0:
        return 0
    count, channels = 0, in_chans
    for filters, kernel in zip(topology.conv_filters, topology.kernel_sizes):
        count += filters * channels * kernel * kernel + filters
        channels = filters
    width = channels * sizes[-1] ** 2
    for units in (*topology.dense_units, num_classes):
        count += width * units + units
        width = units
    return count


def estimate_cost(topology: Topology, *, num_classes: int = 3, in_chans: int = 1) -> float:
    """Approximate forward MFLOPs for one image (a multiply-add counts as 2 FLOPs; ReLU and pooling ignored).

    Parameters
    ----------
    topology : Topology
        The network.
    num_classes, in_chans : int, optional
        Output logits and input channels.

    Returns
    -------
    float
        Millions of floating-point operations; ``inf`` when the feature map vanishes.
    """
    side, channels, macs = topology.input_size, in_chans, 0
    for filters, kernel in zip(topology.conv_filters, topology.kernel_sizes):
        side = side - kernel + 1
        if side <= 0:
            return math.inf
        macs += side * side * filters * channels * kernel * kernel
        if topology.pooling:
            side //= 2
            if side <= 0:
                return math.inf
        channels = filters
    width = channels * side * side
    for units in (*topology.dense_units, num_classes):
        macs += width * units
        width = units
    return 2.0 * macs / 1e6


def _check_range(name: str, value: Any, limits: tuple[int, int]) -> None:
    ok = isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if not ok or not limits[0] <= value[0] <= value[1] <= limits[1]:
        raise OptionError(f"`{name}` must be a (low, high) pair of integers with {limits[0]} <= low <= high <= "
                          f"{limits[1]}, got {value!r}")


@dataclass(frozen=True)
class SearchSpace:
    """Ranges to draw topologies from; the defaults are the paper's (section IV).

    Parameters
    ----------
    conv_layers : (int, int)
        Range of the number of convolutions (1-5).
    conv_filters : (int, int)
        Range of filters per convolution (8-256).
    filter_sampling : {'pow2', 'log_uniform'}
        Draw filter counts from the powers of two within range, or log-uniformly over all integers in range.
    kernel_sizes : (int, int)
        Range of kernel sides (2-5).
    pooling : tuple of bool
        Pooling choices; ``(True, False)`` explores both.
    dense_layers : (int, int)
        Range of hidden dense layers (1-4).
    dense_units : (int, int)
        Range of units per dense layer (16-512), drawn like the filters.
    input_sizes : tuple of int
        Input sides to choose from (the paper varied 100×100-300×300).
    dropout : tuple of float
        Dropout rates to choose from (the paper kept 0.5).
    max_parameters : int or None
        Reject topologies with more trainable parameters (at 3 classes). Without pooling, a 300-pixel input gives
        billions of dense weights, which no machine trains; the default keeps what fits in a few GB with Adam.
    """

    conv_layers: tuple[int, int] = CONVNET_LIMITS["conv_layers"]
    conv_filters: tuple[int, int] = CONVNET_LIMITS["conv_filters"]
    filter_sampling: Literal["pow2", "log_uniform"] = "pow2"
    kernel_sizes: tuple[int, int] = CONVNET_LIMITS["kernel_sizes"]
    pooling: tuple[bool, ...] = (True, False)
    dense_layers: tuple[int, int] = CONVNET_LIMITS["dense_layers"]
    dense_units: tuple[int, int] = CONVNET_LIMITS["dense_units"]
    input_sizes: tuple[int, ...] = (100, 150, 200, 250, 300)
    dropout: tuple[float, ...] = (0.5,)
    max_parameters: int | None = 50_000_000

    def __post_init__(self) -> None:
        for name in ("conv_layers", "conv_filters", "kernel_sizes", "dense_layers", "dense_units"):
            _check_range(name, getattr(self, name), CONVNET_LIMITS[name])
        check_choice("filter_sampling", self.filter_sampling, ["pow2", "log_uniform"])
        if not self.pooling or any(not isinstance(p, bool) for p in self.pooling):
            raise OptionError(f"`pooling` must be a non-empty tuple of True/False, got {self.pooling!r}")
        if not self.input_sizes or any(isinstance(s, bool) or not isinstance(s, int) or s < 8 for s in self.input_sizes):
            raise OptionError(f"`input_sizes` must be a non-empty tuple of integers >= 8, got {self.input_sizes!r}")
        if not self.dropout or any(isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 <= d < 1
                                   for d in self.dropout):
            raise OptionError(f"`dropout` must be a non-empty tuple of rates in [0, 1), got {self.dropout!r}")
        if self.max_parameters is not None and (not isinstance(self.max_parameters, int) or self.max_parameters < 1):
            raise OptionError(f"`max_parameters` must be a positive integer or None, got {self.max_parameters!r}")
        for name in ("conv_filters", "dense_units"):
            self._width_choices(name)  # fails early on a range without powers of two

    def _width_choices(self, name: str) -> np.ndarray:
        low, high = getattr(self, name)
        powers = [2**e for e in range(0, 11) if low <= 2**e <= high]
        if not powers and self.filter_sampling == "pow2":
            raise OptionError(f"`{name}` range {getattr(self, name)!r} holds no power of two; "
                              "use filter_sampling='log_uniform'")
        return np.array(powers)

    def _draw_width(self, rng: np.random.Generator, name: str) -> int:
        if self.filter_sampling == "pow2":
            return int(rng.choice(self._width_choices(name)))
        low, high = getattr(self, name)
        # Log-uniform so 8-16 is as likely as 128-256, as with powers of two; floor of exp lands in [low, high].
        return int(min(high, math.floor(math.exp(rng.uniform(math.log(low), math.log(high + 1))))))

    def contains(self, topology: Topology) -> bool:
        """Whether ``topology`` lies in this space and builds (feature map and parameter budget)."""
        in_range = (
            self.conv_layers[0] <= len(topology.conv_filters) <= self.conv_layers[1]
            and len(topology.kernel_sizes) == len(topology.conv_filters)
            and all(self.conv_filters[0] <= f <= self.conv_filters[1] for f in topology.conv_filters)
            and all(self.kernel_sizes[0] <= k <= self.kernel_sizes[1] for k in topology.kernel_sizes)
            and topology.pooling in self.pooling
            and self.dense_layers[0] <= len(topology.dense_units) <= self.dense_layers[1]
            and all(self.dense_units[0] <= u <= self.dense_units[1] for u in topology.dense_units)
            and topology.input_size in self.input_sizes
            and topology.dropout in self.dropout
        )
        if not in_range or min(_layer_sizes(topology)) <= 0:
            return False
        return self.max_parameters is None or estimate_parameters(topology) <= self.max_parameters

    def sample(self, rng: np.random.Generator, *, max_mflops: float | None = None, max_attempts: int = 10_000) -> Topology:
        """Draw one valid topology, rejecting those whose feature map vanishes or that exceed a budget.

        Parameters
        ----------
        rng : numpy.random.Generator
            Source of randomness; the same seed gives the same sequence of topologies.
        max_mflops : float, optional
            Reject topologies whose :func:`estimate_cost` exceeds this many MFLOPs per image.
        max_attempts : int, optional
            Give up (OptionError) after this many rejected draws, when the budget cannot be met.

        Returns
        -------
        Topology
        """
        if not isinstance(rng, np.random.Generator):
            raise OptionError(f"`rng` must be a numpy.random.Generator (np.random.default_rng(seed)), got {rng!r}")
        for _ in range(max_attempts):
            n_conv = int(rng.integers(self.conv_layers[0], self.conv_layers[1] + 1))
            n_dense = int(rng.integers(self.dense_layers[0], self.dense_layers[1] + 1))
            topology = Topology(
                conv_filters=tuple(self._draw_width(rng, "conv_filters") for _ in range(n_conv)),
                kernel_sizes=tuple(int(k) for k in rng.integers(self.kernel_sizes[0], self.kernel_sizes[1] + 1, n_conv)),
                pooling=bool(self.pooling[int(rng.integers(len(self.pooling)))]),
                dense_units=tuple(self._draw_width(rng, "dense_units") for _ in range(n_dense)),
                dropout=float(self.dropout[int(rng.integers(len(self.dropout)))]),
                input_size=int(self.input_sizes[int(rng.integers(len(self.input_sizes)))]),
            )
            if self.contains(topology) and (max_mflops is None or estimate_cost(topology) <= max_mflops):
                return topology
        raise OptionError(f"no valid topology found in {max_attempts} draws; relax `max_mflops` ({max_mflops}) "
                          f"or `max_parameters` ({self.max_parameters}), or allow larger `input_sizes`")
