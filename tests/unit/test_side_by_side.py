"""Training jobs side by side (edgekd.host.experiments.side_by_side): real worker processes, real results."""

from __future__ import annotations

import os
import time

import pytest

from edgekd.device.errors import EdgekdError
from edgekd.host.experiments.side_by_side import Job, run_jobs


def square(x: int, pause: float = 0.0) -> dict:
    time.sleep(pause)
    return {"value": x * x, "pid": os.getpid(), "threads": os.environ.get("OMP_NUM_THREADS")}


def fail(what: str) -> dict:
    raise EdgekdError(what, field="epochs", fix="train longer")


def test_jobs_run_in_worker_processes_with_one_thread_and_report_their_seconds():
    lines: list[str] = []
    jobs = [Job(f"job{x}", square, {"x": x, "pause": 0.2 * x}, cost=x, about=f"squaring {x}") for x in (1, 2, 3)]
    results = run_jobs(jobs, 2, progress=False, echo=lines.append)
    assert {name: r["value"] for name, r in results.items()} == {"job1": 1, "job2": 4, "job3": 9}
    assert {r["pid"] for r in results.values()} - {os.getpid()} == {r["pid"] for r in results.values()}
    assert len({r["pid"] for r in results.values()}) == 2 and {r["threads"] for r in results.values()} == {"1"}
    assert all(r["seconds"] >= 0.2 * int(name[-1]) - 0.05 for name, r in results.items())
    assert lines[:3] == ["  squaring 3", "  squaring 2", "  squaring 1"]   # the costliest start first
    assert sorted(line for line in lines[3:]) == sorted(f"  job{x} finished in {results[f'job{x}']['seconds']:.0f} s"
                                                        for x in (1, 2, 3))


def test_in_turn_runs_in_this_process():
    results = run_jobs([Job("a", square, {"x": 4}), Job("b", square, {"x": 5})], 1, progress=False,
                       echo=lambda _: None)
    assert [r["value"] for r in results.values()] == [16, 25] and {r["pid"] for r in results.values()} == {
        os.getpid()}


def test_a_failing_job_raises_its_error_in_the_parent():
    jobs = [Job("slow", square, {"x": 1, "pause": 120.0}), Job("bad", fail, {"what": "no data"}, cost=5)]
    start = time.monotonic()
    with pytest.raises(EdgekdError, match="no data") as info:
        run_jobs(jobs, 2, progress=False, echo=lambda _: None)
    assert "train longer" in str(info.value)
    assert time.monotonic() - start < 60   # the running job is stopped, not waited for
