"""Op profiles: TFLite benchmark_model's per-node-type table (fixture output, run as a real subprocess)."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from firmware_bench.opprofile import (
    NO_TFLITE_PROFILER,
    parse_benchmark_model_node_types,
    tflite_op_profile,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "power" / "benchmark_model_op_profiling.txt"


def test_parse_takes_the_inference_table_not_the_init_one():
    rows = parse_benchmark_model_node_types(FIXTURE.read_text())
    assert [r["op"] for r in rows] == ["TfLiteXNNPackDelegate", "MAX_POOL_2D", "SOFTMAX", "RESHAPE"]
    assert rows[0] == {"op": "TfLiteXNNPackDelegate", "count": 1, "avg_ms": 0.228, "avg_pct": 70.37,
                       "cdf_pct": 70.37, "mem_kb": 0.0, "times_called": 1}
    assert rows[-1]["count"] == 2 and rows[-1]["cdf_pct"] == pytest.approx(100.0)


def test_parse_without_a_table():
    assert parse_benchmark_model_node_types("INFO: Initialized session in 4.0ms.\n") == []


def _fake_benchmark_model(tmp_path: Path) -> Path:
    tool = tmp_path / "benchmark_model"
    tool.write_text(f"#!{sys.executable}\nimport sys\nassert '--enable_op_profiling=true' in sys.argv\n"
                    f"sys.stdout.write(open({str(FIXTURE)!r}).read())\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return tool


def test_tflite_profile_with_and_without_benchmark_model(tmp_path, monkeypatch):
    model = tmp_path / "missing.tflite"  # op counts fail on it, and the profile says so instead of raising
    profile = tflite_op_profile(model, threads=2, tool=str(_fake_benchmark_model(tmp_path)))
    assert profile["op_counts"] is None and "op_counts_error" in profile
    assert [r["op"] for r in profile["per_op_timing"]][:2] == ["TfLiteXNNPackDelegate", "MAX_POOL_2D"]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    profile = tflite_op_profile(model, threads=None)
    assert profile["per_op_timing"] is None and profile["per_op_timing_note"] == NO_TFLITE_PROFILER
