"""``edgekd bench --compare`` on a real bundle: a LiDAR student and teacher trained for a few seconds on the
export tests' learnable dataset, exported for x86-ap with the real converters, compared in one process.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from support.export import cache_dir, env_flag, make_dataset, source_key, train_student

from edgekd.cli import cli
from edgekd.device.io import atomic_write_json
from edgekd.host.compare import (
    FORMATS,
    TEACHER,
    Candidate,
    CompareSettings,
    compare_bundle,
    interleaved_loop,
    rotation,
)
from edgekd.host.export import export_bundle
from firmware_bench.power import MeterOptions

pytestmark = pytest.mark.slow
SIX = [TEACHER, "torch_fp32", "onnx_fp32", "onnx_int8_qdq", "tflite_fp32", "tflite_int8"]


def _export_key() -> str:
    import edgekd.host.export

    digest = hashlib.sha256(source_key().encode())
    for path in sorted(Path(edgekd.host.export.__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Trained checkpoints + an x86-ap bundle, reused across runs while the sources that make them are unchanged
    (the converters dominate this file's time); EDGEKD_FRESH_FIXTURES=1 rebuilds."""
    torch.set_num_threads(1)
    root = cache_dir("bench-compare", _export_key())
    if (root / "done").is_file() and not env_flag("EDGEKD_FRESH_FIXTURES"):
        return root
    shutil.rmtree(root, ignore_errors=True)
    build = tmp_path_factory.mktemp("compare")
    make_dataset(build / "data", drives=10, frames_per_drive=60)
    train_student("lidar_student", build / "data", build / "lidar.pt", epochs=6)
    train_student("lidar_teacher", build / "data", build / "teacher.pt", epochs=6, seed=1)
    export_bundle([build / "lidar.pt"], "x86-ap", build / "data", build / "bundle", eval_windows=60)
    (build / "done").write_text("ok\n")
    shutil.copytree(build, root)
    return root


def no_meters(tmp_path: Path) -> MeterOptions:
    return MeterOptions(sysfs_root=tmp_path, tegrastats_cmd=("no-such-tegrastats",),
                        vcgencmd_cmd=("no-such-vcgencmd",))


