"""A 2-D LiDAR scan from the base station: range per azimuth bin, by ray casting.

Sensor frame (as for a real point cloud): x forward (the base station's
boresight, across the street), y to the left, z up. The azimuth of a point is
``atan2(y, x)``; ``bins`` equal bins span ``[-fov/2, +fov/2)``, bin 0 at
``-fov/2`` (the right-hand side, i.e. the scene's +x end of the street). A bin
holds the horizontal range of the nearest return in metres; 0 means no return
(nothing within ``max_range``, or the return was lost). The scan plane lies at
``scan_height_m`` above the road (a single-layer scanner on the base station's
pole, or a 3-D scanner's points kept in a band at that height): vehicles lower
than it pass under the plane, taller ones (trucks, buses, the user's roof-top
receiver unit) and the building wall return, and hide whatever is behind them.
The default 1.8 m clears car roofs (1.4-1.7 m) and catches the receiver unit,
so the scan shows the user, the blockers and the reflecting wall; 0 hits every
vehicle.

Weather: every return is lost with a probability that grows from clear to rain
to fog, and fog also shortens the maximum range. Ranges carry Gaussian noise.
The dataset stores ranges in metres / 10 (the reference loader's scaling):
see :data:`STORAGE_SCALE_M`.

Only numpy: :func:`points_to_bins` is reused by the DeepSense importer.
"""

from __future__ import annotations

import dataclasses

import numpy as np

STORAGE_SCALE_M = 10.0  # stored value = metres / 10


@dataclasses.dataclass
class LidarConfig:
    bins: int = 216
    fov_deg: float = 180.0
    max_range_m: float = 40.0
    rays_per_bin: int = 1  # rays cast per bin (the bin keeps the nearest)
    range_noise_m: float = 0.03
    dropout: tuple[float, float, float] = (0.01, 0.1, 0.3)  # per-return loss by weather clear / rain / fog
    fog_range_factor: float = 0.6  # max range in fog, as a fraction of max_range_m
    scan_height_m: float = 1.8  # scan plane above the road: lower vehicles pass under it (0: all are hit)

    def __post_init__(self):
        for name in ("bins", "fov_deg", "max_range_m", "rays_per_bin"):
            if getattr(self, name) <= 0:
                raise ValueError(f"lidar.{name} must be positive, got {getattr(self, name)!r}")
        if self.fov_deg > 360:
            raise ValueError("lidar.fov_deg must be <= 360")
        if not all(0 <= p <= 1 for p in self.dropout):
            raise ValueError("lidar.dropout probabilities must be in [0, 1]")
        if self.scan_height_m < 0:
            raise ValueError("lidar.scan_height_m must be >= 0")


def bin_edges(bins: int, fov_deg: float) -> np.ndarray:
    """Azimuth edges (radians, sensor frame), ``bins + 1`` values from ``-fov/2`` to ``+fov/2``."""
    half = np.deg2rad(fov_deg) / 2
    return np.linspace(-half, half, bins + 1)


def scene_to_sensor(xy: np.ndarray) -> np.ndarray:
    """Scene plan coordinates (x along the street, y across) -> sensor frame (x forward, y left)."""
    xy = np.asarray(xy)
    return np.stack([xy[..., 1], -xy[..., 0]], axis=-1)


def cast_rays(azimuth: np.ndarray, boxes: np.ndarray, wall_y: float | None) -> np.ndarray:
    """Distance to the first hit of rays from the origin, ``[F, n_rays]`` (inf = none).

    ``azimuth``: ``[n_rays]`` in the sensor frame; ``boxes``: ``[F, K, 4]`` scene
    boxes (x0, y0, x1, y1); ``wall_y``: the wall along ``y = wall_y`` (None: no wall).
    """
    # Ray direction in scene coordinates: sensor azimuth phi -> (x, y) = (-sin phi, cos phi).
    dx = -np.sin(azimuth)
    dy = np.cos(azimuth)
    with np.errstate(divide="ignore", invalid="ignore"):
        ix = np.where(dx == 0, np.inf, 1.0 / np.where(dx == 0, 1.0, dx))
        iy = np.where(dy == 0, np.inf, 1.0 / np.where(dy == 0, 1.0, dy))
        b = boxes[:, None, :, :]  # [F, 1, K, 4]
        tx0 = b[..., 0] * ix[:, None]
        tx1 = b[..., 2] * ix[:, None]
        ty0 = b[..., 1] * iy[:, None]
        ty1 = b[..., 3] * iy[:, None]
        # Rays parallel to a slab: inside it (0 in [lo, hi]) for all t, else never.
        par_x = (dx == 0)[:, None]
        par_y = (dy == 0)[:, None]
        in_x = (b[..., 0] <= 0) & (b[..., 2] >= 0)
        in_y = (b[..., 1] <= 0) & (b[..., 3] >= 0)
        tx_min = np.where(par_x, np.where(in_x, -np.inf, np.inf), np.minimum(tx0, tx1))
        tx_max = np.where(par_x, np.where(in_x, np.inf, -np.inf), np.maximum(tx0, tx1))
        ty_min = np.where(par_y, np.where(in_y, -np.inf, np.inf), np.minimum(ty0, ty1))
        ty_max = np.where(par_y, np.where(in_y, np.inf, -np.inf), np.maximum(ty0, ty1))
    enter = np.maximum(tx_min, ty_min)
    leave = np.minimum(tx_max, ty_max)
    hit = (enter <= leave) & (enter > 0)
    dist = np.where(hit, enter, np.inf).min(axis=-1)  # [F, n_rays]
    if wall_y is not None:
        with np.errstate(divide="ignore"):
            wall = np.where(dy > 0, wall_y / np.where(dy > 0, dy, 1.0), np.inf)
        dist = np.minimum(dist, wall[None, :])
    return dist


