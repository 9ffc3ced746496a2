"""Drive recorder: one continuous synthetic drive with changing conditions, for runtime replay.

``record_drive(minutes=4, seed=0)`` simulates a long drive past a row of base
stations (``edgekd.host.data.synth.simulate_drive`` with a :class:`Schedule`) that
goes day -> fog -> day with a flaky camera -> dusk -> night, with a LiDAR
failure of several seconds at night; random sensor dropouts come on top.
``write_drive`` stores it as one ``.npz`` (format ``edgekd-drive/2``, read by
``edgekd.device.runtime.replay.load_drive``):

=====================  ==========================================================
``image``              uint8 ``[F, 1, H, W]`` (the dataset store's dtype; x / 255 -> model input)
``radar``              float16 ``[F, 2, R, A]`` normalised maps, as stored in datasets
``lidar``, ``gps``     float32 ``[F, 216]``, ``[F, 2]``, as stored in datasets
``time_s``             float64 ``[F]`` frame times
``beams``              int64 ``[F, 4]`` best beam at t0..t3 of each frame (-1 past the end of its track)
``track``              int32 ``[F]`` pass index: each pass of the user through a base station's field
                       of view is a track of its own (the runtime starts a fresh window at each)
``power``              float32 ``[F, num_beams]`` received power per beam at t0, row max 1
``lighting``           int8 ``[F]`` 0 day / 1 dusk / 2 night (ground truth, never shown to the runtime)
``weather``            int8 ``[F]`` 0 clear / 1 rain / 2 fog
``los_blocked``        bool ``[F]``
``available_<m>``      bool ``[F]`` whether sensor m delivered the frame (a missing frame is not replayed)
``segment``            int32 ``[F]`` index into ``segment_names``
``segment_names``      str ``[S]``
``meta``               str: JSON with the format, seed, scene config, schedule and preprocessing
=====================  ==========================================================

The sensors are rendered with the same scene configuration and storage
scales as ``edgekd data synth``, so students trained on a synthetic dataset
see inputs from the same distribution.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
from pathlib import Path
from typing import Any, cast

import numpy as np

from edgekd.device.contracts import LIGHTING, MODALITIES, WEATHER
from edgekd.device.errors import EdgekdError
from edgekd.device.io import atomic_write_bytes
from edgekd.device.runtime.replay import DRIVE_FORMAT  # the reader owns the format names it accepts

log = logging.getLogger(__name__)

HORIZONS = 4


@dataclasses.dataclass(frozen=True)
class DriveSegment:
    """A stretch of the drive from ``start`` (a fraction of its length) with fixed conditions."""

    name: str
    start: float
    lighting: int
    weather: int = 0
    unavailable: tuple[str, ...] = ()
    dropout_rate: tuple[tuple[str, float], ...] = ()


_L = {name: code for code, name in enumerate(LIGHTING)}   # condition codes as the contract stores them
_W = {name: code for code, name in enumerate(WEATHER)}

# day -> fog -> flaky camera -> dusk -> night (LiDAR failure in the middle) -> night in rain
DEFAULT_PLAN: tuple[DriveSegment, ...] = (
    DriveSegment("day", 0.00, lighting=_L["day"]),
    DriveSegment("day-fog", 0.14, lighting=_L["day"], weather=_W["fog"]),
    DriveSegment("day-camera-dropouts", 0.24, lighting=_L["day"], dropout_rate=(("image", 0.08),)),
    DriveSegment("dusk", 0.36, lighting=_L["dusk"]),
    DriveSegment("night", 0.50, lighting=_L["night"]),
    DriveSegment("night-lidar-failure", 0.68, lighting=_L["night"], unavailable=("lidar",)),
    DriveSegment("night", 0.72, lighting=_L["night"]),
    DriveSegment("night-rain", 0.86, lighting=_L["night"], weather=_W["rain"]),
)


def plan_schedule(plan: tuple[DriveSegment, ...], duration_s: float):
    """The simulator's :class:`Schedule` for ``plan`` over a drive of ``duration_s`` seconds."""
    from edgekd.host.data.synth import Schedule, ScheduleSegment

    return Schedule(tuple(ScheduleSegment(start_s=seg.start * duration_s, lighting=seg.lighting,
                                          weather=seg.weather, unavailable=seg.unavailable,
                                          dropout_rate=dict(seg.dropout_rate)) for seg in plan))


