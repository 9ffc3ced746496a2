"""A board's install: ``pip install "edgekd[device]"`` alone, in a fresh venv, runs the three board commands.

The venv is made once per dependency set (keyed on pyproject's [project] table, kept in the system temp dir);
each session reinstalls the package itself from a clean copy of the sources (non-editable: the
honest board case, so the target profiles must come from the installed data files, not the
checkout). The bundle is the LiDAR-shaped full-int8 one of ``support.bundles``; the drive is a
small hand-made one whose LiDAR frames are the bundle's calibration windows.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import numpy as np
import pytest
from support.bundles import REPO, D, build_bundle
from support.export import cache_dir

pytestmark = pytest.mark.slow

# (tqdm is not in the list: ai-edge-litert itself depends on it; edgekd.device never imports it, lint-imports checks)
HOST_ONLY = ("torch", "tensorflow", "matplotlib", "scipy", "onnx", "onnx2tf")
SOURCES = ("pyproject.toml", "README.md", "edgekd", "firmware_bench", "targets")


def _pip(venv: Path, *args: str) -> None:
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *args],
                          capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="session")
def device_venv(tmp_path_factory) -> Path:
    """A venv holding ``.[device]`` only (deps cached across sessions; the package reinstalled every session)."""
    source = tmp_path_factory.mktemp("device-src")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, source / name)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]   # the dependencies decide the venv
    venv = cache_dir("device-venv", json.dumps(project, sort_keys=True), sys.version) / "venv"
    if not (venv / "installed").is_file():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        _pip(venv, f"{source}[device]")
        (venv / "installed").write_text("deps of .[device]\n")
    _pip(venv, "--no-deps", "--force-reinstall", str(source))
    return venv


def board(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run a command of the venv as a board would: outside the checkout, no PYTHONPATH, no targets override."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EDGEKD_TARGETS_DIR", "VIRTUAL_ENV")}
    exe = venv / "bin" / args[0]
    return subprocess.run([str(exe), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def small_drive(bundle: Path, path: Path, frames: int = 40) -> Path:
    """A LiDAR-only drive in the recorder's format (edgekd-drive/2), one track, day then night."""
    with np.load(bundle / "lidar" / "calibration.npz") as data:
        windows = data["lidar"]                                     # [N, T, 216]
    lidar = windows.reshape(-1, D)[:frames].astype(np.float32)
    lighting = (np.arange(frames) >= frames // 2).astype(np.int8) * 2
    np.savez(path, time_s=np.arange(frames) * 0.1, beams=np.tile([3, 4, 5, 6], (frames, 1)),
             lighting=lighting, weather=np.zeros(frames, np.int8), segment=(lighting > 0).astype(np.int16),
             segment_names=np.array(["day", "night"]), track=np.zeros(frames, np.int32), lidar=lidar,
             available_lidar=np.ones(frames, bool), meta=np.array(json.dumps({"format": "edgekd-drive/2"})))
    return path


def test_a_device_only_install_runs_the_board_commands(device_venv, tmp_path):
    bundle = build_bundle(tmp_path / "bundle")
    drive = small_drive(bundle, tmp_path / "drive.npz")
    work = Path(tempfile.mkdtemp(dir=tmp_path))                     # not the checkout: nothing shadows the install

    probe = board(device_venv, "python", "-c", "import importlib.util as u, json, edgekd; print(json.dumps("
                  f"[[m for m in {HOST_ONLY!r} if u.find_spec(m)], edgekd.__file__]))", cwd=work)
    assert probe.returncode == 0, probe.stderr
    missing_host, location = json.loads(probe.stdout)
    assert missing_host == [] and str(REPO) not in location

    report = tmp_path / "report"
    run = board(device_venv, "edgekd", "run", "--bundle", str(bundle), "--replay", str(drive), "--target", "rpi4",
                "--report", str(report), "--threads", "1", "--progress", cwd=work)
    assert run.returncode == 0, run.stdout + run.stderr
    for name in ("frames.jsonl", "segments.md", "segments.csv", "switches.csv", "summary.json"):
        assert (report / name).stat().st_size > 0, name
    assert not (report / "timeline.png").exists()
    assert "timeline.png not written" in run.stdout and "matplotlib" in run.stdout
    assert "40/40 frames" in run.stderr                             # the stdlib progress line, no tqdm

    bench = board(device_venv, "edgekd", "bench", "--target", "rpi5", "--bundle", str(bundle),
                  "--out", str(tmp_path / "bench"), "--runs", "12", "--warmup", "1", "--idle-seconds", "0",
                  "--no-op-profile", cwd=work)
    assert bench.returncode == 0, bench.stdout + bench.stderr
    assert (tmp_path / "bench" / "bench.json").is_file()

    firmware = board(device_venv, "python", "-m", "firmware_bench", "--bundle", str(bundle), "--runs", "12",
                     "--warmup", "1", "--idle-seconds", "0", "--no-op-profile", "--out", str(tmp_path / "fb"),
                     cwd=work)
    assert firmware.returncode == 0, firmware.stdout + firmware.stderr
    assert (tmp_path / "fb" / "bench.json").is_file()
