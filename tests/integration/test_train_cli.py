"""`edgekd train | distill | evaluate | metadata` end to end on a small synthesised dataset (real models)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgekd.cli import cli
from edgekd.host.checkpoint import load_checkpoint
from edgekd.host.data import write_dataset

pytestmark = pytest.mark.slow
torch.set_num_threads(1)

FAST = ["--epochs", "1", "--batch-size", "16", "--threads", "1", "--no-progress"]


def invoke(*args: str, code: int = 0):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from edgekd.host.data import write_recording
    from edgekd.host.data.synth import load_scene_config, synthesize

    recording = synthesize(load_scene_config(), windows=240, seed=0, image_size=32)
    return write_recording(tmp_path_factory.mktemp("synth") / "scene", recording)


@pytest.fixture(scope="module")
def gps_only(tmp_path_factory):
    out = tmp_path_factory.mktemp("gps") / "gps"
    rng = np.random.default_rng(0)
    frames = 60
    write_dataset(out, frames={"gps": rng.normal(size=(frames, 2))}, power=rng.uniform(0.01, 1, (frames, 64)),
                  frame_info={"drive": np.repeat(np.arange(3), 20)}, source="synthetic", config=None, seed=0)
    return out


@pytest.fixture(scope="module")
def image_teacher(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "image_teacher.pt"
    invoke("train", "--model", "image_teacher", "--data", data, "--out", out, *FAST)
    return out


def test_train_then_evaluate_with_table_plot_and_json(data, tmp_path):
    out = tmp_path / "student.pt"
    result = invoke("train", "--model", "image_student", "--data", data, "--out", out, *FAST,
                    "--max-train-windows", "96", "--seed", "3")
    assert "wrote" in result.output and "top-1" in result.output
    ck = load_checkpoint(out, expect_model="image_student")
    assert ck.config["train"]["seed"] == 3 and ck.data["train_windows"] == 96
    assert ck.model_kwargs["image_size"] == 32          # inferred from the dataset
    assert ck.teacher_stats["count"] == 96
    plot, metrics_json = tmp_path / "fig.png", tmp_path / "m.json"
    result = invoke("evaluate", out, "--data", data, "--plot", plot, "--json", metrics_json)
    lines = result.output.splitlines()
    assert any(line.startswith("t3") for line in lines) and any(line.startswith("mean") for line in lines)
    assert "top-5" in result.output and "DBA" in result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads(metrics_json.read_text())
    assert metrics["split"] == "test" and len(metrics["top1"]) == 4 and metrics["n"] > 0
    assert all(0 <= v <= 1 for v in metrics["top5"])


def test_distill_kd_with_horizon_weights_and_config(data, image_teacher, tmp_path):
    config = tmp_path / "kd.yaml"
    config.write_text("lr: 0.0008\ntemperature: 4.0\nalpha: 0.3\nepochs: 3\n")
    out = tmp_path / "kd.pt"
    invoke("distill", "--teacher", image_teacher, "--student", "image_student", "--method", "kd", "--data", data,
           "--out", out, "--config", config, *FAST, "--alpha", "0.4", "--horizon-weights", "0.7,0.9,1.1,1.3")
    ck = load_checkpoint(out, expect_model="image_student")
    train = ck.config["train"]
    assert train["epochs"] == 1 and train["lr"] == 0.0008 and train["alpha"] == 0.4   # flags beat the YAML
    assert train["horizon_weights"] == [0.7, 0.9, 1.1, 1.3] or train["horizon_weights"] == (0.7, 0.9, 1.1, 1.3)
    assert ck.config["teacher"]["model"] == "image_teacher"
    log = [json.loads(x) for x in out.with_suffix(".log.jsonl").read_text().splitlines()]
    assert "loss_kd" in log[0]["train"]


def test_distill_relation_and_self(data, image_teacher, tmp_path):
    invoke("distill", "--teacher", image_teacher, "--student", "image_student", "--method", "rkd", "--data", data,
           "--out", tmp_path / "rkd.pt", *FAST, "--max-train-windows", "64")
    log = [json.loads(x) for x in (tmp_path / "rkd.log.jsonl").read_text().splitlines()]
    assert {"loss_rkd_distance", "loss_rkd_angle"} <= set(log[0]["train"])
    invoke("distill", "--teacher", image_teacher, "--method", "self", "--data", data, "--out", tmp_path / "self.pt",
           *FAST, "--max-train-windows", "64")
    assert load_checkpoint(tmp_path / "self.pt").model_name == "image_teacher"


def test_fusion_student_from_fusion_teacher(data, tmp_path):
    teacher = tmp_path / "fusion_teacher.pt"
    invoke("train", "--model", "fusion_teacher", "--data", data, "--out", teacher, *FAST, "--max-train-windows", "64")
    invoke("distill", "--teacher", teacher, "--student", "fusion_student", "--method", "kd", "--data", data,
           "--out", tmp_path / "fs.pt", *FAST, "--max-train-windows", "64")
    ck = load_checkpoint(tmp_path / "fs.pt", expect_model="fusion_student")
    assert ck.data["modalities"] == ["image", "radar"]


def test_metadata_command_adds_stats(data, image_teacher, tmp_path):
    result = invoke("metadata", image_teacher, "--data", data)
    assert "teacher_stats" in result.output
    stats = load_checkpoint(image_teacher).teacher_stats
    assert len(stats["last_hidden_mean"]) == len(stats["last_hidden_var"]) > 0
    assert all(v >= 0 for v in stats["last_hidden_var"])


def test_user_errors_exit_2(data, gps_only, image_teacher, tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("epochs: 1\ntemprature: 3\n")
    result = invoke("train", "--model", "image_student", "--data", data, "--out", tmp_path / "x.pt",
                    "--config", typo, code=2)
    assert "unknown key 'temprature'" in result.output and str(typo) in result.output
    result = invoke("distill", "--teacher", image_teacher, "--student", "image_studnet", "--method", "kd",
                    "--data", data, "--out", tmp_path / "x.pt", *FAST, code=2)
    assert "unknown model 'image_studnet'" in result.output and "image_student" in result.output
    result = invoke("distill", "--teacher", image_teacher, "--student", "image_student", "--method", "kdd",
                    "--data", data, "--out", tmp_path / "x.pt", *FAST, code=2)
    assert "unknown KD method 'kdd'" in result.output
    result = invoke("train", "--model", "image_student", "--data", gps_only, "--out", tmp_path / "x.pt", *FAST,
                    code=2)
    assert "'image'" in result.output and "fix:" in result.output
    result = invoke("evaluate", image_teacher, "--data", gps_only, code=2)
    assert "'image'" in result.output
    result = invoke("train", "--model", "image_student", "--data", data, "--out", image_teacher, "--resume",
                    *FAST, code=2)
    assert "holds model 'image_teacher', expected 'image_student'" in result.output
    result = invoke("distill", "--student", "image_student", "--method", "kd", "--data", data,
                    "--out", tmp_path / "x.pt", *FAST, code=2)
    assert "needs a teacher" in result.output
    result = invoke("distill", "--teacher", image_teacher, "--student", "image_student", "--method", "kd",
                    "--data", data, "--out", tmp_path / "x.pt", "--horizon-weights", "1,a", code=2)
    assert "horizon" in result.output
    result = invoke("evaluate", tmp_path / "missing.pt", "--data", data, code=2)
    assert "checkpoint not found" in result.output
