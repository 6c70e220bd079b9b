"""What every capability offers the same way: its shipped configs validate, and its models are built by name.

Each capability exposes ``create_model`` and ``list_models`` under those names (classify, segment, profile), so
one test runs every registered model of every capability forward.
"""

from __future__ import annotations

import pytest
import torch

from cytolens import classify, profile, segment
from cytolens.classify.config import ClassifyConfig
from cytolens.core.config import load_config, packaged_configs
from cytolens.engine.config import ExperimentConfig
from cytolens.profile.gan.config import GanConfig
from cytolens.segment.config import SegmentConfig

# A shipped config names its paper's protocol: the prefix says which capability reads it.
CONFIG_TYPES: dict[str, type[ExperimentConfig]] = {
    "shpilman2017": ClassifyConfig, "midl2019": SegmentConfig, "cytogan": GanConfig,
}


def _config_type(name: str) -> type[ExperimentConfig]:
    return next(kind for prefix, kind in CONFIG_TYPES.items() if name.startswith(prefix))


@pytest.mark.parametrize("name", packaged_configs())
def test_every_shipped_config_validates_and_names_a_registered_model(name: str) -> None:
    kind = _config_type(name)
    config = load_config(name, kind)
    assert config.name == name
    registered = {ClassifyConfig: classify, SegmentConfig: segment, GanConfig: profile}[kind].list_models()
    assert config.model in registered
    if name.endswith(("-quick", "-cpu")):
        assert config.deviations, f"{name} departs from its paper and must say how"


def test_every_shipped_config_belongs_to_a_capability() -> None:
    names = packaged_configs()
    assert names and all(any(n.startswith(prefix) for prefix in CONFIG_TYPES) for n in names)


def _models() -> list[tuple[str, str]]:
    return ([("classify", name) for name in classify.list_models()]
            + [("segment", name) for name in segment.list_models()]
            + [("profile", name) for name in profile.list_models()])


@pytest.mark.parametrize(("capability", "name"), _models())
def test_every_registered_model_of_every_capability_runs_forward(capability: str, name: str) -> None:
    torch.manual_seed(0)
    if capability == "classify":  # eval(): BatchNorm in inference mode, so two images suffice
        model = classify.create_model(name, num_classes=3, in_chans=1, input_size=64).eval()
        out = model(torch.rand(2, 1, 64, 64))
        assert out.shape == (2, 3)
    elif capability == "segment":
        model = segment.create_model(name, num_classes=3, in_chans=1).eval()
        out = model(torch.rand(2, 1, 32, 32))  # 32: the smallest side every segmentation model takes
        assert out.shape == (2, 3, 32, 32)
    else:
        gan = profile.create_model(name, generator_filters=(16, 8), discriminator_filters=(8, 16),
                                   discriminator_strides=(1, 2), image_size=16).eval()
        with torch.no_grad():
            images = gan.generator(torch.randn(2, gan.noise_size))
            out = gan.discriminator(images)
            features = gan.discriminator.features(images)
        assert images.shape == (2, 3, 16, 16) and float(images.abs().max()) <= 1.0
        assert out.shape[0] == 2 and features.shape == (2, 100)
    assert torch.isfinite(out).all()
