"""firmware_bench end to end on a real bundle: a full-int8 TFLite model made with TensorFlow and an ONNX
model of the same network, a calibration set, and a schema-valid manifest written here.

Also the import-hygiene check: firmware_bench and its CLI never import torch or tensorflow.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekd.device.bundle import read_manifest
from edgekd.device.errors import EdgekdError
from edgekd.device.io import atomic_write_json, sha256_file
from edgekd.device.runtime.backends import open_artifact, tflite_op_counts
from firmware_bench import run_benchmark
from firmware_bench.power import MeterOptions
from firmware_bench.report import CSV_NAME, JSON_NAME, to_text

REPO = Path(__file__).resolve().parents[2]
T, D, HORIZONS, BEAMS, HIDDEN, N_CALIB = 8, 216, 4, 64, 32, 24
NOT_MEASURED = {"top1": [0.0] * 4, "top2": [0.0] * 4, "top5": [0.0] * 4, "top2_mean": 0.0, "dba": 0.0, "n": 0}


def _weights():
    rng = np.random.default_rng(0)
    return (rng.normal(0, 0.05, (T * D, HIDDEN)).astype(np.float32), rng.normal(0, 0.1, HIDDEN).astype(np.float32),
            rng.normal(0, 0.2, (HIDDEN, HORIZONS * BEAMS)).astype(np.float32),
            rng.normal(0, 0.1, HORIZONS * BEAMS).astype(np.float32))


def _tflite_int8(path: Path, calib: np.ndarray) -> None:
    """A LiDAR-shaped MLP converted to full-int8 TFLite (int8 input and output) with TensorFlow."""
    import tensorflow as tf

    w1, b1, w2, b2 = (tf.constant(w) for w in _weights())

    class Student(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, T, D], tf.float32, name="lidar")])
        def __call__(self, lidar):
            hidden = tf.nn.relu(tf.matmul(tf.reshape(lidar, [1, T * D]), w1) + b1)
            return tf.reshape(tf.matmul(hidden, w2) + b2, [1, HORIZONS, BEAMS])

    module = Student()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.__call__.get_concrete_function()], module)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([calib[i:i + 1]] for i in range(len(calib)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    path.write_bytes(converter.convert())


def _onnx_fp32(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w1, b1, w2, b2 = _weights()
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))]
    inits += [numpy_helper.from_array(np.array([1, T * D], np.int64), "flat"),
              numpy_helper.from_array(np.array([1, HORIZONS, BEAMS], np.int64), "out_shape")]
    nodes = [helper.make_node("Reshape", ["lidar", "flat"], ["x"]),
             helper.make_node("MatMul", ["x", "w1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["h"]),
             helper.make_node("MatMul", ["h", "w2"], ["y0"]), helper.make_node("Add", ["y0", "b2"], ["y1"]),
             helper.make_node("Reshape", ["y1", "out_shape"], ["logits"])]
    graph = helper.make_graph(nodes, "student", [helper.make_tensor_value_info("lidar", TensorProto.FLOAT, [1, T, D])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, HORIZONS, BEAMS])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _tensor(detail: dict, name: str | None = None) -> dict:
    scale, zero_point = detail["quantization"]
    return {"name": name or detail["name"], "shape": [int(s) for s in detail["shape"]],
            "dtype": np.dtype(detail["dtype"]).name,
            "quantization": {"scale": float(scale), "zero_point": int(zero_point)} if scale else None}


def _artifact(bundle: Path, rel: str, fmt: str, precision: str, inputs: list, outputs: list, ops: dict) -> dict:
    path = bundle / rel
    return {"path": rel, "sha256": sha256_file(path), "size": path.stat().st_size, "format": fmt,
            "precision": precision, "inputs": inputs, "outputs": outputs, "ops": ops, "accuracy": NOT_MEASURED}


def build_bundle(bundle: Path, *, power_model: dict | None = {"idle_w": 3.0, "active_w": 8.0}) -> Path:
    (bundle / "lidar").mkdir(parents=True)
    calib = np.random.default_rng(1).uniform(0, 1, (N_CALIB, T, D)).astype(np.float32)
    np.savez(bundle / "lidar/calibration.npz", lidar=calib, indices=np.arange(N_CALIB))
    _tflite_int8(bundle / "lidar/model_int8.tflite", calib)
    _onnx_fp32(bundle / "lidar/model.onnx")

    from ai_edge_litert.interpreter import Interpreter
    interp = Interpreter(model_path=str(bundle / "lidar/model_int8.tflite"))
    tfl_in = [_tensor(interp.get_input_details()[0], "lidar")]
    tfl_out = [_tensor(interp.get_output_details()[0], "logits")]
    float_io = ([{"name": "lidar", "shape": [1, T, D], "dtype": "float32", "quantization": None}],
                [{"name": "logits", "shape": [1, HORIZONS, BEAMS], "dtype": "float32", "quantization": None}])
    target = {"name": "test-board", "backend": "tflite", "threads": 1, "power_meter": "estimate"}
    if power_model:
        target["power_model"] = power_model
    manifest = {
        "format": "edgekd-bundle/1", "created": "2025-01-01T00:00:00+00:00", "edgekd_version": "0.1.0",
        "versions": {}, "target": target,
        "students": {"lidar": {
            "model": "test-mlp", "modalities": ["lidar"], "window": T, "horizons": HORIZONS, "num_beams": BEAMS,
            "input_shapes": {"lidar": [T, D]}, "preprocessing": {}, "checkpoint": {"sha256": "", "metrics": {}},
            "calibration": {"recipe": "test", "split": "train", "indices_sha256": "", "count": N_CALIB,
                            "file": "lidar/calibration.npz",
                            "sha256": sha256_file(bundle / "lidar/calibration.npz")},
            "artifacts": {
                "tflite_int8": _artifact(bundle, "lidar/model_int8.tflite", "tflite", "int8", tfl_in, tfl_out,
                                         tflite_op_counts(bundle / "lidar/model_int8.tflite")),
                "onnx_fp32": _artifact(bundle, "lidar/model.onnx", "onnx", "fp32", *float_io,
                                       {"MatMul": 2, "Add": 2, "Relu": 1, "Reshape": 2}),
            }}},
    }
    atomic_write_json(bundle / "manifest.json", manifest)
    read_manifest(bundle)  # the fixture must pass the real schema check
    return bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("fb") / "bundle")


def no_meters(tmp_path: Path) -> MeterOptions:
    """This machine's meters hidden, so `auto` behaves the same on any CI box."""
    return MeterOptions(sysfs_root=tmp_path, tegrastats_cmd=("no-such-tegrastats",),
                        vcgencmd_cmd=("no-such-vcgencmd",))


