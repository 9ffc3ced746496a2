"""The multi-student runtime on a real bundle (real interpreters) and a real simulated drive."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from support.runtime import runtime_bundle, short_drive

from edgekd.cli import cli
from edgekd.device.errors import EdgekdError
from edgekd.device.runtime.engine import Runtime
from edgekd.device.runtime.replay import load_drive, replay, scored_frames, summarize

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundle() -> Path:
    return runtime_bundle()


@pytest.fixture(scope="module")
def drive():
    return load_drive(short_drive())


@pytest.fixture(scope="module")
def auto_run(bundle, drive):
    runtime = Runtime.from_bundle(bundle, "x86-ap", threads=1, clock=None)
    return runtime, replay(runtime, drive)


def feed(runtime, frames, t0=0.0, skip=()):
    """Push T frames per modality (calibration windows of the bundle are real model inputs)."""
    for i in range(runtime.hub.window):
        for m in runtime.hub.modalities:
            if m not in skip:
                runtime.push(m, frames[m][i], t0 + 0.1 * i)


def some_frames(bundle, runtime):
    from edgekd.device.bundle import open_bundle

    b = open_bundle(bundle, verify=False)
    frames = {}
    for name in runtime.students:
        for m, x in b.calibration_inputs(name).items():
            frames.setdefault(m, x[0])
    return frames


def test_api_push_predict_returns_ranked_beams_per_horizon(bundle):
    runtime = Runtime.from_bundle(bundle, "x86-ap", threads=1, clock=None)
    assert set(runtime.students) == {"image", "radar", "lidar"}
    assert {r.kind for r in runtime.students.values()} == {"tflite_int8"}  # x86-ap: TFLite int8 (XNNPACK)
    empty = runtime.predict()
    assert not empty.ok and empty.reason.startswith("no student can be fed")
    feed(runtime, some_frames(bundle, runtime))
    pred = runtime.predict()
    assert pred.ok and pred.student in runtime.students
    assert pred.beams.shape == (4, 5) and pred.probs.shape == (4, 5)
    assert np.all(np.diff(pred.probs, axis=1) <= 1e-7) and np.all(pred.probs.sum(axis=1) <= 1 + 1e-6)
    assert set(pred.latency_ms) == {"push", "policy", "preprocess", "invoke", "postprocess", "total"}
    assert pred.latency_ms["invoke"] > 0
    json.dumps(pred.to_dict())


def test_predict_without_now_asks_the_clock_so_stopped_sensors_go_stale(bundle):
    """The README's call, predict() without now=: when every sensor stops, time still moves on."""
    clock = [100.0]
    runtime = Runtime.from_bundle(bundle, "x86-ap", threads=1, clock=lambda: clock[0])
    feed(runtime, some_frames(bundle, runtime), t0=clock[0] - 0.7)
    assert runtime.predict().ok
    clock[0] += 10 * runtime.hub.staleness_s          # no frame arrives any more
    stale = runtime.predict()
    assert not stale.ok and "no student can be fed" in stale.reason


def test_the_runtime_checks_inputs_against_the_range_calibration_saw(bundle):
    runtime = Runtime.from_bundle(bundle, "x86-ap", threads=1, clock=None)
    frames = some_frames(bundle, runtime)
    lo, hi = runtime.hub.buffers["lidar"].value_range
    assert hi > lo
    assert runtime.push("lidar", frames["lidar"][0], 0.0)
    assert not runtime.push("lidar", np.full_like(frames["lidar"][0], 1e30), 0.1)


def test_a_new_track_waits_for_a_full_window_then_resumes_the_same_student(bundle):
    runtime = Runtime.from_bundle(bundle, "x86-ap", threads=1, clock=None)
    frames = some_frames(bundle, runtime)
    feed(runtime, frames)
    before = runtime.predict()
    assert before.ok
    runtime.new_track()
    for i in range(runtime.hub.window - 1):   # the new track's frames arrive one by one
        for m in runtime.hub.modalities:
            runtime.push(m, frames[m][i], 1.0 + 0.1 * i)
        pred = runtime.predict()
        assert not pred.ok and "warming up" in pred.reason
    for m in runtime.hub.modalities:
        runtime.push(m, frames[m][-1], 1.0 + 0.1 * (runtime.hub.window - 1))   # no gap: the window completes
    after = runtime.predict()
    assert after.ok and after.student == before.student and not after.switched


