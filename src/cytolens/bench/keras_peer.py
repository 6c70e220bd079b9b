"""The papers' own stack as a speed peer: the same networks in Keras on TensorFlow, timed like cytolens.

Both reference papers trained in Keras on TensorFlow. This module rebuilds their networks there, layer for layer,
and times a training step on random data of the papers' shapes, so ``cytolens bench`` can report cytolens ÷ Keras
on the same machine in the same run. It imports only the standard library and NumPy at import time; TensorFlow
and Keras are imported when a model is built, so the module (and the test suite) works without the optional
``peer`` extra (``pip install -e .[peer]``), and the module runs in any interpreter that has TensorFlow.

Models
------
``shpilman2017``
    Shpilman et al. 2017 (section IV): 300×300×1 input, Conv2D 16 @2×2 + ReLU, MaxPool 2×2, Conv2D 64 @3×3 + ReLU,
    MaxPool 2×2, Flatten, 2 × (Dense 32 + ReLU + Dropout 0.5), Dense K softmax; Keras' 'valid' padding and
    biases; L2 0.01 on every kernel; Nadam lr 0.002; categorical cross-entropy; batch 32 in the paper.
    10,924,339 parameters at 3 classes, as ``cytolens.classify.models.shpilman2017``.
``unet``
    The MIDL 2019 U-Net as ``cytolens.segment.unet.unet`` builds it for the ``midl2019-unet`` configs: 224×224×1
    input, 3 classes, levels 16-32-64-128 and a 256 bottleneck of two 3×3 'same' convolutions + ReLU each (no
    BatchNorm there), 2×2 max-pools, 2×2 stride-2 transposed convolutions each followed by BatchNorm, concatenation
    skips ``[up, skip]``, a 1×1 softmax head; L2 1e-4 on every convolution kernel (3×3, transposed, head); Adam lr
    1e-3; pixel-wise categorical cross-entropy; batch 3 in the paper. 1,941,811 parameters counted the Keras way.

Optimiser notes: Keras 3 has no ``schedule_decay``; its Nadam fixes the momentum schedule at ``0.96 ** t`` where
Keras 2's ``Nadam(schedule_decay=0.004)`` used ``0.96 ** (0.004 t)``. Both do the same operations per step, so
the timing is unaffected; everything else is left at Keras' defaults (beta_1 0.9, beta_2 0.999, epsilon 1e-7).

Timing is what a Keras user gets from ``model.fit``: ``model.compile`` with its defaults (``jit_compile="auto"``,
which is XLA on CPU) and ``model.train_on_batch``, which runs the same compiled train function ``fit`` does, on
one batch of random data generated once and kept as TensorFlow tensors. Nothing in TensorFlow is tuned by hand.

Command line (one JSON object on stdout with ``--json``)::

    python -m cytolens.bench.keras_peer train shpilman2017 --batch 32 --steps 10 --threads 2 --json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "MODELS", "PEER_HINT", "PRECISIONS", "RESULT_KEYS", "UNET_BOTTLENECK", "UNET_FILTERS", "build_model", "compile_model", "default_threads", "main", "peer_available",
    "train_throughput",
]

#: Peer models: input shape (H, W, C) and classes as the papers (and cytolens' paper configs) use them.
MODELS: dict[str, dict[str, Any]] = {
    "shpilman2017": {"input_shape": (300, 300, 1), "num_classes": 3, "optimizer": "nadam", "lr": 0.002,
                     "l2": 0.01, "paper_batch": 32},
    "unet": {"input_shape": (224, 224, 1), "num_classes": 3, "optimizer": "adam", "lr": 1e-3, "l2": 1e-4,
             "paper_batch": 3},
}

#: Precisions, named as cytolens names them, and the Keras dtype policy each one maps to.
PRECISIONS: dict[str, str] = {"32-true": "float32", "bf16-mixed": "mixed_bfloat16"}

#: The one line printed when TensorFlow is missing.
PEER_HINT = "TensorFlow/Keras is not installed: install the `peer` extra (pip install -e .[peer])"

#: Keys of the JSON object :func:`train_throughput` returns (more may follow in later versions).
RESULT_KEYS: tuple[str, ...] = (
    "framework", "model", "batch_size", "steps", "warmup", "samples_per_s", "seconds_per_step_median",
    "step_seconds", "parameters", "input_shape", "num_classes", "optimizer", "tensorflow", "keras", "threads",
    "precision", "jit_compile", "peak_rss_mb",
)

# U-Net levels as cytolens' midl2019 configs set them (model_options: filters, bottleneck, batch_norm=upsampling).
UNET_FILTERS: tuple[int, ...] = (16, 32, 64, 128)
UNET_BOTTLENECK = 256


def _option_error(message: str) -> ValueError:
    # cytolens' OptionError (a ValueError) when cytolens is importable; a plain ValueError where only TF is.
    try:
        from cytolens.core.errors import OptionError
    except ImportError:
        return ValueError(message)
    return OptionError(message)


def peer_available() -> bool:
    """Whether TensorFlow and Keras can be imported here, without importing them (which takes seconds).

    Returns
    -------
    bool
        True when both ``tensorflow`` and ``keras`` are installed.
    """
    return all(importlib.util.find_spec(name) is not None for name in ("tensorflow", "keras"))


def default_threads() -> int:
    """The number of CPUs this process may run on (its affinity mask), the default thread count.

    Returns
    -------
    int
        At least 1.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity masks on this platform
        return max(1, os.cpu_count() or 1)


