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
    """Re-hash every array against meta.json; return meta or raise EdgekdError naming the bad file."""
    meta = read_meta(path)
    check_arrays(path, meta, rehash=True)
    return meta


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
