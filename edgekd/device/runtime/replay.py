"""Replay a recorded drive (``edgekd data drive``) through the runtime and report what happened.

DEVICE SIDE (numpy only). The timeline plot is drawn by the host module
``edgekd.host.reports.replay_plots`` when it and matplotlib are installed; on a
device-only install the report holds everything but ``timeline.png`` and says why.
A frame whose ``available_<m>`` flag is False is not pushed (a sensor that
fails delivers nothing), so outages reach the runtime as staleness, as on a board.

Outputs of :func:`write_report`: ``frames.jsonl`` (one record per frame),
``segments.md`` / ``segments.csv`` (per segment and per true lighting: top-1/top-5
at t0, coverage, active students, latency p50/p99), ``switches.csv``,
``summary.json`` and (host side installed) ``timeline.png``.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib
import importlib.util
import io
import json
import logging
import os
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.device.contracts import LIGHTING, MODALITIES
from edgekd.device.errors import EdgekdError
from edgekd.device.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

DRIVE_FORMAT = "edgekd-drive/2"  # written by edgekd.host.data.drive; /2 added ``track``
DRIVE_FORMATS = ("edgekd-drive/1", DRIVE_FORMAT)  # /1 has no ``track``: replayed as one track
# The host module that draws timeline.png (found by name: the device side never imports the host statically).
PLOTS_MODULE = "edgekd.host.reports.replay_plots"
_REQUIRED = ("time_s", "beams", "lighting", "weather", "segment", "segment_names", "meta")


@dataclasses.dataclass
class Drive:
    """A recorded drive (see ``edgekd.host.data.drive`` for the arrays)."""

    path: Path
    frames: dict[str, np.ndarray]
    available: dict[str, np.ndarray]
    time_s: np.ndarray
    beams: np.ndarray
    lighting: np.ndarray
    weather: np.ndarray
    segment: np.ndarray
    segment_names: list[str]
    meta: dict
    track: np.ndarray            # int [F]: a new value starts a new track (a fresh window)

    @property
    def num_frames(self) -> int:
        return int(self.time_s.shape[0])


def load_drive(path: str | os.PathLike) -> Drive:
    path = Path(path)
    if not path.is_file():
        raise EdgekdError("drive file not found", file=path, fix="record one with `edgekd data drive --out PATH`")
    with open(path, "rb") as handle:
        if handle.read(4) != b"PK\x03\x04":
            raise EdgekdError("not an .npz drive (a drive is the zip archive `edgekd data drive` writes)", file=path,
                              field="--replay", fix="pass a drive recorded with `edgekd data drive --out PATH`")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise EdgekdError(f"not a readable .npz drive (truncated or another format): {exc}", file=path,
                          fix="record it again with `edgekd data drive`") from None
    missing = [k for k in _REQUIRED if k not in arrays]
    if missing:
        raise EdgekdError(f"drive file lacks {missing}", file=path, field=missing[0],
                          fix="record it again with `edgekd data drive`")
    try:
        meta = json.loads(str(arrays["meta"]))
    except json.JSONDecodeError as exc:
        raise EdgekdError(f"meta is not JSON ({exc})", file=path, field="meta",
                          fix="record it again with `edgekd data drive`") from None
    if not isinstance(meta, dict):
        meta = {}
    if meta.get("format") not in DRIVE_FORMATS:
        raise EdgekdError(f"unsupported drive format {meta.get('format')!r}", file=path, field="format",
                          fix=f"record it again with `edgekd data drive` ({DRIVE_FORMAT})")
    modalities = [m for m in MODALITIES if m in arrays]
    n = arrays["time_s"].shape[0]
    _check_frame_counts(path, arrays, n)
    available = {m: arrays.get(f"available_{m}", np.ones(n, dtype=bool)).astype(bool) for m in modalities}
    # float16 storage is for disk only: a radar pipeline hands the runtime float32 maps (converting
    # here keeps numpy's slow float16 cast out of the measured per-frame path)
    frames = {m: arrays[m].astype(np.float32) if arrays[m].dtype == np.float16 else arrays[m] for m in modalities}
    return Drive(path=path, frames=frames, available=available,
                 time_s=arrays["time_s"].astype(np.float64), beams=arrays["beams"].astype(np.int64),
                 lighting=arrays["lighting"], weather=arrays["weather"], segment=arrays["segment"],
                 segment_names=[str(s) for s in arrays["segment_names"]], meta=meta,
                 track=arrays.get("track", np.zeros(n, dtype=np.int32)))


def drive_problems(runtime: Any, drive: Drive) -> list[str]:
    """Warnings about a drive the runtime can replay but not as recorded (time running backwards).

    Raises :class:`EdgekdError` for a drive it cannot replay at all: frames of another shape than
    the bundle's students take (every frame would be rejected), or non-finite times.
    """
    for m in runtime.hub.modalities:
        if m not in drive.frames:
            continue
        expected = tuple(runtime.hub.buffers[m].frame_shape)
        got = tuple(drive.frames[m].shape[1:])
        if got != expected and tuple(s for s in got if s != 1) != tuple(s for s in expected if s != 1):
            raise EdgekdError(f"{m} frames are {got}, but the bundle's students take {expected}: every frame "
                              "would be rejected", file=drive.path, field=m,
                              fix="record the drive from the scene the bundle was trained on (edgekd data drive "
                                  "--scene ...), or export a bundle for this sensor")
    if not np.isfinite(drive.time_s).all():
        bad = np.flatnonzero(~np.isfinite(drive.time_s))
        raise EdgekdError(f"time_s holds {len(bad)} NaN/inf value(s) (first at frame {int(bad[0])})",
                          file=drive.path, field="time_s", fix="record the drive again with `edgekd data drive`")
    same_track = drive.track[1:] == drive.track[:-1]
    backwards = np.flatnonzero((np.diff(drive.time_s) < 0) & same_track) + 1
    if len(backwards):
        return [f"{drive.path}: time runs backwards at {len(backwards)} frame(s) (first at frame "
                f"{int(backwards[0])}: {drive.time_s[backwards[0] - 1]:.3f} s -> {drive.time_s[backwards[0]]:.3f} s); "
                "the runtime rejects frames older than the ones it holds"]
    return []


def rejected_summary(counters: dict[str, dict[str, int]]) -> str | None:
    """'image 120/500, ...' for every sensor that had frames rejected, or None."""
    parts = [f"{m} {c['rejected']}/{c['received']}" for m, c in counters.items() if c.get("rejected")]
    return ", ".join(parts) if parts else None


def _check_frame_counts(path: Path, arrays: dict[str, np.ndarray], n: int) -> None:
    """Every per-frame array holds one row per frame (a hand-made drive may not)."""
    per_frame = [k for k in arrays if k not in ("meta", "segment_names")]
    for key in per_frame:
        if arrays[key].ndim == 0 or arrays[key].shape[0] != n:
            rows = "a scalar" if arrays[key].ndim == 0 else f"{arrays[key].shape[0]} rows"
            raise EdgekdError(f"'{key}' has {rows}, but the drive has {n} frames (time_s)", file=path, field=key,
                              fix="give every per-frame array one row per frame, or record the drive again "
                                  "with `edgekd data drive`")


@dataclasses.dataclass
class ReplayResult:
    """Per-frame outcome arrays (``F`` frames) plus the JSON records."""

    student: list[str | None]
    top_beams: np.ndarray        # int64 [F, horizons, k], -1 where no prediction
    latency: dict[str, np.ndarray]  # key -> float64 [F] milliseconds
    switches: list[dict[str, Any]]
    records: list[dict[str, Any]]
    lighting_est: list[str]
    wall_s: float
    counters: dict[str, Any]


def replay(runtime, drive: Drive, *, realtime: bool = False, keep_records: bool = True,
           progress: bool = False, on_frame: Callable[[int, Any], None] | None = None) -> ReplayResult:
    """Push every delivered frame at its time and predict once per frame.

    Where the drive's ``track`` changes (the user enters the next base station's view), the runtime
    starts a new track: buffered frames are dropped, so no window mixes two passes.
    """
    n = drive.num_frames
    horizons, k = runtime.horizons, runtime.top_k
    top = np.full((n, horizons, k), -1, dtype=np.int64)
    latency = {key: np.zeros(n) for key in ("push", "policy", "preprocess", "invoke", "postprocess", "total")}
    students: list[str | None] = []
    lighting: list[str] = []
    switches = _SwitchLog()
    records: list[dict[str, Any]] = []
    modalities = [m for m in runtime.hub.modalities if m in drive.frames]
    absent = [m for m in runtime.hub.modalities if m not in drive.frames]
    if absent:
        log.warning("the drive has no %s frames; those students can never be fed", absent)
    frames = {m: drive.frames[m] for m in modalities}
    available = {m: drive.available[m] for m in modalities}
    line = _ProgressLine("replay", n) if progress else None
    t_wall = time.perf_counter()
    t_drive0 = float(drive.time_s[0]) if n else 0.0
    for i in range(n):
        if line is not None:
            line.update(i + 1)
        t = float(drive.time_s[i])
        if i and drive.track[i] != drive.track[i - 1]:
            runtime.new_track()
        if realtime:
            delay = (t - t_drive0) - (time.perf_counter() - t_wall)
            if delay > 0:
                time.sleep(delay)
        for m in modalities:
            if available[m][i]:
                runtime.push(m, frames[m][i], t)
        pred = runtime.predict(t)
        students.append(pred.student)
        lighting.append(pred.lighting)
        if pred.beams is not None:
            top[i, :, : pred.beams.shape[1]] = pred.beams
        for key in latency:
            latency[key][i] = pred.latency_ms[key]
        switches.observe(i, t, pred, drive.segment_names[int(drive.segment[i])])
        if keep_records:
            records.append(_frame_record(i, pred, drive, horizons))
        if on_frame is not None:
            on_frame(i, pred)
    wall = time.perf_counter() - t_wall
    if line is not None:
        line.close()
    return ReplayResult(students, top, latency, switches.switches, records, lighting, wall,
                        _counters(runtime, drive, students, len(switches.switches)))


class _SwitchLog:
    """The switches between students, each classified (see :func:`switch_kind`; plus 'recovery')."""

    def __init__(self) -> None:
        self.switches: list[dict[str, Any]] = []
        self.previous: str | None = None
        self.forced_off: set[str] = set()

    def observe(self, i: int, t: float, pred: Any, segment: str) -> None:
        if pred.student is None:
            return
        if self.previous is not None and pred.student != self.previous:
            kind = switch_kind(pred.reason)
            if kind == "preference" and pred.student in self.forced_off:
                kind = "recovery"  # back to a student a sensor outage or failure had forced off
            if kind in ("forced", "fallback"):
                self.forced_off.add(self.previous)
            else:
                self.forced_off.clear()
            self.switches.append({"frame": i, "t": round(t, 3), "from": self.previous, "to": pred.student,
                                  "kind": kind, "reason": pred.reason, "segment": segment})
        self.previous = pred.student


def _frame_record(i: int, pred: Any, drive: Drive, horizons: int) -> dict[str, Any]:
    """One line of frames.jsonl: the prediction, the truth and the hits."""
    record = {"frame": i, **pred.to_dict(), "segment": drive.segment_names[int(drive.segment[i])],
              "lighting_true": LIGHTING[int(drive.lighting[i])] if drive.lighting[i] >= 0 else None,
              "truth": drive.beams[i].tolist()}
    if pred.beams is not None:
        record["hit_top1"] = [bool(drive.beams[i, h] == pred.beams[h, 0]) for h in range(horizons)]
        record["hit_top5"] = [bool(drive.beams[i, h] in pred.beams[h, :5]) for h in range(horizons)]
    return record


def _counters(runtime: Any, drive: Drive, students: list[str | None], switches: int) -> dict[str, Any]:
    unpredicted = np.array([s is None for s in students], dtype=bool)
    warm_up = track_position(drive.track) < runtime.hub.window - 1
    return {"frames": drive.num_frames, "no_prediction": int(unpredicted.sum()),
            "tracks": int(len(np.unique(drive.track))), "warm_up_frames": int(warm_up.sum()),
            "no_prediction_after_warm_up": int((unpredicted & ~warm_up).sum()),
            "sensors": runtime.hub.counters(), "switches": switches,
            "inference_failures": {name: r.failures for name, r in runtime.students.items()}}


def switch_kind(reason: str) -> str:
    """'fallback' (an inference failed), 'forced' (the active student lost a sensor) or 'preference'.

    The replay also marks a preference switch back to a student that was forced off as 'recovery'.
    """
    if reason.startswith("fallback"):
        return "fallback"
    if "cannot be fed" in reason:
        return "forced"
    return "preference"


# ---------------------------------------------------------------------------- scoring


def hits(result: ReplayResult, drive: Drive, k: int, horizon: int = 0) -> np.ndarray:
    """Bool ``[F]``: the true beam at ``horizon`` is among the top ``k`` (False where nothing was predicted)."""
    truth = drive.beams[:, horizon]
    return (result.top_beams[:, horizon, :k] == truth[:, None]).any(axis=1) & (truth >= 0)


def scored_frames(runtime_window: int, drive: Drive) -> np.ndarray:
    """Frames that count: a full window inside their track (as every dataset window) and a beam at t0.

    The first ``window - 1`` frames of a track are its warm-up: no student can be fed yet, for any
    policy, so they are left out of the accuracy (and reported apart as warm-up frames).
    """
    return (track_position(drive.track) >= runtime_window - 1) & (drive.beams[:, 0] >= 0)


def track_position(track: np.ndarray) -> np.ndarray:
    """Index of each frame within its track (0 at every track start)."""
    n = len(track)
    starts = np.flatnonzero(np.concatenate([[True], track[1:] != track[:-1]])) if n else np.zeros(0, int)
    first = np.repeat(starts, np.diff(np.append(starts, n)))
    return np.arange(n) - first


def group_rows(result: ReplayResult, drive: Drive, window: int) -> list[dict[str, Any]]:
    """One row per segment run (in drive order) and per true lighting: accuracy, coverage, students, latency."""
    scored = scored_frames(window, drive)
    top1, top5 = hits(result, drive, 1), hits(result, drive, 5)
    predicted = result.top_beams[:, 0, 0] >= 0
    rows = []
    seg = drive.segment
    bounds = np.flatnonzero(np.diff(seg)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(seg)]])
    groups = [(f"{i}:{drive.segment_names[int(seg[a])]}", np.arange(a, b)) for i, (a, b) in
              enumerate(zip(starts, ends))]
    groups += [(f"all {name}", np.flatnonzero(drive.lighting == i)) for i, name in enumerate(LIGHTING)]
    groups.append(("all", np.arange(len(seg))))
    students = np.array([s or "-" for s in result.student])
    for name, idx in groups:
        idx = idx[scored[idx]]
        if len(idx) == 0:
            continue
        names, counts = np.unique(students[idx], return_counts=True)
        share = sorted(zip(names, counts), key=lambda x: -x[1])
        used = predicted[idx]
        total = result.latency["total"][idx][used] if used.any() else np.zeros(1)
        overhead = (result.latency["total"] - result.latency["invoke"])[idx]
        rows.append({
            "group": name, "frames": int(len(idx)),
            "top1_t0": round(float(top1[idx].mean()), 4), "top5_t0": round(float(top5[idx].mean()), 4),
            "top5_t3": round(float(hits(result, drive, 5, horizon=min(3, drive.beams.shape[1] - 1))[idx].mean()), 4),
            "coverage": round(float(used.mean()), 4),
            "students": " ".join(f"{s}:{c / len(idx):.2f}" for s, c in share),
            "latency_p50_ms": round(float(np.percentile(total, 50)), 3),
            "latency_p99_ms": round(float(np.percentile(total, 99)), 3),
            "overhead_p50_ms": round(float(np.percentile(overhead, 50)), 4),
        })
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()


def summarize(result: ReplayResult, drive: Drive, window: int, policy: str) -> dict[str, Any]:
    rows = group_rows(result, drive, window)
    by = {r["group"]: r for r in rows}
    overhead = result.latency["total"] - result.latency["invoke"]
    return {
        "drive": str(drive.path), "policy": policy, "frames": drive.num_frames, "window": window,
        "wall_s": round(result.wall_s, 3),
        "top5_t0": {name: by[f"all {name}"]["top5_t0"] for name in LIGHTING if f"all {name}" in by},
        "top1_t0": {name: by[f"all {name}"]["top1_t0"] for name in LIGHTING if f"all {name}" in by},
        "coverage": by["all"]["coverage"] if "all" in by else None,
        "switches": len(result.switches),
        "switches_by_kind": {kind: sum(sw["kind"] == kind for sw in result.switches)
                             for kind in ("preference", "forced", "recovery", "fallback")},
        "condition_changes": int(np.count_nonzero(np.diff(drive.lighting)) + np.count_nonzero(np.diff(drive.weather))),
        "overhead_ms": {"p50": round(float(np.median(overhead)), 4),
                        "p99": round(float(np.percentile(overhead, 99)), 4)},
        "invoke_ms": {"p50": round(float(np.median(result.latency["invoke"])), 4)},
        "counters": result.counters,
        "rows": rows,
    }


def write_report(out: str | os.PathLike, result: ReplayResult, drive: Drive, summary: dict[str, Any],
                 *, plot: bool = True) -> Path:
    """The report files in ``out``; ``timeline.png`` only where :func:`timeline_plotter` finds the host side
    (otherwise a warning says what is missing)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "frames.jsonl", "".join(json.dumps(r) + "\n" for r in result.records))
    atomic_write_text(out / "segments.md", f"# Replay of {drive.path.name} (policy {summary['policy']})\n\n"
                      + markdown_table(summary["rows"]) + "\n## Switches\n\n"
                      + (markdown_table(result.switches) or "none\n"))
    atomic_write_text(out / "segments.csv", csv_text(summary["rows"]))
    atomic_write_text(out / "switches.csv", csv_text(result.switches) or "frame,t,from,to,kind,reason,segment\n")
    atomic_write_json(out / "summary.json", summary)
    if plot:
        plot_timeline, missing = timeline_plotter()
        if plot_timeline is None:
            log.warning("timeline.png not written: %s", missing)
        else:
            plot_timeline(out / "timeline.png", result, drive, summary.get("window"))
    return out