def test_replay_starts_a_new_track_at_every_pass_and_scores_full_windows_only(auto_run, drive):
    runtime, result = auto_run
    window = runtime.hub.window
    starts = np.flatnonzero(np.diff(drive.track)) + 1
    assert len(starts) >= 3
    for s in starts:   # no prediction may use frames of the previous pass
        assert all(result.student[i] is None for i in range(s, min(s + window - 1, drive.num_frames)))
    scored = scored_frames(window, drive)
    assert not scored[starts].any() and result.counters["warm_up_frames"] >= len(starts) * (window - 1)


def test_int8_students_read_the_hubs_integer_ring_with_the_logits_of_quantising_the_window(bundle, drive):
    """Quantising each frame once on push gives the very integers (and logits) that quantising the float
    window per call gives: image frames through the uint8 top-bit flip, radar and LiDAR through the affine map."""
    from edgekd.device.runtime.runner import quantize

    runtime = Runtime.from_bundle(bundle, "x86-ap", threads=1, clock=None)
    hub = runtime.hub
    assert {m: hub.quantization_of(m) is not None for m in hub.modalities} == {"image": True, "radar": True,
                                                                                 "lidar": True}
    assert drive.frames["image"].dtype == np.uint8   # the flip path, as a camera delivers
    compared = 0
    for j in range(0, drive.num_frames):
        for m in hub.modalities:
            if drive.available[m][j]:
                runtime.push(m, drive.frames[m][j], float(drive.time_s[j]))
        for name, student in runtime.students.items():
            if any(hub.buffers[m].count < hub.window for m in student.modalities) or j % 7:
                continue
            sources = dict(student.window_sources(hub))
            assert all(sources[m] == hub.quantized_window_of for m in student.modalities), name
            from_ring = student.run(hub)[0].copy()
            for m in student.modalities:
                spec = hub.quantization_of(m)
                np.testing.assert_array_equal(hub.quantized_window_of(m),
                                              quantize(hub.window_of(m), spec.scale, int(spec.zero_point)))
            per_call = student.runner({m: hub.window_of(m) for m in student.modalities}).reshape(from_ring.shape)
            np.testing.assert_array_equal(from_ring, per_call)
            compared += 1
    assert compared > 30


def test_tflite_target_runs_the_int8_tflite_artifacts(bundle):
    runtime = Runtime.from_bundle(bundle, "rpi5", threads=1, clock=None)
    assert {r.kind for r in runtime.students.values()} == {"tflite_int8"}
    feed(runtime, some_frames(bundle, runtime))
    assert runtime.predict().ok


def test_replay_covers_every_frame_that_any_student_can_feed(auto_run, drive):
    runtime, result = auto_run
    scored = scored_frames(runtime.hub.window, drive)
    missing = [i for i in np.flatnonzero(scored) if result.student[i] is None]
    # a frame goes unpredicted only when no sensor has a full, fresh window: never during the LiDAR failure
    for i in missing:
        assert result.records[i]["reason"].startswith("no student can be fed")
    lidar_out = [i for i, n in enumerate(drive.segment_names) if "lidar-failure" in n]
    in_outage = np.isin(drive.segment, lidar_out) & scored
    assert in_outage.any() and all(result.student[i] is not None for i in np.flatnonzero(in_outage))
    assert len(missing) <= 0.01 * scored.sum()


def test_night_runs_radar_day_runs_image_and_switches_are_explained(auto_run, drive):
    runtime, result = auto_run
    students = np.array([s or "-" for s in result.student])
    scored = scored_frames(runtime.hub.window, drive)   # a track's warm-up frames have no student
    night, day = scored & (drive.lighting == 2), scored & (drive.lighting == 0) & (drive.weather == 0)
    assert np.mean(students[night] == "radar") > 0.8
    assert np.mean(students[day] == "image") > 0.6
    assert {s["kind"] for s in result.switches} <= {"preference", "forced", "recovery", "fallback"}
    for s in result.switches:
        if s["kind"] == "forced":
            assert "cannot be fed" in s["reason"]
    preference = [s for s in result.switches if s["kind"] == "preference"]
    changes = int(np.count_nonzero(np.diff(drive.lighting)) + np.count_nonzero(np.diff(drive.weather)))
    # at most one preference switch per condition change (outage switches are forced and their returns
    # are recoveries, counted apart); one more may come from the order sensors warm up in
    assert len(preference) <= changes + 1, preference


