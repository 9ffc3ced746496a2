"""Energy per inference: one metered block per format (a meter cannot split an interleaved loop)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgekd.host.compare.formats import Candidate
from firmware_bench.power import loop_energy

log = logging.getLogger(__name__)

def energy_blocks(candidates: Sequence[Candidate], windows: Sequence[dict[str, np.ndarray]], reader: Any,
                  seconds: float) -> None:
    """One metered block per format (round-robin order): per inference = block joules / block runs."""
    from firmware_bench.harness import UNAVAILABLE

    for cand in candidates:
        if not cand.ok:
            cand.energy = {"method": None, "per_inference_mj": None}
            continue
        if seconds <= 0:
            cand.energy = {"method": "not measured (--energy-seconds 0)", "per_inference_mj": None}
            continue
        if reader is None:
            cand.energy = {"method": UNAVAILABLE, "per_inference_mj": None,
                           "note": "no readable power meter and no power model"}
            continue
        run = cand.run
        assert run is not None  # cand.ok
        runs, t_start = 0, time.perf_counter()
        try:
            reader.start()
            while runs == 0 or time.perf_counter() - t_start < seconds:
                run(windows[runs % len(windows)])
                runs += 1
            wall = time.perf_counter() - t_start
            joules = reader.stop()
        except Exception as exc:
            cand.energy = {"method": UNAVAILABLE, "per_inference_mj": None, "error": f"{type(exc).__name__}: {exc}"}
            continue
        loop = loop_energy(joules, reader.window_s, wall, runs)  # firmware_bench's rule
        cand.energy = {"method": reader.method, "meter": reader.meter, "scope": reader.scope,
                       "per_inference_mj": loop.per_inference_mj, "mean_power_w": loop.mean_power_w,
                       "runs": runs, "seconds": wall, "notes": list(reader.notes)}


def energy_text(energy: dict[str, Any]) -> str:
    """``0.123 mJ (estimated)``: never a bare number."""
    if not energy or energy.get("method") is None:
        return "-"
    if energy.get("per_inference_mj") is None:
        return f"n/a ({energy['method']})"
    return f"{energy['per_inference_mj']:.3f} mJ ({energy['method']})"