def timeline_plotter() -> tuple[Callable[..., Path] | None, str | None]:
    """The host's ``plot_timeline`` when it can be imported, else (None, why not).

    Found by name so that a device-only install (no matplotlib) still writes the rest of a report.
    """
    for module in (PLOTS_MODULE, "matplotlib"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a parent package is absent
            found = False
        if not found:
            return None, (f"{module} is not installed (a device-only install); install the host extra "
                          "(pip install \"edgekd[host]\") to draw it, or pass --no-plot")
    return importlib.import_module(PLOTS_MODULE).plot_timeline, None


class _ProgressLine:
    """A one-line stderr progress counter (standard library only; redrawn at most twice a second)."""

    def __init__(self, label: str, total: int):
        self.label, self.total, self.t0, self.shown = label, total, time.perf_counter(), 0.0

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if now - self.shown >= 0.5 or done == self.total:
            self.shown = now
            rate = done / max(now - self.t0, 1e-9)
            sys.stderr.write(f"\r{self.label}: {done}/{self.total} frames ({rate:.0f} frames/s)")
            sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()


def rolling_hit_rate(hit: np.ndarray, scored: np.ndarray, time_s: np.ndarray, span_s: float) -> np.ndarray:
    """Share of scored frames that are hits within the ``span_s`` seconds ending at each frame (nan: none)."""
    counts = np.cumsum(np.concatenate([[0], scored.astype(np.int64)]))
    hits_ = np.cumsum(np.concatenate([[0], (hit & scored).astype(np.int64)]))
    first = np.searchsorted(time_s, time_s - span_s, side="right")
    end = np.arange(1, len(time_s) + 1)
    n = counts[end] - counts[first]
    return np.where(n > 0, (hits_[end] - hits_[first]) / np.maximum(n, 1), np.nan)
