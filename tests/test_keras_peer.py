"""The Keras peer: works (and says what to install) without TensorFlow; builds the papers' networks with it.

The suite never needs the `peer` extra: every test but the last two runs without TensorFlow, by simulating its
absence where it happens to be installed. The last two build the Keras networks and compare them with cytolens'
torch models; they are skipped without TensorFlow.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from cytolens.bench import keras_peer
from cytolens.core.errors import OptionError

MODULE_FILE = Path(keras_peer.__file__)
# Keras-style counts (BatchNorm running statistics included) of the two networks at 3 classes, from REFERENCE.md
# and cytolens' torch models; the TF test checks them against torch where torch is importable too.
KERAS_COUNTS = {"shpilman2017": 10_924_339, "unet": 1_941_811}


@pytest.fixture
def no_tensorflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``find_spec`` report TensorFlow and Keras as missing, as in CI."""
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name.split(".")[0] in ("tensorflow", "keras") else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_module_imports_only_stdlib_and_numpy() -> None:
    # Loaded by path in a fresh interpreter so the package's other modules cannot mask what this one imports.
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('keras_peer', {str(MODULE_FILE)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'torch', 'cytolens') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_peer_available_false_without_tensorflow(no_tensorflow: None) -> None:
    assert keras_peer.peer_available() is False


def test_peer_available_matches_installation() -> None:
    installed = importlib.util.find_spec("tensorflow") is not None and importlib.util.find_spec("keras") is not None
    assert keras_peer.peer_available() is installed


def test_cli_without_tensorflow_exits_2_with_one_line(no_tensorflow: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert keras_peer.main(["train", "shpilman2017", "--batch", "2", "--steps", "1", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "peer" in lines[0] and "pip install -e .[peer]" in lines[0]


@pytest.mark.skipif(keras_peer.peer_available(), reason="TensorFlow is installed here")
def test_cli_subprocess_without_tensorflow() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cytolens.bench.keras_peer", "train", "unet", "--steps", "1", "--json"],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [f"keras_peer: {keras_peer.PEER_HINT}"]


def test_train_throughput_without_tensorflow_raises_import_error(no_tensorflow: None) -> None:
    with pytest.raises(ImportError, match=r"pip install -e \.\[peer\]"):
        keras_peer.train_throughput("unet", 1, 1, 0, 1, "32-true")


@pytest.mark.parametrize(("args", "match"), [
    (("resnet18", 2, 1, 0, None, "32-true"), "unknown peer model"),
    (("unet", 0, 1, 0, None, "32-true"), "`batch`"),
    (("unet", 2, 0, 0, None, "32-true"), "`steps`"),
    (("unet", 2, 1, -1, None, "32-true"), "`warmup`"),
    (("unet", 2, 1, 0, 0, "32-true"), "`threads`"),
    (("unet", True, 1, 0, None, "32-true"), "`batch`"),
    (("unet", 2, 1, 0, None, "16-mixed"), "unknown precision"),
])
def test_train_throughput_rejects_bad_options_before_importing(args: tuple[Any, ...], match: str) -> None:
    with pytest.raises(OptionError, match=match):
        keras_peer.train_throughput(*args)


def test_cli_rejects_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        keras_peer.main(["train", "fcdensenet103"])
    assert exit_info.value.code == 2
    capsys.readouterr()
    assert keras_peer.main(["train", "unet", "--batch", "0"]) == 2
    assert "`batch` must be an integer >= 1" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "expected"), [
    (["train", "shpilman2017", "--json"], ("shpilman2017", 32, 10, 3, None, "32-true")),
    (["train", "unet", "--json", "--steps", "4", "--warmup", "0", "--threads", "2", "--precision", "bf16-mixed"],
     ("unet", 3, 4, 0, 2, "bf16-mixed")),
    (["train", "unet", "--batch", "16", "--json"], ("unet", 16, 10, 3, None, "32-true")),
])
def test_cli_passes_options_and_prints_one_json_object(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], expected: tuple[Any, ...]
) -> None:
    calls = []

    def fake_train_throughput(*args: Any) -> dict[str, Any]:
        calls.append(args)
        return {"framework": "keras", "model": args[0], "batch_size": args[1], "samples_per_s": 1.5}

    monkeypatch.setattr(keras_peer, "peer_available", lambda: True)
    monkeypatch.setattr(keras_peer, "train_throughput", fake_train_throughput)
    assert keras_peer.main(argv) == 0
    assert calls == [expected]
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    assert json.loads(out[0]) == {"framework": "keras", "model": expected[0], "batch_size": expected[1],
                                  "samples_per_s": 1.5}


def test_models_follow_the_papers_settings() -> None:
    assert keras_peer.MODELS["shpilman2017"]["input_shape"] == (300, 300, 1)
    assert keras_peer.MODELS["shpilman2017"]["paper_batch"] == 32
    assert keras_peer.MODELS["unet"]["input_shape"] == (224, 224, 1)
    assert keras_peer.MODELS["unet"]["paper_batch"] == 3
    # The peers must follow cytolens' paper configs (classes, channels, input, lr, L2, levels), read as YAML so
    # the check needs neither torch nor TensorFlow.
    configs = resources.files("cytolens") / "configs"
    shpilman = yaml.safe_load((configs / "shpilman2017.yaml").read_text())
    spec = keras_peer.MODELS["shpilman2017"]
    assert (shpilman["input_size"], shpilman["input_size"], 1) == spec["input_shape"]
    assert len(shpilman["classes"]) == spec["num_classes"]
    for name in ("midl2019-unet.yaml", "midl2019-unet-cpu.yaml"):
        config = yaml.safe_load((configs / name).read_text())
        spec = keras_peer.MODELS["unet"]
        assert (config["patch_size"], config["patch_size"], config["in_chans"]) == spec["input_shape"]
        assert len(config["classes"]) == spec["num_classes"]
        assert (config["lr"], config["l2"]) == (spec["lr"], spec["l2"])
        options = config["model_options"]
        assert tuple(options["filters"]) == keras_peer.UNET_FILTERS
        assert options["bottleneck"] == keras_peer.UNET_BOTTLENECK and options["batch_norm"] == "upsampling"


def test_shpilman_peer_matches_cytolens_recipe() -> None:
    pytest.importorskip("torch")
    from cytolens.classify.models import model_recipe  # noqa: PLC0415

    recipe, spec = model_recipe("shpilman2017"), keras_peer.MODELS["shpilman2017"]
    assert (recipe["optimizer"], recipe["lr"], recipe["l2"], recipe["batch_size"]) == (
        spec["optimizer"], spec["lr"], spec["l2"], spec["paper_batch"])


# --- With TensorFlow only ---


def _torch_counts(model: str) -> tuple[int, list[int]] | None:
    """Keras-style count and sorted weight sizes of cytolens' torch model, or None without torch."""
    if importlib.util.find_spec("torch") is None:
        return None
    from cytolens.engine.parameters import count_parameters  # noqa: PLC0415

    if model == "shpilman2017":
        from cytolens.classify.models import create_model  # noqa: PLC0415

        network = create_model("shpilman2017", num_classes=3)
    else:
        from cytolens.segment import create_model  # noqa: PLC0415

        network = create_model("unet", num_classes=3, in_chans=1)
    sizes = [p.numel() for p in network.parameters()]
    sizes += [b.numel() for name, b in network.named_buffers() if name.endswith(("running_mean", "running_var"))]
    return count_parameters(network)["keras"], sorted(sizes)


@pytest.mark.parametrize("model", ["shpilman2017", "unet"])
def test_keras_networks_match_cytolens(model: str) -> None:
    pytest.importorskip("tensorflow")
    network = keras_peer.build_model(model)
    assert network.count_params() == KERAS_COUNTS[model]
    regularised = [layer for layer in network.layers if getattr(layer, "kernel_regularizer", None) is not None]
    kernels = [layer for layer in network.layers if hasattr(layer, "kernel")]
    assert regularised == kernels  # L2 on every kernel, as the papers (and cytolens' l2_penalty) do
    reference = _torch_counts(model)
    if reference is not None:
        count, sizes = reference
        assert count == KERAS_COUNTS[model]
        assert sorted(math.prod(w.shape) for w in network.weights) == sizes  # same layers, same shapes
    kinds = [type(layer).__name__ for layer in network.layers]
    if model == "shpilman2017":
        assert kinds == ["InputLayer", "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten", "Dense",
                         "Dropout", "Dense", "Dropout", "Dense", "Activation"]
    else:
        assert kinds.count("Conv2D") == 19 and kinds.count("Conv2DTranspose") == 4
        assert kinds.count("BatchNormalization") == 4 and kinds.count("MaxPooling2D") == 4


def test_keras_train_throughput_reports_every_key() -> None:
    pytest.importorskip("tensorflow")
    result = keras_peer.train_throughput("shpilman2017", 2, 2, 1, None, "32-true")
    assert tuple(result) == keras_peer.RESULT_KEYS
    assert result["framework"] == "keras" and result["precision"] == "32-true"
    assert result["parameters"] == KERAS_COUNTS["shpilman2017"] and len(result["step_seconds"]) == 2
    assert result["samples_per_s"] == pytest.approx(2 / result["seconds_per_step_median"])
    json.dumps(result)