def record_drive(*, minutes: float = 4.0, seed: int = 0, image_size: int = 64,
                 config_path: str | os.PathLike | None = None,
                 plan: tuple[DriveSegment, ...] = DEFAULT_PLAN) -> tuple[dict[str, np.ndarray], dict]:
    """Simulate the drive: ``(arrays, meta)`` as :func:`write_drive` stores them."""
    from edgekd.device.config import config_to_dict
    from edgekd.host.data import synth

    if not minutes > 0:
        raise EdgekdError(f"must be positive, got {minutes}", field="minutes", fix="e.g. --minutes 4")
    if image_size <= 0:
        raise EdgekdError(f"must be positive, got {image_size}", field="image_size", fix="e.g. --image-size 64")
    cfg = synth.load_scene_config(config_path)
    try:
        cfg = dataclasses.replace(cfg, camera=dataclasses.replace(cfg.camera, image_size=image_size))
    except ValueError as exc:
        raise EdgekdError(str(exc), field="image_size", fix="use an image size such as 64 (paper: 224)") from None
    n_frames = int(round(minutes * 60 * cfg.frame_rate_hz))
    if n_frames < 4 * HORIZONS:
        raise EdgekdError(f"{minutes} minutes is only {n_frames} frames", field="minutes", fix="record longer")
    schedule = plan_schedule(plan, n_frames / cfg.frame_rate_hz)
    # a seed of its own for drives, apart from dataset drive ids (seed, d), so no dataset drive repeats here
    rng = np.random.default_rng([seed, 2**31 - 1])
    rec = synth.simulate_drive(cfg, rng, n_frames=n_frames, schedule=schedule, drive_id=0)
    n = rec.num_frames
    time_s = np.arange(n) / cfg.frame_rate_hz  # continuous clock (the recording's float32 loses ms late on)
    track = rec.frame_info["pass"].astype(np.int32)
    beams = track_labels(rec.beams, track, HORIZONS)
    segment = np.clip(schedule.segment_index(time_s), 0, None).astype(np.int32)
    arrays = {
        "image": rec.frames["image"].astype(np.uint8),
        "radar": rec.frames["radar"].astype(np.float16),
        "lidar": rec.frames["lidar"].astype(np.float32),
        "gps": rec.frames["gps"].astype(np.float32),
        "time_s": time_s,
        "beams": beams,
        "power": rec.power.astype(np.float32),
        "lighting": rec.frame_info["lighting"].astype(np.int8),
        "weather": rec.frame_info["weather"].astype(np.int8),
        "los_blocked": rec.frame_info["los_blocked"].astype(bool),
        "segment": segment,
        "track": track,
        "segment_names": np.array([seg.name for seg in plan]),
    }
    for name in MODALITIES:
        arrays[f"available_{name}"] = rec.frame_info[f"available_{name}"].astype(bool)
    meta = {
        "format": DRIVE_FORMAT, "seed": seed, "minutes": minutes, "frames": n,
        "frame_rate_hz": cfg.frame_rate_hz, "image_size": image_size, "horizons": HORIZONS,
        "plan": [dataclasses.asdict(seg) for seg in plan],
        "config": config_to_dict(cfg),
        "preprocessing": {
            "image": "uint8 as in datasets; model input = x / 255",
            "radar": {"stored": "float16 normalised log2 maps as in datasets", "offset": cfg.radar.map_offset,
                      "scale": cfg.radar.map_scale},
            "lidar": "metres / 10, 0 = no return", "gps": "metres / 100",
        },
    }
    log.info("recorded drive: %d frames, segments %s", n, [seg.name for seg in plan])
    return arrays, meta


def track_labels(beams: np.ndarray, track: np.ndarray, horizons: int) -> np.ndarray:
    """``[F, horizons]``: the best beam ``h`` frames ahead, -1 where that frame is past the track's end
    (the next pass is another car seen by another base station, not this one's future)."""
    n = len(beams)
    out = np.full((n, horizons), -1, dtype=np.int64)
    for h in range(horizons):
        same = track[h:] == track[: n - h]
        out[: n - h, h] = np.where(same, beams[h:], -1)
    return out


def write_drive(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict,
                *, overwrite: bool = False) -> Path:
    """Store a drive as one ``.npz`` atomically (uncompressed: replay reads it at once)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise EdgekdError("drive file already exists", file=path, fix="choose another --out or pass --overwrite")
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array(json.dumps(meta)), **cast(dict[str, Any], arrays))  # names, not savez flags
    return atomic_write_bytes(path, buffer.getvalue())
