"""Segmentation networks: paper parameter counts, forward/backward on tiny patches, errors, the registry.

A long job may share the CPU: models are built once per module where possible and run on 32×32 patches only.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from cytolens.core.errors import OptionError
from cytolens.core.registry import Registry
from cytolens.segment import (
    PAPER_PARAMETERS,
    SEGMENTATION_MODELS,
    count_parameters,
    create_model,
    list_models,
    segmentation_model_recipe,
)
from cytolens.engine.parameters import l2_penalty
from cytolens.segment.tiramisu import _match_size
from cytolens.segment.unet import UNet

MODELS = list_models()
INPUT_MULTIPLES = {"unet": 16, "fcdensenet103": 32, "deeplabv3plus_xception65": 16}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Run on one intra-op thread: on a busy 2-core machine, two threads contend and run ~10× slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def paper_models() -> dict[str, nn.Module]:
    """Every registered model at the paper's setting (1 channel, 3 classes), built once."""
    torch.manual_seed(0)
    return {name: create_model(name, num_classes=3) for name in MODELS}


def test_registered_models_and_paper_table() -> None:
    assert MODELS == sorted(PAPER_PARAMETERS) == sorted(INPUT_MULTIPLES)
    assert segmentation_model_recipe("unet")["l2"] == 1e-4
    assert segmentation_model_recipe("fcdensenet103")["l2"] == 0.0
    assert segmentation_model_recipe("deeplabv3plus_xception65")["lr"] == 1e-3


def test_fcdensenet103_count_is_the_papers_exactly(paper_models: dict[str, nn.Module]) -> None:
    counts = count_parameters(paper_models["fcdensenet103"])
    assert counts["trainable"] == 9_315_939
    assert counts["keras"] == 9_419_011 == PAPER_PARAMETERS["fcdensenet103"]


def test_deeplab_count_is_12_short_of_the_paper(paper_models: dict[str, nn.Module]) -> None:
    counts = count_parameters(paper_models["deeplabv3plus_xception65"])
    assert counts["keras"] == 41_253_011
    assert PAPER_PARAMETERS["deeplabv3plus_xception65"] - counts["keras"] == 12  # one BN on 3 logits = 4 × 3


def test_unet_count_within_half_a_percent(paper_models: dict[str, nn.Module]) -> None:
    keras = count_parameters(paper_models["unet"])["keras"]
    assert keras == 1_941_811
    assert abs(keras - PAPER_PARAMETERS["unet"]) / PAPER_PARAMETERS["unet"] < 0.005


@pytest.mark.parametrize(("batch_norm", "keras"), [("none", 1_940_851), ("upsampling", 1_941_811), ("all", 1_947_699)])
def test_unet_variants_documented_counts(batch_norm: str, keras: int) -> None:
    model = UNet(num_classes=3, in_chans=1, batch_norm=batch_norm)  # type: ignore[arg-type]
    assert count_parameters(model)["keras"] == keras
    assert abs(keras - PAPER_PARAMETERS["unet"]) / PAPER_PARAMETERS["unet"] < 0.005


@pytest.mark.parametrize(("in_chans", "num_classes"), [(3, 2), (1, 4)])
@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_on_a_tiny_patch(name: str, in_chans: int, num_classes: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=num_classes, in_chans=in_chans)
    assert model.input_multiple == INPUT_MULTIPLES[name]
    assert model.model_name == name
    # Training-mode BatchNorm needs more than one value per channel: DeepLab's image pooling and, at 32×32,
    # FC-DenseNet103's 1×1 bottleneck see one per image, hence 2 images.
    batch, side = 2, 32  # 32: the smallest size every model takes
    images = torch.randn(batch, in_chans, side, side)
    model.train()
    logits = model(images)
    assert logits.shape == (batch, num_classes, side, side)
    assert torch.isfinite(logits).all()
    loss = nn.functional.cross_entropy(logits, torch.randint(0, num_classes, (batch, side, side)))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads if g is not None)


def test_unet_eval_on_a_non_square_patch(paper_models: dict[str, nn.Module]) -> None:
    model = paper_models["unet"].eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 48)).shape == (1, 3, 32, 48)


@pytest.mark.parametrize("name", MODELS)
def test_wrong_input_size_names_input_multiple(paper_models: dict[str, nn.Module], name: str) -> None:
    model = paper_models[name].eval()
    side = INPUT_MULTIPLES[name] + 8
    with pytest.raises(OptionError, match=rf"input_multiple={INPUT_MULTIPLES[name]}"):
        model(torch.zeros(1, 1, side, INPUT_MULTIPLES[name]))


