"""The base station's camera: a grayscale perspective view across the street.

A pinhole camera at the base station looks along +y (across the street). Its
principal point is shifted up (a shift lens, so vertical edges stay vertical)
to spend most of the rows on the road. Vehicle sides facing the camera are
planes of constant depth, so each one projects to an exact rectangle; roofs,
windows and lamps are drawn on top, far to near (painter's algorithm). The
static background (sidewalks, lanes, the building wall, sky) is precomputed
per image size with its depth map, which fog needs.

The user's car carries the receiver unit on its roof (``DriveTruth.unit``): a
white box with a dark band across it (a fiducial stripe) and a marker lamp on
top, which lights up at dusk and night like the head lights.

Illumination: day / dusk / night scale the albedo (night: dark, noisy, with
head and tail lights); rain lowers contrast and adds streaks; fog blends
towards a veil with depth. Images are returned as uint8 ``[F, 1, H, W]``.

Only numpy at import time (Pillow is imported by :func:`preprocess_image`).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from edgekd.device.errors import EdgekdError

DAY, DUSK, NIGHT = 0, 1, 2
CLEAR, RAIN, FOG = 0, 1, 2
SKY_DEPTH_M = 1000.0


@dataclasses.dataclass
class CameraConfig:
    image_size: int = 64
    hfov_deg: float = 110.0
    height_m: float = 4.0
    horizon_row: float = 0.3  # where the horizon sits, as a fraction of the image height from the top
    illumination: tuple[float, float, float] = (1.0, 0.45, 0.1)  # albedo gain by day, dusk, night
    sky: tuple[float, float, float] = (0.9, 0.55, 0.04)
    noise_std: tuple[float, float, float] = (0.01, 0.025, 0.06)  # sensor noise (fraction of full scale)
    lamp_brightness: tuple[float, float, float] = (0.0, 0.5, 1.0)  # head/tail lights
    rain_contrast: float = 0.65  # contrast kept in rain
    fog_visibility_m: tuple[float, float] = (15.0, 60.0)  # drawn per drive
    lit_window_fraction: float = 0.3  # building windows lit at night

    def __post_init__(self):
        if not 16 <= self.image_size <= 512:
            raise ValueError(f"camera.image_size must be in 16..512, got {self.image_size}")
        if not 10 < self.hfov_deg < 170:
            raise ValueError("camera.hfov_deg must be in (10, 170)")
        if not 0 <= self.horizon_row < 1:
            raise ValueError("camera.horizon_row must be in [0, 1)")
        if self.height_m <= 0:
            raise ValueError("camera.height_m must be positive")


@dataclasses.dataclass(frozen=True)
class _Projection:
    size: int
    focal: float  # pixels
    cu: float
    cv: float
    height: float

    def column(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.cu + self.focal * x / y

    def row(self, z: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.cv + self.focal * (self.height - z) / y


def projection(cfg: CameraConfig) -> _Projection:
    size = cfg.image_size
    focal = (size / 2) / np.tan(np.deg2rad(cfg.hfov_deg) / 2)
    return _Projection(size, float(focal), size / 2, cfg.horizon_row * size, cfg.height_m)


def background(cfg: CameraConfig, street) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Static ``(albedo, depth, sky_mask, lit_windows)`` of the empty street, each ``[H, W]``."""
    cam_key = (cfg.image_size, cfg.hfov_deg, cfg.height_m, cfg.horizon_row, cfg.lit_window_fraction)
    street_key = (street.curb_offset_m, street.lane_width_m, street.lanes_each_way, street.wall_y,
                  street.wall_height_m)
    return _background(cam_key, street_key)