def test_tflite_int8_benchmark_writes_labelled_reports(bundle, tmp_path):
    out = tmp_path / "out"
    report = run_benchmark(bundle, "lidar", runs=60, warmup=3, power_meter="auto", idle_seconds=0,
                           out=out, meter_options=no_meters(tmp_path))
    (result,) = report["results"]
    assert result["artifact"] == "tflite_int8" and result["precision"] == "int8"
    assert result["interpreter"]["module"] == "ai_edge_litert"
    lat = result["latency"]
    inv = lat["invoke"]
    assert lat["runs"] == 60 and inv["n"] == 60
    assert 0 < inv["min_ms"] <= inv["p50_ms"] <= inv["p90_ms"] <= inv["p99_ms"] <= inv["max_ms"]
    assert lat["init_ms"] > 0 and lat["first_inference"]["invoke_ms"] > 0 and lat["warmup"]["runs"] == 3
    assert lat["quantize"]["n"] == 60 and lat["end_to_end"]["p50_ms"] >= inv["p50_ms"]
    assert lat["throughput_ips"] > 0
    assert result["inputs"] == {"source": "lidar/calibration.npz", "windows": N_CALIB, "names": ["lidar"],
                                "shapes": {"lidar": [1, T, D]}}
    assert result["output"] == {"shape": [1, HORIZONS, BEAMS], "dtype": "float32", "finite": True}
    mem = result["memory"]
    assert mem["rss_after_load_bytes"] > 0 and mem["peak_rss_bytes"] >= mem["rss_after_load_bytes"]
    assert mem["file_bytes"]["model"] == (bundle / "lidar/model_int8.tflite").stat().st_size
    assert result["op_profile"]["op_counts"]["FULLY_CONNECTED"] == 2
    assert result["op_profile"]["per_op_timing"] is None or result["op_profile"]["per_op_timing"]

    # Energy: no meter here, so the target's power model, labelled estimated everywhere.
    energy = result["energy"]
    assert energy["method"] == "estimated" and energy["per_inference_mj"] > 0
    assert energy["idle_power_w"] == 3.0 and energy["mean_power_w"] >= 3.0
    assert [s["meter"] for s in energy["skipped"]] == ["ina3221", "tegrastats", "rpi5-pmic", "rapl"]
    assert "below MLPerf minimum" in result["flags"][0]

    saved = json.loads((out / JSON_NAME).read_text())
    assert saved["results"][0]["energy"]["method"] == "estimated"
    rows = list(csv.DictReader((out / CSV_NAME).open()))
    assert rows[0]["energy_method"] == "estimated" and float(rows[0]["energy_per_inference_mj"]) > 0
    assert rows[0]["mlperf_single_stream"].startswith("below MLPerf minimum")
    assert float(rows[0]["p90_ms"]) == pytest.approx(inv["p90_ms"])
    text = to_text(report)
    assert "mJ (estimated)" in text and "below MLPerf minimum" in text


