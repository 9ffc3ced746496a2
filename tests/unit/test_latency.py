"""Latency statistics on known arrays, the MLPerf single-stream flag, and the timing loop's rules."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_bench import latency
from firmware_bench.latency import (
    StopRule,
    latency_stats,
    mlperf_single_stream,
    nearest_rank,
    timed_loop,
)


def test_stats_on_1_to_100_ms():
    ns = [i * 1_000_000 for i in range(1, 101)]
    stats = latency_stats(ns)
    assert stats["n"] == 100
    assert stats["min_ms"] == 1.0 and stats["max_ms"] == 100.0
    # nearest rank: rank ceil(q * n), always a measured value (numpy's linear method would give 50.5, 90.1, 99.01)
    assert (stats["p50_ms"], stats["p90_ms"], stats["p99_ms"]) == (50.0, 90.0, 99.0)
    assert stats["mean_ms"] == pytest.approx(50.5)
    assert stats["std_ms"] == pytest.approx(np.sqrt((100 ** 2 - 1) / 12))  # population std of 1..100
    assert stats["total_s"] == pytest.approx(5.05)


def test_stats_are_nearest_rank_on_random_timings():
    rng = np.random.default_rng(7)
    ns = rng.integers(200_000, 5_000_000, size=1537)
    stats = latency_stats(ns.tolist())
    ms = ns / 1e6
    for q in (50, 90, 99):
        assert stats[f"p{q}_ms"] == float(np.percentile(ms, q, method="inverted_cdf"))  # numpy's nearest rank
        assert stats[f"p{q}_ms"] in set(ms.tolist())  # a latency that one run really took
    assert stats["std_ms"] == pytest.approx(float(ms.std()))


def test_nearest_rank_small_cases():
    # the textbook example: 15, 20, 35, 40, 50 -> p30 = 20, p40 = 20, p50 = 35, p100 = 50
    assert nearest_rank([50, 15, 40, 20, 35], [0, 30, 40, 50, 100]) == [15.0, 20.0, 20.0, 35.0, 50.0]
    assert nearest_rank([1, 2], [50, 51]) == [1.0, 2.0]  # 50 % of 2 values is rank 1, not the mean 1.5
    assert nearest_rank([7], [50, 99]) == [7.0, 7.0]
    with pytest.raises(ValueError):
        nearest_rank([], [50])


def test_stats_single_value_and_empty():
    stats = latency_stats([3_000_000])
    assert stats["p50_ms"] == stats["p99_ms"] == stats["min_ms"] == 3.0 and stats["std_ms"] == 0.0
    with pytest.raises(ValueError):
        latency_stats([])


def test_mlperf_minimum_flags():
    ok = mlperf_single_stream(1024, 10.0)
    assert ok["compliant"] and ok["flag"] is None
    few = mlperf_single_stream(200, 12.0)
    assert not few["compliant"] and few["flag"].startswith("below MLPerf minimum") and "200 runs" in few["flag"]
    short = mlperf_single_stream(5000, 3.2)
    assert not short["compliant"] and "3.20 s < 10 s" in short["flag"]


def test_stop_rules():
    assert (StopRule().runs, StopRule().seconds) == (1024, 10.0)  # MLPerf by default
    runs_only = StopRule(runs=5)
    assert not runs_only.done(4, 100.0) and runs_only.done(5, 0.0)
    secs_only = StopRule(seconds=1.0)
    assert not secs_only.done(0, 2.0) and not secs_only.done(10, 0.5) and secs_only.done(1, 1.0)
    both = StopRule(runs=10, seconds=1.0)
    assert not both.done(10, 0.5) and not both.done(5, 2.0) and both.done(10, 1.0)
    assert StopRule(seconds=1.0, max_runs=3).done(3, 0.0)
    with pytest.raises(ValueError):
        StopRule(runs=0)


class CountingBackend:
    """Records which input window each run received (the loop must cycle through all of them)."""

    def __init__(self):
        self.seen = []

    def quantize_inputs(self, inputs):
        return [inputs["x"]]

    def invoke_raw(self, raw):
        self.seen.append(int(raw[0][0, 0]))
        return [raw[0] * 2]

    def dequantize_outputs(self, raw_out):
        return raw_out[0].astype(np.float32)


def test_timed_loop_cycles_inputs_and_times_each_phase():
    windows = [{"x": np.full((1, 3), i, dtype=np.float32)} for i in range(4)]
    backend = CountingBackend()
    ticks = iter(range(0, 10**9, 1000))  # a fake clock: +1 us per reading
    timings = timed_loop(backend, windows, StopRule(runs=10), clock=lambda: next(ticks))
    assert backend.seen == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert timings.runs == 10
    assert list(timings.invoke_ns) == [1000] * 10 and list(timings.quantize_ns) == [1000] * 10
    assert list(timings.end_to_end_ns) == [3000] * 10 and timings.buffer_bytes == 4 * 10 * 8
    summary = timings.summary()
    assert summary["invoke"]["p50_ms"] == pytest.approx(0.001)
    assert summary["mlperf_single_stream"]["flag"].startswith(latency.MLPERF_FLAG)
    np.testing.assert_array_equal(timings.last_output, np.full((1, 3), 2.0))


def test_timed_loop_for_a_duration_uses_the_real_clock():
    windows = [{"x": np.zeros((1, 3), dtype=np.float32)}]
    timings = timed_loop(CountingBackend(), windows, StopRule(seconds=0.05))
    assert timings.runs >= 1 and timings.wall_ns >= 50_000_000


def test_timed_loop_pauses_the_garbage_collector_and_restores_it():
    import gc

    class GcProbe(CountingBackend):
        def invoke_raw(self, raw):
            self.seen.append(gc.isenabled())
            return [raw[0]]

    probe = GcProbe()
    assert gc.isenabled()
    timed_loop(probe, [{"x": np.zeros((1, 1), np.float32)}], StopRule(runs=3))
    assert probe.seen == [False, False, False] and gc.isenabled()
