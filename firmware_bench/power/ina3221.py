"""Jetson power through the INA3221 monitors' hwmon interface.

Each INA3221 has three channels; hwmon exposes ``in<k>_label`` (the rail
name), ``in<k>_input`` (bus voltage, mV) and ``curr<k>_input`` (current, mA).
On Jetson Orin the board input rail is ``VDD_IN``; the others
(``VDD_CPU_GPU_CV``, ``VDD_SOC``) are parts of it, so they are never added to
it. The devices are found under ``/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*/``
or as ``/sys/class/hwmon/hwmon*/`` whose ``name`` is ``ina3221``. Power is
sampled in a background thread and integrated with the trapezoid rule.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from firmware_bench.power.base import BOARD_INPUT_RAILS, METERS, MeterOptions, PowerReader, Sampler

_LABEL = re.compile(r"^in(\d+)_label$")


@dataclasses.dataclass(frozen=True)
class Channel:
    rail: str
    volts_file: Path
    amps_file: Path


def find_hwmon_dirs(options: MeterOptions) -> list[Path]:
    """INA3221 hwmon directories, each once, in a stable order."""
    found: dict[Path, Path] = {}
    driver = options.sys_path("bus", "i2c", "drivers", "ina3221")
    for hwmon in sorted(driver.glob("*/hwmon/hwmon*")):
        found.setdefault(hwmon.resolve(), hwmon)
    for hwmon in sorted(options.sys_path("class", "hwmon").glob("hwmon*")):
        try:
            name = options.read_text(hwmon / "name").strip()
        except OSError:
            continue
        if name == "ina3221":
            found.setdefault(hwmon.resolve(), hwmon)
    return list(found.values())


def find_channels(options: MeterOptions, hwmon: Path) -> list[Channel]:
    """Labelled channels that have both a voltage and a current file."""
    channels = []
    for label_file in sorted(hwmon.glob("in*_label")):
        match = _LABEL.match(label_file.name)
        if not match:
            continue
        k = match.group(1)
        volts, amps = hwmon / f"in{k}_input", hwmon / f"curr{k}_input"
        if not (volts.exists() and amps.exists()):
            continue
        rail = options.read_text(label_file).strip()
        if rail and rail.upper() != "NC":  # "NC": channel not connected on this board
            channels.append(Channel(rail, volts, amps))
    return channels


def select_channels(channels: list[Channel]) -> tuple[list[Channel], str]:
    """The board input rail alone when there is one; otherwise every rail, said so."""
    for name in BOARD_INPUT_RAILS:
        board = [c for c in channels if c.rail == name]
        if board:
            return board[:1], f"board input rail {name}"
    return channels, ("sum of rails " + ", ".join(c.rail for c in channels)
                      + " (no board input rail found: misses what is not on these rails)")


@METERS.register("ina3221")
class Ina3221Reader(PowerReader):
    meter = "ina3221"
    scope = "board input (VDD_IN)"

    def __init__(self, options: MeterOptions):
        super().__init__(options)
        self.channels: list[Channel] = []
        self._sampler: Sampler | None = None

    def watts(self) -> float:
        read = self.options.read_text
        return sum(float(read(c.volts_file)) * float(read(c.amps_file)) / 1e6 for c in self.channels)

    def available(self) -> tuple[bool, str]:
        dirs = find_hwmon_dirs(self.options)
        if not dirs:
            return False, ("no INA3221 hwmon device (looked in "
                           f"{self.options.sys_path('bus', 'i2c', 'drivers', 'ina3221')}/*/hwmon/ and "
                           f"{self.options.sys_path('class', 'hwmon')}/hwmon*/name): not a Jetson")
        channels = [c for d in dirs for c in find_channels(self.options, d)]
        if not channels:
            return False, f"INA3221 devices {', '.join(map(str, dirs))} have no labelled channels"
        self.channels, how = select_channels(channels)
        try:
            self.watts()
        except PermissionError:
            return False, f"INA3221 readings under {dirs[0]} are not readable: permission denied (run as root)"
        except (OSError, ValueError) as exc:
            return False, f"cannot read INA3221 rails: {exc}"
        self.scope = how
        return True, f"{how} in {', '.join(map(str, dirs))}"

    def start(self) -> None:
        if not self.channels:
            ok, reason = self.available()
            if not ok:
                raise RuntimeError(reason)
        self.notes = [f"{self.scope}; sampled every {self.options.interval_s:g} s, trapezoid integration"]
        self._sampler = Sampler(self.watts, self.options.interval_s)
        self._sampler.start()

    def stop(self) -> float:
        assert self._sampler is not None, "stop() before start()"
        joules = self._sampler.stop()
        self.samples = self._sampler.count
        self.window_s = self._sampler.t1 - self._sampler.t0
        if self._sampler.errors:
            self.notes.append(f"{self._sampler.errors} failed reads skipped")
        return joules
