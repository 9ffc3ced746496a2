"""Memory: resident set size (current and peak) of this process, and model file sizes.

psutil is optional on a board: without it the numbers come from
``/proc/self/status`` (VmRSS, VmHWM) and ``resource.getrusage`` (ru_maxrss).
On Linux the peak (VmHWM) can be reset by writing "5" to
``/proc/self/clear_refs``; the harness does that after loading the model so the
peak during the timed runs is the runs' own, not the import's or the loader's.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

try:  # optional: better numbers on macOS/Windows, same on Linux
    import psutil
except ImportError:  # pragma: no cover - depends on the board's install
    psutil = None


def parse_proc_status(text: str) -> dict[str, int]:
    """``/proc/<pid>/status`` memory lines (``VmRSS:  1234 kB``) as bytes, by key."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if not sep or not key.startswith("Vm"):
            continue
        parts = rest.split()
        if len(parts) == 2 and parts[1].lower() == "kb" and parts[0].isdigit():
            values[key] = int(parts[0]) * 1024
    return values


def ru_maxrss_bytes() -> int:
    """Peak RSS over the process lifetime from getrusage (KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def snapshot(proc_status: str | os.PathLike = "/proc/self/status") -> dict[str, Any]:
    """Current RSS and peak RSS in bytes, with where each number came from."""
    snap: dict[str, Any] = {"ru_maxrss_bytes": ru_maxrss_bytes()}
    try:
        status = parse_proc_status(Path(proc_status).read_text())
    except OSError:
        status = {}
    if "VmRSS" in status:
        snap["rss_bytes"], snap["rss_source"] = status["VmRSS"], "/proc/self/status VmRSS"
    elif psutil is not None:
        snap["rss_bytes"], snap["rss_source"] = int(psutil.Process().memory_info().rss), "psutil"
    else:
        snap["rss_bytes"], snap["rss_source"] = None, "unavailable"
    if "VmHWM" in status:
        snap["peak_rss_bytes"], snap["peak_source"] = status["VmHWM"], "/proc/self/status VmHWM"
    else:
        snap["peak_rss_bytes"], snap["peak_source"] = snap["ru_maxrss_bytes"], "getrusage ru_maxrss"
    return snap


def reset_peak(clear_refs: str | os.PathLike = "/proc/self/clear_refs") -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where the kernel does not allow it."""
    try:
        with open(clear_refs, "w") as handle:
            handle.write("5")
        return True
    except OSError as exc:
        log.debug("cannot reset peak RSS via %s: %s", clear_refs, exc)
        return False


def file_sizes(paths: dict[str, str | os.PathLike]) -> dict[str, int | None]:
    """Size in bytes of each named file (None when missing)."""
    sizes: dict[str, int | None] = {}
    for name, path in paths.items():
        try:
            sizes[name] = os.stat(path).st_size
        except OSError:
            sizes[name] = None
    return sizes


def mib(value: int | None) -> float | None:
    return None if value is None else value / (1024 * 1024)