def test_inputs_come_from_the_calibration_set(bundle, tmp_path):
    # The last timed run saw window (runs - 1) % N of calibration.npz: its output must match a fresh run.
    report = run_benchmark(bundle, "lidar", runs=30, warmup=0, power_meter="estimate", idle_seconds=0,
                           op_profile=False)
    manifest = read_manifest(bundle)
    backend = open_artifact(bundle, manifest["students"]["lidar"]["artifacts"]["tflite_int8"])
    calib = np.load(bundle / "lidar/calibration.npz")["lidar"]
    expected = backend.run({"lidar": calib[(30 - 1) % N_CALIB][None]})
    other = backend.run({"lidar": calib[0][None]})
    assert not np.array_equal(expected, other)  # different windows give different logits
    assert report["results"][0]["output"]["finite"]


def test_ort_backend_has_per_op_timing(bundle, tmp_path):
    report = run_benchmark(bundle, "lidar", backend="ort", runs=20, warmup=2, power_meter="estimate",
                           idle_seconds=0, op_profile_runs=10)
    (result,) = report["results"]
    assert result["artifact"] == "onnx_fp32" and result["interpreter"]["module"] == "onnxruntime"
    profile = result["op_profile"]
    ops = {row["op"]: row for row in profile["per_op_timing"]}
    # The kernels ORT actually ran: its optimiser fuses MatMul+Add(+Relu) into (Fused)Gemm.
    gemms = [row for op, row in ops.items() if op.endswith("Gemm") or op == "MatMul"]
    assert sum(row["count"] for row in gemms) == 2
    assert all(row["times_called"] == row["count"] * 10 for row in ops.values())  # 10 profiled runs
    assert all(row["avg_ms"] >= 0 for row in ops.values()) and sum(r["avg_ms"] for r in gemms) > 0
    assert profile["per_op_timing"][-1]["cdf_pct"] == pytest.approx(100.0)


