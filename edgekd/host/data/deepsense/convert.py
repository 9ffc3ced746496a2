"""Per-modality conversion of the files of every row into stored frames, as the synthetic scenario stores them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.device.errors import EdgekdError
from edgekd.host.data.deepsense.files import read_image, read_latlon, read_lidar_scr, read_ply_points, read_radar_cube
from edgekd.host.data.deepsense.scenario import ImportConfig, Problems, read_or_record, resolve
from edgekd.host.data.gps import STORAGE_SCALE_M as GPS_SCALE  # stored GPS = metres / 100
from edgekd.host.data.lidar import STORAGE_SCALE_M as LIDAR_SCALE  # stored LiDAR = metres / 10

log = logging.getLogger(__name__)

EARTH_RADIUS_M = 6_371_000.0


def latlon_to_metres(lat: np.ndarray, lon: np.ndarray, lat0: np.ndarray, lon0: np.ndarray) -> np.ndarray:
    """East/north metres of (lat, lon) from (lat0, lon0) (local tangent plane; fine over a few km)."""
    north = np.radians(lat - lat0) * EARTH_RADIUS_M
    east = np.radians(lon - lon0) * EARTH_RADIUS_M * np.cos(np.radians(lat0))
    return np.stack([east, north], axis=-1)


def read_modalities(scenario_dir: Path, roles: dict[str, str], rows: list[dict[str, str]], lines: list[int],
                     cfg: ImportConfig, problems: Problems, progress: bool):
    """Per present modality the preprocessed ``[N, ...]`` frames, and how each was preprocessed."""
    from tqdm import tqdm

    frames: dict[str, np.ndarray] = {}
    preprocessing: dict[str, dict[str, Any]] = {}
    readers = _modality_readers(roles, cfg)
    for name, (column, read_one, describe) in readers.items():
        out = []
        for row, line in tqdm(list(zip(rows, lines)), desc=f"import {name}", disable=not progress,
                              unit="frame", leave=False):
            path = resolve(scenario_dir, row[_role_of(roles, column)])
            out.append(read_or_record(problems, line, column, path, read_one))
        frames[name] = _finish(name, out, cfg)
        preprocessing[name] = {**describe, "column": column}
        if name == "radar" and frames[name].size:
            # the fixed constants were tuned on the synthetic radar; record where real maps land
            low, high = np.percentile(frames[name][::max(1, len(rows) // 256)].astype(np.float32), [1, 99])
            preprocessing[name]["value_percentiles_1_99"] = [round(float(low), 4), round(float(high), 4)]
    if "ue_loc" in roles:
        frames["gps"], preprocessing["gps"] = _gps(scenario_dir, roles, rows, lines, problems)
    return frames, preprocessing


def _role_of(roles: dict[str, str], column: str) -> str:
    return next(role for role, name in roles.items() if name == column)


def _modality_readers(roles: dict[str, str], cfg: ImportConfig) -> dict[str, tuple[str, Callable, dict]]:
    readers: dict[str, tuple[str, Callable, dict]] = {}
    if "image" in roles:
        from edgekd.host.data import camera

        readers["image"] = (roles["image"], lambda p: camera.preprocess_image(read_image(p), cfg.image_size),
                            {"stored": f"grayscale uint8 resized to {cfg.image_size}x{cfg.image_size} "
                                       "(edgekd.host.data.camera.preprocess_image)", "load": "x / 255 -> [0, 1]"})
    if "radar" in roles:
        # cubes are kept raw here and turned into maps in batches by _finish
        from edgekd.host.data.radar import RadarConfig

        constants = RadarConfig()
        readers["radar"] = (roles["radar"], read_radar_cube,
                            {"stored": f"float16 log2(1+|x|) maps {cfg.range_bins}x{cfg.angle_bins} "
                                       "(edgekd.host.data.radar.cube_to_maps), (map - offset) / scale",
                             "offset": constants.map_offset, "scale": constants.map_scale,
                             "load": "float32 as stored"})
    if "lidar_scr" in roles:
        readers["lidar"] = (roles["lidar_scr"], read_lidar_scr,
                            {"stored": "DeepSense 216-bin scan (unit1_lidar_SCR) in metres / 10",
                             "load": "float32 as stored"})
    elif "lidar_ply" in roles:
        from edgekd.host.data import lidar

        readers["lidar"] = (roles["lidar_ply"], lambda p: lidar.points_to_bins(read_ply_points(p)),
                            {"stored": "point cloud -> 216 azimuth bins (edgekd.host.data.lidar.points_to_bins), "
                                       "metres / 10", "load": "float32 as stored"})
    return readers


def _finish(name: str, values: list[Any], cfg: ImportConfig) -> np.ndarray:
    """Stack per-frame results (None where a file failed; the import then stops before writing)."""
    good = [v for v in values if v is not None]
    if not good:
        return np.zeros((len(values), 1), dtype=np.float32)
    if name == "radar":
        return _radar_maps(values, cfg)
    sample = np.asarray(good[0])
    out = np.zeros((len(values), *sample.shape), dtype=sample.dtype if name == "image" else np.float32)
    for i, value in enumerate(values):
        if value is not None:
            out[i] = value
    if name == "lidar":
        out /= LIDAR_SCALE
    return out


def _radar_maps(cubes: list[np.ndarray | None], cfg: ImportConfig, batch: int = 32) -> np.ndarray:
    """Cubes -> normalised float16 maps with the synthetic path's processing and fixed constants."""
    from edgekd.host.data import radar

    range_bins, angle_bins = cfg.radar_bins
    out = np.zeros((len(cubes), 2, range_bins, angle_bins), dtype=np.float16)
    present = [i for i, cube in enumerate(cubes) if cube is not None]
    for lo in range(0, len(present), batch):
        idx = present[lo:lo + batch]
        stack = [cube for i in idx if (cube := cubes[i]) is not None]
        try:
            maps = radar.cube_to_maps(np.stack(stack), range_bins, angle_bins)
        except ValueError as exc:  # e.g. fewer samples per chirp than range bins asked for
            raise EdgekdError(f"radar cubes of shape {stack[0].shape} cannot be processed: {exc}",
                              field="unit1_radar", fix="pass --range-bins/--angle-bins that fit the cube "
                              "(range bins <= samples, angle bins >= Rx antennas)") from None
        out[idx] = radar.normalise_maps(maps)
        for i in idx:
            cubes[i] = None  # free the raw cube (about 1 MB each) as soon as it is mapped
    return out