@functools.lru_cache(maxsize=8)
def _background(cam_key: tuple, street_key: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    size, hfov, cam_h, horizon_row, lit_fraction = cam_key
    curb, lane_w, lanes_each_way, wall_y, wall_h = street_key
    proj = projection(CameraConfig(image_size=size, hfov_deg=hfov, height_m=cam_h, horizon_row=horizon_row))
    n = proj.size
    u = (np.arange(n) + 0.5 - proj.cu) / proj.focal  # x per unit depth
    v = (np.arange(n) + 0.5 - proj.cv) / proj.focal  # drop per unit depth (positive below the horizon)
    uu, vv = np.meshgrid(u, v)
    with np.errstate(divide="ignore"):
        ground_depth = np.where(vv > 0, proj.height / vv, np.inf)
    wall_z = proj.height - vv * wall_y
    on_ground = ground_depth < wall_y
    on_wall = ~on_ground & (wall_z >= 0) & (wall_z <= wall_h)
    sky = ~on_ground & ~on_wall

    albedo = np.zeros((n, n))
    depth = np.full((n, n), SKY_DEPTH_M)
    gy = np.where(on_ground, ground_depth, 0.0)
    gx = uu * gy
    far_curb = curb + 2 * lanes_each_way * lane_w
    road = (gy >= curb) & (gy <= far_curb)
    ground = np.where(road, 0.28, 0.55)
    boundaries = curb + lane_w * np.arange(1, 2 * lanes_each_way)
    near_line = np.min(np.abs(gy[..., None] - boundaries), axis=-1, initial=np.inf) < 0.12
    centre = np.abs(gy - (curb + lanes_each_way * lane_w)) < 0.2
    dashed = near_line & (np.mod(gx, 6.0) < 3.0)
    ground = np.where(road & (dashed | centre), 0.85, ground)
    albedo[on_ground] = ground[on_ground]
    depth[on_ground] = ground_depth[on_ground]

    wx, wz = uu * wall_y, wall_z
    window = (np.mod(wx, 3.0) > 1.0) & (np.mod(wz, 3.0) > 1.2) & (wz > 2.5)
    albedo[on_wall] = np.where(window, 0.22, 0.62)[on_wall]
    depth[on_wall] = wall_y
    # Which windows are lit at night: a fixed pattern from each window's grid cell.
    cell = np.floor(wx / 3.0) * 7919 + np.floor(wz / 3.0) * 104729
    lit = on_wall & window & (np.mod(cell * 0.6180339887, 1.0) < lit_fraction)
    return albedo, depth, sky, lit


def render_images(truth, lighting: np.ndarray, weather: np.ndarray, cfg: CameraConfig, street,
                  rng: np.random.Generator, fog_visibility_m: float | None = None) -> np.ndarray:
    """Render every frame of a pass: uint8 ``[F, 1, S, S]``.

    ``truth`` is a :class:`edgekd.host.data.scene.DriveTruth`; ``lighting``/``weather`` are
    per-frame codes (0 day/dusk/night 2; 0 clear/rain/fog 2).
    """
    albedo_bg, depth_bg, sky, lit = background(cfg, street)
    proj = projection(cfg)
    frames = truth.num_frames
    albedo = np.broadcast_to(albedo_bg, (frames,) + albedo_bg.shape).copy()
    depth = np.broadcast_to(depth_bg, albedo.shape).copy()
    lamps = np.zeros_like(albedo)
    for f in range(frames):
        _draw_vehicles(albedo[f], depth[f], lamps[f], truth, f, proj)

    lighting = np.asarray(lighting)
    weather = np.asarray(weather)
    gain = np.asarray(cfg.illumination)[lighting][:, None, None]
    image = np.where(sky, np.asarray(cfg.sky)[lighting][:, None, None], albedo * gain)
    night = (lighting == NIGHT)[:, None, None]
    image = image + np.where(night & lit, 0.5, 0.0)
    image = image + np.asarray(cfg.lamp_brightness)[lighting][:, None, None] * lamps

    if fog_visibility_m is None:
        fog_visibility_m = float(np.mean(cfg.fog_visibility_m))
    fog = (weather == FOG)[:, None, None]
    veil = 0.75 * np.asarray(cfg.sky)[lighting][:, None, None] + 0.05
    transmission = np.exp(-depth / fog_visibility_m)
    image = np.where(fog, image * transmission + veil * (1 - transmission), image)

    rain = (weather == RAIN)[:, None, None]
    mean = image.mean(axis=(1, 2), keepdims=True)
    image = np.where(rain, mean + cfg.rain_contrast * (image - mean), image)
    if np.any(rain):
        streaks = _rain_streaks(rng, image.shape)
        image = image + np.where(rain, streaks, 0.0)

    noise_std = np.asarray(cfg.noise_std)[lighting][:, None, None]
    image = image + noise_std * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)[:, None]


