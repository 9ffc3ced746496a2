"""Latency: statistics over nanosecond timings, the MLPerf single-stream rule, and the timing loop.

The statistics are pure functions over a list of ``time.perf_counter_ns``
deltas so that they can be checked on known arrays. Percentiles are
nearest-rank (:func:`nearest_rank`): every reported p50/p90/p99 is a latency
that one run really took, never an interpolation between two runs (numpy's
default), as TFLite's ``benchmark_model`` reports its percentiles.

The timing loop runs the backend's shared runner (``Backend.runner()``, the
path the multi-student runtime runs per frame) and times its three phases:
quantise the input into preallocated buffers, invoke (the interpreter alone),
dequantise the output; it cycles through real input windows (the bundle's
calibration set) rather than zeros, whose cache and branch behaviour differ
from real data.
"""

from __future__ import annotations

import array
import dataclasses
import gc
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgekd.device.runtime.runner import Runner

log = logging.getLogger(__name__)

# MLPerf Inference single-stream: the 90th-percentile latency is the headline
# metric and a valid run needs at least 1024 queries and 10 s (min_query_count,
# min_duration in the LoadGen settings for single stream).
MLPERF_MIN_RUNS = 1024
MLPERF_MIN_SECONDS = 10.0
MLPERF_FLAG = "below MLPerf minimum"

PERCENTILES = (50, 90, 99)


def nearest_rank(values: Sequence[float] | np.ndarray, percentiles: Sequence[float]) -> list[float]:
    """Nearest-rank percentiles: the smallest value with at least ``p`` % of ``values`` at or below it.

    The ``p``-th percentile of ``n`` sorted values is the one of rank ``ceil(p / 100 * n)`` (1-based;
    rank 1 for ``p`` = 0), so it is always one of the values (numpy's ``method="inverted_cdf"``).
    """
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    if ordered.size == 0:
        raise ValueError("no values")
    n = ordered.size
    ranks = [min(max(math.ceil(p / 100.0 * n - 1e-9), 1), n) for p in percentiles]
    return [float(ordered[r - 1]) for r in ranks]


def latency_stats(timings_ns: Sequence[int]) -> dict[str, float | int]:
    """min / p50 / p90 / p99 / max / mean / std (milliseconds) of ``timings_ns``.

    ``std`` is the population standard deviation (ddof=0), as
    ``benchmark_model`` reports it. Empty input is an error: a benchmark with
    no timed run has nothing to summarise.
    """
    if len(timings_ns) == 0:
        raise ValueError("no timings to summarise")
    ms = np.asarray(timings_ns, dtype=np.float64) / 1e6
    pcts = nearest_rank(ms, PERCENTILES)
    stats: dict[str, float | int] = {
        "n": int(ms.size),
        "min_ms": float(ms.min()),
    }
    for q, value in zip(PERCENTILES, pcts):
        stats[f"p{q}_ms"] = float(value)
    stats.update({
        "max_ms": float(ms.max()),
        "mean_ms": float(ms.mean()),
        "std_ms": float(ms.std()),
        "total_s": float(ms.sum() / 1e3),
    })
    return stats


def throughput(runs: int, seconds: float) -> float:
    """Inferences per second; 0 when no time elapsed (a degenerate, not infinite, rate)."""
    return float(runs / seconds) if seconds > 0 else 0.0


def mlperf_single_stream(runs: int, seconds: float, *, min_runs: int = MLPERF_MIN_RUNS,
                         min_seconds: float = MLPERF_MIN_SECONDS) -> dict[str, Any]:
    """Whether a run meets MLPerf's single-stream minimum; a ``flag`` string when it does not.

    Fewer runs are allowed (a quick look on a board), but every output must then
    carry the flag so that nobody quotes that p90 as an MLPerf-grade number.
    """
    missing = []
    if runs < min_runs:
        missing.append(f"{runs} runs < {min_runs}")
    if seconds < min_seconds:
        missing.append(f"{seconds:.2f} s < {min_seconds:g} s")
    compliant = not missing
    return {
        "compliant": compliant,
        "runs": int(runs),
        "seconds": float(seconds),
        "min_runs": int(min_runs),
        "min_seconds": float(min_seconds),
        "flag": None if compliant else f"{MLPERF_FLAG} ({'; '.join(missing)})",
    }


@dataclasses.dataclass
class StopRule:
    """When the timed loop stops.

    ``runs`` only: exactly that many runs. ``seconds`` only: until that much
    wall time has passed (at least one run). Both: until both are reached.
    Neither: the MLPerf minimum (1024 runs and 10 s). ``max_runs`` bounds a
    ``seconds`` loop on very fast models.
    """

    runs: int | None = None
    seconds: float | None = None
    max_runs: int = 10_000_000

    def __post_init__(self) -> None:
        if self.runs is not None and self.runs < 1:
            raise ValueError(f"runs must be >= 1, got {self.runs}")
        if self.seconds is not None and self.seconds <= 0:
            raise ValueError(f"seconds must be > 0, got {self.seconds}")
        if self.runs is None and self.seconds is None:
            self.runs, self.seconds = MLPERF_MIN_RUNS, MLPERF_MIN_SECONDS

    def done(self, runs: int, elapsed_s: float) -> bool:
        if runs >= self.max_runs:
            return True
        runs_ok = self.runs is None or runs >= self.runs
        time_ok = self.seconds is None or elapsed_s >= self.seconds
        if self.seconds is None:
            return runs_ok
        return runs_ok and time_ok and runs >= 1


