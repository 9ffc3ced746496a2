"""The trainer and its Python API on a small learnable LiDAR dataset and the real lidar models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgekd.device.errors import EdgekdError
from edgekd.host.checkpoint import load_checkpoint, save_checkpoint
from edgekd.host.data import load_dataset, write_dataset
from edgekd.host.distill import TrainConfig, load_train_config
from edgekd.host.distill.api import (
    add_teacher_stats,
    distill_model,
    evaluate_checkpoint,
    train_model,
)
from edgekd.host.distill.sources import batch_slices, epoch_permutation, train_indices
from edgekd.host.distill.trainer import Trainer
from edgekd.host.models import create_model

torch.set_num_threads(1)

BINS = 216


def _lidar_drives(drives: int, frames: int, seed: int):
    """Users crossing the field of view: the LiDAR return sits at the user's azimuth, the best beam follows it."""
    rng = np.random.default_rng(seed)
    lidar, power, drive = [], [], []
    for d in range(drives):
        start, speed = rng.uniform(0.15, 0.85), rng.uniform(-0.012, 0.012)
        angle = np.clip(start + speed * np.arange(frames) + rng.normal(0, 0.002, frames), 0.0, 0.999)
        bins = np.arange(BINS)[None, :]
        blob = 0.5 * np.exp(-0.5 * ((bins - angle[:, None] * BINS) / 2.0) ** 2)
        lidar.append(blob + rng.uniform(0, 0.02, (frames, BINS)))
        beams = np.arange(64)[None, :]
        power.append(np.exp(-0.5 * ((beams - angle[:, None] * 64) / 1.2) ** 2) + 1e-4)
        drive.append(np.full(frames, d))
    return np.concatenate(lidar), np.concatenate(power), np.concatenate(drive)


@pytest.fixture(scope="module")
def lidar_data(tmp_path_factory):
    lidar, power, drive = _lidar_drives(drives=14, frames=36, seed=0)
    out = tmp_path_factory.mktemp("data") / "lidar"
    write_dataset(out, frames={"lidar": lidar, "gps": np.zeros((len(drive), 2))}, power=power,
                  frame_info={"drive": drive}, source="synthetic", config=None, seed=0)
    return out


@pytest.fixture(scope="module")
def gps_only_data(tmp_path_factory):
    _, power, drive = _lidar_drives(drives=6, frames=20, seed=1)
    out = tmp_path_factory.mktemp("data") / "gps"
    write_dataset(out, frames={"gps": np.zeros((len(drive), 2))}, power=power, frame_info={"drive": drive},
                  source="synthetic", config=None, seed=0)
    return out


