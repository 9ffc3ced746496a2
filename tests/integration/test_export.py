"""Real exports: torch -> ONNX -> TFLite fp32/fp16/int8 + ONNX QDQ, parity gate, bundle, CLI.

A LiDAR student from the model zoo is trained for a few seconds on a small
learnable dataset (tests/integration/test_export_support.py) and exported with
the real converters; every check reads the produced files back.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from support.export import make_dataset, train_student

from edgekd.cli import cli
from edgekd.device.bundle import open_bundle, verify_bundle
from edgekd.device.errors import EdgekdError
from edgekd.device.runtime.backends import open_artifact, tflite_float_ops
from edgekd.host.export import ParityGateError, export_bundle
from edgekd.host.export.calibration import indices_digest
from edgekd.host.export.onnx_export import export_onnx

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("export")
    make_dataset(root / "data")
    train_student("lidar_student", root / "data", root / "lidar.pt", epochs=8)
    return root


@pytest.fixture(scope="module")
def x86_bundle(workdir):
    manifest = export_bundle([workdir / "lidar.pt"], "x86-ap", workdir / "data", workdir / "b-x86",
                             eval_windows=120)
    return workdir / "b-x86", manifest


def test_bundle_contract_and_int8_is_really_int8(x86_bundle, workdir):
    path, manifest = x86_bundle
    assert verify_bundle(path) == json.loads((path / "manifest.json").read_text())
    student = manifest["students"]["lidar"]
    assert set(student["artifacts"]) == {"onnx_fp32", "onnx_int8_qdq", "tflite_fp32", "tflite_int8"}
    assert student["modalities"] == ["lidar"] and student["input_shapes"] == {"lidar": [8, 216]}
    assert student["window"] == 8 and student["horizons"] == 4 and student["num_beams"] == 64
    assert student["preprocessing"]["lidar"]
    assert manifest["versions"]["onnx2tf"].startswith("1.28") and manifest["versions"]["torch"]
    assert manifest["target"]["name"] == "x86-ap" and manifest["degraded"] is False

    int8 = student["artifacts"]["tflite_int8"]
    assert int8["inputs"][0]["dtype"] == "int8" and int8["outputs"][0]["dtype"] == "int8"
    assert int8["inputs"][0]["quantization"]["scale"] > 0
    assert int8["inputs"][0]["shape"] == [1, 8, 216] and int8["inputs"][0]["layout"] == "NTF"
    assert int8["outputs"][0]["shape"] == [1, 4, 64]
    assert int8["ops"].get("FULLY_CONNECTED", 0) >= 3 and "DELEGATE" not in int8["ops"]
    assert tflite_float_ops(path / int8["path"]) == []
    assert student["artifacts"]["onnx_fp32"]["opset"] == 17
    assert "QuantizeLinear" in student["artifacts"]["onnx_int8_qdq"]["ops"]
    # the logits layer is rewritten for int8 (export.int8_rewrite): a 1x1 conv, deployed logits unchanged
    assert int8["ops"].get("CONV_2D", 0) == 1
    rewrite = student["int8_rewrite"]
    assert rewrite["calibration_max_abs_change"] <= 1e-3 and rewrite["floor"] == 8.0

    # the parity gate's numbers: int8 within budget of float, nothing constant, torch == ONNX
    parity = student["parity"]
    assert parity["passed"] and parity["torch_vs_onnx_max_abs"] <= 1e-4
    assert parity["drops"]["tflite_int8"]["reference"] == "tflite_fp32"
    assert parity["drops"]["tflite_int8"]["points"] <= 1.0
    assert parity["drops"]["onnx_int8_qdq"]["reference"] == "onnx_fp32"
    fp32_top2 = student["artifacts"]["tflite_fp32"]["accuracy"]["top2_mean"]
    assert fp32_top2 > 0.3, "the fixture student should have learned something"

    # the calibration set: train split only, recorded and saved
    calibration = student["calibration"]
    assert calibration["split"] == "train" and calibration["recipe"] == "lidar"
    with np.load(path / calibration["file"]) as saved:
        assert indices_digest(saved["indices"]) == calibration["indices_sha256"]
        # the bundle ships a sample of the set (the converter saw all of it): evenly spread over the set
        shipped = min(calibration["count"], 32)
        assert calibration["shipped"] == shipped and saved["lidar"].shape == (shipped, 8, 216)
        assert len(saved["sample"]) == shipped and saved["sample"][0] == 0
        assert saved["sample"][-1] == calibration["count"] - 1


def test_every_artifact_runs_through_the_loader_and_agrees_with_torch(x86_bundle, workdir):
    from edgekd.host.checkpoint import load_checkpoint
    from edgekd.host.data import load_dataset

    path, _ = x86_bundle
    bundle = open_bundle(path)
    model = load_checkpoint(workdir / "lidar.pt").build()
    test = load_dataset(workdir / "data", "test", modalities=["lidar"])
    batch = test.batch(np.arange(40))
    with torch.no_grad():
        expected = model(torch.from_numpy(batch["lidar"])).numpy().argmax(-1)
    for kind in bundle.students["lidar"]["artifacts"]:
        backend = open_artifact(bundle.path, bundle.artifact("lidar", kind))
        got = np.stack([backend.run({"lidar": batch["lidar"][i:i + 1]})[0] for i in range(40)]).argmax(-1)
        agreement = float(np.mean(got == expected))
        assert agreement >= (0.999 if "fp32" in kind else 0.85), (kind, agreement)


def test_ort_target_multi_artifacts_and_fp16_target(workdir):
    manifest = export_bundle([workdir / "lidar.pt"], "rpi5", workdir / "data", workdir / "b-rpi5",
                             eval_windows=60, calibration_size=64)
    artifacts = manifest["students"]["lidar"]["artifacts"]
    assert set(artifacts) == {"tflite_fp32", "tflite_fp16", "tflite_int8"}
    assert artifacts["tflite_fp16"]["inputs"][0]["dtype"] == "float32"  # fp16 weights, float I/O
    assert artifacts["tflite_fp16"]["size"] < 0.7 * artifacts["tflite_fp32"]["size"]
    assert manifest["students"]["lidar"]["calibration"]["count"] == 64


def test_existing_output_needs_overwrite_and_gate_failure_leaves_nothing(workdir, x86_bundle):
    with pytest.raises(EdgekdError, match="already exists"):
        export_bundle([workdir / "lidar.pt"], "x86-ap", workdir / "data", x86_bundle[0])
    # A budget below zero cannot be met: the gate must refuse, and no bundle may appear.
    from dataclasses import replace

    from edgekd.device.targets import load_target

    strict = replace(load_target("rpi4"), int8_max_top2_drop=-100.0)
    out = workdir / "b-strict"
    with pytest.raises(ParityGateError) as err:
        export_bundle([workdir / "lidar.pt"], strict, workdir / "data", out, eval_windows=40,
                      calibration_size=32)
    assert "tflite_int8" in str(err.value) and "points below" in str(err.value)
    assert not out.exists()
    manifest = export_bundle([workdir / "lidar.pt"], strict, workdir / "data", out, eval_windows=40,
                             calibration_size=32, allow_degraded=True)
    assert manifest["degraded"] is True and manifest["degraded_reasons"]
    assert json.loads((out / "manifest.json").read_text())["degraded"] is True


def test_constant_predictor_fails_the_gate(workdir):
    from edgekd.host.checkpoint import load_checkpoint, save_checkpoint

    model = load_checkpoint(workdir / "lidar.pt").build()
    head_weight, head_bias = [p for _, p in model.named_parameters()][-2:]
    with torch.no_grad():
        head_weight.mul_(1e-3)   # inputs barely matter ...
        head_bias.zero_()
        head_bias[7] = 5.0       # ... so beam 7 wins for every window
    save_checkpoint(workdir / "constant.pt", model)
    with pytest.raises(ParityGateError, match="predicts beam 7 for every one"):
        export_bundle([workdir / "constant.pt"], "rpi4", workdir / "data", workdir / "b-const",
                      eval_windows=30, calibration_size=16)
    assert not (workdir / "b-const").exists()


def test_a_file_the_interpreter_rejects_is_a_conversion_error(workdir):
    # All-zero weights give zero quantisation ranges; whatever the converter makes of that must be
    # reported as a failed conversion (with its log), never crash the exporter or pass as a success.
    from edgekd.host.checkpoint import load_checkpoint, save_checkpoint

    model = load_checkpoint(workdir / "lidar.pt").build()
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
    save_checkpoint(workdir / "zero.pt", model)
    with pytest.raises(EdgekdError) as err:
        export_bundle([workdir / "zero.pt"], "rpi4", workdir / "data", workdir / "b-zero",
                      eval_windows=30, calibration_size=16)
    assert "TFLite conversion failed" in str(err.value) or "predicts beam" in str(err.value)
    if err.value.file and err.value.file.endswith(".log"):
        assert Path(err.value.file).is_file()
    assert not (workdir / "b-zero").exists()


def test_unexportable_layer_is_named(tmp_path):
    class Inverse(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.inv(x[..., :4, :4] + torch.eye(4))

    class Blocked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)
            self.head = torch.nn.Sequential(torch.nn.ReLU(), Inverse())

        def forward(self, x):
            return self.head(self.fc(x))

    with pytest.raises(EdgekdError) as err:
        export_onnx(Blocked(), tmp_path / "m.onnx", input_names=["lidar"], example_inputs=[torch.rand(1, 4, 4)])
    message = str(err.value)
    assert "aten::linalg_inv" in message and "head.1 (Inverse)" in message


def test_cli_export_verify_show_and_tamper(workdir):
    runner = CliRunner()
    out = workdir / "b-cli"
    result = runner.invoke(cli, ["export", str(workdir / "lidar.pt"), "--target", "jetson", "--data",
                                 str(workdir / "data"), "--out", str(out), "--eval-windows", "40",
                                 "--calibration-size", "32"])
    assert result.exit_code == 0, result.output
    assert "tflite_int8" in result.output and "int8/int8" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target"]["name"] == "jetson-orin-nano"
    assert set(manifest["students"]["lidar"]["artifacts"]) == {"onnx_fp32", "onnx_int8_qdq", "tflite_int8"}
    assert runner.invoke(cli, ["bundle", "verify", str(out)]).exit_code == 0
    assert "lidar" in runner.invoke(cli, ["bundle", "show", str(out)]).output

    tampered = out / "lidar" / "model_int8.tflite"
    data = bytearray(tampered.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    verify = runner.invoke(cli, ["bundle", "verify", str(out)])
    assert verify.exit_code == 2 and "model_int8.tflite" in verify.output
    with pytest.raises(EdgekdError, match="modified"):
        bundle = open_bundle(out, verify=False)
        open_artifact(bundle.path, bundle.artifact("lidar", "tflite_int8"))

    unknown = runner.invoke(cli, ["export", str(workdir / "lidar.pt"), "--target", "rpi3", "--data",
                                  str(workdir / "data"), "--out", str(workdir / "b-none")])
    assert unknown.exit_code == 2 and "rpi4" in unknown.output and "jetson" in unknown.output


def test_students_exported_side_by_side_match_one_after_another(workdir):
    """jobs=2 overlaps one student's converter child with the other's work: the bundle must not change."""
    train_student("radar_student", workdir / "data", workdir / "radar.pt", epochs=1, width=0.5)
    checkpoints = [workdir / "lidar.pt", workdir / "radar.pt"]
    kwargs = {"eval_windows": 40, "calibration_size": 32, "progress": False, "allow_degraded": True}
    alone = export_bundle(checkpoints, "rpi4", workdir / "data", workdir / "b-jobs1", jobs=1, **kwargs)
    together = export_bundle(checkpoints, "rpi4", workdir / "data", workdir / "b-jobs2", jobs=2, **kwargs)
    assert list(together["students"]) == list(alone["students"]) == ["lidar", "radar"]
    for name, student in alone["students"].items():
        other = together["students"][name]
        assert {k: a["sha256"] for k, a in other["artifacts"].items()} == \
            {k: a["sha256"] for k, a in student["artifacts"].items()}
        assert other["parity"]["drops"] == student["parity"]["drops"]
