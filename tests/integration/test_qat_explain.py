"""Issue 17: ``edgekd distill --qat`` (torch.ao fake quantisation) and ``edgekd export --explain``.

Real models, real converters and interpreters. The --explain fixture has a known offender by
construction: one unit of the LiDAR student's ``embed`` layer is scaled up 40x and the GRU's input
weights of that unit scaled down as much, so the float function is unchanged while the int8 tensor
after ``embed`` spans a 40x wider range (one per-tensor scale): its other 63 units lose their precision.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from support.export import make_dataset, train_student

from edgekd.cli import cli
from edgekd.host.checkpoint import load_checkpoint, save_checkpoint
from edgekd.host.distill.qat import calibrate, fake_quant_count, prepare_qat, strip_qat
from edgekd.host.models import create_model

pytestmark = pytest.mark.slow
WIDE = 40.0


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("qat")
    make_dataset(root / "data", drives=10, frames_per_drive=60)
    train_student("lidar_teacher", root / "data", root / "teacher.pt", epochs=3)
    train_student("lidar_student", root / "data", root / "student.pt", epochs=6)
    return root


def invoke(*args, code: int = 0):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


def test_prepared_model_rounds_like_the_int8_graph():
    model = create_model("image_student").eval()
    prepared = prepare_qat(model)
    x = model.example_inputs(4)
    calibrate(prepared, x)                             # activation ranges from these windows, then frozen
    prepared.train()
    prepared(*x)                                       # a training step: weight ranges follow the weights
    counts = fake_quant_count(prepared)
    # conv per channel + dense per tensor weights, the GRU's three matmuls; every step's gates (created on use)
    assert counts["weight"] >= 15 and counts["activation"] >= 100
    prepared.eval()
    with torch.no_grad():
        q = prepared(*x)
        f = model(*x)
    deployed = (f - f.amax(-1, keepdim=True)).clamp(min=-8.0)
    steps = q / (8.0 / 255.0)
    assert torch.allclose(steps, steps.round(), atol=1e-3)          # the int8 output grid of the file
    assert 0 < float((q - deployed).abs().max()) < 1.0               # rounded, not another function
    stripped = strip_qat(prepared, copy.deepcopy(model))
    assert type(stripped) is type(model)
    # the parameters and the (frozen) BN statistics, without the fake-quant state
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stripped.state_dict().items())


def test_distill_qat_cli(workdir):
    out = workdir / "qat.pt"
    result = invoke("distill", "--teacher", workdir / "teacher.pt", "--student", "lidar_student", "--method", "kd",
                    "--data", workdir / "data", "--out", out, "--epochs", "3", "--qat", "--qat-epochs", "1",
                    "--threads", "1", "--no-progress")
    assert "QAT 1 epochs" in result.output
    ckpt = load_checkpoint(out)
    qat = ckpt.metrics["qat"]
    assert qat["epochs"] == 1 and qat["fake_quant_modules"]["weight"] == 5   # embed, logits, GRU W_ih, W_hh r/z, W_hh n
    assert qat["fake_quant_val"]["n"] > 0 and ckpt.metrics["float_run"]["val"]["n"] > 0
    model = ckpt.build()          # an ordinary float student: the fake-quant state is not in the checkpoint
    assert type(model).__name__ == "LidarStudent"
    assert not any("fake_quant" in k or "activation_post_process" in k for k in ckpt.state_dict)
    invoke("distill", "--teacher", workdir / "teacher.pt", "--student", "lidar_student", "--method", "datafree",
           "--out", workdir / "df.pt", "--qat", code=2)


def test_qat_finetune_of_a_trained_student(workdir, caplog):
    """The demo's qat stage: QAT on a student trained earlier, with its own method, config and teacher."""
    from edgekd.device.errors import EdgekdError
    from edgekd.host.distill.api import qat_finetune

    float_ckpt = workdir / "kd_float.pt"
    invoke("distill", "--teacher", workdir / "teacher.pt", "--student", "lidar_student", "--method", "kd",
           "--data", workdir / "data", "--out", float_ckpt, "--epochs", "2", "--threads", "1", "--no-progress")
    before = float_ckpt.read_bytes()
    out = workdir / "kd_qat.pt"
    with caplog.at_level("INFO", logger="edgekd.host.distill.trainer"):
        model, result = qat_finetune(float_ckpt, workdir / "data", out, epochs=1, threads=1, progress=False)
    assert "teacher logits cached for" in caplog.text   # once, not a live teacher in every QAT step
    assert float_ckpt.read_bytes() == before                       # the float student is kept as it was
    ckpt = load_checkpoint(out)
    assert ckpt.config["method"] == "kd" and ckpt.config["teacher"]["path"].endswith("teacher.pt")
    qat = ckpt.metrics["qat"]
    assert qat["epochs"] == 1 and qat["float_run_seconds"] > 0 and qat["fake_quant_modules"]["weight"] == 5
    assert ckpt.metrics["float_run"]["test"] == load_checkpoint(float_ckpt).metrics["test"]
    assert not torch.equal(ckpt.state_dict["embed.weight"], load_checkpoint(float_ckpt).state_dict["embed.weight"])
    assert type(model).__name__ == "LidarStudent" and result.metrics["test"]["n"] > 0
    # a checkpoint without a KD method (a hand-made one) is refused, naming the file and the field
    with pytest.raises(EdgekdError) as info:
        qat_finetune(workdir / "student.pt", workdir / "data", workdir / "x.pt", epochs=1)
    assert info.value.field == "config.method" and "student.pt" in info.value.format()
    assert not (workdir / "x.pt").exists()


def test_explain_names_the_known_offender(workdir):
    ckpt = load_checkpoint(workdir / "student.pt")
    model = ckpt.build()
    with torch.no_grad():     # the same float function, one embed unit 40x wider (see the module doc)
        unit = 5
        model.embed.weight[unit] *= WIDE
        model.embed.bias[unit] *= WIDE
        model.head.gru.weight_ih_l0[:, unit] /= WIDE
    wide = save_checkpoint(workdir / "wide.pt", model, data=ckpt.data, metrics=ckpt.metrics)
    bundle = workdir / "bundle"
    result = invoke("export", wide, "--target", "x86-ap", "--data", workdir / "data", "--out", bundle,
                    "--explain", "--calibration-size", "64", "--eval-windows", "40", "--allow-degraded",
                    "--no-progress")
    manifest = json.loads((bundle / "manifest.json").read_text())
    report = manifest["students"]["lidar"]["parity"]["explain"]["tflite_int8"]
    top = report["top"][0]
    assert top["layer"] == "embed", report["top"][:3]
    assert top["nsr"] > 0.1 and top["rms_share_of_range"] < 0.01   # noisy against its signal, not its range
    assert report["paired"] >= 0.8 * report["int8_tensors"]
    assert "1 embed" in result.output.replace("  ", " ")
    assert np.isfinite([r["added_nsr"] for r in report["top"]]).all()
