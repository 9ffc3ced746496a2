"""`edgekd demo --profile smoke`: every stage for real (synth, train, KD, data-free, export, replay, bench, report)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from edgekd.cli import cli
from edgekd.host.experiments.demo import PROFILES, STAGES, DemoProfile, load_profile

torch.set_num_threads(1)
PNG = b"\x89PNG\r\n\x1a\n"


def run_demo(out, *extra):
    return CliRunner().invoke(cli, ["demo", "--profile", "smoke", "--out", str(out), "--no-progress", *extra])


@pytest.fixture(scope="module")
def smoke_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    result = run_demo(out)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_smoke_demo_runs_every_stage_and_writes_the_report(smoke_demo):
    out, output = smoke_demo
    for index, stage in enumerate(STAGES, start=1):
        assert f"[{index}/{len(STAGES)}] {stage}: finished" in output
        assert json.loads((out / "stages" / f"{stage}.json").read_text())["seconds"] >= 0
    assert f"report: {out / 'report.md'}" in output
    report = (out / "report.md").read_text()
    for heading in ("## 1. Data", "## 2. Accuracy per horizon", "## 3. Compression", "## 4. Export parity",
                    "## 5. Day -> night drive", "## 6. Benchmark"):
        assert heading in report
    # every image the report links exists and is a PNG
    for link in ("data/dataset.png", "accuracy.png", "timeline_auto.png", "timeline_image-only.png"):
        assert f"]({link})" in report
        assert (out / link).read_bytes()[:8] == PNG
    # the LiDAR student's true parameter count and the int8 artifacts of all three students
    assert "| lidar | 96,640 | 25,408 |" in report
    # the smoke profile sends every student through the qat stage (qat: always): fine-tuned, exported again
    qat = json.loads((out / "stages" / "qat.json").read_text())
    assert qat["bundle"] == "bundle-qat" and set(qat["fine_tuned"]) == {"image", "radar", "lidar"}
    assert qat["fine_tuned"]["lidar"] == "students/lidar_student_kd.qat.pt"
    for modality, ckpt in qat["fine_tuned"].items():
        fine = torch.load(out / ckpt, weights_only=True)
        assert fine["metrics"]["qat"]["epochs"] == 1 and fine["config"]["method"] == "kd"
        assert json.loads((out / "bundle-qat" / "manifest.json").read_text())["students"][modality][
            "checkpoint"]["file"].endswith(".qat.pt")
    assert "Quantisation-aware fine-tune (stage `qat`, profile `qat: always`)" in report
    manifest = json.loads((out / "bundle-qat" / "manifest.json").read_text())
    assert set(manifest["students"]) == {"image", "radar", "lidar"}
    assert all("tflite_int8" in s["artifacts"] for s in manifest["students"].values())
    # a degraded bundle is said on the console, not in report.md only (and only a degraded one)
    assert ("WARNING: bundle is DEGRADED" in output) == bool(manifest["degraded"]), output[-2000:]
    # the data-free student never read a training window; the KD one is deployed and both are reported
    ck = torch.load(out / "students" / "lidar_student_datafree.pt", weights_only=True)
    assert ck["config"]["method"] == "datafree" and ck["data"]["train_windows"] == 0
    students = json.loads((out / "stages" / "students.json").read_text())
    assert students["checkpoints"]["lidar"] == "students/lidar_student_kd.pt"
    assert set(students["not_deployed"]) == {"lidar_datafree"}
    assert "| lidar | student (response KD, deployed) | top-2 |" in report
    assert "| lidar | student (data-free, not deployed) | top-2 |" in report
    # both replays and the benchmark covered every student
    auto = json.loads((out / "replay" / "auto" / "summary.json").read_text())
    fixed = json.loads((out / "replay" / "image-only" / "summary.json").read_text())
    assert auto["policy"] == "auto" and fixed["policy"] == "fixed:image"
    assert auto["frames"] == json.loads((out / "stages" / "data.json").read_text())["drive_frames"]
    bench = json.loads((out / "bench" / "bench.json").read_text())
    assert {r["student"] for r in bench["results"]} == {"image", "radar", "lidar"}
    assert all(r["energy"]["method"] in ("estimated",) or r["energy"]["method"].startswith("measured")
               for r in bench["results"])


def test_resume_skips_finished_stages_and_a_plain_rerun_is_refused(smoke_demo):
    out, _ = smoke_demo
    before = (out / "bundle" / "manifest.json").read_bytes()
    again = run_demo(out, "--resume")
    assert again.exit_code == 0, again.output
    assert all(f"{stage}: done earlier" in again.output for stage in STAGES)
    assert (out / "bundle" / "manifest.json").read_bytes() == before
    refused = run_demo(out)
    assert refused.exit_code == 2 and "--resume" in refused.output and "Traceback" not in refused.output


def test_a_failing_stage_is_named_and_earlier_stages_are_kept(smoke_demo, tmp_path):
    src, _ = smoke_demo
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    # the image student's checkpoint is broken after the students stage: export must fail, naming itself
    (out / "students" / "image_student.pt").write_bytes(b"not a checkpoint")
    for stage in STAGES[STAGES.index("export"):]:
        (out / "stages" / f"{stage}.json").unlink()
    shutil.rmtree(out / "bundle")
    result = run_demo(out, "--resume")
    assert result.exit_code == 2, result.output
    assert "stage 'export' failed" in result.output and "image_student.pt" in result.output
    assert "Traceback" not in result.output
    assert (out / "stages" / "students.json").is_file() and not (out / "stages" / "export.json").exists()
    assert not (out / "bundle").exists()   # nothing half-written


def test_qat_stage_keeps_the_ptq_bundle_when_no_student_needs_qat(smoke_demo):
    """on_degraded with every PTQ file past the gate (or qat: never): no fine-tune, the export's bundle."""
    from edgekd.host.experiments.demo import Demo, stage_qat

    out, _ = smoke_demo
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    for when in ("never", "on_degraded"):
        demo = Demo(out, dataclasses.replace(load_profile("smoke"), qat=when), "x86-ap", progress=False,
                    echo=lambda _: None)
        passed = all(s["parity"]["passed"] for s in manifest["students"].values())
        if when == "on_degraded" and not passed:
            continue        # a failing smoke student would be fine-tuned: covered by the smoke run itself
        record = stage_qat(demo)
        assert record["bundle"] == "bundle" and record["fine_tuned"] == {}
        assert record["degraded"] == manifest["degraded"]
        assert record["ptq_drops"]["lidar"] == manifest["students"]["lidar"]["parity"]["drops"]


