"""CytoGAN's networks, losses, configs and the feature-extractor interface the profiles are built on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cytolens.core.config import load_config, packaged_configs
from cytolens.core.errors import CytolensError, OptionError
from cytolens.profile.gan.models import (
    GANS, FeatureExtractor, count_gan_parameters, create_model, images_to_tensor, random_feature_extractor,
    tensor_to_images,
)
from cytolens.profile.gan.config import GanConfig
from cytolens.profile.gan.losses import discriminator_loss, generator_loss, gradient_penalty


@pytest.mark.parametrize("name", GANS.names())
def test_every_registered_gan_builds_generates_and_has_a_100_d_representation(name: str) -> None:
    torch.manual_seed(0)
    gan = create_model(name)
    assert gan.loss == name
    z = torch.randn(2, gan.noise_size)
    with torch.no_grad():
        images = gan.generator(z)
        assert images.shape == (2, 3, 96, 96)
        assert torch.isfinite(images).all() and images.min() >= -1 and images.max() <= 1
        features = gan.discriminator.features(images)
        logits = gan.discriminator(images)
    assert features.shape == (2, 100) and logits.shape == (2,)
    assert torch.isfinite(features).all() and torch.isfinite(logits).all()


def test_parameter_counts_are_the_papers_keras_counts() -> None:
    counts = count_gan_parameters(create_model("lsgan"))
    assert counts["generator"] == {"trainable": 4_875_267, "bn_statistics": 74_176, "keras": 4_949_443}
    assert counts["discriminator"] == {"trainable": 4_764_681, "bn_statistics": 0, "keras": 4_764_681}


def test_instance_noise_only_in_training_mode() -> None:
    torch.manual_seed(0)
    d = create_model("dcgan", generator_filters=(8, 4), discriminator_filters=(4, 4), discriminator_strides=(2, 2),
                   image_size=16).discriminator
    x = torch.zeros(2, 3, 16, 16)
    assert not torch.equal(d.features(x), d.features(x))  # σ = 0.1 noise, drawn anew
    d.eval()
    assert torch.equal(d.features(x), d.features(x))


def test_unknown_gan_and_option_answer_with_the_choices() -> None:
    with pytest.raises(OptionError, match="Did you mean 'lsgan'"):
        create_model("lsgna")
    with pytest.raises(OptionError, match="no option 'latent'"):
        create_model("lsgan", latent=10)


def test_images_round_trip_between_crops_and_tensors() -> None:
    crops = np.random.default_rng(0).random((3, 8, 8, 3), dtype=np.float32)
    tensor = images_to_tensor(crops)
    assert tensor.shape == (3, 3, 8, 8) and tensor.min() >= -1 and tensor.max() <= 1
    np.testing.assert_allclose(tensor_to_images(tensor), crops, atol=1e-6)
    np.testing.assert_allclose(images_to_tensor((crops * 255).round().astype(np.uint8)), tensor, atol=1 / 255 + 1e-6)


# --- losses ---


def test_losses_at_their_optimum_and_direction() -> None:
    ones, zeros = torch.ones(4), torch.zeros(4)
    # LSGAN: D outputs equal to the targets (real 1, fake 0) give zero loss; G's loss is zero when D says 1.
    loss, parts = discriminator_loss("lsgan", ones, zeros, real_label_range=(1.0, 1.0))
    assert float(loss) == 0.0 and parts["d_real"] == 1.0 and parts["d_fake"] == 0.0
    assert float(generator_loss("lsgan", ones)) == 0.0
    # DCGAN on logits: confident and right is cheaper than confident and wrong.
    right, _ = discriminator_loss("dcgan", 10 * ones, -10 * ones, real_label_range=(1.0, 1.0))
    wrong, _ = discriminator_loss("dcgan", -10 * ones, 10 * ones, real_label_range=(1.0, 1.0))
    assert float(right) < 1e-3 < 9 < float(wrong)
    assert float(generator_loss("dcgan", 10 * ones)) < float(generator_loss("dcgan", -10 * ones))
    # Soft labels lie in the range: the squared error to outputs of 0.9 is at most 0.1² on the real half.
    soft, _ = discriminator_loss("lsgan", 0.9 * ones, zeros, real_label_range=(0.8, 1.0))
    assert 0 <= float(soft) <= 0.01 / 2 + 1e-7
    # WGAN: the critic wants real high and fake low; the generator wants its score high.
    critic, parts = discriminator_loss("wgan-gp", 2 * ones, -ones)
    assert float(critic) == -3.0 and parts["wasserstein"] == 3.0
    assert float(generator_loss("wgan-gp", 2 * ones)) == -2.0


@pytest.mark.parametrize("interpolation", ["sample", "pixel"])
def test_gradient_penalty_is_zero_for_a_unit_gradient_critic(interpolation: str) -> None:
    weight = torch.zeros(1, 2, 3, 3)
    weight[0, 0, 0, 0] = 1.0  # gradient of the sum below w.r.t. x has norm 1

    def unit(x: torch.Tensor) -> torch.Tensor:
        return (x * weight).flatten(1).sum(1)

    def steep(x: torch.Tensor) -> torch.Tensor:
        return 3 * unit(x)

    real, fake = torch.rand(4, 2, 3, 3), torch.rand(4, 2, 3, 3)
    assert float(gradient_penalty(unit, real, fake, interpolation=interpolation)) == pytest.approx(0.0, abs=1e-10)
    assert float(gradient_penalty(steep, real, fake, interpolation=interpolation)) == pytest.approx(4.0)


# --- configs ---


@pytest.mark.parametrize("name", [n for n in packaged_configs() if n.startswith("cytogan")])
def test_every_shipped_cytogan_config_validates_and_builds(name: str) -> None:
    config = load_config(name, GanConfig)
    gan = create_model(config.model, **config.model_options)
    assert gan.discriminator.latent_size == 100
    assert config.deviations, f"{name} must list where it departs from (or fills in) the paper"


def test_paper_configs_hold_the_papers_settings() -> None:
    expected = {"cytogan-dcgan": ("dcgan", 5e-5, 1e-5), "cytogan-lsgan": ("lsgan", 7e-5, 2e-4),
                "cytogan-wgan": ("wgan-gp", 7e-5, 2e-4)}
    for name, (gan, lr_d, lr_g) in expected.items():
        config = load_config(name, GanConfig)
        assert (config.model, config.batch_size, config.epochs, config.steps) == (gan, 64, 50, None)
        assert config.recipe() == {"lr_discriminator": lr_d, "lr_generator": lr_g, "betas": (0.5, 0.999)}
        assert config.recipe() == GANS.metadata(gan)["recipe"]
        assert config.model_options == {} and config.critic_steps == 1 and config.gradient_penalty == 10
        assert config.real_label_range == (0.8, 1.0)
    assert load_config("cytogan-lsgan", GanConfig).total_steps(64_000) == 50 * 1000


@pytest.mark.parametrize("gan", ["dcgan", "lsgan", "wgan"])
def test_cpu_configs_change_only_width_and_schedule_and_say_so(gan: str) -> None:
    paper = load_config(f"cytogan-{gan}", GanConfig).model_dump()
    cpu = load_config(f"cytogan-{gan}-cpu", GanConfig).model_dump()
    allowed = {"name", "description", "deviations", "model_options", "precision", *GanConfig.SCHEDULE_KEYS}
    assert {k: v for k, v in cpu.items() if k not in allowed} == {k: v for k, v in paper.items() if k not in allowed}
    assert cpu["model_options"] == {"generator_filters": [128, 64, 32, 16], "discriminator_filters": [16, 32, 64, 128]}
    # The paper's configs keep its fp32 arithmetic; the CPU ones use bf16 where the hardware has it, and say so.
    assert (paper["precision"], cpu["precision"]) == ("32-true", "auto")
    # Their schedule is a wall-clock budget (the paper's 50 epochs as the ceiling), which the deviations state.
    assert cpu["steps"] is None and cpu["epochs"] == paper["epochs"] and cpu["max_minutes"] is not None
    text = " ".join(cpu["deviations"])
    assert "half as wide" in text and f"{cpu['max_minutes']:g} minutes" in text and "Precision auto" in text


def test_config_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: lsgn\n")
    with pytest.raises(CytolensError, match="'model'.*Did you mean 'lsgan'"):
        load_config(bad, GanConfig)
    bad.write_text("model: lsgan\nmodel_options: {generator_width: 3}\n")
    with pytest.raises(CytolensError, match="no option"):
        load_config(bad, GanConfig)
    bad.write_text("real_label_range: [0.9, 0.8]\n")
    with pytest.raises(CytolensError, match="real_label_range"):
        load_config(bad, GanConfig)


# --- the interface the profiles use ---


def test_random_feature_extractor_is_the_seeded_untrained_discriminator() -> None:
    extractor = random_feature_extractor("cytogan-lsgan", seed=3)
    assert isinstance(extractor, FeatureExtractor) and extractor.dim == 100 and "random" in extractor.name
    crops = np.random.default_rng(0).random((3, 96, 96, 3), dtype=np.float32)
    features = extractor(crops)
    assert features.shape == (3, 100) and features.dtype == np.float32 and np.isfinite(features).all()
    np.testing.assert_array_equal(features, extractor(crops))  # eval mode: no instance noise
    np.testing.assert_array_equal(features, random_feature_extractor("cytogan-lsgan", seed=3)(crops))
    assert not np.allclose(features, random_feature_extractor("cytogan-lsgan", seed=4)(crops))
    # Batching does not change the answer.
    extractor.batch_size = 2
    np.testing.assert_allclose(extractor(crops), features, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(n, 96, 96, 3\)"):
        extractor(crops[:, :64])