def _check_args(model: str, batch: int, steps: int, warmup: int, threads: int | None, precision: str) -> None:
    if model not in MODELS:
        raise _option_error(f"unknown peer model {model!r}; choose one of {', '.join(MODELS)}")
    if precision not in PRECISIONS:
        raise _option_error(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    for name, value, low in (("batch", batch, 1), ("steps", steps, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise _option_error(f"`{name}` must be an integer >= {low}, got {value!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise _option_error(f"`threads` must be a positive integer or None, got {threads!r}")


def _import_keras() -> tuple[Any, Any]:
    if not peer_available():
        raise ImportError(PEER_HINT)
    # The peer is Keras on TensorFlow: a KERAS_BACKEND=torch or jax in the environment would time something else.
    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ start-up chatter off the terminal
    import tensorflow as tf
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(f"keras was already imported with the {keras.backend.backend()!r} backend")
    return tf, keras


def build_model(model: str, *, num_classes: int | None = None, precision: str = "32-true") -> Any:
    """Build a peer network in Keras exactly as the paper did (see the module docstring).

    Parameters
    ----------
    model : {"shpilman2017", "unet"}
        Which network.
    num_classes : int, optional
        Output classes; the paper's 3 when omitted.
    precision : {"32-true", "bf16-mixed"}
        ``bf16-mixed`` builds under Keras' ``mixed_bfloat16`` policy; the softmax stays float32 either way, as the
        Keras mixed-precision guide prescribes.

    Returns
    -------
    keras.Model
        Uncompiled; see :func:`compile_model`.
    """
    _check_args(model, 1, 1, 0, None, precision)
    _, keras = _import_keras()
    from keras import layers, regularizers

    spec = MODELS[model]
    classes = spec["num_classes"] if num_classes is None else num_classes
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 2:
        raise _option_error(f"`num_classes` must be an integer >= 2, got {classes!r}")
    keras.mixed_precision.set_global_policy(PRECISIONS[precision])
    l2 = regularizers.l2(spec["l2"])
    inputs = keras.Input(spec["input_shape"])
    if model == "shpilman2017":
        x = layers.Conv2D(16, 2, activation="relu", kernel_regularizer=l2)(inputs)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Conv2D(64, 3, activation="relu", kernel_regularizer=l2)(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Flatten()(x)
        for _ in range(2):
            x = layers.Dense(32, activation="relu", kernel_regularizer=l2)(x)
            x = layers.Dropout(0.5)(x)
        x = layers.Dense(classes, kernel_regularizer=l2)(x)
    else:
        def double_conv(x: Any, width: int) -> Any:
            for _ in range(2):
                x = layers.Conv2D(width, 3, padding="same", activation="relu", kernel_regularizer=l2)(x)
            return x

        skips = []
        x = inputs
        for width in UNET_FILTERS:
            x = double_conv(x, width)
            skips.append(x)
            x = layers.MaxPooling2D(2)(x)
        x = double_conv(x, UNET_BOTTLENECK)
        for width, skip in zip(reversed(UNET_FILTERS), reversed(skips)):
            up = layers.Conv2DTranspose(width, 2, strides=2, kernel_regularizer=l2)(x)
            up = layers.BatchNormalization()(up)
            x = double_conv(layers.Concatenate()([up, skip]), width)
        x = layers.Conv2D(classes, 1, kernel_regularizer=l2)(x)
    outputs = layers.Activation("softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=model)


def compile_model(network: Any, model: str) -> Any:
    """Compile a peer network with its paper's optimiser and loss, leaving every other Keras default.

    Parameters
    ----------
    network : keras.Model
        From :func:`build_model`.
    model : {"shpilman2017", "unet"}
        Which recipe: Nadam(0.002) for ``shpilman2017``, Adam(1e-3) for ``unet``; categorical cross-entropy
        (pixel-wise for the U-Net) on one-hot targets for both.

    Returns
    -------
    keras.Model
        ``network``, compiled.
    """
    _check_args(model, 1, 1, 0, None, "32-true")
    _, keras = _import_keras()
    spec = MODELS[model]
    optimizer_class = {"nadam": keras.optimizers.Nadam, "adam": keras.optimizers.Adam}[spec["optimizer"]]
    network.compile(optimizer=optimizer_class(learning_rate=spec["lr"]), loss="categorical_crossentropy")
    return network


def _set_threads(tf: Any, threads: int) -> int:
    # TF fixes its thread pools when the runtime starts; a later change raises, so a second call in the same
    # process may only ask for what is already set (0 means "TF's default", i.e. all CPUs).
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError as error:
        current = tf.config.threading.get_intra_op_parallelism_threads() or default_threads()
        if current != threads:
            raise RuntimeError(
                f"TensorFlow already runs {current} threads in this process and cannot switch to {threads}; "
                "time each thread count in its own process"
            ) from error
    return threads


def _peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20, 1)


def train_throughput(model: str, batch: int, steps: int, warmup: int = 3, threads: int | None = None,
                     precision: str = "32-true") -> dict[str, Any]:
    """Time Keras training steps of a peer network on random data of the paper's shapes.

    Parameters
    ----------
    model : {"shpilman2017", "unet"}
        Which network.
    batch : int
        Samples per step.
    steps : int
        Timed steps; the median is reported.
    warmup : int, optional
        Untimed steps first (the first one traces and compiles the train function).
    threads : int, optional
        TensorFlow intra- and inter-op threads; the CPUs this process may use when omitted. TensorFlow fixes
        them once per process.
    precision : {"32-true", "bf16-mixed"}
        Keras dtype policy ``float32`` or ``mixed_bfloat16``.

    Returns
    -------
    dict
        ``framework`` ("keras"), ``model``, ``batch_size``, ``steps``, ``warmup``, ``samples_per_s`` (batch over the
        median step time), ``seconds_per_step_median``, ``step_seconds`` (every timed step), ``parameters``
        (Keras' count, BatchNorm statistics included), ``input_shape``, ``num_classes``, ``optimizer``,
        ``tensorflow`` and ``keras`` (versions), ``threads``, ``precision``, ``jit_compile`` (what Keras resolved
        ``"auto"`` to) and ``peak_rss_mb`` (this process's, TF's own memory included; None off POSIX).

    Raises
    ------
    ImportError
        TensorFlow or Keras is not installed (the message names the ``peer`` extra).
    ValueError
        An argument out of range (cytolens' ``OptionError`` where cytolens is importable).
    """
    _check_args(model, batch, steps, warmup, threads, precision)
    tf, keras = _import_keras()
    threads = _set_threads(tf, default_threads() if threads is None else threads)
    spec = MODELS[model]
    network = compile_model(build_model(model, precision=precision), model)

    # One batch generated once, kept as tensors: the timing is the train step, not NumPy or host copies.
    rng = np.random.default_rng(0)
    height, width, _ = spec["input_shape"]
    images = rng.random((batch, *spec["input_shape"]), dtype=np.float32)
    label_shape = (batch,) if model == "shpilman2017" else (batch, height, width)
    labels = rng.integers(0, spec["num_classes"], size=label_shape)
    targets = np.eye(spec["num_classes"], dtype=np.float32)[labels]
    images, targets = tf.constant(images), tf.constant(targets)

    for _ in range(warmup):
        network.train_on_batch(images, targets)
    step_seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        network.train_on_batch(images, targets)  # returns the loss as a NumPy value, so the step has finished
        step_seconds.append(time.perf_counter() - start)
    median = statistics.median(step_seconds)
    return {
        "framework": "keras",
        "model": model,
        "batch_size": batch,
        "steps": steps,
        "warmup": warmup,
        "samples_per_s": batch / median,
        "seconds_per_step_median": median,
        "step_seconds": step_seconds,
        "parameters": int(network.count_params()),
        "input_shape": list(spec["input_shape"]),
        "num_classes": spec["num_classes"],
        "optimizer": f"{spec['optimizer']}(lr={spec['lr']})",
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "threads": threads,
        "precision": precision,
        "jit_compile": bool(network.jit_compile),
        "peak_rss_mb": _peak_rss_mb(),
    }


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (``train MODEL --batch B --steps N [...] [--json]``).

    Returns
    -------
    argparse.ArgumentParser
    """
    parser = argparse.ArgumentParser(
        prog="python -m cytolens.bench.keras_peer",
        description="Time the papers' networks training in Keras on TensorFlow (the `peer` extra).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="time training steps of one network")
    train.add_argument("model", choices=sorted(MODELS))
    train.add_argument("--batch", type=int, default=None, help="samples per step (default: the paper's batch)")
    train.add_argument("--steps", type=int, default=10, help="timed steps (default: 10)")
    train.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: 3)")
    train.add_argument("--threads", type=int, default=None,
                       help="TensorFlow intra/inter-op threads (default: the CPUs this process may use)")
    train.add_argument("--precision", choices=list(PRECISIONS), default="32-true")
    train.add_argument("--json", action="store_true", help="print one JSON object instead of a summary line")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad options or a missing TensorFlow).

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; ``sys.argv[1:]`` when omitted.

    Returns
    -------
    int
    """
    args = build_parser().parse_args(argv)
    batch = MODELS[args.model]["paper_batch"] if args.batch is None else args.batch
    try:
        _check_args(args.model, batch, args.steps, args.warmup, args.threads, args.precision)
    except ValueError as error:
        print(f"keras_peer: {error}", file=sys.stderr)
        return 2
    if not peer_available():
        print(f"keras_peer: {PEER_HINT}", file=sys.stderr)
        return 2
    result = train_throughput(args.model, batch, args.steps, args.warmup, args.threads, args.precision)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"keras {result['model']} {result['precision']} batch {batch}: {result['samples_per_s']:.2f} "
              f"samples/s ({result['seconds_per_step_median']:.3f} s/step median of {args.steps}, "
              f"{result['threads']} threads, {result['parameters']:,} parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
