"""Per-modality conversion of the files of every row into stored frames, streamed row by row.

Each file is read, turned into its stored frame (a 64x64 grayscale image, a
pair of radar maps, a 216-bin scan) and dropped before the next one is read,
so peak memory is the stored dataset plus one raw frame, whatever the size of
the scenario (a raw scenario-32 radar cube alone is 2 MB; 2000 of them 4 GB).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.device.errors import EdgekdError
from edgekd.host.data.deepsense.files import read_image, read_latlon, read_lidar_raw, read_lidar_scr, read_radar_cube
from edgekd.host.data.deepsense.scenario import ImportConfig, Problems, read_or_record, resolve
from edgekd.host.data.gps import STORAGE_SCALE_M as GPS_SCALE  # stored GPS = metres / 100
from edgekd.host.data.lidar import STORAGE_SCALE_M as LIDAR_SCALE  # stored LiDAR = metres / 10

log = logging.getLogger(__name__)

EARTH_RADIUS_M = 6_371_000.0
GROUND_PERCENTILE = 5.0  # of the heights of the points within range: the ground under a sensor above a road


def latlon_to_metres(lat: np.ndarray, lon: np.ndarray, lat0: np.ndarray, lon0: np.ndarray) -> np.ndarray:
    """East/north metres of (lat, lon) from (lat0, lon0) (local tangent plane; fine over a few km)."""
    north = np.radians(lat - lat0) * EARTH_RADIUS_M
    east = np.radians(lon - lon0) * EARTH_RADIUS_M * np.cos(np.radians(lat0))
    return np.stack([east, north], axis=-1)


class _Radar:
    """Cube -> maps with the synthetic path's processing; the range crop follows the radar's real bin size."""

    def __init__(self, cfg: ImportConfig):
        self.cfg = cfg
        self.shape: tuple[int, ...] | None = None
        self.crop = 0
        self.describe: dict[str, Any] = {}

    def __call__(self, path: Path) -> np.ndarray:
        from edgekd.host.data import radar

        cube = read_radar_cube(path)
        if self.shape is None:
            self._first(cube.shape)
        elif cube.shape != self.shape:
            raise ValueError(f"cube shape {cube.shape} differs from the first row's {self.shape}")
        maps = radar.cube_to_maps(cube[None], self.crop, self.cfg.radar_bins[1])[0]
        return radar.normalise_maps(pool_rows(maps, self.cfg.radar_bins[0]))

    def _first(self, shape: tuple[int, ...]) -> None:
        from edgekd.host.data.radar import RadarConfig

        rx, samples, chirps = shape
        range_bins, angle_bins = self.cfg.radar_bins
        if angle_bins < rx:
            raise EdgekdError(f"{angle_bins} angle bins cannot hold the {rx} Rx antennas of cubes {shape}",
                              field="unit1_radar", fix=f"pass --angle-bins {max(rx, 8)} or more")
        bin_m = self.cfg.radar_bin_m(samples)
        self.shape, self.crop = tuple(shape), min(samples, max(1, math.ceil(self.cfg.radar_max_range_m / bin_m)))
        constants = RadarConfig()
        self.describe = {
            "stored": f"float16 log2(1+|x|) maps {range_bins}x{angle_bins} (edgekd.host.data.radar.cube_to_maps "
                      f"on the first {self.crop} range bins = 0..{self.crop * bin_m:.1f} m, max-pooled to "
                      f"{range_bins} rows), (map - offset) / scale",
            "offset": constants.map_offset, "scale": constants.map_scale, "load": "float32 as stored",
            "cube_shape": list(shape), "sample_rate_mhz": self.cfg.radar_sample_rate_mhz,
            "slope_mhz_per_us": self.cfg.radar_slope_mhz_per_us, "range_bin_m": round(bin_m, 5),
            "range_bins_kept": self.crop, "max_range_m": round(self.crop * bin_m, 3),
            "metres_per_map_row": round(self.crop * bin_m / range_bins, 5),
        }


def pool_rows(maps: np.ndarray, rows: int) -> np.ndarray:
    """``[..., R, A]`` -> ``[..., rows, A]``: max over equal groups of rows (a peak survives), or
    linear interpolation when there are fewer rows than asked for."""
    from edgekd.host.data.radar import _resample_rows

    n = maps.shape[-2]
    if n <= rows:
        return _resample_rows(maps, rows)
    edges = np.linspace(0, n, rows + 1).astype(np.int64)[:-1]
    return np.maximum.reduceat(maps, edges, axis=-2)


def lidar_raw_to_bins(data: np.ndarray, cfg: ImportConfig) -> np.ndarray:
    """A raw ``unit1_lidar`` file in metres -> 216 bins in metres.

    ``[N, 2]`` (range, angle; degrees when any |angle| > 2 pi, else radians,
    0 = the sensor's x axis) is a 2-D scan. ``[N, 3]`` is a 3-D cloud (sensor at the
    origin, z up): the ground and what is above the road users are removed (only
    points ``cfg.lidar_band_m`` above the ground are kept), then the nearest
    horizontal range per azimuth bin over the field of view (centred on
    ``cfg.lidar_heading_deg``).
    """
    from edgekd.host.data import lidar

    heading = np.deg2rad(cfg.lidar_heading_deg)
    if data.shape[1] == 2:
        rng, angle = data[:, 0], data[:, 1]
        if np.nanmax(np.abs(angle), initial=0.0) > 2 * np.pi + 1e-6:
            angle = np.deg2rad(angle)
        points = np.stack([rng * np.cos(angle - heading), rng * np.sin(angle - heading)], axis=1)
        return lidar.points_to_bins(points, fov_deg=cfg.lidar_fov_deg, max_range=cfg.lidar_max_range_m)
    z_range = None
    if data.shape[1] >= 3:
        ground = ground_height(data, cfg)
        z_range = (ground + cfg.lidar_band_m[0], ground + cfg.lidar_band_m[1])
    xyz = data[:, :3]
    if heading:  # turn the cloud so that the field of view's centre lies along +x
        cos, sin = np.cos(heading), np.sin(heading)
        xyz = np.stack([cos * xyz[:, 0] + sin * xyz[:, 1], -sin * xyz[:, 0] + cos * xyz[:, 1], xyz[:, 2]], axis=1)
    return lidar.points_to_bins(xyz, fov_deg=cfg.lidar_fov_deg, max_range=cfg.lidar_max_range_m, z_range=z_range)


def ground_height(points: np.ndarray, cfg: ImportConfig) -> float:
    """z of the ground in the sensor frame: minus the sensor height when given, else estimated from the cloud."""
    if cfg.lidar_sensor_height_m is not None:
        return -float(cfg.lidar_sensor_height_m)
    near = points[np.hypot(points[:, 0], points[:, 1]) <= cfg.lidar_max_range_m, 2]
    near = near[np.isfinite(near)]
    return float(np.percentile(near, GROUND_PERCENTILE)) if near.size else 0.0


def _modality_readers(roles: dict[str, str], cfg: ImportConfig) -> dict[str, tuple[str, Callable, dict]]:
    """name -> (role, read one file into its stored frame, how it was preprocessed)."""
    readers: dict[str, tuple[str, Callable, dict]] = {}
    if "image" in roles:
        from edgekd.host.data import camera

        readers["image"] = ("image", lambda p: camera.preprocess_image(read_image(p), cfg.image_size),
                            {"stored": f"grayscale uint8 resized to {cfg.image_size}x{cfg.image_size} "
                                       "(edgekd.host.data.camera.preprocess_image)", "load": "x / 255 -> [0, 1]"})
    if "radar" in roles:
        readers["radar"] = ("radar", _Radar(cfg), {})
    if "lidar_scr" in roles:
        readers["lidar"] = ("lidar_scr", lambda p: read_lidar_scr(p) / LIDAR_SCALE,
                            {"stored": "DeepSense 216-bin scan (unit1_lidar_SCR, column 0 of data [216, k], as "
                                       "the reference loaders) in metres / 10", "load": "float32 as stored"})
    elif "lidar_raw" in roles:
        band = cfg.lidar_band_m
        ground = ("the sensor height" if cfg.lidar_sensor_height_m is not None
                  else f"the {GROUND_PERCENTILE:g}th percentile of z within range")
        readers["lidar"] = ("lidar_raw", lambda p: lidar_raw_to_bins(read_lidar_raw(p), cfg) / LIDAR_SCALE,
                            {"stored": f"{cfg.lidar_fov_deg:g} deg / 216 azimuth bins, nearest range within "
                                       f"{cfg.lidar_max_range_m:g} m, metres / 10; 3-D clouds: only points "
                                       f"{band[0]:g}..{band[1]:g} m above the ground ({ground})",
                             "load": "float32 as stored", "fov_deg": cfg.lidar_fov_deg,
                             "max_range_m": cfg.lidar_max_range_m, "band_m": list(band),
                             "heading_deg": cfg.lidar_heading_deg,
                             "sensor_height_m": cfg.lidar_sensor_height_m})
    return readers


def read_modalities(scenario_dir: Path, roles: dict[str, str], rows: list[dict[str, str]], lines: list[int],
                    cfg: ImportConfig, problems: Problems, progress: bool):
    """Per present modality the stored ``[N, ...]`` frames, and how each was preprocessed (streamed)."""
    from tqdm import tqdm

    frames: dict[str, np.ndarray] = {}
    preprocessing: dict[str, dict[str, Any]] = {}
    for name, (role, read_one, describe) in _modality_readers(roles, cfg).items():
        out: np.ndarray | None = None
        for i, (row, line) in enumerate(tqdm(list(zip(rows, lines)), desc=f"import {name}", disable=not progress,
                                             unit="frame", leave=False)):
            value = read_or_record(problems, line, roles[role], resolve(scenario_dir, row[role]), read_one)
            if value is None:
                continue
            value = np.asarray(value)
            if out is None:
                dtype = np.uint8 if name == "image" else (np.float16 if name == "radar" else np.float32)
                out = np.zeros((len(rows), *value.shape), dtype=dtype)
            if value.shape != out.shape[1:]:
                problems.add(line, roles[role], row[role], f"frame shape {value.shape} differs from the first "
                                                           f"row's {out.shape[1:]}")
                continue
            out[i] = value
        frames[name] = out if out is not None else np.zeros((len(rows), 1), dtype=np.float32)
        preprocessing[name] = {**(read_one.describe if isinstance(read_one, _Radar) else describe),
                               "column": roles[role]}
    if "ue_loc" in roles:
        frames["gps"], preprocessing["gps"] = _gps(scenario_dir, roles, rows, lines, problems)
    return frames, preprocessing


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
