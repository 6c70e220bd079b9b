"""Tests for cytolens.classify.models and cytolens.classify.search_space."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cytolens.classify import count_parameters, create_model, list_models
from cytolens.classify.models import CONVNET_LIMITS, model_recipe, register_model
from cytolens.engine.parameters import l2_penalty
from cytolens.classify.search_space import (
    SearchSpace,
    Topology,
    estimate_cost,
    estimate_parameters,
    paper_topology,
)
from cytolens.core.errors import OptionError

PAPER_OPTIONS = {"conv_filters": [16, 64], "kernel_sizes": [2, 3], "pooling": True, "dense_units": [32, 32],
                 "dropout": 0.5}


# ---------------------------------------------------------------------------------------------------------------
# parameter counts
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("num_classes", "expected"), [(3, 10_924_339), (2, 10_924_306)])
def test_shpilman2017_parameter_count_matches_paper(num_classes: int, expected: int) -> None:
    model = create_model("shpilman2017", num_classes=num_classes, in_chans=1, input_size=300)
    counts = count_parameters(model)
    assert counts["trainable"] == expected
    assert counts["keras"] == counts["trainable"]  # no BatchNorm: Keras and PyTorch agree


def test_shpilman2017_layers_and_one_full_size_forward() -> None:
    torch.manual_seed(0)
    model = create_model("shpilman2017", num_classes=3)
    assert model.classifier.fc1.in_features == 73 * 73 * 64 == 341_056
    assert model.features.conv1.kernel_size == (2, 2) and model.features.conv1.padding == (0, 0)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    with torch.no_grad():
        logits = model.eval()(torch.rand(1, 1, 300, 300))
    assert logits.shape == (1, 3) and torch.isfinite(logits).all()


def test_convnet_with_paper_topology_equals_shpilman2017() -> None:
    paper = create_model("shpilman2017", num_classes=3)
    family = create_model("convnet", num_classes=3, **PAPER_OPTIONS)
    assert count_parameters(family) == count_parameters(paper)
    assert [tuple(p.shape) for p in family.parameters()] == [tuple(p.shape) for p in paper.parameters()]
    assert estimate_parameters(paper_topology()) == 10_924_339


def test_flatten_size_follows_input_size() -> None:
    model = create_model("shpilman2017", num_classes=3, input_size=100)
    # 100 -> conv2 99 -> pool 49 -> conv3 47 -> pool 23
    assert model.classifier.fc1.in_features == 23 * 23 * 64
    assert model(torch.rand(2, 1, 100, 100)).shape == (2, 3)


def test_resnet18_keras_count_includes_batchnorm_statistics() -> None:
    model = create_model("resnet18", num_classes=3)
    counts = count_parameters(model)
    bn_stats = sum(m.running_mean.numel() + m.running_var.numel()
                   for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert bn_stats == 2 * 4800
    assert counts["keras"] == counts["trainable"] + bn_stats
    # torchvision's resnet18 has 11,689,512 (3 channels, 1000 classes); 1 channel and 3 classes remove
    # 2·64·7·7 stem weights and 997 head rows.
    assert counts["trainable"] == 11_689_512 - 2 * 64 * 49 - 997 * 513


def test_resnet18_zero_init_residual() -> None:
    model = create_model("resnet18", num_classes=2, zero_init_residual=True)
    assert all(float(block.bn2.weight.detach().abs().sum()) == 0 for block in model.layer1)
    default = create_model("resnet18", num_classes=2)
    assert float(default.layer1[0].bn2.weight.detach().sum()) == 64


# ---------------------------------------------------------------------------------------------------------------
# every registered model
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("in_chans", [1, 3])
def test_every_model_runs_forward_and_backward(name: str, in_chans: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, in_chans=in_chans, input_size=32)
    images = torch.rand(2, in_chans, 32, 32)
    logits = model(images)
    assert logits.shape == (2, 4) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    (logits.logsumexp(dim=1).sum() + l2_penalty(model, 0.01)).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.parametrize("name", list_models())
def test_every_model_names_a_gradcam_layer_and_a_recipe(name: str) -> None:
    model = create_model(name, num_classes=2, input_size=32)
    assert model.gradcam_layer in dict(model.named_modules())
    assert model.model_name == name
    recipe = model_recipe(name)
    assert {"optimizer", "lr", "batch_size"} <= recipe.keys()
    recipe["lr"] = -1.0  # a copy: callers may edit it freely
    assert model_recipe(name)["lr"] > 0


def test_paper_recipe() -> None:
    recipe = model_recipe("shpilman2017")
    assert (recipe["optimizer"], recipe["lr"], recipe["l2"], recipe["batch_size"], recipe["dropout"]) == (
        "nadam", 0.002, 0.01, 32, 0.5)
    assert model_recipe("resnet18")["optimizer"] == "adamw"


def test_registering_a_model_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model(name="resnet18")(lambda **kwargs: nn.Identity())


# ---------------------------------------------------------------------------------------------------------------
# L2 penalty
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["shpilman2017", "resnet18"])
def test_l2_penalty_sums_kernels_only(name: str) -> None:
    model = create_model(name, num_classes=3, input_size=32)
    expected = sum(float(m.weight.detach().double().pow(2).sum())
                   for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    penalty = l2_penalty(model, 0.01)
    assert penalty.ndim == 0 and penalty.requires_grad
    penalty = float(penalty.detach())
    assert penalty == pytest.approx(0.01 * expected, rel=1e-5)
    with torch.no_grad():  # biases (and BatchNorm affine parameters) must not count
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)) and module.bias is not None:
                module.bias.fill_(100.0)
    assert float(l2_penalty(model, 0.01).detach()) == pytest.approx(penalty, rel=1e-5)


def test_l2_penalty_rejects_negative_weight() -> None:
    with pytest.raises(OptionError, match="weight"):
        l2_penalty(nn.Linear(2, 2), -0.1)


# ---------------------------------------------------------------------------------------------------------------
# option validation
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"kernel_sizes": [2, 7]}, r"kernel_sizes.*7"),
        ({"conv_filters": [8] * 6, "kernel_sizes": [2] * 6}, r"conv_filters.*1 to 5"),
        ({"conv_filters": [4, 64]}, r"conv_filters.*\[8, 256\].*4"),
        ({"kernel_sizes": [3]}, r"kernel_sizes.*one entry per convolution"),
        ({"dense_units": []}, r"dense_units.*1 to 4"),
        ({"dense_units": [32, 1024]}, r"dense_units.*1024"),
        ({"dropout": 1.0}, r"dropout.*\[0, 1\)"),
        ({"pooling": "yes"}, r"pooling"),
        ({"conv_filter": [8]}, r"no option 'conv_filter'.*Did you mean 'conv_filters'"),
    ],
)
def test_convnet_rejects_bad_options(options: dict, message: str) -> None:
    with pytest.raises(OptionError, match=message):
        create_model("convnet", num_classes=3, input_size=64, **options)


def test_vanishing_feature_map_names_input_size() -> None:
    with pytest.raises(OptionError, match=r"input_size.*12.*convolution 3"):
        create_model("convnet", num_classes=3, input_size=12, conv_filters=[8, 8, 8], kernel_sizes=[3, 3, 3])
    with pytest.raises(OptionError, match="input_size"):
        create_model("shpilman2017", num_classes=3, input_size=4)


def test_unknown_model_suggests_close_name() -> None:
    with pytest.raises(OptionError, match=r"Did you mean 'shpilman2017'"):
        create_model("shpilman2071", num_classes=3)
    with pytest.raises(OptionError, match="num_classes"):
        create_model("resnet18", num_classes=0)


# ---------------------------------------------------------------------------------------------------------------
# search space
# ---------------------------------------------------------------------------------------------------------------


def test_paper_topology_round_trips_and_describes() -> None:
    topology = paper_topology()
    assert Topology.from_dict(topology.to_dict()) == topology
    assert all(isinstance(v, (list, bool, int, float)) for v in topology.to_dict().values())
    assert topology.describe() == "conv16k2-conv64k3-pool/fc32-fc32@300"
    assert topology.to_model_options() == {**PAPER_OPTIONS, "input_size": 300}
    assert SearchSpace().contains(topology)
    with pytest.raises(OptionError, match="Did you mean 'dropout'"):
        Topology.from_dict({**topology.to_dict(), "dropuot": 0.5})


def test_sampling_is_deterministic_per_seed() -> None:
    space = SearchSpace()
    first = [space.sample(np.random.default_rng(7)) for _ in range(3)]
    rng_a, rng_b = np.random.default_rng(11), np.random.default_rng(11)
    assert [space.sample(rng_a) for _ in range(20)] == [space.sample(rng_b) for _ in range(20)]
    assert first[0] == first[1] == first[2]
    rng_c = np.random.default_rng(12)
    assert [space.sample(rng_c) for _ in range(20)] != [space.sample(np.random.default_rng(11)) for _ in range(20)]


@pytest.mark.parametrize("filter_sampling", ["pow2", "log_uniform"])
def test_samples_are_valid_and_within_ranges(filter_sampling: str) -> None:
    space = SearchSpace(filter_sampling=filter_sampling)
    rng = np.random.default_rng(0)
    topologies = [space.sample(rng) for _ in range(200)]
    for topology in topologies:
        assert 1 <= len(topology.conv_filters) <= 5 and len(topology.kernel_sizes) == len(topology.conv_filters)
        assert all(8 <= f <= 256 for f in topology.conv_filters)
        assert all(2 <= k <= 5 for k in topology.kernel_sizes)
        assert 1 <= len(topology.dense_units) <= 4 and all(16 <= u <= 512 for u in topology.dense_units)
        assert 100 <= topology.input_size <= 300
        if filter_sampling == "pow2":
            assert all(f & (f - 1) == 0 for f in (*topology.conv_filters, *topology.dense_units))
        # The meta device builds the full architecture (all validation runs) without allocating weights.
        with torch.device("meta"):
            model = create_model("convnet", num_classes=3, **topology.to_model_options())
        assert count_parameters(model)["trainable"] == estimate_parameters(topology) <= space.max_parameters
    assert {t.pooling for t in topologies} == {True, False}
    assert len({t.describe() for t in topologies}) > 150
    # A few small ones really run.
    for topology in sorted(topologies, key=estimate_cost)[:3]:
        model = create_model("convnet", num_classes=3, **topology.to_model_options())
        size = topology.input_size
        assert torch.isfinite(model(torch.rand(1, 1, size, size))).all()


def test_compute_budget_is_respected() -> None:
    space = SearchSpace()
    rng = np.random.default_rng(3)
    assert all(estimate_cost(space.sample(rng, max_mflops=50.0)) <= 50.0 for _ in range(30))
    assert estimate_cost(paper_topology()) == pytest.approx(431.57, abs=0.01)
    with pytest.raises(OptionError, match="max_mflops"):
        space.sample(rng, max_mflops=1e-6, max_attempts=50)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"conv_layers": (1, 6)}, "conv_layers"),
        ({"conv_filters": (300, 400)}, "conv_filters"),
        ({"kernel_sizes": (4, 3)}, "kernel_sizes"),
        ({"filter_sampling": "pow3"}, "Did you mean 'pow2'"),
        ({"conv_filters": (9, 15)}, "no power of two"),
        ({"input_sizes": ()}, "input_sizes"),
        ({"pooling": ()}, "pooling"),
        ({"dropout": (1.5,)}, "dropout"),
    ],
)
def test_search_space_rejects_bad_ranges(overrides: dict, message: str) -> None:
    with pytest.raises(OptionError, match=message):
        SearchSpace(**overrides)


def test_search_space_defaults_match_convnet_limits() -> None:
    space = SearchSpace()
    assert (space.conv_layers, space.conv_filters, space.kernel_sizes, space.dense_layers, space.dense_units) == (
        CONVNET_LIMITS["conv_layers"], CONVNET_LIMITS["conv_filters"], CONVNET_LIMITS["kernel_sizes"],
        CONVNET_LIMITS["dense_layers"], CONVNET_LIMITS["dense_units"])
    assert min(space.input_sizes) == 100 and max(space.input_sizes) == 300


def test_pooling_before_relu_equals_keras_order_values_and_gradients() -> None:
    # The reference is Keras' order, conv → ReLU → max-pool; ConvNet pools first (cheaper, same function).
    torch.manual_seed(0)
    model = create_model("shpilman2017", num_classes=3, input_size=32)
    names = [name for name, _ in model.features.named_children()]
    assert names == ["conv1", "pool1", "relu1", "conv2", "pool2", "relu2"]
    keras_order = nn.Sequential(model.features.conv1, nn.ReLU(), nn.MaxPool2d(2, 2),
                                model.features.conv2, nn.ReLU(), nn.MaxPool2d(2, 2))
    x = torch.randn(4, 1, 32, 32)
    x[:, :, :8] = 0.0  # a flat background: ties inside pooling windows
    ours = model.features(x)
    (grad_ours,) = torch.autograd.grad(ours.square().sum(), model.features.conv1.weight)
    reference = keras_order(x)
    (grad_reference,) = torch.autograd.grad(reference.square().sum(), model.features.conv1.weight)
    assert torch.equal(ours, reference)
    torch.testing.assert_close(grad_ours, grad_reference, rtol=1e-5, atol=1e-6)
