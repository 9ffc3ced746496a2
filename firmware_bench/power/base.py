"""The power-meter interface, the options every reader takes, and the shared integration code.

A reader measures the energy (joules) used between ``start()`` and ``stop()``.
Its ``method`` says where the number comes from: ``measured:<meter>`` or
``estimated``; reports carry that label next to every energy figure.

Readers take their sysfs root, commands and file-reading function as
parameters, so tests drive the real parsing and sampling code over fixture
trees and fake commands.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from edgekd.device.registry import Registry

log = logging.getLogger(__name__)

ESTIMATED = "estimated"

# Names that boards give their board-input rail (the whole board's power):
# Jetson Orin / Xavier (VDD_IN), Jetson Nano / TX1 / TX2 (POM_5V_IN), Xavier NX (VIN_SYS_5V0).
BOARD_INPUT_RAILS = ("VDD_IN", "POM_5V_IN", "VIN_SYS_5V0")


def read_text(path: Path) -> str:
    """The default file reader (tests inject one that raises PermissionError)."""
    with open(path) as handle:
        return handle.read()


@dataclasses.dataclass(frozen=True)
class PowerModel:
    """Board power with idle CPUs and with all CPUs busy (watts), and where it came from."""

    idle_w: float
    active_w: float
    source: str = "command line"

    def __post_init__(self) -> None:
        if not (0 <= self.idle_w <= self.active_w):
            raise ValueError(f"power model needs 0 <= idle_w <= active_w, got {self.idle_w}, {self.active_w}")

    def watts(self, utilisation: float) -> float:
        return self.idle_w + (self.active_w - self.idle_w) * min(max(utilisation, 0.0), 1.0)


@dataclasses.dataclass
class MeterOptions:
    """Everything a reader may need; defaults are the real board locations."""

    sysfs_root: Path = Path("/")
    interval_s: float = 0.05
    power_model: PowerModel | None = None
    csv_path: Path | None = None
    tegrastats_cmd: Sequence[str] = ("tegrastats",)
    vcgencmd_cmd: Sequence[str] = ("vcgencmd", "pmic_read_adc")
    read_text: Callable[[Path], str] = read_text
    cpu_count: int | None = None

    def sys_path(self, *parts: str) -> Path:
        return Path(self.sysfs_root, "sys", *parts)


class PowerReader:
    """One meter. Subclasses set ``meter`` and implement ``available``, ``start`` and ``stop``."""

    meter: str = "?"
    scope: str = "?"  # what the number covers: board input, CPU package, some rails...

    def __init__(self, options: MeterOptions):
        self.options = options
        self.notes: list[str] = []
        self.samples = 0
        self.window_s = 0.0  # seconds the last start()..stop() energy covers (set by stop())

    @property
    def method(self) -> str:
        return f"measured:{self.meter}"

    def available(self) -> tuple[bool, str]:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> float:
        """Joules used since ``start()``."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {"meter": self.meter, "method": self.method, "scope": self.scope,
                "notes": list(self.notes), "samples": self.samples}


METERS: Registry[type[PowerReader]] = Registry("power meter")


@dataclasses.dataclass(frozen=True)
class LoopEnergy:
    """Energy of a loop of ``runs`` calls from a meter's reading around it."""

    meter_window_s: float     # what the meter integrated over (it brackets the loop by a few reads)
    mean_power_w: float
    loop_joules: float        # mean power times the loop's own duration
    per_inference_mj: float


def loop_energy(joules: float, meter_window_s: float | None, loop_s: float, runs: int) -> LoopEnergy:
    """The meter's mean power over its window times the loop's own duration, per run (mJ).

    The one rule firmware_bench's timed runs and ``bench --compare``'s metered blocks both use.
    """
    window = meter_window_s or loop_s
    power = joules / window
    return LoopEnergy(window, power, power * loop_s, power * loop_s / runs * 1e3)


def integrate_power(times: Sequence[float] | np.ndarray, watts: Sequence[float] | np.ndarray, t0: float,
                    t1: float) -> float:
    """Energy (J) over [t0, t1] of a sampled power trace, by the trapezoid rule.

    The trace is linearly interpolated at the window's ends and held constant
    beyond its first and last samples (a meter that samples every 100 ms has
    no value exactly at the window's edges). Written out rather than
    ``np.trapz``/``np.trapezoid`` because numpy 1.x and 2.x name it differently.
    """
    t = np.asarray(times, dtype=np.float64)
    w = np.asarray(watts, dtype=np.float64)
    if t.size == 0:
        raise ValueError("no power samples")
    if t.size != w.size:
        raise ValueError("times and watts differ in length")
    if t1 < t0:
        raise ValueError("window ends before it starts")
    order = np.argsort(t, kind="stable")
    t, w = t[order], w[order]
    inside = (t > t0) & (t < t1)
    edge_w = np.interp([t0, t1], t, w)  # np.interp holds the end values outside the trace
    tt = np.concatenate(([t0], t[inside], [t1]))
    ww = np.concatenate(([edge_w[0]], w[inside], [edge_w[1]]))
    return float(np.sum(0.5 * (ww[1:] + ww[:-1]) * np.diff(tt)))


class Sampler:
    """Polls ``sample() -> watts`` every ``interval_s`` in a background thread.

    ``stop()`` takes a last sample and returns the energy over the window
    between the calls to ``start()`` and ``stop()`` (trapezoid over the samples).
    Sample errors after the first are logged and skipped, not fatal: one
    failed read of a sysfs file should not lose a ten-second measurement.
    """

    def __init__(self, sample: Callable[[], float], interval_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self._sample = sample
        self._interval = interval_s
        self._clock = clock
        self._times: list[float] = []
        self._watts: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0
        self.t0 = self.t1 = 0.0

    def _take(self, *, strict: bool = False) -> None:
        try:
            w = float(self._sample())
        except (OSError, ValueError) as exc:
            if strict:
                raise
            self.errors += 1
            log.debug("power sample failed: %s", exc)
            return
        self._times.append(self._clock())
        self._watts.append(w)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._take()

    def start(self) -> None:
        self._times.clear()
        self._watts.clear()
        self._stop.clear()
        self.t0 = self._clock()
        self._take(strict=True)  # the first read must work: available() said it would
        self._thread = threading.Thread(target=self._run, name="power-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.t1 = self._clock()
        self._take()
        return integrate_power(self._times, self._watts, self.t0, self.t1)

    @property
    def count(self) -> int:
        return len(self._watts)

    @property
    def trace(self) -> tuple[list[float], list[float]]:
        return list(self._times), list(self._watts)


def cpu_count(options: MeterOptions) -> int:
    """CPUs this process may run on (affinity), not the machine's total."""
    if options.cpu_count:
        return options.cpu_count
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return os.cpu_count() or 1
