"""An external power meter's log (``--power-meter csv:FILE``): boards with no sensor, e.g. the Pi 4.

A USB power meter or a bench supply logs time and power; the harness records
the wall-clock window of its timed runs and integrates the log over it
(trapezoid). Accepted columns (header names are matched case-insensitively):

- time: ``time``, ``timestamp``, ``t``, ``time_s``, ``epoch``, ... as Unix
  seconds or ISO 8601 timestamps (naive ones are local time);
- power: ``watts``, ``power_w``, ``power``, ``w``, ... or milliwatts
  (``power_mw``, ``mw``), or voltage and current columns (V*A, mA allowed).

A file without a header is read as ``time,watts``. The log must cover the
benchmark window (give or take one sample period); relative times (seconds
since the meter started) cannot be aligned and are rejected.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import time
from pathlib import Path

import numpy as np

from edgekd.device.errors import EdgekdError
from firmware_bench.power.base import METERS, MeterOptions, PowerReader, integrate_power

TIME_NAMES = ("time", "timestamp", "t", "time_s", "timestamp_s", "seconds", "epoch", "epoch_s",
              "unix_time", "datetime", "date_time", "date")
WATT_NAMES = ("watts", "watt", "power_w", "power", "w", "power_watts", "p_w", "p")
MILLIWATT_NAMES = ("power_mw", "mw", "milliwatts")
VOLT_NAMES = ("volts", "voltage", "voltage_v", "v", "u", "bus_voltage")
AMP_NAMES = ("amps", "current", "current_a", "a", "i")
MILLIAMP_NAMES = ("current_ma", "ma", "milliamps")

# Unix seconds after 2001-09-09: smaller numbers are relative times, not a clock.
_MIN_EPOCH = 1e9


def _norm(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("(", "_").replace(")", "").strip("_")


def _find(header: list[str], names: tuple[str, ...]) -> int | None:
    for name in names:
        if name in header:
            return header.index(name)
    return None


def parse_time(value: str, *, file: Path, row: int) -> float:
    """Unix seconds from a number or an ISO 8601 timestamp."""
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise EdgekdError(f"row {row}: cannot read time {value!r}", file=file, field="time",
                              fix="log Unix seconds or ISO 8601 timestamps (2024-05-01T12:00:00.250)") from None
        return stamp.timestamp()
    if seconds < _MIN_EPOCH:
        raise EdgekdError(f"row {row}: time {seconds:g} is not a Unix timestamp (relative times "
                          "cannot be aligned with the benchmark)", file=file, field="time",
                          fix="set the meter to log wall-clock time (Unix seconds or ISO 8601)")
    return seconds


def parse_power_log(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(Unix seconds, watts) from an external meter's CSV log, sorted by time."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise EdgekdError(f"cannot read the power log: {exc}", file=path,
                          fix="pass --power-meter csv:FILE with the meter's log") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise EdgekdError("power log is empty", file=path, fix="start the meter's logging before the benchmark")
    try:
        dialect = csv.Sniffer().sniff(lines[0], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    rows = list(csv.reader(io.StringIO("\n".join(lines)), dialect))
    header = [_norm(c) for c in rows[0]]
    has_header = not _looks_numeric(rows[0][0])
    if has_header:
        body, first_row = rows[1:], 2
    else:
        header, body, first_row = ["time", "watts"], rows, 1
    t_col = _find(header, TIME_NAMES)
    if t_col is None:
        raise EdgekdError(f"no time column in header {rows[0]}", file=path, field="time",
                          fix=f"name the time column one of: {', '.join(TIME_NAMES)}")
    power = _power_reader(header, rows[0], path)
    times, watts = [], []
    for offset, row in enumerate(body):
        if not any(cell.strip() for cell in row):
            continue
        number = first_row + offset
        try:
            watts.append(power(row))
        except (ValueError, IndexError):
            raise EdgekdError(f"row {number}: cannot read power from {row}", file=path,
                              fix="every row needs a time and a number of watts") from None
        times.append(parse_time(row[t_col], file=path, row=number))
    t = np.asarray(times, dtype=np.float64)
    w = np.asarray(watts, dtype=np.float64)
    order = np.argsort(t, kind="stable")
    return t[order], w[order]


def _looks_numeric(cell: str) -> bool:
    text = cell.strip()
    try:
        float(text)
        return True
    except ValueError:
        pass
    try:
        dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        return True
    except ValueError:
        return False


def _power_reader(header: list[str], raw_header: list[str], path: Path):
    """A function row -> watts for whichever power columns the header has."""
    col = _find(header, WATT_NAMES)
    if col is not None:
        return lambda row: float(row[col])
    col = _find(header, MILLIWATT_NAMES)
    if col is not None:
        return lambda row: float(row[col]) / 1e3
    v_col = _find(header, VOLT_NAMES)
    a_col, a_scale = _find(header, AMP_NAMES), 1.0
    if a_col is None:
        a_col, a_scale = _find(header, MILLIAMP_NAMES), 1e-3
    if v_col is not None and a_col is not None:
        return lambda row: float(row[v_col]) * float(row[a_col]) * a_scale
    raise EdgekdError(f"no power column in header {raw_header}", file=path, field="watts",
                      fix=f"name the power column one of: {', '.join(WATT_NAMES + MILLIWATT_NAMES)} "
                          "(or give voltage and current columns)")


def check_coverage(times: np.ndarray, t0: float, t1: float, *, file: Path) -> None:
    """The log must span [t0, t1], allowing one sample period (at least 1 s) of slack at each end."""
    period = float(np.median(np.diff(times))) if times.size > 1 else 0.0
    slack = max(1.0, period)
    if times[0] > t0 + slack or times[-1] < t1 - slack:
        raise EdgekdError(f"the power log covers {times[0]:.3f}..{times[-1]:.3f} but the benchmark "
                          f"ran {t0:.3f}..{t1:.3f} (Unix seconds)", file=file,
                          fix="keep the meter logging for the whole run, with the board's and the "
                              "logger's clocks in sync (NTP)")


@METERS.register("csv")
class CsvLogReader(PowerReader):
    meter = "csv"
    scope = "what the external meter measures (usually the board's input supply)"

    def __init__(self, options: MeterOptions):
        super().__init__(options)
        self.t0 = self.t1 = 0.0

    @property
    def path(self) -> Path:
        if self.options.csv_path is None:
            raise EdgekdError("the csv meter needs a file", field="--power-meter",
                              fix="pass --power-meter csv:FILE")
        return Path(self.options.csv_path)

    @property
    def method(self) -> str:
        return f"measured:csv:{self.path.name}"

    def available(self) -> tuple[bool, str]:
        if self.options.csv_path is None:
            return False, "no log file given (use --power-meter csv:FILE)"
        if not self.path.is_file():
            return False, f"power log {self.path} not found"
        return True, f"external meter log {self.path}"

    def start(self) -> None:
        self.t0 = time.time()  # the log is in wall-clock time, not monotonic

    def stop(self) -> float:
        self.t1 = time.time()
        self.window_s = self.t1 - self.t0
        times, watts = parse_power_log(self.path)
        check_coverage(times, self.t0, self.t1, file=self.path)
        inside = (times >= self.t0) & (times <= self.t1)
        self.samples = int(inside.sum())
        self.notes = [f"external meter log {self.path}, {self.samples} samples in the window "
                      f"{self.t0:.3f}..{self.t1:.3f} (Unix s), trapezoid integration"]
        return integrate_power(times, watts, self.t0, self.t1)
