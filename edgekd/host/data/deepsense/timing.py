"""Time stamps and contiguity: seconds since each drive's start, and where a drive breaks into segments.

DeepSense writes two time-stamp formats (both parsed):

- scenarios 8/9, column ``time_stamp[UTC]``: a Python list as text, ``['16-45-05-799']``
  (HH-MM-SS-milliseconds; WillysMa/Sensing-Assisted-Beam-Tracking, scenario9.csv);
- scenarios 31-34, column ``time_stamp``: ``HH:MM:SS-microseconds``.

A segment ends wherever the CSV ``index`` jumps (DeepSense removed frames
there; so do the rows dropped for NaN power) or the time step is far longer
than usual, so no window spans missing frames.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

_TIME = re.compile(r"(\d{1,2})([-:])(\d{1,2})\2(\d{1,2})(?:([.-])(\d+))?\s*$")


def parse_time_of_day(text: str) -> float | None:
    """Seconds since midnight of a DeepSense time stamp, or None.

    ``['16-45-05-799']`` -> 16:45:05.799 (a dash fraction after dash separators
    is milliseconds); ``11:46:30-554123`` -> 11:46:30.554123 (after colons,
    microseconds); ``11-46-30.5`` and ``2021-08-25 11:46:30`` also work.
    """
    match = _TIME.search(text.strip().strip("[]").strip().strip("'\""))
    if not match:
        return None
    hours, sep, minutes, seconds, frac_sep, frac = match.groups()
    value = float(int(hours) * 3600 + int(minutes) * 60 + int(seconds))
    if frac:
        if frac_sep == ".":
            value += float(f"0.{frac}")
        else:
            value += int(frac) / (1e3 if sep == "-" else 1e6)
    return float(value)


@dataclass
class Timeline:
    """Per frame (in drive order): seconds since the drive's start, segment id; what was found on the way."""

    time_s: np.ndarray
    segment: np.ndarray
    index_gaps: int = 0
    time_gaps: int = 0
    warnings: list[str] = field(default_factory=list)


def timeline(drive: np.ndarray, index: np.ndarray, stamps: list[str] | None, column: str | None,
             frame_rate_hz: float, gap_factor: float) -> Timeline:
    """Times and segments of frames already grouped by drive; ``index`` is the CSV index (or row) per frame."""
    start = np.searchsorted(drive, drive, side="left")
    fallback = (np.arange(len(drive)) - start) / frame_rate_hz
    warnings: list[str] = []
    seconds = None
    if stamps is None:
        warnings.append(f"no time stamp column: times are frame counts / {frame_rate_hz:g} Hz, and only "
                        "index jumps break segments")
    else:
        parsed = [parse_time_of_day(s) for s in stamps]
        bad = [s for s, p in zip(stamps, parsed) if p is None]
        if bad:
            warnings.append(f"column {column}: {len(bad)} of {len(stamps)} time stamps unreadable (e.g. "
                            f"{bad[0]!r}; expected ['HH-MM-SS-mmm'] or HH:MM:SS-microseconds): times are "
                            f"frame counts / {frame_rate_hz:g} Hz, and only index jumps break segments")
        else:
            seconds = np.asarray(parsed, dtype=np.float64)
    for text in warnings:
        log.warning(text)
    same_drive = np.r_[False, drive[1:] == drive[:-1]]
    index_break = np.r_[True, np.diff(index) != 1] & same_drive
    time_break = np.zeros(len(drive), dtype=bool)
    if seconds is None:
        time_s = fallback
    else:
        step = np.r_[0.0, np.diff(seconds)]
        step[step < -43_200] += 86_400.0  # a drive across midnight
        usual = np.median(step[same_drive & (step > 0)]) if np.any(same_drive & (step > 0)) else 0.0
        time_break = same_drive & ((step <= 0) | (step > gap_factor * usual))
        since = seconds - seconds[start]
        since[since < 0] += 86_400.0
        time_s = since
    segment = np.cumsum(~same_drive | index_break | time_break) - 1
    return Timeline(time_s=time_s.astype(np.float32), segment=segment,
                    index_gaps=int(np.count_nonzero(index_break)),
                    time_gaps=int(np.count_nonzero(time_break & ~index_break)), warnings=warnings)