@dataclasses.dataclass
class Timings:
    """Raw per-run timings (ns) of one timed loop, in compact int64 arrays.

    ``array('q')`` rather than lists of Python ints: 8 bytes per run instead of
    ~36, so a 10-second run of a fast model (10^5+ runs) does not inflate the
    peak-RSS figure measured over the same runs.
    """

    quantize_ns: Sequence[int]
    invoke_ns: Sequence[int]
    dequantize_ns: Sequence[int]
    end_to_end_ns: Sequence[int]
    wall_ns: int
    last_output: Any = None

    @property
    def runs(self) -> int:
        return len(self.invoke_ns)

    @property
    def buffer_bytes(self) -> int:
        return sum(len(a) * 8 for a in (self.quantize_ns, self.invoke_ns, self.dequantize_ns, self.end_to_end_ns))

    def summary(self) -> dict[str, Any]:
        wall_s = self.wall_ns / 1e9
        return {
            "runs": self.runs,
            "wall_s": wall_s,
            "invoke": latency_stats(self.invoke_ns),
            "quantize": latency_stats(self.quantize_ns),
            "dequantize": latency_stats(self.dequantize_ns),
            "end_to_end": latency_stats(self.end_to_end_ns),
            # Interpreter-only rate (what the model costs) and the loop's rate
            # including (de)quantisation and input cycling (what an app sees).
            "throughput_ips": throughput(self.runs, float(np.sum(np.asarray(self.invoke_ns))) / 1e9),
            "end_to_end_ips": throughput(self.runs, wall_s),
            "mlperf_single_stream": mlperf_single_stream(self.runs, wall_s),
            "timing_buffer_bytes": self.buffer_bytes,
        }


def runner_of(backend: Any) -> Any:
    """``backend`` itself if it is a runner, else its shared runner (``Backend.runner()``); a backend without one
    (a test double with the three phase methods) runs through the generic :class:`Runner`."""
    if isinstance(backend, Runner):
        return backend
    make = getattr(backend, "runner", None)
    return make() if callable(make) else Runner(backend)


def timed_loop(backend: Any, inputs: Sequence[dict[str, np.ndarray]], rule: StopRule, *,
               clock: Callable[[], int] = time.perf_counter_ns) -> Timings:
    """Run ``backend`` over ``inputs`` (cycled) until ``rule`` says stop, timing each phase.

    Each run goes through the backend's runner: ``prepare`` (quantise the float
    inputs into its buffers), ``invoke`` (the interpreter alone), ``finish``
    (dequantise the output); each phase is timed with ``clock`` (perf_counter_ns).
    Python's cyclic garbage collector is off during the loop (as ``timeit``
    does): a collection pause is the runtime's, not the model's latency.
    """
    if not inputs:
        raise ValueError("no input windows to run")
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _loop(runner_of(backend), inputs, rule, clock)
    finally:
        if was_enabled:
            gc.enable()


def _loop(runner: Any, inputs: Sequence[dict[str, np.ndarray]], rule: StopRule,
          clock: Callable[[], int]) -> Timings:
    quant, invoke, dequant, e2e = (array.array("q") for _ in range(4))
    prepare, run, finish = runner.prepare, runner.invoke, runner.finish
    output = None
    n_inputs = len(inputs)
    start = clock()
    i = 0
    while not rule.done(i, (clock() - start) / 1e9):
        window = inputs[i % n_inputs]
        t0 = clock()
        prepare(window)
        t1 = clock()
        run()
        t2 = clock()
        output = finish()
        t3 = clock()
        quant.append(t1 - t0)
        invoke.append(t2 - t1)
        dequant.append(t3 - t2)
        e2e.append(t3 - t0)
        i += 1
    wall = clock() - start
    # the runner reuses its output buffer: keep a copy of the last output
    return Timings(quant, invoke, dequant, e2e, wall, None if output is None else np.array(output, copy=True))


def time_once(backend: Any, window: dict[str, np.ndarray], *,
              clock: Callable[[], int] = time.perf_counter_ns) -> dict[str, float]:
    """One run, timed per phase (milliseconds): used for the first inference after loading."""
    runner = runner_of(backend)
    t0 = clock()
    runner.prepare(window)
    t1 = clock()
    runner.invoke()
    t2 = clock()
    runner.finish()
    t3 = clock()
    return {"quantize_ms": (t1 - t0) / 1e6, "invoke_ms": (t2 - t1) / 1e6,
            "dequantize_ms": (t3 - t2) / 1e6, "end_to_end_ms": (t3 - t0) / 1e6}


def warm_up(backend: Any, inputs: Sequence[dict[str, np.ndarray]], runs: int, *,
            clock: Callable[[], int] = time.perf_counter_ns) -> dict[str, Any]:
    """``runs`` untimed-for-statistics runs (caches, allocator, CPU governor ramp-up)."""
    if runs <= 0:
        return {"runs": 0, "total_ms": 0.0, "mean_ms": None}
    runner = runner_of(backend)
    start = clock()
    for i in range(runs):
        runner(inputs[i % len(inputs)])
    total_ms = (clock() - start) / 1e6
    return {"runs": runs, "total_ms": total_ms, "mean_ms": total_ms / runs}
