"""The dataset store: frames once per drive on disk, windows as index arrays, a memory-mapped loader.

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
import datetime as _dt
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekd import __version__
from edgekd.device.errors import EdgekdError
from edgekd.device.io import atomic_directory, atomic_write_json, sha256_bytes, sha256_file

log = logging.getLogger(__name__)

DATASET_FORMAT = "edgekd-dataset/1"
MODALITIES: tuple[str, ...] = ("image", "radar", "lidar", "gps")
SPLITS: tuple[str, ...] = ("train", "val", "test")
SOURCES: tuple[str, ...] = ("synthetic", "deepsense")
LIGHTING = ("day", "dusk", "night")
WEATHER = ("clear", "rain", "fog")
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
            field="split", fix="generate/import more drives (e.g. more --windows) or use fewer splits (--split 0.8,0.2)")
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
    out = {name: [] for name in SPLITS}
    for name, lo, hi in zip(wanted, bounds[:-1], bounds[1:]):
        out[name] = ids[lo:hi]
    return {name: drives for name, drives in out.items() if name in wanted}


# --------------------------------------------------------------------------- writing


def check_output(out: str | os.PathLike, *, overwrite: bool) -> Path:
    """Fail fast (before any work) on an ``--out`` that exists without ``--overwrite``.

    With ``overwrite`` only an edgekd dataset or an empty directory is replaced,
    so a mistyped ``--out`` cannot delete unrelated files.
    """
    out = Path(out)
    if not out.exists():
        return out
    if not overwrite:
        raise EdgekdError("output directory already exists", file=out,
                          fix="choose another --out or pass --overwrite to replace it")
    if out.is_dir() and (not any(out.iterdir()) or _is_dataset(out)):
        return out
    raise EdgekdError("refusing to overwrite: it is not an edgekd dataset", file=out,
                      fix="choose another --out (only datasets and empty directories are replaced)")


def _is_dataset(path: Path) -> bool:
    try:
        return json.loads((path / "meta.json").read_text()).get("format") == DATASET_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def write_dataset(out: str | os.PathLike, *, frames: Mapping[str, np.ndarray], power: np.ndarray,
                  beams: np.ndarray | None = None, frame_info: Mapping[str, np.ndarray], source: str,
                  config: Mapping[str, Any] | None, seed: int | None, window: int = 8, horizons: int = 4,
                  split: Sequence[float] | str = (0.7, 0.15, 0.15), overwrite: bool = False,
                  preprocessing: Mapping[str, Mapping[str, Any]] | None = None,
                  extra_meta: Mapping[str, Any] | None = None) -> Path:
    """Write a dataset directory atomically and return its path.

    ``frames`` maps modality -> ``[F, ...]`` array (all drives concatenated in
    time order; cast to the stored dtype of the modality), ``power`` is
    ``[F, num_beams]`` linear received power (rows are normalised to max 1 on
    disk; the per-frame max is kept in ``info/power_max.npy``), ``beams`` the
    0-based best beam per frame (argmax of ``power`` when None) and
    ``frame_info`` the per-frame info arrays (``drive`` required; ``segment``
    optional, splitting a drive where frames are not consecutive in time).
    ``preprocessing`` describes, per modality, how raw sensor data became the
    stored frames; ``extra_meta`` is merged into meta.json (e.g. dropped rows).
    """
    spec = WindowSpec(window=window, horizons=horizons, split=normalise_split(split))
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    out = check_output(out, overwrite=overwrite)
    arrays, num_frames = _prepare_arrays(frames, power, beams, frame_info)
    drive, segment = arrays["info/drive"], arrays.get("info/segment")
    starts = window_starts(drive, spec.span, segment)
    if len(starts) == 0:
        raise EdgekdError(f"no drive is long enough for one window ({spec.span} consecutive frames)",
                          field="windows", fix="generate/import longer drives or use a smaller window")
    drive_ids, first = np.unique(drive, return_index=True)
    per_drive = np.bincount(np.searchsorted(drive_ids, drive[starts]), minlength=len(drive_ids))
    assignment = split_drives(drive_ids.tolist(), per_drive.tolist(), spec.split)
    for name, ids in assignment.items():
        arrays[f"splits/{name}.npy"] = starts[np.isin(drive[starts], ids)]
    arrays = {key if key.endswith(".npy") else f"{key}.npy": value for key, value in arrays.items()}

    meta = _build_meta(arrays, spec=spec, source=source, config=config, seed=seed, num_frames=num_frames,
                       assignment=assignment, preprocessing=preprocessing or {}, extra_meta=extra_meta or {})
    with atomic_directory(out, overwrite=True, what="dataset directory") as tmp:
        hashes = {}
        for rel, value in arrays.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, np.ascontiguousarray(value), allow_pickle=False)
            hashes[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size,
                           "shape": list(value.shape), "dtype": value.dtype.str}
        meta["arrays"] = hashes
        meta["fingerprint"] = fingerprint_of(hashes)
        atomic_write_json(tmp / "meta.json", meta)
    log.info("wrote dataset %s: %d frames, %s", out, num_frames,
             ", ".join(f"{k} {v['windows']}" for k, v in meta["splits"].items()))
    return out


def _prepare_arrays(frames: Mapping[str, np.ndarray], power: np.ndarray, beams: np.ndarray | None,
                    frame_info: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    unknown = sorted(set(frames) - set(MODALITIES))
    if unknown or not frames:
        raise ValueError(f"frames must have modalities among {MODALITIES}, got {sorted(frames)}")
    power = np.asarray(power, dtype=np.float64)
    if power.ndim != 2 or power.shape[1] < 2:
        raise ValueError(f"power must be [F, num_beams], got shape {power.shape}")
    num_frames = power.shape[0]
    if not np.all(np.isfinite(power)) or np.any(power < 0):
        raise ValueError("power must be finite and non-negative (drop NaN rows before writing)")
    peak = power.max(axis=1)
    if np.any(peak <= 0):
        raise ValueError("every power row needs a positive maximum")
    if beams is None:
        beams = power.argmax(axis=1)
    beams = np.asarray(beams, dtype=np.int64)
    if beams.shape != (num_frames,) or beams.min(initial=0) < 0 or beams.max(initial=0) >= power.shape[1]:
        raise ValueError(f"beams must be [F] with values in 0..{power.shape[1] - 1}")
    arrays: dict[str, np.ndarray] = {}
    for name in MODALITIES:
        if name in frames:
            value = np.asarray(frames[name])
            if value.shape[0] != num_frames:
                raise ValueError(f"frames[{name!r}] has {value.shape[0]} frames, power has {num_frames}")
            arrays[f"frames/{name}"] = _cast(value, STORED_DTYPES[name], name)
    arrays["frames/power"] = (power / peak[:, None]).astype(np.float32)
    arrays["frames/beams"] = beams
    if "drive" not in frame_info:
        raise ValueError("frame_info needs 'drive'")
    for key, value in frame_info.items():
        value = np.asarray(value)
        if value.shape != (num_frames,):
            raise ValueError(f"frame_info[{key!r}] must have shape ({num_frames},), got {value.shape}")
        dtype = INFO_DTYPES.get(key, np.dtype(np.bool_) if key.startswith("available_") else value.dtype)
        arrays[f"info/{key}"] = value.astype(dtype)
    arrays["info/power_max"] = peak.astype(np.float32)
    _check_drive_blocks(arrays["info/drive"])
    for name in MODALITIES:
        if name in frames and f"info/available_{name}" not in arrays:
            arrays[f"info/available_{name}"] = np.ones(num_frames, dtype=bool)
    for key, fill in (("lighting", UNKNOWN), ("weather", UNKNOWN), ("los_blocked", False)):
        if f"info/{key}" not in arrays:
            arrays[f"info/{key}"] = np.full(num_frames, fill, dtype=INFO_DTYPES[key])
    return arrays, num_frames


def _cast(value: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    if value.dtype == dtype:
        return value
    if dtype == np.uint8 and value.dtype.kind == "f":
        raise ValueError(f"frames[{name!r}] must be uint8 images (0..255), got {value.dtype}")
    out = value.astype(dtype)
    if dtype.kind == "f" and not np.all(np.isfinite(out)):
        raise ValueError(f"frames[{name!r}] does not fit {dtype} (overflow or NaN)")
    return out


def _check_drive_blocks(drive: np.ndarray) -> None:
    runs = segment_runs(drive)
    if len(drive) and runs[-1] + 1 != len(np.unique(drive)):
        raise ValueError("frames of each drive must be contiguous (concatenate drives one after another)")


def _build_meta(arrays: dict[str, np.ndarray], *, spec: WindowSpec, source: str, config: Mapping | None,
                seed: int | None, num_frames: int, assignment: dict[str, list[int]],
                preprocessing: Mapping[str, Mapping[str, Any]], extra_meta: Mapping[str, Any]) -> dict:
    modalities = {}
    for name in MODALITIES:
        key = f"frames/{name}.npy"
        if key in arrays:
            frame_shape = list(arrays[key].shape[1:])
            modalities[name] = {
                "file": key, "frame_shape": frame_shape, "dtype": arrays[key].dtype.name,
                "window_shape": [spec.window, *frame_shape],
                "preprocessing": {**DEFAULT_PREPROCESSING[name], **dict(preprocessing.get(name, {}))},
            }
    drive = arrays["info/drive.npy"]
    splits = {}
    for name, ids in assignment.items():
        starts = arrays[f"splits/{name}.npy"]
        splits[name] = {"file": f"splits/{name}.npy", "windows": int(len(starts)), "drives": len(ids),
                        "drive_ids": [int(i) for i in ids],
                        "frames": int(np.isin(drive, ids).sum())}
    meta = {
        "format": DATASET_FORMAT,
        "edgekd_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "source": source,
        "config": dict(config or {}),
        "seed": seed,
        "window": spec.window,
        "horizons": spec.horizons,
        "num_beams": int(arrays["frames/power.npy"].shape[1]),
        "num_frames": num_frames,
        "num_drives": int(len(np.unique(drive))),
        "split_fractions": list(spec.split),
        "modalities": modalities,
        "labels": {
            "beams": {"file": "frames/beams.npy", "meaning": "argmax of the power row (0-based)"},
            "power": {"file": "frames/power.npy", "meaning": "linear received power per beam, row max = 1",
                      "scale_file": "info/power_max.npy"},
        },
        "info": sorted(k[len("info/"):-len(".npy")] for k in arrays if k.startswith("info/")),
        "splits": splits,
        "conditions": condition_mix({k[5:-4]: v for k, v in arrays.items() if k.startswith("info/")}),
    }
    meta.update(extra_meta)
    return meta


def condition_mix(info: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Counts of lighting/weather classes and shares of blocked LoS and sensor availability."""
    def counts(values: np.ndarray, names: tuple[str, ...]) -> dict[str, int]:
        out = {label: int(np.count_nonzero(values == i)) for i, label in enumerate(names)}
        unknown = int(np.count_nonzero(values == UNKNOWN))
        if unknown:
            out["unknown"] = unknown
        return out

    mix: dict[str, Any] = {"lighting": counts(info["lighting"], LIGHTING),
                           "weather": counts(info["weather"], WEATHER),
                           "los_blocked": round(float(np.mean(info["los_blocked"])) if len(info["los_blocked"]) else 0.0, 4)}
    for key in sorted(info):
        if key.startswith("available_"):
            mix[key] = round(float(np.mean(info[key])) if len(info[key]) else 0.0, 4)
    return mix


