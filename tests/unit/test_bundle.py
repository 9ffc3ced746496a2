"""Bundle manifests: schema check, sha256 verification (CLI exit 2 naming the artifact), loader refusal."""

from __future__ import annotations

import copy
import json

import pytest
from click.testing import CliRunner

from edgekd.cli import cli
from edgekd.device.bundle import (
    manifest_problems,
    open_bundle,
    read_manifest,
    verify_bundle,
)
from edgekd.device.errors import EdgekdError
from edgekd.device.io import sha256_file
from edgekd.device.manifest import Artifact, Manifest, TensorSpec
from edgekd.device.runtime.backends import open_artifact
from edgekd.device.targets import load_target

ACCURACY = {"top1": [0.5] * 4, "top2": [0.7] * 4, "top5": [0.9] * 4, "top2_mean": 0.7, "dba": 0.8, "n": 10}


def _artifact(path, fmt, precision, dtype):
    quant = {"scale": 0.01, "zero_point": -3} if dtype == "int8" else None
    return {"path": path, "sha256": "", "size": 0, "format": fmt, "precision": precision,
            "inputs": [{"name": "lidar", "shape": [1, 8, 216], "dtype": dtype, "layout": "NTF",
                        "quantization": quant}],
            "outputs": [{"name": "logits", "shape": [1, 4, 64], "dtype": dtype, "quantization": quant}],
            "ops": {"FULLY_CONNECTED": 3}, "accuracy": dict(ACCURACY)}