def test_resume_with_other_settings_is_refused(smoke_demo, tmp_path):
    src, _ = smoke_demo
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    result = run_demo(out, "--resume", "--target", "rpi5")
    assert result.exit_code == 2 and "target" in result.output


def test_profile_config_rejects_unknown_keys(tmp_path):
    config = tmp_path / "demo.yaml"
    config.write_text("windows: 500\nteacher_epochz: 3\n")
    result = run_demo(tmp_path / "out", "--config", str(config))
    assert result.exit_code == 2 and "teacher_epochz" in result.output and str(config) in result.output
    assert not (tmp_path / "out").exists()


def test_profiles_load_and_validate():
    assert load_profile("quick") == DemoProfile()
    assert set(PROFILES) == {"quick", "smoke"}
    assert load_profile("smoke").windows == 300
    with pytest.raises(ValueError, match="kd_method"):
        DemoProfile(kd_method="fitnet")
    with pytest.raises(ValueError, match="lidar_student"):
        DemoProfile(lidar_student="fitnet")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_sigkill_during_the_demo_export_leaves_nothing_behind_and_resume_finishes(smoke_demo, tmp_path):
    """A demo killed in its export stage (the converter child running): no process outlives it, and
    `--resume` finishes the run and removes the killed run's .partial bundle and scratch folder."""
    from support.processes import kill_and_check, wait_for_children

    from edgekd.host.export.tflite import CONVERTER_NAME

    out = tmp_path / "run"
    shutil.copytree(smoke_demo[0], out)
    for stage in ("export", "qat", "replay", "bench", "report"):   # as if the run had got as far as the students
        (out / "stages" / f"{stage}.json").unlink()
    shutil.rmtree(out / "bundle")
    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch_root)}
    cmd = [sys.executable, "-c", "from edgekd.cli import main; main()", "demo", "--profile", "smoke",
           "--out", str(out), "--no-progress", "--resume"]
    parent = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        converters = wait_for_children(parent, "edgekd.host.export.tflite", timeout_s=300, armed=CONVERTER_NAME)
        kill_and_check(parent, converters)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert [p for p in out.iterdir() if p.name.endswith(".partial")], "the kill left no .partial bundle to clean"
    assert [p for p in scratch_root.iterdir() if p.name.startswith("edgekd-export-")]
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "export: finished" in again.stdout and (out / "bundle" / "manifest.json").is_file()
    assert not [p for p in out.iterdir() if p.name.endswith(".partial")]
    leftovers = [p for p in scratch_root.iterdir() if p.name.startswith("edgekd-export-")]
    assert all(p.name == "edgekd-export-logs" for p in leftovers), leftovers


def test_sigkill_during_side_by_side_training_takes_the_workers_along(smoke_demo, tmp_path):
    """The smoke profile trains its teachers on two worker processes: a SIGKILLed demo leaves neither behind."""
    from support.processes import kill_and_check, wait_for_children

    from edgekd.host.experiments.side_by_side import TRAINER_NAME

    out = tmp_path / "run"
    shutil.copytree(smoke_demo[0], out)
    for stage in STAGES[STAGES.index("teachers"):]:
        (out / "stages" / f"{stage}.json").unlink()
    shutil.rmtree(out / "teachers")
    cmd = [sys.executable, "-c", "from edgekd.cli import main; main()", "demo", "--profile", "smoke",
           "--out", str(out), "--no-progress", "--resume"]
    parent = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        workers = wait_for_children(parent, "spawn_main", timeout_s=120, armed=TRAINER_NAME)
        assert len(workers) == 2
        kill_and_check(parent, workers)
    finally:
        if parent.poll() is None:
            parent.kill()
