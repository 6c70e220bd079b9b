"""The engine: precision, ranks, sharding, the fit loop's resume and early stopping, checkpoints, run folders."""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_toy import fit_toy

from cytolens.engine import (
    EngineOptions, ExperimentConfig, RunFolder, create_optimizer, launch, load_checkpoint, load_run, resolve_precision,
    run_kind, save_checkpoint, shard_bounds,
)
from cytolens.engine import precision as precision_module
from cytolens.engine.loop import EarlyStopping
from cytolens.engine.parameters import l2_penalty
from cytolens.core.errors import CytolensError, OptionError


def test_precision_auto_follows_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16-mixed"
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "32-true"
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"
    with pytest.raises(OptionError, match="16-mixed' needs a CUDA GPU"):
        resolve_precision("16-mixed", "cpu")
    with pytest.raises(OptionError, match="must be one of"):
        resolve_precision("bf16", "cpu")


@pytest.mark.parametrize("n, world", [(0, 2), (1, 2), (7, 2), (8, 3), (10, 4)])
def test_shards_cover_every_item_once_in_order(n: int, world: int) -> None:
    items = [i for rank in range(world) for i in range(*shard_bounds(n, rank, world))]
    assert items == list(range(n))


def test_fit_resumes_mid_epoch_with_identical_results(tmp_path: Path) -> None:
    options = EngineOptions(precision="32-true", deterministic=True)
    whole = launch(fit_toy, options, tmp_path / "whole.pt", 3)
    # Interrupted after step 8 (epoch 2, batch 2 of 6), then resumed from the checkpoint the loop saved.
    assert launch(_fit_and_interrupt, options, tmp_path / "cut.pt", 8) == 8
    resumed = launch(fit_toy, options, tmp_path / "cut.pt", 3, 1)
    assert resumed["resumed_from"] == 8
    assert [row["val_accuracy"] for row in resumed["epochs"]] == [row["val_accuracy"] for row in whole["epochs"]]
    assert [row["train_loss"] for row in resumed["epochs"]] == [row["train_loss"] for row in whole["epochs"]]
    np.testing.assert_array_equal(resumed["weights"], whole["weights"])
    # A finished fit's checkpoint says so: running it again trains nothing.
    again = launch(fit_toy, options, tmp_path / "whole.pt", 3)
    np.testing.assert_array_equal(again["weights"], whole["weights"])


def _fit_and_interrupt(runtime, checkpoint: Path, stop_at: int) -> int:  # type: ignore[no-untyped-def]
    """Fit with a checkpoint every step and a KeyboardInterrupt after step ``stop_at`` (the loop saves it)."""
    import engine_toy

    class Interrupting(engine_toy.ToyTask):
        def train_step(self, position):  # type: ignore[no-untyped-def]
            if position.step > stop_at:
                raise KeyboardInterrupt
            return super().train_step(position)

    from cytolens.engine import FitLoop, LoopSettings

    task = Interrupting(runtime, seed=3)
    loop = FitLoop(runtime, LoopSettings(seed=3, max_epochs=3, monitor="val_accuracy", checkpoint_every=1),
                   checkpoint, label="toy")
    with pytest.raises(KeyboardInterrupt):
        loop.fit(task)
    return int(load_checkpoint(checkpoint)["loop"]["step"])


def test_sigkilled_training_resumes_and_ends_like_an_uninterrupted_run(tmp_path: Path) -> None:
    script = Path(__file__).with_name("engine_toy.py")
    env = {**os.environ, "PYTHONPATH": str(script.parent)}
    killed = tmp_path / "killed"
    killed.mkdir()
    process = subprocess.Popen([sys.executable, str(script), str(killed)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:  # wait for a mid-epoch checkpoint (6 steps an epoch, one every step)
        if (killed / "resume.pt").is_file():
            try:
                if load_checkpoint(killed / "resume.pt")["loop"]["step"] >= 8:
                    break
            except CytolensError:  # caught between write and rename: try again
                pass
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "result.json").exists()
    again = subprocess.run([sys.executable, str(script), str(killed)], env=env, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming from step" in again.stdout + again.stderr
    uninterrupted = tmp_path / "whole"
    uninterrupted.mkdir()
    subprocess.run([sys.executable, str(script), str(uninterrupted)], env=env, check=True, capture_output=True,
                   timeout=120)
    a = json.loads((killed / "result.json").read_text())
    b = json.loads((uninterrupted / "result.json").read_text())
    assert 8 <= a["resumed_from"] < 24
    assert a["epochs"] == [{**row, "seconds": a["epochs"][i]["seconds"]} for i, row in enumerate(b["epochs"])]
    assert a["weights"] == b["weights"]


def test_ranks_started_by_torchrun_take_their_rank_from_the_environment(tmp_path: Path) -> None:
    script = Path(__file__).with_name("engine_toy.py")
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "PYTHONPATH": str(script.parent), "OMP_NUM_THREADS": "1"}
    with socket.socket() as probe:  # a free port: a fixed one may still be held by an earlier run
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--master-port", str(port), str(script),
                           str(tmp_path)], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert (result["world_size"], result["rank"]) == (2, 0)
    assert result["epochs"][-1]["val_accuracy"] >= 0.75


