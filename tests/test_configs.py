"""Shipped configs validate, the paper's says what the paper says, and config errors are one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from cytolens.classify.config import ClassifyConfig
from cytolens.classify.models import create_model
from cytolens.engine.parameters import count_parameters
from cytolens.core.config import load_config, packaged_configs, resolve_config_path, save_config
from cytolens.core.errors import CytolensError


@pytest.mark.parametrize("name", [n for n in packaged_configs() if n.startswith("shpilman2017")])
def test_every_shipped_classification_config_validates_and_builds_its_model(name: str) -> None:
    config = load_config(name, ClassifyConfig)
    model = create_model(config.model, num_classes=3, input_size=config.input_size, **config.model_options)
    assert count_parameters(model)["trainable"] > 0
    if config.name != "shpilman2017":
        assert config.deviations, f"{name} departs from the paper and must say how"


def test_paper_config_is_the_papers_protocol() -> None:
    config = load_config("shpilman2017", ClassifyConfig)
    assert (config.model, config.input_size, config.test_per_class, config.folds) == ("shpilman2017", 300, 100, 10)
    training = config.training
    assert (training.optimizer, training.lr, training.l2, training.batch_size, training.patience) == ("nadam", 0.002, 0.01, 32, 2)
    assert config.variants == ["CNN", "CNN+T", "CNN+T+S"] and config.rotations == [90, 180, 270]
    assert config.tasks == ["all", "pairwise"] and config.classes == ["0", "0.1", "1"]
    assert config.max_train_per_class is None


def test_config_errors_name_the_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntraining: {lr: 0.1, learning_rate: 3}\n")
    with pytest.raises(CytolensError, match=r"bad.yaml: config key 'training.learning_rate': unknown key"):
        load_config(bad, ClassifyConfig)
    bad.write_text("folds: 1\n")
    with pytest.raises(CytolensError, match="'folds'"):
        load_config(bad, ClassifyConfig)
    bad.write_text("predict_variant: CNN+T+S\nvariants: [CNN]\n")
    with pytest.raises(CytolensError, match="predict_variant"):
        load_config(bad, ClassifyConfig)
    bad.write_text("a: [unclosed\n")
    with pytest.raises(CytolensError, match="not valid YAML"):
        load_config(bad, ClassifyConfig)
    with pytest.raises(CytolensError, match="shipped configs: .*shpilman2017-quick"):
        resolve_config_path("no-such-config")


@pytest.mark.parametrize(("text", "message"), [
    ("classes: ['0', '1', '0']\n", r"'classes': .*distinct; repeated: 0"),
    ("classes: [only]\n", r"'classes': .*at least 2 classes"),
    ("training: {lr: .inf}\n", r"'training.lr': .*finite"),
    ("training: {lr: .nan}\n", r"'training.lr': .*finite"),
    ("seed: -1\n", r"'seed': .*greater than or equal to 0"),
    ("folds: ten\n", r"'folds': .*integer"),
    ("name: !!python/object/apply:os.system [ls]\n", r"not valid YAML \(could not determine a constructor .* line 1"),
    ("base: &b {lr: 0.1}\ntraining: *b\n", r"not valid YAML \(aliases \(\*name\) are not allowed in a config at line 2"),
])
def test_bad_config_values_are_one_line_naming_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    bad = tmp_path / "bad config.yaml"
    bad.write_text(text)
    with pytest.raises(CytolensError, match=message) as caught:
        load_config(bad, ClassifyConfig)
    assert "bad config.yaml" in str(caught.value) and "\n" not in str(caught.value)


def test_a_binary_file_given_as_a_config_is_named(tmp_path: Path) -> None:
    binary = tmp_path / "weights.pt"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(CytolensError, match=r"weights.pt: not a text file"):
        load_config(binary, ClassifyConfig)


def test_segmentation_class_names_are_distinct(tmp_path: Path) -> None:
    from cytolens.segment.config import SegmentConfig

    bad = tmp_path / "seg.yaml"
    bad.write_text("classes: [background, nucleus, nucleus]\n")
    with pytest.raises(CytolensError, match="repeated: nucleus"):
        load_config(bad, SegmentConfig)


def test_saved_config_round_trips(tmp_path: Path) -> None:
    config = load_config("shpilman2017-cpu", ClassifyConfig, seed=11)
    assert config.seed == 11
    again = load_config(save_config(config, tmp_path / "config.yaml"), ClassifyConfig)
    assert again == config


PAPER_CONFIGS = ("shpilman2017", "midl2019-unet", "midl2019-tiramisu", "midl2019-deeplab", "cytogan-dcgan",
                 "cytogan-lsgan", "cytogan-wgan")


@pytest.mark.parametrize("name", packaged_configs())
def test_paper_configs_keep_fp32_and_the_others_say_they_do_not(name: str) -> None:
    import yaml

    data = yaml.safe_load(resolve_config_path(name).read_text(encoding="utf-8"))
    if name in PAPER_CONFIGS:
        assert data["precision"] == "32-true"
    else:
        assert data.get("precision", "auto") == "auto"
        assert any(line.startswith("Precision auto") for line in data["deviations"])
