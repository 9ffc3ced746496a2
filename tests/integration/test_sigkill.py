"""SIGKILL of a parent leaves no child behind: `data synth` workers and the export converter child die with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from support.processes import kill_and_check, wait_for_children

from edgekd.host.data.workers import WORKER_NAME
from edgekd.host.export.tflite import CONVERTER_NAME

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")


def test_sigkill_of_data_synth_takes_its_workers_along(tmp_path):
    out = tmp_path / "data"
    cmd = [sys.executable, "-c", "from edgekd.cli import main; main()", "data", "synth", "--windows", "30000",
           "--out", str(out), "--no-progress"]
    parent = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        workers = wait_for_children(parent, "spawn_main", armed=WORKER_NAME)
        kill_and_check(parent, workers)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert not out.exists()
    again = subprocess.run([*cmd[:3], "data", "synth", "--windows", "60", "--out", str(out), "--no-progress"],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".partial")]


def test_sigkill_of_export_takes_the_converter_child_along(tmp_path):
    script = f"""
import sys
sys.path.insert(0, {str(REPO / 'tests')!r})
from pathlib import Path
from support.bundles import _onnx_fp32
from edgekd.host.export.tflite import convert_onnx_to_tflite
work = Path({str(tmp_path)!r})
_onnx_fp32(work / "model.onnx")
convert_onnx_to_tflite(work / "model.onnx", work / "convert", input_names=["lidar"], calibration_npz=None,
                       precisions=["fp32"])
"""
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        converters = wait_for_children(parent, "edgekd.host.export.tflite", armed=CONVERTER_NAME)
        kill_and_check(parent, converters)
    finally:
        if parent.poll() is None:
            parent.kill()


def _signal_state(pid: int, workers) -> str:
    """The process's signal masks and threads (/proc), and its workers' states, for a hang's report."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError as exc:
        return f"/proc/{pid}/status unreadable: {exc}"
    keep = [ln for ln in lines if ln.split(":")[0] in ("State", "Threads", "SigBlk", "SigIgn", "SigCgt")]
    alive = [(w.pid, w.status()) for w in workers if w.is_running()]
    return f"parent {' | '.join(keep)} (SIGINT is bit 2 of the masks); workers alive {alive}"


def _as_a_terminal_foreground_job() -> None:
    """Give the child SIGINT's default action, as an interactive shell does for its foreground job.

    A command started with `&` from a non-interactive shell (`bash .ci/run &`, nohup) inherits SIGINT
    ignored, and an ignored signal stays ignored across fork and exec: the synth child would then
    rightly ignore the test's Ctrl-C (this failed twice on 2026-12-03 in CI runs started that way).
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_exits_130_and_keeps_nothing_half_written(tmp_path):
    out = tmp_path / "data"
    cmd = [sys.executable, "-c", "from edgekd.cli import main; main()", "data", "synth", "--windows", "30000",
           "--out", str(out), "--no-progress"]
    # a session of its own: Ctrl-C in a terminal signals the whole foreground process group, workers included
    parent = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True, preexec_fn=_as_a_terminal_foreground_job)
    try:
        workers = wait_for_children(parent, "spawn_main", armed=WORKER_NAME)
        time.sleep(2.0)   # the workers are rendering
        os.killpg(parent.pid, signal.SIGINT)
        try:
            _, stderr = parent.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            # say what the process was doing when it did not answer
            state = _signal_state(parent.pid, workers)
            parent.kill()
            _, stderr = parent.communicate()
            pytest.fail(f"no exit 60 s after Ctrl-C; this process's SIGINT handler: "
                        f"{signal.getsignal(signal.SIGINT)!r}; {state}; stderr: {stderr[-2000:]}")
    finally:
        if parent.poll() is None:
            parent.kill()
    assert parent.returncode == 130, stderr[-2000:]
    assert "interrupted" in stderr and "Traceback" not in stderr
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