def test_no_meter_and_no_power_model_reports_unavailable_not_a_number(tmp_path):
    bundle = build_bundle(tmp_path / "bundle", power_model=None)
    report = run_benchmark(bundle, runs=10, warmup=0, power_meter="auto", idle_seconds=0, op_profile=False,
                           out=tmp_path / "out", meter_options=no_meters(tmp_path))
    energy = report["results"][0]["energy"]
    assert energy["method"] == "unavailable" and energy["per_inference_mj"] is None and energy["joules"] is None
    assert energy["skipped"][-1]["meter"] == "estimate"
    row = next(csv.DictReader((tmp_path / "out" / CSV_NAME).open()))
    assert row["energy_method"] == "unavailable" and row["energy_per_inference_mj"] == ""
    assert "n/a (unavailable)" in to_text(report)


def test_modified_artifact_is_refused(bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    with open(copy / "lidar/model_int8.tflite", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(EdgekdError, match="modified"):
        run_benchmark(copy, "lidar", runs=5, power_meter="estimate", idle_seconds=0)
    with pytest.raises(EdgekdError, match="no artifact 'tflite_fp16'"):
        run_benchmark(bundle, "lidar", artifact="tflite_fp16", runs=5)
    with pytest.raises(EdgekdError, match="no student"):
        run_benchmark(bundle, "radar", runs=5)


HYGIENE = r"""
import sys
import firmware_bench, firmware_bench.__main__ as cli
try:
    cli.main(["--help"], standalone_mode=False)
    cli.main(sys.argv[1:], standalone_mode=False)
finally:
    heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "tensorflow", "keras", "tf_keras", "jax"})
    print("HEAVY=" + ",".join(heavy))
"""


def test_cli_runs_without_torch_or_tensorflow(bundle, tmp_path):
    out = tmp_path / "cli"
    done = subprocess.run([sys.executable, "-c", HYGIENE, "--bundle", str(bundle), "--runs", "15",
                           "--warmup", "1", "--power-meter", "estimate", "--idle-seconds", "0", "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "HEAVY=\n" in done.stdout, done.stdout
    assert "Usage:" in done.stdout and "--power-meter" in done.stdout
    assert "mJ (estimated)" in done.stdout and "below MLPerf minimum" in done.stdout
    assert (out / JSON_NAME).is_file() and (out / CSV_NAME).is_file()


def test_cli_user_error_exits_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "firmware_bench", "--bundle", str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 2 and "manifest.json is missing" in done.stderr


def test_measured_meter_end_to_end_on_a_fake_jetson_tree(bundle, tmp_path):
    fixtures = REPO / "tests" / "fixtures" / "power" / "ina3221_orin"
    options = MeterOptions(sysfs_root=fixtures, interval_s=0.01)
    report = run_benchmark(bundle, "lidar", runs=200, warmup=0, power_meter="ina3221", idle_seconds=0.1,
                           op_profile=False, meter_options=options)
    energy = report["results"][0]["energy"]
    watts = 5.080 * 1.020  # VDD_IN in the fixture: constant
    assert energy["method"] == "measured:ina3221" and "VDD_IN" in energy["scope"]
    assert energy["idle_power_w"] == pytest.approx(watts) and energy["idle_method"] == "measured:ina3221"
    assert energy["mean_power_w"] == pytest.approx(watts, rel=0.02)
    assert energy["per_inference_mj"] == pytest.approx(watts * energy["seconds"] / 200 * 1e3, rel=0.02)
    assert abs(energy["above_idle_per_inference_mj"]) < 0.02 * energy["per_inference_mj"]
    assert not any("energy" in flag for flag in report["results"][0]["flags"])
    assert "mJ (measured:ina3221)" in to_text(report)


def test_named_meter_missing_is_flagged(bundle, tmp_path):
    report = run_benchmark(bundle, "lidar", runs=5, warmup=0, power_meter="rapl", idle_seconds=0,
                           op_profile=False, meter_options=no_meters(tmp_path))
    result = report["results"][0]
    assert result["energy"]["method"] == "estimated" and result["energy"]["requested"] == "rapl"
    assert any(flag.startswith("power meter 'rapl' unavailable") for flag in result["flags"])