def _gps(scenario_dir: Path, roles: dict[str, str], rows: list[dict[str, str]], lines: list[int],
         problems: Problems) -> tuple[np.ndarray, dict[str, Any]]:
    """User position east/north of the base station in metres / 100."""
    ue = np.full((len(rows), 2), np.nan)
    bs = np.full((len(rows), 2), np.nan)
    for i, (row, line) in enumerate(zip(rows, lines)):
        got = read_or_record(problems, line, roles["ue_loc"], resolve(scenario_dir, row["ue_loc"]), read_latlon)
        if got is not None:
            ue[i] = got
        if "bs_loc" in roles:
            got = read_or_record(problems, line, roles["bs_loc"], resolve(scenario_dir, row["bs_loc"]), read_latlon)
            if got is not None:
                bs[i] = got
    if "bs_loc" in roles:
        reference = f"base station ({roles['bs_loc']}, per row)"
    else:
        # without the base station's position the mean user position is the best fixed origin
        bs[:] = np.nanmean(ue, axis=0) if np.isfinite(ue).any() else 0.0
        reference = "mean user position (no unit1_loc column)"
        log.warning("no unit1_loc column: GPS is relative to the mean user position")
    metres = latlon_to_metres(ue[:, 0], ue[:, 1], bs[:, 0], bs[:, 1])
    gps = np.nan_to_num(metres / GPS_SCALE).astype(np.float32)
    return gps, {"stored": f"[east, north] metres / {GPS_SCALE:g} relative to the {reference}",
                 "column": roles["ue_loc"], "load": "float32 as stored"}