_NO_BOX = np.array([1e9, 1e9, 1e9 + 1.0, 1e9 + 1.0])  # a box no ray reaches (stands in for a skipped one)


def scan_boxes(truth, scan_height_m: float) -> np.ndarray:
    """``[F, K(+1), 4]`` boxes that reach the scan plane: vehicles at least ``scan_height_m`` tall,
    plus the receiver unit on the user's roof (when it has one); the others are moved out of reach."""
    boxes = truth.boxes()
    tall = truth.size[:, 2] >= scan_height_m
    boxes = np.where(tall[None, :, None], boxes, _NO_BOX)
    if truth.has_unit and truth.unit_top_m >= scan_height_m:
        boxes = np.concatenate([boxes, truth.unit_boxes()[:, None]], axis=1)
    return boxes


def render_lidar(truth, weather: np.ndarray, cfg: LidarConfig, rng: np.random.Generator) -> np.ndarray:
    """Scans of a pass in metres, float32 ``[F, bins]`` (0 = no return)."""
    edges = bin_edges(cfg.bins, cfg.fov_deg)
    width = edges[1] - edges[0]
    offsets = (np.arange(cfg.rays_per_bin) + 0.5) / cfg.rays_per_bin * width
    azimuth = (edges[:-1, None] + offsets).ravel()
    dist = cast_rays(azimuth, scan_boxes(truth, cfg.scan_height_m), truth.wall_y)
    dist = dist.reshape(dist.shape[0], cfg.bins, cfg.rays_per_bin).min(axis=-1)
    weather = np.asarray(weather)
    max_range = np.where(weather == 2, cfg.fog_range_factor, 1.0)[:, None] * cfg.max_range_m
    dist = dist + cfg.range_noise_m * rng.standard_normal(dist.shape)
    lost = rng.random(dist.shape) < np.asarray(cfg.dropout)[weather][:, None]
    return np.where((dist <= max_range) & ~lost & (dist > 0), dist, 0.0).astype(np.float32)


def points_to_bins(points_xyz: np.ndarray, bins: int = 216, fov_deg: float = 180.0, max_range: float = 40.0,
                   z_range: tuple[float, float] | None = None) -> np.ndarray:
    """A point cloud ``[N, 3]`` (metres, sensor frame) -> ``[bins]`` float32 nearest horizontal range per bin.

    Points outside the field of view, beyond ``max_range`` or outside ``z_range``
    (when given) are ignored; empty bins are 0. Ranges are in metres (divide by
    :data:`STORAGE_SCALE_M` to store).
    """
    pts = np.asarray(points_xyz, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] < 2:
        raise ValueError(f"points must be [N, 3] (x, y, z), got shape {pts.shape}")
    keep = np.all(np.isfinite(pts[:, :3] if pts.shape[1] >= 3 else pts), axis=1)
    if z_range is not None and pts.shape[1] >= 3:
        keep &= (pts[:, 2] >= z_range[0]) & (pts[:, 2] <= z_range[1])
    r = np.hypot(pts[:, 0], pts[:, 1])
    phi = np.arctan2(pts[:, 1], pts[:, 0])
    half = np.deg2rad(fov_deg) / 2
    keep &= (r > 0) & (r <= max_range) & (phi >= -half) & (phi <= half)  # edges belong to the end bins
    idx = np.floor((phi[keep] + half) / (2 * half) * bins).astype(np.int64)
    idx = np.clip(idx, 0, bins - 1)
    out = np.full(bins, np.inf)
    np.minimum.at(out, idx, r[keep])
    out[np.isinf(out)] = 0.0
    return out.astype(np.float32)