@pytest.fixture()
def bundle(tmp_path):
    """A schema-complete bundle whose artifact files hold arbitrary bytes (hashing does not care)."""
    root = tmp_path / "bundle"
    (root / "lidar").mkdir(parents=True)
    artifacts = {"tflite_int8": _artifact("lidar/model_int8.tflite", "tflite", "int8", "int8"),
                 "onnx_fp32": _artifact("lidar/model_fp32.onnx", "onnx", "fp32", "float32")}
    for i, art in enumerate(artifacts.values()):
        path = root / art["path"]
        path.write_bytes(bytes([i]) * 100)
        art["sha256"], art["size"] = sha256_file(path), 100
    (root / "lidar" / "calibration.npz").write_bytes(b"calib")
    manifest = {
        "format": "edgekd-bundle/1", "created": "2025-01-01T00:00:00+00:00", "edgekd_version": "0.1.0",
        "versions": {"onnx": "1.23"}, "target": load_target("rpi4").to_dict(),
        "students": {"lidar": {
            "model": "lidar_student", "modalities": ["lidar"], "window": 8, "horizons": 4, "num_beams": 64,
            "input_shapes": {"lidar": [8, 216]}, "preprocessing": {"lidar": {"load": "float32"}},
            "checkpoint": {"sha256": "0" * 64, "metrics": {}},
            "calibration": {"recipe": "lidar", "split": "train", "indices_sha256": "1" * 64, "count": 4,
                            "file": "lidar/calibration.npz",
                            "sha256": sha256_file(root / "lidar" / "calibration.npz")},
            "artifacts": artifacts}},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_valid_bundle_verifies(bundle):
    manifest = verify_bundle(bundle)
    assert manifest_problems(manifest) == []
    opened = open_bundle(bundle)
    assert opened.artifact("lidar")["path"] == "lidar/model_int8.tflite"
    with pytest.raises(EdgekdError, match="no student 'image'"):
        opened.artifact("image")
    with pytest.raises(EdgekdError, match="no artifact 'tflite_fp16'"):
        opened.artifact("lidar", "tflite_fp16")


def test_modified_artifact_fails_verify_and_loader(bundle):
    path = bundle / "lidar" / "model_int8.tflite"
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(EdgekdError) as err:
        verify_bundle(bundle)
    assert "lidar/tflite_int8" in str(err.value) and "model_int8.tflite" in str(err.value)
    with pytest.raises(EdgekdError, match="modified"):
        open_bundle(bundle)
    with pytest.raises(EdgekdError, match="modified"):
        opened = open_bundle(bundle, verify=False)
        open_artifact(opened.path, opened.artifact("lidar", "tflite_int8"))
    result = CliRunner().invoke(cli, ["bundle", "verify", str(bundle)])
    assert result.exit_code == 2 and "model_int8.tflite" in result.output


def test_missing_artifact_and_modified_calibration(bundle):
    (bundle / "lidar" / "calibration.npz").write_bytes(b"other")
    with pytest.raises(EdgekdError, match="calibration"):
        verify_bundle(bundle)
    (bundle / "lidar" / "model_fp32.onnx").unlink()
    with pytest.raises(EdgekdError, match="missing"):
        verify_bundle(bundle)


def test_cli_verify_and_show_ok(bundle):
    runner = CliRunner()
    ok = runner.invoke(cli, ["bundle", "verify", str(bundle)])
    assert ok.exit_code == 0 and "all hashes match" in ok.output
    shown = runner.invoke(cli, ["bundle", "show", str(bundle)])
    assert shown.exit_code == 0 and "tflite_int8" in shown.output and "int8/int8" in shown.output
    as_json = runner.invoke(cli, ["bundle", "show", str(bundle), "--json"])
    assert json.loads(as_json.output)["students"]["lidar"]["model"] == "lidar_student"


def _mutate(manifest, edit):
    broken = copy.deepcopy(manifest)
    edit(broken)
    return manifest_problems(broken)


def test_schema_problems_name_the_field(bundle):
    manifest = read_manifest(bundle)
    student = lambda m: m["students"]["lidar"]  # noqa: E731
    int8 = lambda m: student(m)["artifacts"]["tflite_int8"]  # noqa: E731
    cases = {
        "students.lidar.artifacts.tflite_int8.sha256: missing": lambda m: int8(m).pop("sha256"),
        "format: unsupported": lambda m: m.update(format="edgekd-bundle/9"),
        "students.lidar.window: wrong type": lambda m: student(m).update(window="8"),
        "students.lidar.artifacts: tflite_int8 is missing": lambda m: student(m)["artifacts"].pop("tflite_int8"),
        "tflite_int8.inputs[0].dtype: a full-int8 artifact must have int8": lambda m: int8(m)["inputs"][0].update(
            dtype="float32", quantization=None),
        "tflite_int8.outputs[0].quantization: an integer tensor needs scale": lambda m: int8(m)["outputs"][0].update(
            quantization=None),
        "tflite_int8.path: must be relative": lambda m: int8(m).update(path="../evil.tflite"),
        "tflite_int8.inputs: names": lambda m: int8(m)["inputs"][0].update(name="image"),
        "calibration.count: missing": lambda m: student(m)["calibration"].pop("count"),
        "tflite_int8.accuracy.top2_mean: missing": lambda m: int8(m)["accuracy"].pop("top2_mean"),
        "tflite_int8.precision: must be one of": lambda m: int8(m).update(precision="int4"),
    }
    for expected, edit in cases.items():
        problems = _mutate(manifest, edit)
        assert any(expected in p for p in problems), (expected, problems)
    (bundle / "manifest.json").write_text(json.dumps({**manifest, "students": {}}))
    with pytest.raises(EdgekdError, match="no student"):
        read_manifest(bundle)


def test_not_a_bundle(tmp_path):
    with pytest.raises(EdgekdError, match="manifest.json is missing"):
        open_bundle(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(EdgekdError, match="not valid JSON"):
        open_bundle(tmp_path)


def test_manifest_dataclass_round_trips_and_types_the_fields(bundle):
    data = read_manifest(bundle)
    manifest = Manifest.from_dict(data)
    assert manifest.to_dict() == data
    int8 = manifest.students["lidar"].artifacts["tflite_int8"]
    assert isinstance(int8, Artifact) and isinstance(int8.inputs[0], TensorSpec)
    assert int8.inputs[0].quantization is not None and int8.inputs[0].quantization.zero_point == -3
    assert manifest.degraded is None and int8.board_checks is None


def test_manifest_rejects_unknown_keys_and_keeps_room_for_board_checks(bundle):
    data = read_manifest(bundle)
    int8 = data["students"]["lidar"]["artifacts"]["tflite_int8"]
    int8["board_checks"] = [{"board": "rpi4", "passed": True}]
    data.update(degraded=True, degraded_reasons=["lidar/tflite_int8 top-2 drop"])
    assert Manifest.from_dict(data).to_dict() == data
    int8["latency"] = 1.0
    data["students"]["lidar"]["calibrashun"] = {}
    with pytest.raises(EdgekdError) as err:
        Manifest.from_dict(data, source="b/manifest.json")
    text = str(err.value)
    assert "b/manifest.json" in text and "students.lidar.artifacts.tflite_int8.latency: unknown key" in text
    assert "students.lidar.calibrashun: unknown key" in text and "re-export" in text
