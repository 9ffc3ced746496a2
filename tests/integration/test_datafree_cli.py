"""Data-free KD end to end: `edgekd distill --method datafree` reads no training input.

Two proofs on a real (small) dataset and a real trained teacher:
- an audit hook (``sys.addaudithook`` on "open", in a subprocess running the CLI)
  records every file opened: no ``splits/train.npy`` / ``splits/val.npy``;
- the frames are shared by all splits in ``frames/lidar.npy``, so a poisoned
  copy overwrites every frame outside the test windows with NaN (and their
  labels with invalid beams), deletes the train/val split files and fixes
  meta.json's hashes: the data-free run gives bit-identical results on it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgekd.cli import cli
from edgekd.device.io import atomic_write_json, sha256_file
from edgekd.host.checkpoint import load_checkpoint, update_checkpoint
from edgekd.host.data import read_meta, write_dataset
from edgekd.host.data.store import fingerprint_of
from edgekd.host.distill import TrainConfig
from edgekd.host.distill.api import train_model
from edgekd.host.distill.config import DataFreeConfig
from edgekd.host.distill.datafree import distill_datafree

torch.set_num_threads(1)

FAST_DF = ["--epochs", "2", "--threads", "1", "--no-progress", "--config"]


def _scan_drives(drives: int = 24, frames: int = 20, seed: int = 0):
    """A user blob crossing the LiDAR's field of view; the best beam follows its azimuth."""
    rng = np.random.default_rng(seed)
    bins, beams = np.arange(216)[None], np.arange(64)[None]
    lidar, power, drive = [], [], []
    for d in range(drives):
        angle = np.clip(rng.uniform(0.2, 0.8) + rng.uniform(-0.01, 0.01) * np.arange(frames), 0, 0.999)
        lidar.append(2.5 - 1.5 * np.exp(-0.5 * ((bins - angle[:, None] * 216) / 3.0) ** 2))
        power.append(np.exp(-0.5 * ((beams - angle[:, None] * 64) / 1.5) ** 2) + 1e-4)
        drive.append(np.full(frames, d))
    return np.concatenate(lidar), np.concatenate(power), np.concatenate(drive)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("datafree")
    lidar, power, drive = _scan_drives()
    data = write_dataset(root / "data", frames={"lidar": lidar}, power=power, frame_info={"drive": drive},
                         source="synthetic", config=None, seed=0)
    teacher = root / "teacher.pt"
    train_model("lidar_teacher", data, TrainConfig(epochs=2, progress=False, threads=1), out=teacher)
    assert load_checkpoint(teacher).teacher_stats is not None
    # the teacher side adds the per-layer metadata (reads the training split, unlike the data-free run)
    added = CliRunner().invoke(cli, ["metadata", str(teacher), "--data", str(data)])
    assert added.exit_code == 0, added.output
    assert "embedding_pre 8x64" in added.output and "gru_hidden 11x128" in added.output
    stats = load_checkpoint(teacher).teacher_stats
    assert set(stats["layers"]) == {"embedding_pre", "gru_hidden"} and "last_hidden_mean" in stats
    config = root / "df.yaml"
    config.write_text("datafree:\n  generator_steps: 15\n  synthetic_samples: 128\n")
    return root, data, teacher, config


def _poisoned_copy(data: Path, out: Path) -> Path:
    """Every frame outside a test window becomes NaN (labels: an invalid beam); train/val split files go."""
    shutil.copytree(data, out)
    meta = read_meta(out)
    span = meta["window"] + meta["horizons"] - 1
    starts = np.load(out / "splits/test.npy")
    keep = np.zeros(meta["num_frames"], dtype=bool)
    keep[(starts[:, None] + np.arange(span)).ravel()] = True
    assert 0 < keep.sum() < len(keep)
    for rel, fill in (("frames/lidar.npy", np.nan), ("frames/power.npy", np.nan), ("frames/beams.npy", 10 ** 6)):
        array = np.load(out / rel)
        array[~keep] = fill
        np.save(out / rel, array)
    for split in ("train", "val"):
        (out / f"splits/{split}.npy").unlink()
        meta["arrays"].pop(f"splits/{split}.npy")
        meta["splits"].pop(split)
    for rel, entry in meta["arrays"].items():
        entry["sha256"], entry["bytes"] = sha256_file(out / rel), (out / rel).stat().st_size
    meta["fingerprint"] = fingerprint_of(meta["arrays"])
    atomic_write_json(out / "meta.json", meta)
    return out


def test_results_do_not_depend_on_any_training_frame(setup, tmp_path):
    _, data, teacher, _ = setup
    poisoned = _poisoned_copy(data, tmp_path / "poisoned")
    cfg = TrainConfig(epochs=2, progress=False, threads=1,
                      datafree=DataFreeConfig(generator_loss="weighted", student_loss="mse", generator_steps=15,
                                              synthetic_samples=128))
    student_a, a = distill_datafree(teacher, "lidar_student", cfg, tmp_path / "a.pt", data=data)
    student_b, b = distill_datafree(teacher, "lidar_student", cfg, tmp_path / "b.pt", data=poisoned)
    for name, tensor in student_a.state_dict().items():
        assert torch.equal(tensor, student_b.state_dict()[name]), name
    assert a.metrics["test"] == b.metrics["test"] and a.metrics["teacher_test"] == b.metrics["teacher_test"]
    assert all(np.isfinite(a.metrics["test"]["top5"]))
    ck = load_checkpoint(tmp_path / "b.pt")
    assert ck.config["method"] == "datafree" and ck.data["train_windows"] == 0 and ck.data["fingerprint"] is None
    # the student started from the teacher's (frozen) first layer: no data involved
    assert torch.equal(ck.state_dict["embed.weight"], load_checkpoint(teacher).state_dict["embed.weight"])
    assert ck.data["evaluation"]["split"] == "test"
    assert "generator" in ck.extra and ck.extra["datafree"]["generator_history"]
    log_lines = (tmp_path / "b.log.jsonl").read_text().splitlines()
    assert {json.loads(line)["phase"] for line in log_lines} == {"generator", "student"}


