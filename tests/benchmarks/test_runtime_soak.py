"""Runtime overhead per frame and a soak for memory growth (real bundle, real interpreters).

The full acceptance soak is 100,000 frames (set EDGEKD_SOAK_FRAMES=100000, or run
tests/benchmarks/runtime_soak.py); by default a shorter soak keeps CI fast.
The 0.2 ms overhead budget is asserted only with EDGEKD_STRICT_TIMING=1 (a
shared, busy CI machine inflates every microsecond); the number is always
recorded in the benchmark's extra_info.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from benchmarks.runtime_soak import soak
from support.runtime import runtime_bundle, short_drive

pytestmark = pytest.mark.slow
OVERHEAD_BUDGET_MS = 0.2


def test_soak_memory_growth_under_5_mb(benchmark):
    frames = int(os.environ.get("EDGEKD_SOAK_FRAMES", "6000"))
    result = benchmark.pedantic(soak, args=(str(runtime_bundle()), str(short_drive()), frames),
                                kwargs={"warmup": min(2000, frames // 3)}, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    assert result["rss_growth_mb"] < 5.0, result
    assert sum(result["students"].values()) + result["no_prediction"] == frames
    assert len([s for s, n in result["students"].items() if n]) >= 2   # the policy did switch students


def test_runtime_overhead_per_frame(benchmark):
    from edgekd.device.runtime.engine import Runtime
    from edgekd.device.runtime.replay import load_drive

    drive = load_drive(short_drive())
    runtime = Runtime.from_bundle(runtime_bundle(), "x86-ap", threads=1)
    modalities = list(runtime.hub.modalities)
    overhead = []
    state = {"i": 0}

    def one_frame():
        i = state["i"]
        j = i % drive.num_frames
        t = float(drive.time_s[j]) + (i // drive.num_frames) * 100.0
        for m in modalities:
            if drive.available[m][j]:
                runtime.push(m, drive.frames[m][j], t)
        latency = runtime.predict(t).latency_ms
        overhead.append(latency["total"] - latency["invoke"])
        state["i"] += 1

    benchmark.pedantic(one_frame, rounds=1500, iterations=1, warmup_rounds=50)
    median = float(np.median(overhead[50:]))
    benchmark.extra_info["overhead_ms_p50"] = round(median, 4)
    benchmark.extra_info["overhead_ms_p99"] = round(float(np.percentile(overhead[50:], 99)), 4)
    if os.environ.get("EDGEKD_STRICT_TIMING") == "1":
        assert median <= OVERHEAD_BUDGET_MS
    assert median < 5 * OVERHEAD_BUDGET_MS  # an order-of-magnitude regression fails anywhere
