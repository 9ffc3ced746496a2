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
from support.bundles import BEAMS, HORIZONS, N_CALIB, REPO, D, T, build_bundle

from edgekd.device.bundle import read_manifest
from edgekd.device.errors import EdgekdError
from edgekd.device.runtime.backends import open_artifact
from firmware_bench import run_benchmark
from firmware_bench.power import MeterOptions
from firmware_bench.report import CSV_NAME, JSON_NAME, to_text


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
