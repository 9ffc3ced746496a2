"""Energy ESTIMATED from a power model when no meter can be read.

P = idle_w + (active_w - idle_w) * u, where u is this process's CPU time over
the window divided by (wall time x CPUs it may use): ``active_w`` is the
board's power with every core busy. The result is a model, not a measurement,
and is labelled ``estimated`` wherever it appears.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from firmware_bench.power.base import ESTIMATED, METERS, MeterOptions, PowerReader, cpu_count


def cpu_utilisation(cpu_s: float, wall_s: float, cpus: int) -> float:
    """Share of the usable cores that the process kept busy, in [0, 1]."""
    if wall_s <= 0 or cpus <= 0:
        return 0.0
    return min(max(cpu_s / (wall_s * cpus), 0.0), 1.0)


@METERS.register("estimate", aliases=("estimated",))
class EstimateReader(PowerReader):
    meter = "estimate"
    scope = "whole board, modelled from CPU utilisation"

    def __init__(self, options: MeterOptions, *, cpu_clock: Callable[[], float] = time.process_time,
                 wall_clock: Callable[[], float] = time.perf_counter):
        super().__init__(options)
        self._cpu_clock = cpu_clock
        self._wall_clock = wall_clock
        self._cpu0 = self._wall0 = 0.0
        self.utilisation = 0.0
        self.power_w = 0.0

    @property
    def method(self) -> str:
        return ESTIMATED

    def available(self) -> tuple[bool, str]:
        model = self.options.power_model
        if model is None:
            return False, ("no power model: give --power-model idle_w,active_w or a target profile "
                           "with power_model {idle_w, active_w}")
        return True, f"power model idle {model.idle_w:g} W, active {model.active_w:g} W ({model.source})"

    def start(self) -> None:
        if self.options.power_model is None:
            raise RuntimeError(self.available()[1])
        self._cpu0 = self._cpu_clock()
        self._wall0 = self._wall_clock()

    def stop(self) -> float:
        model = self.options.power_model
        assert model is not None, "stop() before start()"
        wall = self._wall_clock() - self._wall0
        self.window_s = wall
        cpu = self._cpu_clock() - self._cpu0
        cpus = cpu_count(self.options)
        self.utilisation = cpu_utilisation(cpu, wall, cpus)
        self.power_w = model.watts(self.utilisation)
        self.samples = 1
        self.notes = [f"ESTIMATED, not measured: idle {model.idle_w:g} W + (active {model.active_w:g} W "
                      f"- idle) x CPU utilisation {self.utilisation:.3f} (process CPU {cpu:.3f} s over "
                      f"{wall:.3f} s x {cpus} CPUs); power model from {model.source}"]
        return self.power_w * wall