def quick(**kw) -> TrainConfig:
    base = dict(epochs=3, batch_size=16, lr=3e-3, progress=False, eval_batch_size=64)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def teacher_ckpt(lidar_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "teacher.pt"
    train_model("lidar_teacher", lidar_data, quick(epochs=4), out=out)
    return out


def test_batching_helpers():
    assert [len(c) for c in batch_slices(np.arange(10), 4)] == [4, 4, 2]
    assert [len(c) for c in batch_slices(np.arange(9), 4, min_last=2)] == [4, 4]
    assert np.array_equal(epoch_permutation(20, 42, 3), epoch_permutation(20, 42, 3))
    assert not np.array_equal(epoch_permutation(20, 42, 3), epoch_permutation(20, 42, 4))
    assert len(train_indices(100, 30)) == 30 and len(train_indices(10, None)) == 10


def test_train_writes_checkpoint_log_metrics_and_stats(lidar_data, tmp_path):
    out = tmp_path / "student.pt"
    model, result = train_model("lidar_student", lidar_data, quick(), out=out)
    ck = load_checkpoint(out, expect_model="lidar_student")
    assert ck.config["method"] == "none" and ck.config["train"]["epochs"] == 3
    ds = load_dataset(lidar_data, "train")
    assert ck.data["fingerprint"] == ds.fingerprint and ck.data["modalities"] == ["lidar"]
    assert ck.data["shapes"] == {"lidar": [8, BINS]}
    lines = [json.loads(line) for line in (tmp_path / "student.log.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2, 3]
    assert {"loss", "loss_ce"} <= set(lines[0]["train"])
    assert len(lines[0]["val"]["top1"]) == 4 and "top5" in lines[0]["val"] and "loss" in lines[0]["val"]
    assert lines[-1]["train"]["loss"] < lines[0]["train"]["loss"]
    assert set(ck.metrics) >= {"val", "test", "best_epoch"} and len(ck.metrics["test"]["top2"]) == 4
    # The saved weights are the best-on-val epoch's and reproduce the stored val metrics.
    val_best = min(lines, key=lambda r: r["val"]["loss"])
    assert ck.metrics["best_epoch"] == val_best["epoch"] == result.best_epoch
    again = evaluate_checkpoint(out, lidar_data, "val")
    assert again["top1"] == pytest.approx(val_best["val"]["top1"])
    assert again["loss"] == pytest.approx(val_best["val"]["loss"], rel=1e-5)
    # teacher_stats = mean / population variance of last_hidden over every training window (independent numpy).
    built = ck.build()
    with torch.no_grad():
        hidden = built.forward_features(torch.from_numpy(ds.batch(np.arange(len(ds)))["lidar"]))["last_hidden"]
    hidden = hidden.double().numpy()
    stats = ck.teacher_stats
    assert stats["count"] == len(ds) and len(stats["last_hidden_mean"]) == 32
    np.testing.assert_allclose(stats["last_hidden_mean"], hidden.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats["last_hidden_var"], hidden.var(0), rtol=1e-4, atol=1e-6)


def test_training_learns_the_task(lidar_data):
    _, result = train_model("lidar_student", lidar_data, quick(epochs=6, lr=5e-3))
    top5 = result.metrics["test"]["top5_mean"]
    # 64 beams: chance top-5 is 0.08; the beam is a function of the LiDAR bump, so a few epochs go well past it.
    assert top5 > 0.3, result.metrics["test"]


def test_bf16_precision_trains_under_autocast_and_saves_fp32(lidar_data, tmp_path):
    # A global forward hook sees the dtype every Linear layer really computed in; training and
    # evaluation both pass through it, so the two are told apart by the module's training flag.
    seen: dict[bool, set] = {True: set(), False: set()}

    def record(module, _inputs, output):
        if isinstance(module, torch.nn.Linear):
            seen[module.training].add(output.dtype)

    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        _, result = train_model("lidar_student", lidar_data, quick(epochs=6, lr=5e-3, precision="bf16"),
                                out=tmp_path / "bf16.pt")
    finally:
        hook.remove()
    assert seen[True] == {torch.bfloat16}      # the training forward ran in bf16 ...
    assert seen[False] == {torch.float32}      # ... evaluation (val, test, stats) in fp32
    assert result.metrics["train_precision"] == "bf16"
    ck = load_checkpoint(tmp_path / "bf16.pt")
    assert ck.config["train"]["precision"] == "bf16"
    assert {v.dtype for v in ck.state_dict.values() if v.is_floating_point()} == {torch.float32}
    assert result.metrics["test"]["top5_mean"] > 0.3, result.metrics["test"]   # it still learns the task


def test_cli_precision_flag_reaches_the_run(lidar_data, tmp_path):
    from click.testing import CliRunner

    from edgekd.cli import cli

    out = tmp_path / "cli.pt"
    res = CliRunner().invoke(cli, ["train", "--model", "lidar_student", "--data", str(lidar_data), "--out", str(out),
                                   "--epochs", "1", "--precision", "bf16", "--no-progress"])
    assert res.exit_code == 0, res.output
    ck = load_checkpoint(out)
    assert ck.config["train"]["precision"] == "bf16" and ck.metrics["train_precision"] == "bf16"
    bad = CliRunner().invoke(cli, ["train", "--model", "lidar_student", "--data", str(lidar_data), "--out",
                                   str(tmp_path / "x.pt"), "--precision", "fp16"])
    assert bad.exit_code == 2 and "--precision" in bad.output


def test_auto_precision_follows_the_cpu(monkeypatch):
    from edgekd.host.distill.optim import resolve_precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"   # asked for by name: honoured (emulated, slower)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert resolve_precision("auto", cpu) == "bf16"
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert resolve_precision("auto", cpu) == "fp32"   # a torch without the probes: fp32, no failure
    with pytest.raises(EdgekdError, match="precision"):
        load_train_config(None, precision="fp16")


def test_max_train_windows_limits_training_and_stats(lidar_data, tmp_path):
    out = tmp_path / "small.pt"
    train_model("lidar_student", lidar_data, quick(epochs=1, max_train_windows=40), out=out)
    ck = load_checkpoint(out)
    assert ck.data["train_windows"] == 40 and ck.teacher_stats["count"] == 40


def test_early_stopping_on_flat_validation_loss(lidar_data):
    # lr far below float32 resolution: weights (so the val loss) never change, patience 1 stops at epoch 2.
    _, result = train_model("lidar_student", lidar_data, quick(epochs=5, lr=1e-30, patience=1))
    assert result.stopped_early and result.epochs_run == 2 and result.best_epoch == 1


def test_prefetch_workers_give_identical_training(lidar_data):
    a, _ = train_model("lidar_student", lidar_data, quick(epochs=1))
    b, _ = train_model("lidar_student", lidar_data, quick(epochs=1, num_workers=2))
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_resume_continues_to_the_same_weights(lidar_data, tmp_path, monkeypatch):
    full, _ = train_model("lidar_student", lidar_data, quick(epochs=3, patience=10))
    out = tmp_path / "resumed.pt"
    original = Trainer.train_epoch

    def crash_on_epoch_3(self, epoch):
        if epoch == 3:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", crash_on_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train_model("lidar_student", lidar_data, quick(epochs=3, patience=10), out=out)
    assert load_checkpoint(out).extra["train_state"]["epoch"] == 2
    monkeypatch.setattr(Trainer, "train_epoch", original)
    resumed, result = train_model("lidar_student", lidar_data, quick(epochs=3, patience=10), out=out, resume=True)
    assert result.epochs_run == 3 and [r["epoch"] for r in result.history] == [1, 2, 3]
    full_ck = full.state_dict()
    ck = load_checkpoint(out)
    assert ck.extra["train_state"]["finished"]
    live = {k.removeprefix("student."): v for k, v in ck.extra["train_state"]["distiller"].items()}
    for name, value in full_ck.items():
        torch.testing.assert_close(live[name], value, rtol=0, atol=1e-6)


def test_distill_kd_records_teacher_and_resolved_knobs(lidar_data, teacher_ckpt, tmp_path):
    out = tmp_path / "kd.pt"
    cfg = quick(epochs=2, horizon_weights=(0.7, 0.9, 1.1, 1.3))
    _, result = distill_model(teacher_ckpt, "lidar_student", "kd", lidar_data, cfg, out=out)
    ck = load_checkpoint(out, expect_model="lidar_student")
    assert ck.config["method"] == "kd" and ck.config["teacher"]["model"] == "lidar_teacher"
    assert ck.config["train"]["alpha"] == 0.3 and ck.config["train"]["temperature"] == 4.0
    assert "loss_kd" in result.history[0]["train"]
    assert len(ck.teacher_stats["last_hidden_mean"]) == 32


@pytest.mark.parametrize("method", ["mse", "rkd", "rkd-park", "fitnet", "dml"])
def test_every_method_trains(lidar_data, teacher_ckpt, method):
    model, result = distill_model(teacher_ckpt, "lidar_student", method, lidar_data, quick(epochs=1))
    assert model.registry_name == "lidar_student" and result.method == method
    assert np.isfinite(result.history[0]["train"]["loss"])


def test_self_kd_deploys_an_ema_copy_of_the_teacher(lidar_data, teacher_ckpt, tmp_path):
    out = tmp_path / "self.pt"
    model, result = distill_model(teacher_ckpt, None, "self", lidar_data, quick(epochs=1), out=out)
    ck = load_checkpoint(out, expect_model="lidar_teacher")
    assert ck.config["train"]["temperature"] == 3.0 and ck.config["train"]["alpha"] == 0.5
    assert "ema.n_averaged" in ck.extra["train_state"]["distiller"]
    with pytest.raises(EdgekdError, match="fresh copy of itself"):
        distill_model(teacher_ckpt, "lidar_student", "self", lidar_data, quick(epochs=1))


def test_add_teacher_stats_recomputes(lidar_data, teacher_ckpt, tmp_path):
    copy = tmp_path / "copy.pt"
    ck = load_checkpoint(teacher_ckpt)
    save_checkpoint(copy, ck.build(), config=ck.config, data=ck.data)
    assert load_checkpoint(copy).teacher_stats is None
    stats = add_teacher_stats(copy, lidar_data)
    assert load_checkpoint(copy).teacher_stats == stats
    np.testing.assert_allclose(stats["last_hidden_mean"], ck.teacher_stats["last_hidden_mean"], rtol=1e-5, atol=1e-7)


def test_user_errors(lidar_data, gps_only_data, teacher_ckpt, tmp_path):
    with pytest.raises(EdgekdError, match="needs modality 'lidar'|modality 'lidar' is not in this dataset"):
        train_model("lidar_student", gps_only_data, quick(epochs=1))
    with pytest.raises(EdgekdError, match="unknown model 'lidar_studnet'"):
        distill_model(teacher_ckpt, "lidar_studnet", "kd", lidar_data, quick(epochs=1))
    with pytest.raises(EdgekdError, match="unknown KD method"):
        distill_model(teacher_ckpt, "lidar_student", "kdd", lidar_data, quick(epochs=1))
    with pytest.raises(EdgekdError, match="needs a teacher"):
        distill_model(None, "lidar_student", "kd", lidar_data, quick(epochs=1))
    with pytest.raises(EdgekdError, match="holds model 'lidar_teacher', expected 'lidar_student'"):
        train_model("lidar_student", lidar_data, quick(epochs=1), out=teacher_ckpt, resume=True)
    # a teacher that does not fit the data: a model built for another window length
    odd = tmp_path / "odd.pt"
    save_checkpoint(odd, create_model("lidar_teacher", window=6))
    with pytest.raises(EdgekdError, match="expects lidar windows"):
        distill_model(odd, "lidar_student", "kd", lidar_data, quick(epochs=1))
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 2\nlearning_rate: 0.1\n")
    with pytest.raises(EdgekdError, match="unknown key 'learning_rate'"):
        load_train_config(bad)
    with pytest.raises(EdgekdError, match="alpha"):
        load_train_config(None, alpha=1.5)


def test_example_configs_load_and_match_the_paper():
    from edgekd.host.distill.config import example_configs

    configs = {name: load_train_config(path) for name, path in example_configs().items()}
    assert {"teacher", "image_student_kd", "image_student_rkd", "fusion_student_kd", "self_kd"} <= set(configs)
    assert (configs["image_student_kd"].lr, configs["image_student_kd"].temperature,
            configs["image_student_kd"].alpha) == (8e-4, 4.0, 0.3)
    assert configs["fusion_student_rkd"].rkd_distance_weight == 10.0
    assert configs["horizon_adaptive_kd"].horizon_weights == (0.7, 0.9, 1.1, 1.3)
