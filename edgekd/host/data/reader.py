"""Reading a dataset: meta.json, array checks (size, sha256), the memory-mapped ``WindowDataset``, summaries.

This module needs only numpy (and the standard library), so the loader works
wherever training or evaluation runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.device.contracts import MODALITIES
from edgekd.device.errors import EdgekdError
from edgekd.device.io import sha256_file
from edgekd.host.data.layout import DATASET_FORMAT, condition_mix, fingerprint_of


def read_meta(path: str | os.PathLike) -> dict:
    """meta.json of a dataset directory, or an EdgekdError that says what is wrong."""
    path = Path(path)
    if not path.exists():
        raise EdgekdError("dataset not found", file=path,
                          fix="check the path, or create one with `edgekd data synth --out PATH`")
    meta_path = path / "meta.json"
    if not path.is_dir() or not meta_path.is_file():
        raise EdgekdError("not an edgekd dataset (no meta.json)", file=path,
                          fix="point at a directory written by `edgekd data synth` or `edgekd data import-deepsense`")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise EdgekdError(f"meta.json is unreadable: {exc}", file=meta_path,
                          fix=_regenerate_fix({})) from None
    if not isinstance(meta, dict) or meta.get("format") != DATASET_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise EdgekdError(f"unsupported dataset format {found!r} (this edgekd reads {DATASET_FORMAT})",
                          file=meta_path, field="format", fix=_regenerate_fix(meta if isinstance(meta, dict) else {}))
    check_meta(path, meta)
    return meta


def _regenerate_fix(meta: Mapping[str, Any]) -> str:
    if meta.get("source") == "deepsense":
        return "re-import it with `edgekd data import-deepsense SCENARIO_DIR --out PATH --overwrite`"
    return "re-generate it with `edgekd data synth --out PATH --overwrite`"


def check_arrays(path: str | os.PathLike, meta: Mapping[str, Any] | None = None, *,
                 rehash: bool = False) -> None:
    """Check every array file against meta.json: presence and size (cheap), sha256 when ``rehash``."""
    path = Path(path)
    meta = read_meta(path) if meta is None else meta
    arrays = meta.get("arrays")
    if not isinstance(arrays, dict) or not arrays:
        raise EdgekdError("meta.json lists no arrays", file=path / "meta.json", field="arrays",
                          fix=_regenerate_fix(meta))
    for rel, entry in sorted(arrays.items()):
        file = path / rel
        if not file.is_file():
            raise EdgekdError("array file is missing", file=file, fix=_regenerate_fix(meta))
        if file.stat().st_size != entry["bytes"]:
            raise EdgekdError(f"size {file.stat().st_size} bytes differs from meta.json ({entry['bytes']})",
                              file=file, field=f"arrays.{rel}.bytes", fix=_regenerate_fix(meta))
        if rehash and sha256_file(file) != entry["sha256"]:
            raise EdgekdError("sha256 does not match meta.json (the file was changed or corrupted)",
                              file=file, field=f"arrays.{rel}.sha256", fix=_regenerate_fix(meta))
    if meta.get("fingerprint") != fingerprint_of(arrays):
        raise EdgekdError("fingerprint does not match the array hashes", file=path / "meta.json",
                          field="fingerprint", fix=_regenerate_fix(meta))


def verify_dataset(path: str | os.PathLike) -> dict:
    """Re-hash every array and check every value against meta.json; return meta or raise naming the data.

    Beyond the hashes: frames finite, beam labels in ``0..num_beams-1``, split windows inside the frames.
    """
    meta = read_meta(path)
    check_arrays(path, meta, rehash=True)
    check_values(path, meta)
    return meta


_REQUIRED_META: dict[str, type | tuple[type, ...]] = {
    "window": int, "horizons": int, "num_beams": int, "num_frames": int, "modalities": dict, "splits": dict,
    "arrays": dict, "fingerprint": str}


def check_meta(path: str | os.PathLike, meta: Mapping[str, Any]) -> None:
    """The fields the loader reads are present, typed and consistent with the array shapes in meta.json."""
    meta_path = Path(path) / "meta.json"
    fix = _regenerate_fix(meta)
    for key, kind in _REQUIRED_META.items():
        value = meta.get(key)
        if value is None:
            raise EdgekdError(f"meta.json lacks '{key}'", file=meta_path, field=key, fix=fix)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise EdgekdError(f"'{key}' must be {getattr(kind, '__name__', kind)}, got {value!r}", file=meta_path,
                              field=key, fix=fix)
        if isinstance(value, int) and value <= 0:
            raise EdgekdError(f"'{key}' must be positive, got {value}", file=meta_path, field=key, fix=fix)
    arrays = meta["arrays"]
    for rel, entry in arrays.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("bytes"), int) \
                or not isinstance(entry.get("sha256"), str) or not isinstance(entry.get("shape"), list):
            raise EdgekdError("array entry needs bytes, sha256 and shape", file=meta_path, field=f"arrays.{rel}",
                              fix=fix)
        if Path(rel).is_absolute() or ".." in Path(rel).parts or not rel.endswith(".npy"):
            raise EdgekdError(f"array path {rel!r} is not a .npy file inside the dataset", file=meta_path,
                              field=f"arrays.{rel}", fix=fix)
    power = arrays.get("frames/power.npy", {}).get("shape")
    if not isinstance(power, list) or len(power) != 2 or power[1] != meta["num_beams"]:
        raise EdgekdError(f"num_beams {meta['num_beams']} does not match frames/power.npy (shape {power})",
                          file=meta_path, field="num_beams", fix=fix)
    for name, entry in meta["modalities"].items():
        shape = entry.get("window_shape") if isinstance(entry, dict) else None
        stored = arrays.get(f"frames/{name}.npy", {}).get("shape")
        if name not in MODALITIES or not isinstance(shape, list) or not isinstance(stored, list) \
                or shape != [meta["window"], *stored[1:]]:
            raise EdgekdError(f"modalities.{name} does not match the stored frames (window_shape {shape}, "
                              f"frames/{name}.npy shape {stored}, window {meta['window']})", file=meta_path,
                              field=f"modalities.{name}", fix=fix)
    for name, entry in meta["splits"].items():
        rel = entry.get("file") if isinstance(entry, dict) else None
        if rel != f"splits/{name}.npy":
            raise EdgekdError(f"split '{name}' points at {rel!r}, not inside the dataset's splits/ folder",
                              file=meta_path, field=f"splits.{name}.file", fix=fix)


def check_values(path: str | os.PathLike, meta: Mapping[str, Any], *, chunk: int = 4096) -> None:
    """Frames finite (read in chunks), beam labels in range, split windows inside the frames."""
    path = Path(path)
    fix = _regenerate_fix(meta)
    beams = np.load(path / "frames/beams.npy", mmap_mode="r", allow_pickle=False)
    bad = np.flatnonzero((np.asarray(beams) < 0) | (np.asarray(beams) >= meta["num_beams"]))
    if len(bad):
        raise EdgekdError(f"{len(bad)} beam label(s) outside 0..{meta['num_beams'] - 1} (rows {bad[:5].tolist()}, "
                          f"values {np.asarray(beams)[bad[:5]].tolist()})", file=path / "frames/beams.npy",
                          field="frames/beams", fix=fix)
    for rel in sorted(meta["arrays"]):
        if rel.startswith("frames/") or rel == "info/time_s.npy":
            _check_finite_rows(path, meta, rel, None, chunk)
    check_split_bounds(path, meta)


def check_split_finite(path: str | os.PathLike, split: str, modalities: Sequence[str] | None = None, *,
                       chunk: int = 4096) -> None:
    """The frames the windows of ``split`` read (of ``modalities``, default all) are finite: the check a
    command runs before it trains, evaluates or calibrates on a split, so NaN never becomes a metric."""
    path = Path(path)
    meta = read_meta(path)
    if split not in meta["splits"]:
        return  # load_dataset names the missing split
    check_split_bounds(path, meta, [split])
    span = int(meta["window"]) + int(meta["horizons"]) - 1
    starts = np.load(path / meta["splits"][split]["file"], allow_pickle=False)
    rows = np.unique((starts[:, None] + np.arange(span)).reshape(-1))
    for name in modalities if modalities is not None else list(meta["modalities"]):
        _check_finite_rows(path, meta, f"frames/{name}.npy", rows, chunk)


def _check_finite_rows(path: Path, meta: Mapping[str, Any], rel: str, rows: np.ndarray | None, chunk: int) -> None:
    """Raise naming the array and the first bad rows when any frame (of ``rows``, default all) holds NaN/inf."""
    values = np.load(path / rel, mmap_mode="r", allow_pickle=False)
    if values.dtype.kind != "f":
        return
    order = np.arange(len(values)) if rows is None else rows
    bad: list[int] = []
    for start in range(0, len(order), chunk):
        picked = order[start:start + chunk]
        block = np.asarray(values[picked] if rows is not None else values[picked[0]:picked[-1] + 1],
                           dtype=np.float32).reshape(len(picked), -1)
        bad.extend(int(picked[r]) for r in np.flatnonzero(~np.isfinite(block).all(axis=1)))
    if bad:
        raise EdgekdError(f"{len(bad)} frame(s) hold NaN/inf (rows {bad[:5]})", file=path / rel,
                          field=rel[:-len(".npy")], fix=_regenerate_fix(meta))


def check_split_bounds(path: str | os.PathLike, meta: Mapping[str, Any], splits: Sequence[str] | None = None) -> None:
    """The window starts of ``splits`` (default: every split) lie inside the frames, labels included."""
    path = Path(path)
    span = int(meta["window"]) + int(meta["horizons"]) - 1
    for name, entry in meta["splits"].items():
        if splits is not None and name not in splits:
            continue   # a split never read is never opened (data-free KD must not touch the training split)
        starts = np.load(path / entry["file"], allow_pickle=False)
        if starts.dtype.kind not in "iu" or starts.ndim != 1:
            raise EdgekdError(f"split '{name}' must hold integer window starts, got {starts.dtype} {starts.shape}",
                              file=path / entry["file"], field=f"splits.{name}", fix=_regenerate_fix(meta))
        bad = np.flatnonzero((starts < 0) | (starts > int(meta["num_frames"]) - span))
        if len(bad):
            raise EdgekdError(f"{len(bad)} window start(s) of split '{name}' lie outside the "
                              f"{meta['num_frames']} frames (e.g. {starts[bad[:3]].tolist()})",
                              file=path / entry["file"], field=f"splits.{name}", fix=_regenerate_fix(meta))


class WindowDataset:
    """The windows of one split: a sequence of dicts of float32 arrays, read from memory-mapped frames.

    ``ds[i]`` gives one window (``[T, ...]`` per modality, ``beams`` int64
    ``[horizons]``, ``power`` float32 ``[horizons, num_beams]``);
    ``ds.batch(indices)`` gives a stacked batch with one fancy-indexing read per
    array, the fast path for training.
    """

    def __init__(self, path: str | os.PathLike, split: str, meta: Mapping[str, Any],
                 modalities: Sequence[str] | None = None):
        self._open(path, split, meta, modalities)

    def _open(self, path: str | os.PathLike, split: str, meta: Mapping[str, Any],
              modalities: Sequence[str] | None) -> None:
        self.path = Path(path)
        self.split = split
        self.meta = dict(meta)
        self.window = int(meta["window"])
        self.horizons = int(meta["horizons"])
        self.num_beams = int(meta["num_beams"])
        present = tuple(m for m in MODALITIES if m in meta["modalities"])
        if modalities is None:
            modalities = present
        missing = [m for m in modalities if m not in present]
        if missing:
            raise EdgekdError(f"modality {missing[0]!r} is not in this dataset (it has {', '.join(present)})",
                              file=self.path, field="modalities", fix=f"use one of: {', '.join(present)}")
        self.modalities: tuple[str, ...] = tuple(m for m in MODALITIES if m in modalities)
        self.shapes: dict[str, tuple[int, ...]] = {
            m: tuple(meta["modalities"][m]["window_shape"]) for m in self.modalities}
        self.fingerprint: str = meta["fingerprint"]
        self.indices: np.ndarray = np.load(self.path / meta["splits"][split]["file"], allow_pickle=False)
        self._frames = {m: self._map(f"frames/{m}.npy") for m in self.modalities}
        self._power = self._map("frames/power.npy")
        self._beams = self._map("frames/beams.npy")
        self._steps = np.arange(self.window)
        self._label_steps = self.window - 1 + np.arange(self.horizons)
        self._conditions: dict[str, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers get a pickled copy: send the path, not the memory-mapped frames
        return {"path": self.path, "split": self.split, "meta": self.meta, "modalities": self.modalities}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._open(state["path"], state["split"], state["meta"], state["modalities"])

    def _map(self, rel: str) -> np.ndarray:
        return np.load(self.path / rel, mmap_mode="r", allow_pickle=False)

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        return (f"WindowDataset({str(self.path)!r}, split={self.split!r}, windows={len(self)}, "
                f"modalities={self.modalities})")

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"index with an int (use .batch() for many), got {type(i).__name__}")
        if not -len(self) <= i < len(self):
            raise IndexError(f"window {i} out of range for {len(self)} windows")
        return {key: value[0] for key, value in self.batch([int(i) % len(self)]).items()}

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def batch(self, indices: Iterable[int] | np.ndarray | slice) -> dict[str, np.ndarray]:
        """Stacked windows ``indices`` (positions in this split): ``[B, T, ...]`` per modality, labels."""
        if isinstance(indices, slice):
            starts = self.indices[indices]
        else:
            starts = self.indices[np.asarray(indices, dtype=np.int64)]
        frames = starts[:, None] + self._steps          # [B, T]
        labels = starts[:, None] + self._label_steps    # [B, horizons]
        out: dict[str, np.ndarray] = {}
        for name, source in self._frames.items():
            values = source[frames.ravel()]
            if values.dtype == np.uint8:
                values = values.astype(np.float32)
                values *= np.float32(1.0 / 255.0)
            else:
                values = values.astype(np.float32, copy=False)
            out[name] = values.reshape(frames.shape + source.shape[1:])
        out["beams"] = np.asarray(self._beams[labels.ravel()], dtype=np.int64).reshape(labels.shape)
        out["power"] = np.asarray(self._power[labels.ravel()], dtype=np.float32).reshape(
            labels.shape + (self.num_beams,))
        return out

    @property
    def conditions(self) -> dict[str, np.ndarray]:
        """Per window: lighting/weather/los_blocked/drive at t0, available_<m> = True over all T frames."""
        if self._conditions is None:
            t0 = self.indices + self.window - 1
            observed = self.indices[:, None] + self._steps
            cond: dict[str, np.ndarray] = {}
            for key in self.meta.get("info", []):
                values = self._map(f"info/{key}.npy")
                if key.startswith("available_"):
                    cond[key] = np.asarray(np.asarray(values[observed.ravel()]).reshape(observed.shape).all(axis=1))
                elif key in ("lighting", "weather", "los_blocked", "drive", "time_s"):
                    cond[key] = np.asarray(values[t0])
            self._conditions = cond
        return self._conditions

    def beam_histogram(self, horizon: int = 0) -> np.ndarray:
        """Counts of each best beam at horizon ``horizon`` over this split."""
        beams = np.asarray(self._beams[self.indices + self.window - 1 + horizon], dtype=np.int64)
        return np.bincount(beams, minlength=self.num_beams)


def load_dataset(path: str | os.PathLike, split: str = "train", *, verify: bool = False,
                 modalities: Sequence[str] | None = None) -> WindowDataset:
    """The windows of ``split`` of the dataset at ``path``.

    Every array file is checked against meta.json by existence and byte size
    (cheap, catches truncation); ``verify=True`` also re-hashes every array
    (seconds per GB; ``edgekd data info`` always does). ``modalities`` limits
    which frames are read (default: all the dataset has).
    """
    meta = read_meta(path)
    check_arrays(path, meta, rehash=verify)
    if split not in meta.get("splits", {}):
        have = ", ".join(meta.get("splits", {})) or "none"
        raise EdgekdError(f"split {split!r} is not in this dataset (it has: {have})", file=path, field="split",
                          fix=f"use one of: {have}; or re-create the dataset with a --split that includes it")
    check_split_bounds(path, meta, [split])
    return WindowDataset(path, split, meta, modalities)


def summarize_dataset(path: str | os.PathLike, *, verify: bool = True) -> dict[str, Any]:
    """What ``edgekd data info`` reports: counts per split, beam histogram summary, condition mix."""
    meta = verify_dataset(path) if verify else read_meta(path)
    summary: dict[str, Any] = {
        "path": str(path), "source": meta["source"], "format": meta["format"], "seed": meta.get("seed"),
        "verified": verify, "fingerprint": meta["fingerprint"], "window": meta["window"],
        "horizons": meta["horizons"], "num_beams": meta["num_beams"], "num_frames": meta["num_frames"],
        "num_drives": meta["num_drives"],
        "modalities": {m: v["window_shape"] for m, v in meta["modalities"].items()},
        "bytes": int(sum(v["bytes"] for v in meta["arrays"].values())),
        "splits": {},
    }
    for name in meta["splits"]:
        ds = WindowDataset(path, name, meta, modalities=())
        hist = ds.beam_histogram(0)
        total = max(int(hist.sum()), 1)
        probs = hist[hist > 0] / total
        cond = ds.conditions
        summary["splits"][name] = {
            "windows": len(ds), "drives": meta["splits"][name]["drives"],
            "beams_t0": {"distinct": int(np.count_nonzero(hist)), "most_frequent": int(hist.argmax()),
                         "most_frequent_share": round(float(hist.max() / total), 4),
                         "entropy_bits": round(float(-(probs * np.log2(probs)).sum()), 3),
                         "histogram": hist.tolist()},
            "conditions": condition_mix(cond),
        }
    for key in ("dropped", "unknown_conditions"):
        if key in meta:
            summary[key] = meta[key]
    return summary


def sanity_report(path: str | os.PathLike, meta: Mapping[str, Any] | None = None, *,
                  max_frames: int = 1500) -> dict[str, Any]:
    """Per modality: how much the inputs vary between frames, and whether the beam is predictable from them.

    On up to ``max_frames`` frames spread over the dataset: ``spread`` is the
    mean over features (LiDAR bins, map cells, pixels) of their standard
    deviation across frames, in stored units; ``frame_change`` the mean
    absolute change between consecutive frames of a segment, relative to the
    spread; ``beam_1nn_within2`` the share of frames of held-out drives whose
    nearest frame (1-NN on standardised features) of the other drives has a
    best beam within 2 of theirs, against ``baseline_within2`` for always the
    most frequent beam. A modality that came out constant has spread 0 and is
    no better than the baseline: ``constant`` / ``uninformative`` flag it.
    """
    path = Path(path)
    meta = read_meta(path) if meta is None else meta
    beams = np.load(path / "frames/beams.npy", mmap_mode="r", allow_pickle=False)
    drive = np.asarray(np.load(path / "info/drive.npy", allow_pickle=False))
    segment_file = path / "info/segment.npy"
    segment = np.asarray(np.load(segment_file, allow_pickle=False)) if segment_file.is_file() else drive
    n = len(beams)
    pick = np.unique(np.linspace(0, n - 1, min(n, max_frames)).astype(np.int64))
    nxt = pick[(pick + 1 < n)]
    nxt = nxt[(segment[nxt] == segment[np.minimum(nxt + 1, n - 1)]) & (drive[nxt] == drive[np.minimum(nxt + 1, n - 1)])]
    report: dict[str, Any] = {"frames_sampled": int(len(pick))}
    for name in (m for m in MODALITIES if m in meta["modalities"]):
        frames = np.load(path / meta["modalities"][name]["file"], mmap_mode="r", allow_pickle=False)
        # at most ~20 M values per modality in memory (e.g. 400 frames of 224x224 images)
        every = max(1, int(np.ceil(len(pick) * int(np.prod(frames.shape[1:])) / 2e7)))
        rows, pairs = pick[::every], nxt[::every]
        labels = np.asarray(beams[rows], dtype=np.int64)
        x = _as_features(frames[rows])
        spread = float(x.std(axis=0).mean())
        change = float(np.abs(_as_features(frames[pairs + 1]) - _as_features(frames[pairs])).mean()) \
            if len(pairs) else 0.0
        entry: dict[str, Any] = {"spread": round(spread, 5),
                                 "frame_change": round(change / spread, 4) if spread > 0 else 0.0,
                                 "constant": bool(spread <= 1e-6 * max(1.0, float(np.abs(x).mean())))}
        entry.update(_nearest_neighbour_beams(x, labels, drive[rows]))
        entry["uninformative"] = entry["beam_1nn_within2"] <= entry["baseline_within2"] + 0.02
        if name == "radar":
            peak = np.asarray(frames[rows][:, 0], dtype=np.float32).sum(axis=-1).argmax(axis=-1)
            entry["peak_range_row"] = {"mean": round(float(peak.mean()), 2), "std": round(float(peak.std()), 2),
                                       "distinct": int(len(np.unique(peak))), "rows": int(frames.shape[2])}
        if name == "lidar":
            entry["bins_with_return"] = round(float((x > 0).mean()), 4)
        report[name] = entry
    return report


def _as_features(frames: np.ndarray) -> np.ndarray:
    x = np.asarray(frames).reshape(len(frames), -1).astype(np.float32)
    return x / 255.0 if np.asarray(frames).dtype == np.uint8 else x


def _nearest_neighbour_beams(x: np.ndarray, labels: np.ndarray, drive: np.ndarray,
                             dims: int = 64) -> dict[str, float]:
    """1-NN beam (within 2) of held-out drives (every other drive; halves of one drive) vs the most frequent."""
    ids = np.unique(drive)
    test = np.isin(drive, ids[1::2]) if len(ids) > 1 else np.arange(len(drive)) >= len(drive) // 2
    if test.all() or not test.any():
        return {"beam_1nn_within2": 0.0, "baseline_within2": 0.0}
    std = x.std(axis=0)
    z = (x[:, std > 0] - x[:, std > 0].mean(axis=0)) / std[std > 0]
    if z.shape[1] > dims:  # a fixed random projection keeps distances (roughly) and the cost small
        z = z @ np.random.default_rng(0).normal(size=(z.shape[1], dims)).astype(np.float32) / np.sqrt(dims)
    train, held = z[~test], z[test]
    dist = (held ** 2).sum(1)[:, None] - 2 * held @ train.T + (train ** 2).sum(1)[None, :]
    predicted = labels[~test][dist.argmin(axis=1)] if z.shape[1] else np.full(int(test.sum()), -99)
    majority = np.bincount(labels[~test]).argmax()
    truth = labels[test]
    return {"beam_1nn_within2": round(float((np.abs(predicted - truth) <= 2).mean()), 4),
            "baseline_within2": round(float((np.abs(majority - truth) <= 2).mean()), 4)}