def _draw_vehicles(albedo: np.ndarray, depth: np.ndarray, lamps: np.ndarray, truth, f: int,
                   proj: _Projection) -> None:
    """Paint one frame's vehicles far to near: side, roof, windows, and their lamps."""
    n = proj.size
    xc, yc = truth.center[f, :, 0], truth.center[f, :, 1]
    length, width, height = truth.size[:, 0], truth.size[:, 1], truth.size[:, 2]
    face = yc - width / 2  # the side facing the camera
    u0 = proj.column(xc - length / 2, face)
    u1 = proj.column(xc + length / 2, face)
    visible = (face > 0.5) & (u1 > 0) & (u0 < n)
    order = np.argsort(-face)
    order = order[visible[order]]
    if order.size == 0:
        return
    # Plain Python floats from here: a handful of vehicles, where numpy scalars only cost time.
    focal, cv, cam_h = proj.focal, proj.cv, proj.height
    rows = lambda z, y: cv + focal * (cam_h - z) / y  # noqa: E731
    for k, xk, fk, wk, hk, lk, a_u, b_u, shade, vx in zip(
            order.tolist(), xc[order].tolist(), face[order].tolist(), width[order].tolist(),
            height[order].tolist(), length[order].tolist(), u0[order].tolist(), u1[order].tolist(),
            truth.shade[order].tolist(), truth.velocity_x[f, order].tolist()):
        a, b = _span(a_u, b_u, n)
        if a >= b:
            continue
        top, bottom = rows(hk, fk), rows(0.0, fk)
        r_roof, r_top = _span(rows(hk, fk + wk), top, n)
        r0, r1 = _span(top, bottom, n)
        if r_roof < r_top:  # roof seen from above, a little brighter than the side
            albedo[r_roof:r_top, a:b] = min(shade * 1.15, 1.0)
            depth[r_roof:r_top, a:b] = fk + wk / 2
        if r0 < r1:
            albedo[r0:r1, a:b] = shade
            depth[r0:r1, a:b] = fk
            # Side windows: a dark band in the upper part of the body (a row of them on buses).
            w0, w1 = _span(rows(hk * 0.85, fk), rows(hk * (0.6 if hk > 2.5 else 0.55), fk), n)
            inset = 0.15 * (b_u - a_u)
            c0, c1 = _span(a_u + inset, b_u - inset, n)
            if w0 < w1 and c0 < c1:
                albedo[w0:w1, c0:c1] = 0.12
        if k == 0 and truth.has_unit:
            _draw_unit(albedo, depth, lamps, truth, f, proj)
        heading = 1.0 if vx >= 0 else -1.0
        lamp_row = rows(0.7, fk)
        radius = max(0.6 * focal / fk, 1.0)
        _add_blob(lamps, proj.cu + focal * (xk + heading * lk / 2) / fk, lamp_row, radius, 1.0)
        _add_blob(lamps, proj.cu + focal * (xk - heading * lk / 2) / fk, lamp_row, radius * 0.6, 0.35)


UNIT_ALBEDO, UNIT_BAND_ALBEDO, UNIT_LAMP = 0.97, 0.08, 0.8


