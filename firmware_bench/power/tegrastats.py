"""Jetson power from a running ``tegrastats --interval N`` subprocess.

tegrastats prints one line per interval; the power rails appear as
``NAME <now>mW/<average>mW`` (JetPack 5/6, e.g. ``VDD_IN 2957mW/2957mW``) or
without the unit on JetPack 4 (``POM_5V_IN 2198/2198``). The instantaneous
value of the board input rail is taken, stamped with the time its line
arrived, and integrated with the trapezoid rule.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable

from firmware_bench.power.base import BOARD_INPUT_RAILS, METERS, MeterOptions, PowerReader, integrate_power

log = logging.getLogger(__name__)

# A rail: a name, then "<now>/<avg>" with an optional mW unit, ending the token.
# "RAM 2133/7620MB" and "SWAP 0/3810MB" do not match (MB is not mW).
_RAIL = re.compile(r"(?<!\S)([A-Za-z][A-Za-z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")

# tegrastats is a sysfs poller itself; asking for lines faster than this only adds load.
MIN_INTERVAL_MS = 100


def parse_tegrastats_line(line: str) -> dict[str, tuple[int, int]]:
    """Rails in one tegrastats line: name -> (instantaneous mW, running average mW)."""
    return {m.group(1): (int(m.group(2)), int(m.group(3))) for m in _RAIL.finditer(line)}


def board_power_w(rails: dict[str, tuple[int, int]]) -> tuple[float, str]:
    """Watts of the board input rail, or the sum of all rails when there is none (said so)."""
    for name in BOARD_INPUT_RAILS:
        if name in rails:
            return rails[name][0] / 1e3, f"board input rail {name}"
    total = sum(now for now, _ in rails.values()) / 1e3
    return total, "sum of rails " + ", ".join(rails) + " (no board input rail in the output)"


class LineStream:
    """A subprocess whose stdout lines are parsed, timestamped and kept, by a reader thread."""

    def __init__(self, argv: list[str], parse: Callable[[str], float | None],
                 clock: Callable[[], float] = time.monotonic):
        self.argv = argv
        self._parse = parse
        self._clock = clock
        self.times: list[float] = []
        self.watts: list[float] = []
        self.first = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      text=True, bufsize=1)
        self._thread = threading.Thread(target=self._read, name="power-lines", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            stamp = self._clock()
            watts = self._parse(line)
            if watts is None:
                continue
            self.times.append(stamp)
            self.watts.append(watts)
            self.first.set()

    def stop(self) -> int | None:
        """End the subprocess (the one this object started) and the reader; its exit code."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=3)
        return self._proc.returncode


@METERS.register("tegrastats")
class TegrastatsReader(PowerReader):
    meter = "tegrastats"
    scope = "board input (VDD_IN)"

    def __init__(self, options: MeterOptions):
        super().__init__(options)
        self._stream: LineStream | None = None
        self._how = ""
        self.t0 = self.t1 = 0.0

    @property
    def interval_ms(self) -> int:
        return max(MIN_INTERVAL_MS, int(round(self.options.interval_s * 1000)))

    def _parse(self, line: str) -> float | None:
        rails = parse_tegrastats_line(line)
        if not rails:
            return None
        watts, self._how = board_power_w(rails)
        return watts

    def _open(self) -> LineStream:
        argv = [*self.options.tegrastats_cmd, "--interval", str(self.interval_ms)]
        stream = LineStream(argv, self._parse)
        stream.start()
        return stream

    def _first_wait_s(self) -> float:
        return 3 * self.interval_ms / 1e3 + 2.0

    def available(self) -> tuple[bool, str]:
        exe = self.options.tegrastats_cmd[0]
        if shutil.which(exe) is None:
            return False, f"'{exe}' not found on PATH: not a Jetson, or the JetPack tools are not installed"
        stream = self._open()
        try:
            got = stream.first.wait(self._first_wait_s())
        finally:
            code = stream.stop()
        if not got:
            return False, f"'{' '.join(stream.argv)}' printed no power rails (exit code {code})"
        self.scope = self._how
        return True, f"{self._how} from '{' '.join(stream.argv)}'"

    def start(self) -> None:
        self._stream = self._open()
        if not self._stream.first.wait(self._first_wait_s()):
            self._stream.stop()
            raise RuntimeError(f"'{' '.join(self._stream.argv)}' printed no power rails")
        self.t0 = time.monotonic()
        self.scope = self._how
        self.notes = [f"{self._how}; tegrastats every {self.interval_ms} ms, trapezoid integration"]

    def stop(self) -> float:
        assert self._stream is not None, "stop() before start()"
        self.t1 = time.monotonic()
        self._stream.stop()
        self.window_s = self.t1 - self.t0
        self.samples = sum(1 for t in self._stream.times if self.t0 <= t <= self.t1)
        return integrate_power(self._stream.times, self._stream.watts, self.t0, self.t1)