def test_wrong_channel_count_is_an_option_error(paper_models: dict[str, nn.Module]) -> None:
    with pytest.raises(OptionError, match=r"\(N, 1, H, W\)"):
        paper_models["unet"](torch.zeros(1, 3, 16, 16))


def test_deeplab_training_batch_of_one_is_explained(paper_models: dict[str, nn.Module]) -> None:
    model = paper_models["deeplabv3plus_xception65"].train()
    with pytest.raises(OptionError, match="at least 2"):
        model(torch.zeros(1, 1, 16, 16))


def test_tiramisu_up_path_matches_odd_skip_sizes() -> None:
    up = torch.ones(1, 2, 10, 8)
    assert _match_size(up, torch.zeros(1, 1, 9, 7)).shape[-2:] == (9, 7)
    padded = _match_size(up, torch.zeros(1, 1, 11, 9))
    assert padded.shape[-2:] == (11, 9) and padded.sum() == up.sum()


def test_unet_l2_penalises_every_conv_kernel_only(paper_models: dict[str, nn.Module]) -> None:
    model = paper_models["unet"]
    kernels = list(model.regularized_parameters())
    convs = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    assert len(kernels) == len(convs) == 2 * 9 + 4 + 1  # 18 3×3 convs, 4 transposed, the head
    assert all(k.ndim == 4 for k in kernels)
    expected = 1e-4 * sum(float(k.detach().pow(2).sum()) for k in kernels)
    assert float(l2_penalty(model, 1e-4).detach()) == pytest.approx(expected, rel=1e-5)


# --- options and the registry ---


def test_unknown_model_suggests_the_closest() -> None:
    with pytest.raises(OptionError, match="Did you mean 'unet'"):
        create_model("unt", num_classes=3)


def test_unknown_option_lists_the_valid_ones() -> None:
    with pytest.raises(OptionError, match=r"no option 'batchnorm'.*\['filters', 'bottleneck', 'batch_norm'\]"
                                          r".*Did you mean 'batch_norm'"):
        create_model("unet", num_classes=3, batchnorm="all")


@pytest.mark.parametrize("options", [{"num_classes": 0}, {"num_classes": 3, "in_chans": True}])
def test_bad_common_options(options: dict[str, object]) -> None:
    with pytest.raises(OptionError, match="integer >= 1"):
        create_model("unet", **options)  # type: ignore[arg-type]


def test_bad_model_option_values() -> None:
    with pytest.raises(OptionError, match="Did you mean 'all'"):
        create_model("unet", num_classes=3, batch_norm="al")
    with pytest.raises(OptionError, match="dropout"):
        create_model("fcdensenet103", num_classes=3, dropout=1.5)


def test_generic_registry() -> None:
    registry: Registry[tuple[int, int]] = Registry("shape", common_options=("scale",))

    @registry.register
    def square(*, scale: int = 1) -> tuple[int, int]:
        return (scale, scale)

    @registry.register("wide", sides=4, recipe={"lr": 1.0})
    def rectangle(*, scale: int = 1, ratio: int = 2, size: int) -> tuple[int, int]:
        return (scale * size, scale * size * ratio)

    assert registry.names() == list(registry) == ["square", "wide"] and len(registry) == 2 and "wide" in registry
    assert registry.create("wide", size=2, ratio=3) == (2, 6)
    assert registry.options("wide") == ["ratio", "size"]
    meta = registry.metadata("wide")
    meta["recipe"]["lr"] = 0.0  # a copy: the registry keeps its own
    assert registry.metadata("wide") == {"sides": 4, "recipe": {"lr": 1.0}} and registry.metadata("square") == {}
    with pytest.raises(OptionError, match="Did you mean 'square'"):
        registry.create("sqare")
    with pytest.raises(OptionError, match=r"no option 'ration'; its options are \['ratio', 'size'\]"):
        registry.create("wide", size=1, ration=2)
    with pytest.raises(OptionError, match=r"needs the option\(s\) \['size'\]"):
        registry.create("wide")
    with pytest.raises(ValueError, match="already registered"):
        registry.register(name="square")(square)


def test_segmentation_registry_lists_model_options() -> None:
    assert SEGMENTATION_MODELS.options("fcdensenet103") == ["dropout"]
    assert "unet" in SEGMENTATION_MODELS