def test_compare_command_writes_the_table_in_every_format(work, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [
        "bench", "--compare", "--bundle", str(work / "bundle"), "--data", str(work / "data"),
        "--checkpoints", str(work / "lidar.pt"), "--teacher", str(work / "teacher.pt"), "--runs", "60",
        "--warmup", "2", "--eval-windows", "40", "--energy-seconds", "0.1", "--threads", "1",
        "--power-meter", "estimate", "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "compare.json").read_text())
    rows = {r["format"]: r for r in report["rows"]}
    assert list(rows) == SIX
    for key, row in rows.items():
        assert row["status"] == "ok", (key, row["status"])
        assert row["runs"] == 60 and row["accuracy_n"] == 40
        assert 0 < row["latency"]["p50_ms"] <= row["latency"]["p90_ms"]
        assert row["fps"] == pytest.approx(1e3 / row["latency"]["mean_ms"])
        assert row["energy"]["method"] == "estimated" and row["energy"]["per_inference_mj"] > 0
        assert row["size_bytes"] > 0
    # the same network in PyTorch and ONNX Runtime fp32 predicts the same beams
    assert rows["torch_fp32"]["top2_mean"] == pytest.approx(rows["onnx_fp32"]["top2_mean"], abs=0.02)
    assert rows["torch_fp32"]["top2_mean"] > 0.2, "the fixture student should have learned something"
    # int8 is smaller on disk than fp32, and the teacher's ratio is its own p50 over itself
    assert rows["tflite_int8"]["size_bytes"] < rows["tflite_fp32"]["size_bytes"]
    assert rows[TEACHER]["speedup_vs_teacher_p50"] == pytest.approx(1.0)
    assert rows["tflite_int8"]["speedup_vs_teacher_p50"] == pytest.approx(
        rows[TEACHER]["latency"]["p50_ms"] / rows["tflite_int8"]["latency"]["p50_ms"])
    assert set(report["acceptance"]["lidar"]) >= {"speedup_p50", "top2_vs_teacher_points", "passed"}
    assert report["threads"] == 1 and report["torch_threads"] == 1
    # issue 17: the compute floor (student MACs at the measured peak int8 rate) and the share of it reached
    floor, peak = rows["tflite_int8"]["compute_floor"], report["int8_peak"]
    assert peak["macs_per_s"] > 1e9 and floor["macs"] > 1e5
    # floor_us is reported to 3 decimals (a small student at a fast peak rate is well under a microsecond)
    assert floor["floor_us"] == pytest.approx(1e6 * floor["macs"] / peak["macs_per_s"], rel=1e-3, abs=5e-4)
    assert 0 <= floor["share_of_floor"] < 1   # 4 decimals: a heavily loaded run may round to 0
    assert "compute floor" in (out / "compare.md").read_text() and "of floor" in (out / "compare.md").read_text()
    # the first call after another format ran is reported apart, never mixed into the headline
    assert report["block"] == 10 and "steady state" in report["timing"]
    for row in rows.values():
        assert row["latency_after_switch"]["n"] >= 6
    assert rows["tflite_int8"]["info"]["backend"] == "TFLiteBackend"
    # artifact rows say where a call goes; the phases add up to about the call (separate pass, so loosely)
    phases = rows["tflite_int8"]["phases"]
    assert phases["runs"] == 60 and min(phases[f"{k}_p50_ms"] for k in ("quantize", "invoke", "dequantize")) > 0
    assert phases["end_to_end_p50_ms"] >= phases["invoke_p50_ms"]
    assert rows[TEACHER]["phases"] is None and rows["onnx_fp32"]["phases"]["invoke_p50_ms"] > 0

    markdown = (out / "compare.md").read_text()
    assert markdown == result.output
    assert markdown.count("(estimated)") == 6 and "ESTIMATED" in markdown
    assert "first call after another format ran" in markdown and "TFLite int8 call split" in markdown
    for label in (FORMATS[k] for k in SIX):
        assert f"| {label} |" in markdown
    table = list(csv.DictReader((out / "compare.csv").open()))
    assert [r["format"] for r in table] == SIX and {r["energy_method"] for r in table} == {"estimated"}
    assert float(table[-1]["p50_ms"]) == pytest.approx(rows["tflite_int8"]["latency"]["p50_ms"])
    png = (out / "compare_latency_cdf.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_absent_and_broken_formats_keep_their_rows(work, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(work / "bundle", bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["students"]["lidar"]["artifacts"]["onnx_int8_qdq"]  # as a target without ONNX QDQ ships it
    atomic_write_json(bundle / "manifest.json", manifest)
    with open(bundle / manifest["students"]["lidar"]["artifacts"]["tflite_fp32"]["path"], "ab") as handle:
        handle.write(b"\0")  # modified after export: must be refused, not timed

    report = compare_bundle(bundle, work / "data", settings=CompareSettings(runs=20, warmup=0, eval_windows=20,
                                                                            energy_seconds=0, threads=1),
                            meter_options=no_meters(tmp_path))
    rows = {r["format"]: r for r in report["rows"]}
    assert list(rows) == SIX  # nothing dropped
    assert rows["onnx_int8_qdq"]["status"].startswith("missing: not in the bundle")
    assert rows["tflite_fp32"]["status"].startswith("error:") and "modified" in rows["tflite_fp32"]["status"]
    # no checkpoint next to the bundle and none given: the PyTorch rows say how to fix it
    assert rows["torch_fp32"]["status"].startswith("missing:") and "--checkpoints" in rows["torch_fp32"]["status"]
    assert rows[TEACHER]["status"].startswith("missing:") and "--teacher" in rows[TEACHER]["status"]
    for key in ("onnx_fp32", "tflite_int8"):
        assert rows[key]["status"] == "ok" and rows[key]["latency"]["n"] == 20
        assert rows[key]["energy"]["method"].startswith("not measured")
    assert report["acceptance"]["lidar"]["passed"] is None
    assert set(report["latencies_ms"]["lidar"]) == {"onnx_fp32", "tflite_int8"}


def test_checkpoint_next_to_the_bundle_is_found_and_a_changed_one_refused(work, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(work / "bundle", bundle)
    shutil.copyfile(work / "lidar.pt", tmp_path / "lidar.pt")  # the manifest records the file name + sha256
    settings = CompareSettings(runs=5, warmup=0, eval_windows=5, energy_seconds=0, threads=1)
    rows = {r["format"]: r for r in compare_bundle(bundle, work / "data", settings=settings)["rows"]}
    assert rows["torch_fp32"]["status"] == "ok" and rows["torch_fp32"]["source"] == str(tmp_path / "lidar.pt")
    shutil.copyfile(work / "teacher.pt", tmp_path / "lidar.pt")
    rows = {r["format"]: r for r in compare_bundle(bundle, work / "data", settings=settings)["rows"]}
    assert "differs from the exported checkpoint" in rows["torch_fp32"]["status"]


def test_rotation_and_blocked_interleaving():
    assert [rotation(i, 3) for i in range(3)] == [[0, 1, 2], [1, 2, 0], [2, 0, 1]]
    calls: list[tuple[str, int]] = []

    def runner(tag):
        buffer = np.zeros((1, 4, 64), np.float32)  # reused, as the lean backends' runners do

        def run(window):
            calls.append((tag, int(window["x"][0, 0])))
            if tag == "b" and len(calls) > 8:
                raise RuntimeError("boom")
            buffer[:] = window["x"][0, 0]
            return buffer
        return run

    cands = [Candidate("s", key, run=runner(tag)) for key, tag in (("onnx_fp32", "a"), ("tflite_fp32", "b"),
                                                                    ("tflite_int8", "c"))]
    windows = [{"x": np.array([[i]], np.float32)} for i in range(3)]
    ticks = iter(range(0, 10_000, 5))
    rounds = interleaved_loop(cands, windows, runs=4, warmup=0, block=2, clock=lambda: next(ticks))
    assert rounds == 2
    # a round: each format one switch call + `block` back-to-back calls on the next windows, order rotating
    assert calls[:9] == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("b", 2), ("c", 0), ("c", 1), ("c", 2)]
    assert [tag for tag, _ in calls[9:]] == ["b", "c", "c", "c", "a", "a", "a"]  # b fails on its first call
    assert [w for tag, w in calls if tag == "a"] == [0, 1, 2, 0, 1, 2]  # every format sees the same windows
    assert cands[1].status == "error: RuntimeError: boom" and len(cands[1].latencies_ns) == 2
    # switch calls are timed apart from the steady state, which gets exactly `runs` timings
    assert list(cands[0].latencies_ns) == [5, 5, 5, 5] and len(cands[0].switch_ns) == 2
    assert len(cands[2].latencies_ns) == 4 and len(cands[2].switch_ns) == 2
    # outputs of the first pass over the windows, copied although the runner reuses its buffer
    assert [o[0, 0, 0] for o in cands[0].outputs] == [0.0, 1.0, 2.0]


def test_every_window_is_seen_even_with_few_runs():
    seen: list[int] = []

    def run(window):
        seen.append(int(window["x"][0, 0]))
        return np.zeros((1, 4, 64), np.float32)

    cand = Candidate("s", "tflite_int8", run=run)
    windows = [{"x": np.array([[i]], np.float32)} for i in range(25)]
    interleaved_loop([cand], windows, runs=3, warmup=1, block=10)
    assert len(cand.outputs) == 25 and seen[1:26] == list(range(25))
    assert len(cand.latencies_ns) >= 3
    with pytest.raises(ValueError, match="block"):
        interleaved_loop([cand], windows, runs=3, warmup=0, block=0)


def test_a_demo_folder_s_own_dataset_and_checkpoints_are_found(work, tmp_path):
    # the layout `edgekd demo` writes: DEMO/bundle, DEMO/data/dataset, DEMO/students/*.pt, DEMO/teachers/*.pt
    demo = tmp_path / "edgekd-demo"
    shutil.copytree(work / "bundle", demo / "bundle")
    shutil.copytree(work / "data", demo / "data" / "dataset")
    (demo / "students").mkdir()
    (demo / "teachers").mkdir()
    shutil.copyfile(work / "lidar.pt", demo / "students" / "lidar_student.pt")
    shutil.copyfile(work / "teacher.pt", demo / "teachers" / "lidar_teacher.pt")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [
        "bench", "--compare", "--bundle", str(demo / "bundle"), "--runs", "5", "--warmup", "0", "--eval-windows",
        "5", "--energy-seconds", "0", "--threads", "1", "--min-speedup", "0", "--max-top2-drop", "100",
        "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "compare.json").read_text())
    assert report["data"] == str((demo / "data" / "dataset").resolve())
    assert report["found"]["demo"] == str(demo.resolve())
    rows = {r["format"]: r for r in report["rows"]}
    assert rows["torch_fp32"]["status"] == "ok"
    assert rows["torch_fp32"]["source"] == str((demo / "students" / "lidar_student.pt").resolve())
    assert rows[TEACHER]["status"] == "ok"
    # the user's rule is what the verdict was judged by, and it is recorded
    rule = report["acceptance_rule"]
    assert rule["min_speedup_p50"] == 0 and rule["max_top2_drop_points"] == 100
    assert report["acceptance"]["lidar"]["passed"] is True and "0x" in report["acceptance"]["lidar"]["rule"]
    assert "demo folder" in result.output


def test_demo_layout_on_a_tiny_fake_demo(tmp_path):
    from edgekd.host.compare import demo_layout, find_sources

    assert demo_layout(tmp_path / "bundle") is None
    (tmp_path / "bundle").mkdir()
    (tmp_path / "data" / "dataset").mkdir(parents=True)
    (tmp_path / "data" / "dataset" / "meta.json").write_text("{}")
    for folder, name in (("students", "image_student.pt"), ("students", "radar_student.pt"),
                         ("teachers", "image_teacher.pt")):
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / name).write_bytes(b"x")
    layout = demo_layout(tmp_path / "bundle")
    assert layout is not None and layout.data == (tmp_path / "data" / "dataset").resolve()
    assert [p.name for p in layout.students] == ["image_student.pt", "radar_student.pt"]
    sources = find_sources(tmp_path / "bundle", None, (), ())
    assert sources.data == layout.data and [p.name for p in sources.students] == ["image_student.pt",
                                                                                  "radar_student.pt"]
    assert [p.name for p in sources.fallback_teachers] == ["image_teacher.pt"]
    # flags win: a given dataset is used, given checkpoints come first
    given = tmp_path / "mine.pt"
    given.write_bytes(b"y")
    sources = find_sources(tmp_path / "bundle", tmp_path / "elsewhere", [given], ())
    assert sources.data == tmp_path / "elsewhere" and sources.students[0] == given