def fingerprint_of(hashes: Mapping[str, Mapping[str, Any]]) -> str:
    """sha256 over the sorted ``name sha256`` lines of every array: equal data, equal fingerprint."""
    lines = "\n".join(f"{name} {hashes[name]['sha256']}" for name in sorted(hashes))
    return sha256_bytes(lines.encode())


def write_recording(out: str | os.PathLike, recording: Any, *, window: int = 8, horizons: int = 4,
                    split: Sequence[float] | str = (0.7, 0.15, 0.15), overwrite: bool = False,
                    preprocessing: Mapping[str, Mapping[str, Any]] | None = None,
                    extra_meta: Mapping[str, Any] | None = None) -> Path:
    """Store a simulator ``Recording`` (``frames``, ``power``, ``beams``, ``frame_info``, ``config``, ``seed``)."""
    return write_dataset(out, frames=recording.frames, power=recording.power, beams=recording.beams,
                         frame_info=recording.frame_info, source="synthetic", config=recording.config,
                         seed=recording.seed, window=window, horizons=horizons, split=split,
                         overwrite=overwrite, preprocessing=preprocessing, extra_meta=extra_meta)


def synthesize_dataset(out: str | os.PathLike, *, windows: int, seed: int = 0, image_size: int | None = None,
                       config_path: str | os.PathLike | None = None, split: Sequence[float] | str = (0.7, 0.15, 0.15),
                       window: int = 8, horizons: int = 4, overwrite: bool = False, progress: bool = False) -> Path:
    """Simulate the synthetic scenario (``edgekd.host.data.synth``) and store it: ``edgekd data synth``.

    Checks every argument and ``out`` before simulating, so a mistake costs
    no simulation time. Same arguments, byte-identical arrays.
    """
    from edgekd.host.data import synth

    if windows <= 0:
        raise EdgekdError(f"must be a positive integer, got {windows}", field="windows",
                          fix="ask for at least 1 window, e.g. --windows 10000")
    spec = WindowSpec(window=window, horizons=horizons, split=normalise_split(split))
    check_output(out, overwrite=overwrite)
    cfg = synth.load_scene_config(config_path)
    if image_size is not None:
        try:
            cfg = dataclasses.replace(cfg, camera=dataclasses.replace(cfg.camera, image_size=image_size))
        except ValueError as exc:
            raise EdgekdError(str(exc), field="image_size", fix="use an image size such as 64 (paper: 224)") from None
    # every split needs a drive of its own: for a request smaller than a few drives, simulate more
    # (drive d depends only on (seed, d), so a larger request repeats the smaller one and adds drives)
    need_drives, ask = sum(f > 0 for f in spec.split), windows
    while True:
        recording = synth.synthesize(cfg, windows=ask, seed=seed, image_size=None, progress=progress,
                                     window=spec.window, future=spec.horizons - 1)
        if len(np.unique(recording.frame_info["drive"])) >= need_drives:
            break
        ask *= 2
    preprocessing = {
        "image": {"stored": f"grayscale uint8 {cfg.camera.image_size}x{cfg.camera.image_size} rendered by "
                            "edgekd.host.data.camera (the same size preprocess_image gives real frames)"},
        "radar": {"stored": f"float16 log2(1+|x|) maps {cfg.radar.range_bins}x{cfg.radar.angle_bins} from "
                            "simulated raw cubes (edgekd.host.data.radar.cube_to_maps), (map - offset) / scale",
                  "offset": cfg.radar.map_offset, "scale": cfg.radar.map_scale},
        "lidar": {"bins": cfg.lidar.bins, "fov_deg": cfg.lidar.fov_deg, "max_range_m": cfg.lidar.max_range_m},
        "gps": {"noise_m": cfg.gps.noise_m, "bias_m": cfg.gps.bias_m},
    }
    return write_recording(out, recording, window=spec.window, horizons=spec.horizons, split=spec.split,
                           overwrite=overwrite, preprocessing=preprocessing,
                           extra_meta={"requested_windows": windows})


# --------------------------------------------------------------------------- reading


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
        self.__init__(state["path"], state["split"], state["meta"], state["modalities"])

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
                    cond[key] = np.asarray(values[observed.ravel()]).reshape(observed.shape).all(axis=1)
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