def test_two_cpu_processes_train_like_one(tmp_path: Path) -> None:
    one = launch(fit_toy, EngineOptions(precision="32-true"), tmp_path / "one.pt", 3)
    two = launch(fit_toy, EngineOptions(devices=2, precision="32-true"), tmp_path / "two.pt", 3)
    assert (one["world_size"], two["world_size"]) == (1, 2)
    # The same global batches, split in halves whose gradients DDP averages: the same updates up to dropout
    # masks (drawn per rank) and float summation order.
    assert abs(one["epochs"][-1]["val_accuracy"] - two["epochs"][-1]["val_accuracy"]) <= 0.15
    assert two["epochs"][-1]["val_accuracy"] >= 0.75


def test_ranks_working_alone_train_exactly_like_one_process(tmp_path: Path) -> None:
    options = EngineOptions(precision="32-true", deterministic=True)
    one = launch(fit_toy, options, tmp_path / "one.pt", 2)
    alone = launch(_fit_alone, EngineOptions(devices=2, precision="32-true", deterministic=True), tmp_path)
    np.testing.assert_array_equal(alone["weights"], one["weights"])
    assert alone["epochs"] == [{**row, "seconds": alone["epochs"][i]["seconds"]} for i, row in enumerate(one["epochs"])]


def _fit_alone(runtime, folder: Path):  # type: ignore[no-untyped-def]
    # Each rank fits its own copy (as classify's units are spread over ranks), writing its own checkpoint.
    return fit_toy(runtime.local(), Path(folder) / f"rank{runtime.rank}.pt", 2)


def test_bf16_and_fp32_predict_alike_on_a_fixed_model() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 16 * 16, 3))
    x = torch.randn(16, 1, 16, 16)
    outputs = {}
    for precision in ("32-true", "bf16-mixed"):
        outputs[precision] = launch(_predict, EngineOptions(precision=precision), model, x)
    assert outputs["32-true"].dtype == outputs["bf16-mixed"].dtype == torch.float32
    # bf16 keeps 8 bits of mantissa: probabilities agree to about 1e-2, the predicted classes almost always.
    p32, p16 = (torch.softmax(outputs[k], 1) for k in ("32-true", "bf16-mixed"))
    assert float((p32 - p16).abs().max()) < 0.03
    assert float((p32.argmax(1) == p16.argmax(1)).float().mean()) >= 0.9


def _predict(runtime, model, x):  # type: ignore[no-untyped-def]
    module = runtime.setup_module(model)
    with torch.no_grad():
        return module(x.to(runtime.device)).cpu()


def test_a_user_error_on_a_spawned_rank_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(CytolensError, match="bad.tif: broken"):
        launch(_fail, EngineOptions(devices=2, precision="32-true"), tmp_path)


def _fail(runtime, folder):  # type: ignore[no-untyped-def]
    raise CytolensError("broken", path=Path(folder) / "bad.tif")


def test_checkpoints_refuse_pickled_objects_and_truncated_files(tmp_path: Path) -> None:
    good = save_checkpoint({"w": torch.ones(3), "step": 4}, tmp_path / "good.pt")
    assert load_checkpoint(good)["step"] == 4
    pickled = tmp_path / "pickled.pt"
    torch.save({"object": Path("x")}, pickled)
    with pytest.raises(CytolensError, match=r"pickled.pt: not a loadable checkpoint: holds pickled objects"):
        load_checkpoint(pickled)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(CytolensError, match=r"truncated.pt: not a loadable checkpoint: truncated"):
        load_checkpoint(truncated)