def _draw_unit(albedo: np.ndarray, depth: np.ndarray, lamps: np.ndarray, truth, f: int,
               proj: _Projection) -> None:
    """The receiver unit on the user's roof: a white box with a dark middle band, a lamp on top."""
    n = proj.size
    x, yc = float(truth.center[f, 0, 0]), float(truth.center[f, 0, 1])
    length, width, height = (float(v) for v in truth.unit)
    roof = float(truth.size[0, 2])
    face = yc - width / 2
    if face <= 0.5:
        return
    a, b = _span(proj.cu + proj.focal * (x - length / 2) / face, proj.cu + proj.focal * (x + length / 2) / face, n)
    row = lambda z: proj.cv + proj.focal * (proj.height - z) / face  # noqa: E731
    r0, r1 = _span(row(roof + height), row(roof), n)
    if a >= b or r0 >= r1:
        return
    albedo[r0:r1, a:b] = UNIT_ALBEDO
    depth[r0:r1, a:b] = face
    b0, b1 = _span(row(roof + 0.65 * height), row(roof + 0.35 * height), n)
    albedo[b0:b1, a:b] = UNIT_BAND_ALBEDO
    _add_blob(lamps, proj.cu + proj.focal * x / face, row(roof + height), max(0.3 * proj.focal / face, 1.0),
              UNIT_LAMP)


def _span(lo: float, hi: float, n: int) -> tuple[int, int]:
    """Pixel index range [a, b) covering the interval [lo, hi], clipped to the image."""
    return min(max(math.floor(lo), 0), n), min(max(math.ceil(hi), 0), n)


@functools.lru_cache(maxsize=64)
def _blob_kernel(radius_px: int) -> np.ndarray:
    r = np.arange(-2 * radius_px, 2 * radius_px + 1)
    g = np.exp(-0.5 * (r / max(radius_px, 1) * 1.5) ** 2)
    return np.outer(g, g)


def _add_blob(image: np.ndarray, u: float, v: float, radius: float, strength: float) -> None:
    n = image.shape[0]
    r = int(round(min(radius, n / 4)))
    kernel = _blob_kernel(r)
    cu, cv = int(round(u)), int(round(v))
    half = kernel.shape[0] // 2
    a0, a1 = max(cv - half, 0), min(cv + half + 1, n)
    b0, b1 = max(cu - half, 0), min(cu + half + 1, n)
    if a0 >= a1 or b0 >= b1:
        return
    image[a0:a1, b0:b1] += strength * kernel[a0 - cv + half:a1 - cv + half, b0 - cu + half:b1 - cu + half]


def _rain_streaks(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Short bright vertical streaks (falling drops), about 2 % of the pixels."""
    drops = (rng.random(shape, dtype=np.float32) < 0.02).astype(np.float32) * 0.15
    # Smear each drop over three rows to make streaks.
    return drops + np.roll(drops, 1, axis=-2) + np.roll(drops, 2, axis=-2)


def preprocess_image(img: np.ndarray, size: int) -> np.ndarray:
    """Any RGB(A) or gray uint8 image (``[H, W]``, ``[H, W, C]``) -> gray ``[1, size, size]`` uint8.

    Luma as Pillow's ``convert("L")`` computes it (ITU-R 601), then a bilinear
    resize with antialiasing. The aspect ratio is not kept: the frame is squeezed
    to a square, as the reference pipeline does.
    """
    from PIL import Image

    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        raise EdgekdError(f"expected a uint8 image, got {arr.dtype}", field="image",
                          fix="pass the camera frame as 8-bit (0..255) values")
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        pil = Image.fromarray(np.ascontiguousarray(arr))
    elif arr.ndim == 3 and arr.shape[-1] in (3, 4):
        pil = Image.fromarray(np.ascontiguousarray(arr[..., :3])).convert("L")
    else:
        raise EdgekdError(f"expected an image [H, W] or [H, W, 3|4], got shape {arr.shape}", field="image",
                          fix="pass a gray or RGB(A) frame, channels last")
    if size <= 0:
        raise EdgekdError(f"image size must be positive, got {size}", field="image_size",
                          fix="use e.g. 64 or 224")
    out = pil.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.uint8)[None]
