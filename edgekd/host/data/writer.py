"""Writing a dataset directory atomically: arrays checked and cast, windows cut, drives split, meta.json.

``synthesize_dataset`` (``edgekd data synth``) and the DeepSense importer end here.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekd import __version__
from edgekd.device.contracts import MODALITIES
from edgekd.device.errors import EdgekdError
from edgekd.device.io import atomic_directory, atomic_write_json, sha256_file
from edgekd.host.data.layout import (
    DATASET_FORMAT,
    DEFAULT_PREPROCESSING,
    INFO_DTYPES,
    SOURCES,
    STORED_DTYPES,
    UNKNOWN,
    WindowSpec,
    condition_mix,
    fingerprint_of,
    normalise_split,
    segment_runs,
    split_drives,
    window_starts,
)

log = logging.getLogger(__name__)


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
    with atomic_directory(out, overwrite=True, what="dataset directory", marker="meta.json") as tmp:
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
    """``value`` in the stored dtype; float frames must be finite after the cast (checked even when the dtype
    already matches: NaN in a source file must never reach a dataset)."""
    if dtype == np.uint8 and value.dtype.kind == "f":
        raise ValueError(f"frames[{name!r}] must be uint8 images (0..255), got {value.dtype}")
    out = value if value.dtype == dtype else value.astype(dtype)
    if dtype.kind == "f":
        flat = out.reshape(len(out), -1)
        bad = np.flatnonzero(~np.isfinite(flat).all(axis=1))
        if len(bad):
            cause = "NaN/inf" if value.dtype == dtype or not np.isfinite(value).all() else f"overflow of {dtype}"
            raise EdgekdError(f"frames[{name!r}]: {len(bad)} frame(s) hold {cause} values (rows {bad[:5].tolist()})",
                              field=f"frames/{name}",
                              fix="drop or repair those frames in the source data before writing the dataset")
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


def write_recording(out: str | os.PathLike, recording: Any, *, window: int = 8, horizons: int = 4,
                    split: Sequence[float] | str = (0.7, 0.15, 0.15), overwrite: bool = False,
                    preprocessing: Mapping[str, Mapping[str, Any]] | None = None,
                    extra_meta: Mapping[str, Any] | None = None) -> Path:
    """Store a simulator ``Recording`` (``frames``, ``power``, ``beams``, ``frame_info``, ``config``, ``seed``)."""
    return write_dataset(out, frames=recording.frames, power=recording.power, beams=recording.beams,
                         frame_info=recording.frame_info, source="synthetic", config=recording.config,
                         seed=recording.seed, window=window, horizons=horizons, split=split,
                         overwrite=overwrite, preprocessing=preprocessing, extra_meta=extra_meta)


# What `data synth` costs, measured on the default scene (2 workers, 2 busy cores): 1.9 frames per window
# (drives are short), about 7.5 ms of CPU per window. Past these limits it refuses unless forced.
FRAMES_PER_WINDOW = 1.9
CPU_S_PER_WINDOW = 0.0075
SYNTH_LIMITS = {"bytes": 50e9, "seconds": 6 * 3600.0}


def estimate_synthesis(cfg: Any, windows: int) -> dict[str, float]:
    """Rough size on disk, peak memory and wall time of simulating ``windows`` windows with scene ``cfg``."""
    per_frame = (cfg.camera.image_size ** 2 + 2 * cfg.radar.range_bins * cfg.radar.angle_bins * 2
                 + cfg.lidar.bins * 4 + 2 * 4 + cfg.array.num_beams * 4 + 64)
    frames = windows * FRAMES_PER_WINDOW
    workers = min(os.cpu_count() or 1, 4) if windows >= 3000 else 1
    return {"frames": frames, "bytes": frames * per_frame, "memory_bytes": 2.5 * frames * per_frame,
            "seconds": windows * CPU_S_PER_WINDOW / workers}


def check_synthesis_cost(estimate: Mapping[str, float], out: Path, *, force: bool) -> None:
    """Refuse (before simulating) a request beyond the limits, the free disk or the memory, unless ``force``."""
    problems = []
    if estimate["bytes"] > SYNTH_LIMITS["bytes"]:
        problems.append(f"{estimate['bytes'] / 1e9:.0f} GB on disk (limit {SYNTH_LIMITS['bytes'] / 1e9:.0f} GB)")
    if estimate["seconds"] > SYNTH_LIMITS["seconds"]:
        problems.append(f"about {estimate['seconds'] / 3600:.1f} h (limit {SYNTH_LIMITS['seconds'] / 3600:.0f} h)")
    parent = next((p for p in (out.parent, *out.parent.parents) if p.exists()), Path("."))
    free = shutil.disk_usage(parent).free
    if estimate["bytes"] > free:
        problems.append(f"{estimate['bytes'] / 1e9:.1f} GB but {parent} has {free / 1e9:.1f} GB free")
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        if estimate["memory_bytes"] > memory:
            problems.append(f"about {estimate['memory_bytes'] / 1e9:.0f} GB of memory (this machine has "
                            f"{memory / 1e9:.0f} GB)")
    if problems and not force:
        raise EdgekdError(f"{estimate['frames']:.3g} frames would take " + "; ".join(problems), field="--windows",
                          fix="ask for fewer --windows (e.g. 10000 to 100000), or pass --force if you mean it")


def synthesize_dataset(out: str | os.PathLike, *, windows: int, seed: int = 0, image_size: int | None = None,
                       config_path: str | os.PathLike | None = None, split: Sequence[float] | str = (0.7, 0.15, 0.15),
                       window: int = 8, horizons: int = 4, overwrite: bool = False, progress: bool = False,
                       force: bool = False) -> Path:
    """Simulate the synthetic scenario (``edgekd.host.data.synth``) and store it: ``edgekd data synth``.

    Checks every argument, ``out`` and the estimated cost (:func:`estimate_synthesis`; beyond
    the limits only with ``force``) before simulating, so a mistake costs no simulation time.
    Same arguments, byte-identical arrays.
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
    estimate = estimate_synthesis(cfg, windows)
    check_synthesis_cost(estimate, Path(out), force=force)
    log.info("data synth: about %.3g frames, %.1f GB, %.0f s", estimate["frames"], estimate["bytes"] / 1e9,
             estimate["seconds"])
    # every split needs a drive of its own: for a request smaller than a few drives, simulate more
    # (drive d depends only on (seed, d), so a larger request repeats the smaller one and adds drives)
    need_drives, ask = sum(f > 0 for f in spec.split), windows
    while True:
        recording = synth.synthesize(cfg, windows=ask, seed=seed, image_size=None, progress=progress,
                                     window=spec.window, future=spec.horizons - 1)
        if len(np.unique(recording.frame_info["drive"])) >= need_drives:
            break
        ask *= 2
    preprocessing: dict[str, dict[str, Any]] = {
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