def test_weights_of_another_model_are_one_line_naming_the_file(tmp_path: Path) -> None:
    from cytolens.engine import load_weights

    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    good = save_checkpoint({"model": model.state_dict()}, tmp_path / "good.pt")
    other = torch.nn.Sequential(torch.nn.Linear(4, 3))
    assert load_weights(other, good, "model") is other
    assert torch.equal(other[0].weight, model[0].weight)
    wider = save_checkpoint({"model": torch.nn.Sequential(torch.nn.Linear(4, 5)).state_dict()}, tmp_path / "wide.pt")
    with pytest.raises(CytolensError, match=r"wide.pt: holds weights of another model \(size mismatch for 0.weight"):
        load_weights(other, wider, "model")
    with pytest.raises(CytolensError, match=r"good.pt: holds weights of another model \(Missing key"):
        load_weights(other, good)  # the top level is {"model": ...}, not the weights
    with pytest.raises(CytolensError, match=r"good.pt: not a checkpoint of this kind: no 'state'"):
        load_weights(other, good, "state")


class _Config(ExperimentConfig):
    lr: float = 0.1


def test_run_folder_writes_run_json_first_and_applies_one_resume_rule(tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = _Config(name="toy", model="mlp")
    runtime = {"precision": "32-true", "world_size": 2, "devices": 2, "num_nodes": 1}
    folder = RunFolder(run, "toy")
    assert folder.start(config, data_fingerprint="abc", runtime=runtime) is False
    info = json.loads((run / "run.json").read_text())
    assert (info["kind"], info["world_size"], info["precision"], info["data_fingerprint"]) == ("toy", 2, "32-true",
                                                                                              "abc")
    assert run_kind(run) == "toy"
    record = load_run(run, "toy", _Config)
    assert record.config.lr == 0.1 and not record.is_done
    folder.finish({"steps": 3})
    assert load_run(run, "toy", _Config, require_done=True).done == {"steps": 3}
    # A schedule key may change; anything else, other data or another precision may not, once it has trained.
    assert folder.start(config.model_copy(update={"max_minutes": 5.0}), data_fingerprint="abc", runtime=runtime)
    assert not (run / "done.json").exists()
    save_checkpoint({"step": 1}, run / "checkpoints" / "last.pt")
    with pytest.raises(CytolensError, match=r"different config \(lr\)"):
        folder.start(config.model_copy(update={"lr": 0.2}), data_fingerprint="abc", runtime=runtime)
    with pytest.raises(CytolensError, match="other images"):
        folder.start(config, data_fingerprint="xyz", runtime=runtime)
    with pytest.raises(CytolensError, match="precision 32-true, not bf16-mixed"):
        folder.start(config, data_fingerprint="abc", runtime={**runtime, "precision": "bf16-mixed"})
    with pytest.raises(CytolensError, match="is a toy run, not a segment run"):
        load_run(run, "segment", _Config)
    (run / "run.json").write_text("{not json")
    with pytest.raises(CytolensError, match="run.json is unreadable or damaged"):
        load_run(run, "toy", _Config)


def test_a_run_that_never_saved_a_checkpoint_does_not_pin_its_config(tmp_path: Path) -> None:
    run = tmp_path / "run"
    runtime = {"precision": "32-true"}
    folder = RunFolder(run, "toy")
    folder.start(_Config(name="toy", model="mlp", lr=10.0), data_fingerprint="abc", runtime=runtime)
    # ... the attempt fails before its first step; the corrected config starts afresh in the same folder.
    assert folder.start(_Config(name="toy", model="mlp", lr=0.1), data_fingerprint="xyz", runtime=runtime) is False
    assert load_run(run, "toy", _Config).config.lr == 0.1
    assert len(json.loads((run / "run.json").read_text())["sessions"]) == 1
    save_checkpoint({"step": 1}, run / "resume.pt")
    with pytest.raises(CytolensError, match="different config"):
        folder.start(_Config(name="toy", model="mlp", lr=10.0), data_fingerprint="xyz", runtime=runtime)


def test_force_discards_only_a_run_of_its_kind(tmp_path: Path) -> None:
    run = tmp_path / "run"
    RunFolder(run, "toy").start(_Config(name="toy", model="mlp"), data_fingerprint="abc", runtime={})
    save_checkpoint({"step": 1}, run / "resume.pt")
    with pytest.raises(CytolensError, match="holds a toy run, not a segment run; --force leaves it alone"):
        RunFolder(run, "segment").discard()
    RunFolder(run, "toy").discard()
    assert not run.exists()
    RunFolder(run, "toy").discard()  # nothing there: nothing to do
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("...")
    with pytest.raises(CytolensError, match="--force deletes only a cytolens run folder"):
        RunFolder(precious, "toy").discard()
    assert (precious / "chapter1.tex").is_file()


def test_config_base_rejects_negative_seeds_and_infinite_budgets() -> None:
    with pytest.raises(ValueError):
        _Config(name="toy", model="mlp", seed=-1)
    with pytest.raises(ValueError):
        _Config(name="toy", model="mlp", max_minutes=float("inf"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none visible to torch here)")
def test_toy_fit_on_a_gpu_in_bf16(tmp_path: Path) -> None:
    result = launch(fit_toy, EngineOptions(accelerator="cuda", precision="bf16-mixed"), tmp_path / "gpu.pt", 3)
    assert result["precision"] == "bf16-mixed"
    assert result["epochs"][-1]["val_accuracy"] >= 0.75


@pytest.mark.parametrize("name, kind", [("nadam", torch.optim.NAdam), ("adam", torch.optim.Adam),
                                        ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)])
def test_one_optimiser_factory(name: str, kind: type) -> None:
    optimizer = create_optimizer(torch.nn.Linear(2, 2).parameters(), name, lr=0.01, betas=(0.5, 0.999))
    assert isinstance(optimizer, kind) and optimizer.param_groups[0]["lr"] == 0.01
    if name == "nadam":  # Keras' Nadam schedule_decay
        assert optimizer.param_groups[0]["momentum_decay"] == 0.004
    with pytest.raises(OptionError, match="optimizer"):
        create_optimizer(torch.nn.Linear(2, 2).parameters(), "adamax", lr=0.01)


@pytest.mark.parametrize("name", ["nadam", "adam", "sgd"])
def test_l2_as_weight_decay_equals_the_keras_loss_term(name: str) -> None:
    # The reference: Keras' kernel_regularizer as a loss term; create_optimizer(l2=...) puts its gradient in the
    # optimiser's coupled weight decay, kernels only. Three steps must give the same weights.
    torch.manual_seed(0)
    reference = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3))
    fast = copy.deepcopy(reference)
    opt_reference = create_optimizer(reference.parameters(), name, lr=0.01)
    opt_fast = create_optimizer(fast, name, lr=0.01, l2=0.05)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(reference(x), y) + l2_penalty(reference, 0.05)
        opt_reference.zero_grad()
        loss.backward()
        opt_reference.step()
        opt_fast.zero_grad()
        torch.nn.functional.cross_entropy(fast(x), y).backward()
        opt_fast.step()
    for (key, a), b in zip(reference.state_dict().items(), fast.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=key)
    # Biases carry no penalty: their group decays nothing.
    assert [group["weight_decay"] for group in opt_fast.param_groups] == [pytest.approx(0.1), 0.0]