def test_fixed_image_baseline_never_switches(bundle, drive):
    runtime = Runtime.from_bundle(bundle, "x86-ap", policy="fixed:image", threads=1, clock=None)
    result = replay(runtime, drive, keep_records=False)
    assert {s for s in result.student if s is not None} == {"image"}
    assert result.switches == []
    summary = summarize(result, drive, runtime.hub.window, "fixed:image")
    assert set(summary["top5_t0"]) == {"day", "dusk", "night"}


def test_nan_frames_at_night_fall_back_without_losing_a_prediction(bundle):
    runtime = Runtime.from_bundle(bundle, "x86-ap", threads=1, clock=None)
    frames = some_frames(bundle, runtime)
    frames["image"] = frames["image"] * 0.1          # dark: night
    feed(runtime, frames)
    for i in range(15):
        feed(runtime, frames, t0=1.0 + i)
        assert runtime.predict().ok
    assert runtime.policy.active == "radar"
    runtime.push("radar", np.full_like(frames["radar"][0], np.nan), 16.0)
    pred = runtime.predict()
    assert pred.ok and pred.student == "lidar" and "radar cannot be fed" in pred.reason
    assert runtime.hub.counters()["radar"]["rejected"] == 1


def test_a_failing_interpreter_call_falls_back_to_the_next_student(bundle):
    runtime = Runtime.from_bundle(bundle, "x86-ap", threads=1, clock=None)
    frames = some_frames(bundle, runtime)
    frames["image"] = frames["image"] * 0.1
    feed(runtime, frames)
    assert runtime.predict().student == "radar"
    # the radar student's runner now holds the LiDAR interpreter: a real call that fails on its inputs
    runtime.students["radar"].backend = runtime.students["lidar"].backend
    runtime.students["radar"].modalities = ("radar",)
    pred = runtime.predict()
    assert pred.ok and pred.student == "lidar" and "radar inference failed" in pred.reason
    assert runtime.students["radar"].failures == 1


def test_policy_and_artifact_errors_name_the_fix(bundle):
    with pytest.raises(EdgekdError, match="fixed:<student>"):
        Runtime.from_bundle(bundle, "x86-ap", policy="image")
    with pytest.raises(EdgekdError, match="lacks"):
        Runtime.from_bundle(bundle, "x86-ap", policy="fixed:fusion")
    with pytest.raises(EdgekdError, match="no artifact"):
        Runtime.from_bundle(bundle, "x86-ap", kind="tflite_fp16")


def test_cli_run_writes_the_report(bundle, tmp_path):
    out = tmp_path / "report"
    res = CliRunner().invoke(cli, ["run", "--bundle", str(bundle), "--replay", str(short_drive()),
                                   "--report", str(out), "--threads", "1"])
    assert res.exit_code == 0, res.output
    for name in ("frames.jsonl", "segments.md", "segments.csv", "switches.csv", "summary.json", "timeline.png"):
        assert (out / name).stat().st_size > 0, name
    records = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
    assert len(records) == load_drive(short_drive()).num_frames
    assert {"student", "reason", "beams", "probs", "latency_ms", "truth", "segment"} <= set(records[-1])
    summary = json.loads((out / "summary.json").read_text())
    assert "night" in summary["top5_t0"] and "| group |" in (out / "segments.md").read_text()
    assert (out / "timeline.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_refuses_a_tampered_bundle(bundle, tmp_path):
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    path = copy / manifest["students"]["radar"]["artifacts"]["onnx_int8_qdq"]["path"]
    path.write_bytes(path.read_bytes() + b"\0")
    res = CliRunner().invoke(cli, ["run", "--bundle", str(copy), "--replay", str(short_drive())])
    assert res.exit_code == 2 and "sha256" in res.output


def test_replay_in_a_fresh_process_loads_no_torch_or_tensorflow(bundle):
    code = (
        "import sys, json\n"
        "from edgekd.device.runtime.engine import Runtime\n"
        "from edgekd.device.runtime.replay import load_drive, replay\n"
        f"rt = Runtime.from_bundle({str(bundle)!r}, 'x86-ap', threads=1)\n"
        f"r = replay(rt, load_drive({str(short_drive())!r}), keep_records=False)\n"
        f"rt2 = Runtime.from_bundle({str(bundle)!r}, 'rpi5', threads=1)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow', 'keras'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