def test_cli_opens_no_training_split_file(setup, tmp_path):
    _, data, teacher, config = setup
    record = tmp_path / "opened.json"
    out = tmp_path / "s.pt"
    script = textwrap.dedent(f"""
        import json, os, sys
        opened = []
        def hook(event, args):
            if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
                opened.append(os.fsdecode(args[0]))
        sys.addaudithook(hook)
        from edgekd.cli import main
        try:
            main({["distill", "--method", "datafree", "--teacher", str(teacher), "--student", "lidar_student",
                   "--out", str(out), "--data", str(data), "--generator-loss", "metadata", "--student-loss", "mse",
                   *FAST_DF, str(config)]!r})
        except SystemExit as exc:
            code = exc.code
        json.dump({{"code": code, "opened": opened}}, open({str(record)!r}, "w"))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(record.read_text())
    assert result["code"] in (0, None), proc.stderr
    opened = [Path(p).resolve() for p in result["opened"]]
    data = Path(data).resolve()
    assert data / "splits/test.npy" in opened and data / "frames/lidar.npy" in opened
    assert data / "splits/train.npy" not in opened and data / "splits/val.npy" not in opened
    assert "no real training input" in proc.stdout and out.is_file()


def test_cli_without_data_and_teacher_without_metadata(setup, tmp_path):
    _, _, teacher, config = setup
    runner = CliRunner()
    ok = runner.invoke(cli, ["distill", "--method", "datafree", "--teacher", str(teacher), "--out",
                             str(tmp_path / "s.pt"), "--generator-loss", "entropy", *FAST_DF, str(config)])
    assert ok.exit_code == 0, ok.output
    metrics = load_checkpoint(tmp_path / "s.pt").metrics
    assert not {"test", "teacher_test"} & set(metrics)           # nothing to evaluate on without --data
    bare = tmp_path / "bare.pt"
    shutil.copy(teacher, bare)
    update_checkpoint(bare, teacher_stats=None)
    failed = runner.invoke(cli, ["distill", "--method", "datafree", "--teacher", str(bare), "--out",
                                 str(tmp_path / "x.pt"), "--generator-loss", "metadata", *FAST_DF, str(config)])
    assert failed.exit_code == 2
    assert "teacher_stats" in failed.output and f"edgekd metadata {bare} --data" in failed.output
    wrong = runner.invoke(cli, ["distill", "--method", "datafree", "--teacher", str(teacher), "--out",
                                str(tmp_path / "y.pt"), "--alpha", "0.5", *FAST_DF, str(config)])
    assert wrong.exit_code == 2 and "--alpha" in wrong.output
    other = runner.invoke(cli, ["distill", "--method", "kd", "--teacher", str(teacher), "--student", "lidar_student",
                                "--out", str(tmp_path / "z.pt"), "--student-loss", "mse"])
    assert other.exit_code == 2 and "datafree only" in other.output


def test_distill_model_datafree_runs_through_the_trainer_and_resumes(setup, tmp_path, monkeypatch):
    """`distill_model(..., "datafree")` is the data-free run: per-epoch checkpoints, JSONL log, resume."""
    from edgekd.host.distill.api import distill_model
    from edgekd.host.distill.trainer import Trainer

    _, data, teacher, _ = setup
    cfg = TrainConfig(epochs=3, progress=False, threads=1,
                      datafree=DataFreeConfig(student_loss="mse", generator_steps=15, synthetic_samples=128,
                                              resample_each_epoch=True))
    full_student, full = distill_model(teacher, None, "datafree", data, cfg, tmp_path / "full.pt")
    assert full.method == "datafree" and full.epochs_run == 3 and len(full.student_history) == 3
    assert set(full.metrics) >= {"test", "teacher_test", "best_epoch"} and full.generator_history
    ck = load_checkpoint(tmp_path / "full.pt")
    assert ck.extra["train_state"]["finished"] and ck.extra["train_state"]["method"] == "datafree"
    lines = [json.loads(line) for line in (tmp_path / "full.log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines if r["phase"] == "student"] == [1, 2, 3]
    assert lines[0]["phase"] == "generator"

    out = tmp_path / "resumed.pt"
    original = Trainer.train_epoch

    def crash_on_epoch_3(self, epoch):
        if epoch == 3:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", crash_on_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        distill_model(teacher, "lidar_student", "datafree", data, cfg, out)
    assert load_checkpoint(out).extra["train_state"]["epoch"] == 2
    monkeypatch.setattr(Trainer, "train_epoch", original)
    resumed, result = distill_model(teacher, "lidar_student", "datafree", data, cfg, out, resume=True)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    for name, value in full_student.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=0)
    assert result.metrics["test"] == full.metrics["test"]
    assert [json.loads(line)["phase"] for line in out.with_suffix(".log.jsonl").read_text().splitlines()].count(
        "student") == 3