def test_l2_needs_the_model_and_refuses_adamw() -> None:
    with pytest.raises(OptionError, match="adamw"):
        create_optimizer(torch.nn.Linear(2, 2), "adamw", lr=0.01, l2=0.01)
    with pytest.raises(TypeError, match="model itself"):
        create_optimizer(torch.nn.Linear(2, 2).parameters(), "adam", lr=0.01, l2=0.01)


def test_cpu_runtime_sets_models_and_image_batches_up_channels_last() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    conv_weight, batch = launch(_set_up_channels_last, EngineOptions(precision="32-true"), model,
                                torch.randn(2, 3, 8, 8))
    assert conv_weight.is_contiguous(memory_format=torch.channels_last)
    assert batch.is_contiguous(memory_format=torch.channels_last)


def _set_up_channels_last(runtime, model, x):  # type: ignore[no-untyped-def]
    runtime.setup_module(model)
    return model[0].weight.detach(), runtime.to_device(x)


def test_early_stopping_waits_for_min_epochs_but_tracks_the_best_from_the_first() -> None:
    scores = [0.6, 0.4, 0.4, 0.4, 0.5]
    plain = EarlyStopping("val_accuracy", patience=2)
    assert [plain.update(s, e)[1] for e, s in enumerate(scores, start=1)][:3] == [False, False, True]
    warm = EarlyStopping("val_accuracy", patience=2, min_epochs=5)
    stops = [warm.update(s, e)[1] for e, s in enumerate(scores, start=1)]
    assert stops == [False, False, False, False, True] and warm.best_epoch == 1


def test_a_model_without_l2_is_optimised_over_its_parameters() -> None:
    model = torch.nn.Linear(2, 2)
    optimizer = create_optimizer(model, "adam", lr=0.01)
    assert [p for group in optimizer.param_groups for p in group["params"]] == list(model.parameters())
