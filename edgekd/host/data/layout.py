"""The dataset format: constants, window/split rules and the meta.json pieces the writer and reader share.

Layout of a dataset directory (format ``edgekd-dataset/1``)::

    meta.json                 what, where from, shapes, preprocessing, splits, sha256 of every array
    frames/<modality>.npy     one array per modality, every frame of every drive concatenated in time order
    frames/power.npy          float32 [F, num_beams], each row normalised so its max is 1
    frames/beams.npy          int64 [F], best beam per frame (0-based)
    info/<name>.npy           per-frame info: drive, time_s, lighting, weather, los_blocked, available_<m>, ...
    splits/<split>.npy        int64 start frames of the windows of that split

Windows overlap (a window of T frames starts at every frame), so storing
windows would multiply the size by T; a window starting at frame ``s``
observes frames ``s .. s+T-1`` (t0 = ``s+T-1``) and is labelled at
``t0 .. t0+horizons-1``; every one of those frames lies in one drive (and one
contiguous segment of it, for imported data with dropped rows). Splits are by
drive, never by window, in order of drive id.

This module needs only numpy (and the standard library), so the loader works
wherever training or evaluation runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgekd.device.contracts import LIGHTING, WEATHER
from edgekd.device.errors import EdgekdError
from edgekd.device.io import sha256_bytes

DATASET_FORMAT = "edgekd-dataset/1"

SPLITS: tuple[str, ...] = ("train", "val", "test")
SOURCES: tuple[str, ...] = ("synthetic", "deepsense")
UNKNOWN = -1  # lighting/weather of real data whose conditions nobody recorded

# dtype each modality is stored with; the loader turns every one into float32.
STORED_DTYPES: dict[str, np.dtype] = {
    "image": np.dtype(np.uint8),
    "radar": np.dtype(np.float16),
    "lidar": np.dtype(np.float32),
    "gps": np.dtype(np.float32),
}

# Per-frame info arrays and their on-disk dtypes; available_<modality> are added per modality.
INFO_DTYPES: dict[str, np.dtype] = {
    "drive": np.dtype(np.int32),
    "time_s": np.dtype(np.float32),
    "lighting": np.dtype(np.int8),
    "weather": np.dtype(np.int8),
    "los_blocked": np.dtype(np.bool_),
    "segment": np.dtype(np.int32),
}

# How a stored frame becomes the float32 model input, when the writer does not say more.
DEFAULT_PREPROCESSING: dict[str, dict[str, Any]] = {
    "image": {"stored": "grayscale uint8", "load": "x / 255 -> [0, 1]"},
    "radar": {"stored": "float16 log2(1+|x|) range-angle (ch0) and Doppler-angle (ch1) maps, normalised",
              "load": "float32 as stored"},
    "lidar": {"stored": "range per azimuth bin in metres / 10, 0 = no return", "load": "float32 as stored"},
    "gps": {"stored": "user position relative to the base station in metres / 100", "load": "float32 as stored"},
}


@dataclasses.dataclass(frozen=True)
class WindowSpec:
    """How windows are cut from frames and how drives are split (``data`` section of a YAML config)."""

    window: int = 8
    horizons: int = 4
    split: tuple[float, ...] = (0.7, 0.15, 0.15)

    def __post_init__(self) -> None:
        if self.window <= 0:
            raise EdgekdError(f"must be positive, got {self.window}", field="window",
                              fix="use a window of at least 1 frame (the papers use 8)")
        if self.horizons <= 0:
            raise EdgekdError(f"must be positive, got {self.horizons}", field="horizons",
                              fix="use at least 1 horizon (t0 only); the papers use 4 (t0..t3)")
        object.__setattr__(self, "split", normalise_split(self.split))

    @property
    def span(self) -> int:
        """Frames a window touches: T observed plus horizons-1 future label frames."""
        return self.window + self.horizons - 1


def normalise_split(split: Sequence[float] | str) -> tuple[float, float, float]:
    """``(train, val, test)`` fractions from 3 numbers, 2 numbers (train, test), or ``"0.7,0.15,0.15"``."""
    if isinstance(split, str):
        try:
            split = [float(part) for part in split.split(",")]
        except ValueError:
            raise EdgekdError(f"not a list of numbers: {split!r}", field="split",
                              fix="write fractions separated by commas, e.g. 0.7,0.15,0.15 or 0.8,0.2") from None
    values = [float(v) for v in split]
    if len(values) == 2:
        values = [values[0], 0.0, values[1]]
    if len(values) != 3:
        raise EdgekdError(f"expected 2 (train,test) or 3 (train,val,test) fractions, got {len(values)}",
                          field="split", fix="e.g. 0.7,0.15,0.15 or 0.8,0.2")
    if any(not np.isfinite(v) or v < 0 for v in values) or values[0] <= 0:
        raise EdgekdError(f"fractions must be >= 0 with a positive train share, got {values}",
                          field="split", fix="e.g. 0.7,0.15,0.15")
    if abs(sum(values) - 1.0) > 1e-6:
        raise EdgekdError(f"fractions must sum to 1, got {sum(values):.6g}", field="split",
                          fix="e.g. 0.7,0.15,0.15 or 0.8,0.2")
    return tuple(values)  # type: ignore[return-value]



# --------------------------------------------------------------------------- windows and splits


def segment_runs(drive: np.ndarray, segment: np.ndarray | None = None) -> np.ndarray:
    """Run id per frame: a new run starts wherever the drive (or segment) changes."""
    change = np.zeros(len(drive), dtype=bool)
    if len(drive):
        change[0] = True
        change[1:] = drive[1:] != drive[:-1]
        if segment is not None:
            change[1:] |= segment[1:] != segment[:-1]
    return np.cumsum(change) - 1


def window_starts(drive: np.ndarray, span: int, segment: np.ndarray | None = None) -> np.ndarray:
    """Every start frame whose ``span`` frames all lie in one contiguous run of one drive."""
    runs = segment_runs(np.asarray(drive), None if segment is None else np.asarray(segment))
    if len(runs) < span:
        return np.zeros(0, dtype=np.int64)
    # runs are contiguous and increasing, so equal ids at both ends mean one run throughout
    starts = np.arange(len(runs) - span + 1)
    return starts[runs[starts] == runs[starts + span - 1]].astype(np.int64)


def split_drives(drive_ids: Sequence[int], windows_per_drive: Sequence[int],
                 fractions: Sequence[float]) -> dict[str, list[int]]:
    """Assign whole drives, in order of id, to train/val/test.

    The boundaries fall where the running share of windows is closest to the
    requested fractions (drives differ in length), and every split with a
    positive fraction gets at least one drive that has windows.
    """
    fractions = normalise_split(fractions)
    order = np.argsort(np.asarray(drive_ids), kind="stable")
    ids = [int(drive_ids[i]) for i in order]
    counts = np.asarray([windows_per_drive[i] for i in order], dtype=np.int64)
    wanted = [name for name, frac in zip(SPLITS, fractions) if frac > 0]
    useful = int(np.count_nonzero(counts))
    if useful < len(wanted):
        raise EdgekdError(
            f"{useful} drive(s) with complete windows cannot fill {len(wanted)} splits ({', '.join(wanted)})",
            field="split",
            fix="generate/import more drives (e.g. more --windows) or use fewer splits (--split 0.8,0.2)")
    cum = np.concatenate([[0], np.cumsum(counts)]) / max(int(counts.sum()), 1)
    # a boundary k means drives [.., k) go to the earlier splits; keep a drive with windows on each side
    has = np.concatenate([[0], np.cumsum(counts > 0)])
    bounds = [0]
    targets = np.cumsum([f for f in fractions if f > 0])[:-1]
    for i, target in enumerate(targets):
        need_after = len(wanted) - 1 - i
        ok = [k for k in range(bounds[-1] + 1, len(ids))
              if has[k] - has[bounds[-1]] >= 1 and has[-1] - has[k] >= need_after]
        bounds.append(min(ok, key=lambda k: (abs(cum[k] - target), k)))
    bounds.append(len(ids))
    out: dict[str, list[int]] = {name: [] for name in SPLITS}
    for name, lo, hi in zip(wanted, bounds[:-1], bounds[1:]):
        out[name] = ids[lo:hi]
    return {name: drives for name, drives in out.items() if name in wanted}


def condition_mix(info: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Counts of lighting/weather classes and shares of blocked LoS and sensor availability."""
    def counts(values: np.ndarray, names: tuple[str, ...]) -> dict[str, int]:
        out = {label: int(np.count_nonzero(values == i)) for i, label in enumerate(names)}
        unknown = int(np.count_nonzero(values == UNKNOWN))
        if unknown:
            out["unknown"] = unknown
        return out

    def share(values: np.ndarray) -> float:
        return round(float(np.mean(values)) if len(values) else 0.0, 4)

    mix: dict[str, Any] = {"lighting": counts(info["lighting"], LIGHTING),
                           "weather": counts(info["weather"], WEATHER),
                           "los_blocked": share(info["los_blocked"])}
    for key in sorted(info):
        if key.startswith("available_"):
            mix[key] = share(info[key])
    return mix


def fingerprint_of(hashes: Mapping[str, Mapping[str, Any]]) -> str:
    """sha256 over the sorted ``name sha256`` lines of every array: equal data, equal fingerprint."""
    lines = "\n".join(f"{name} {hashes[name]['sha256']}" for name in sorted(hashes))
    return sha256_bytes(lines.encode())

