"""Timing: every live format interleaved in blocks of back-to-back calls, and the int8 phase split."""

from __future__ import annotations

import array
import gc
import logging
import time
from collections.abc import Callable, Sequence

import numpy as np

from edgekd.host.compare.formats import Candidate

log = logging.getLogger(__name__)

def rotation(i: int, n: int) -> list[int]:
    """Order of the ``n`` formats in round ``i``: a rotation, so each format takes each slot equally often."""
    return [(i + k) % n for k in range(n)]


def interleaved_loop(candidates: Sequence[Candidate], windows: Sequence[dict[str, np.ndarray]], *, runs: int,
                     warmup: int, block: int = 10, clock: Callable[[], int] = time.perf_counter_ns) -> int:
    """Warm up, then time every live candidate in short blocks of back-to-back calls, rotating the order per round.

    A round gives each format one block: first a *switch* call (the first one
    after another format ran: caches and branch predictors still hold that
    format's code and data; timed into ``switch_ns``, reported apart), then up to
    ``block`` steady-state calls timed into ``latencies_ns``: a deployment runs
    one model back to back, as TFLite's ``benchmark_model`` and MLPerf
    single-stream time it. Rounds are short (milliseconds), so drift still hits
    every format alike. Rounds go on until each format has ``runs`` steady
    timings and has seen every window once; each call takes the next window in
    order, and the outputs of the first pass over ``windows`` are kept for
    accuracy. A candidate that raises is marked ``error`` and leaves the loop;
    the others go on. Returns the rounds run. GC is paused during the loop
    (a collection pause belongs to no format).
    """
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    live = [c for c in candidates if c.ok]
    n = len(windows)
    for i in range(warmup):
        for k in rotation(i, len(live)):
            _call(live[k], windows[i % n], clock, timed=None)
    calls = timed = rounds = 0
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        while timed < runs or calls < n:
            steady = min(block, max(runs - timed, n - calls - 1, 1))
            for k in rotation(rounds, len(live)):
                for j in range(steady + 1):
                    index = calls + j
                    sink = live[k].switch_ns if j == 0 else live[k].latencies_ns
                    out = _call(live[k], windows[index % n], clock, timed=sink)
                    if out is not None and index < n:
                        live[k].outputs.append(np.array(out, copy=True))  # runners may reuse their buffer
            calls, timed, rounds = calls + steady + 1, timed + steady, rounds + 1
    finally:
        if was_enabled:
            gc.enable()
    return rounds


def _call(cand: Candidate, window: dict[str, np.ndarray], clock: Callable[[], int], *,
          timed: array.array | None) -> np.ndarray | None:
    if not cand.ok:
        return None
    run = cand.run
    assert run is not None  # cand.ok
    try:
        t0 = clock()
        out = run(window)
        t1 = clock()
    except Exception as exc:
        log.warning("%s/%s failed while running: %s", cand.student, cand.key, exc)
        cand.fail(exc)
        return None
    if timed is not None:
        timed.append(t1 - t0)
    return out


PHASE_RUNS = 500


def phase_split(candidates: Sequence[Candidate], windows: Sequence[dict[str, np.ndarray]], *, runs: int) -> None:
    """Where an artifact's call goes: p50 of input quantisation, interpreter invoke, output dequantisation.

    A separate back-to-back pass (firmware_bench's timed loop over the
    backend's phase methods) after the interleaved one, so its three extra
    clock reads never touch the headline figures. A failure loses the split,
    not the row.
    """
    from firmware_bench.latency import StopRule, timed_loop

    for cand in candidates:
        if not cand.ok or cand.backend is None:
            continue
        try:
            timings = timed_loop(cand.run, windows, StopRule(runs=runs))  # the backend's runner, as timed
        except Exception as exc:  # diagnostics must not sink the comparison
            log.warning("%s/%s phase split failed: %s", cand.student, cand.key, exc)
            continue
        summary = timings.summary()
        cand.phases = {"runs": timings.runs, **{f"{phase}_p50_ms": summary[phase]["p50_ms"]
                                                for phase in ("quantize", "invoke", "dequantize", "end_to_end")}}

