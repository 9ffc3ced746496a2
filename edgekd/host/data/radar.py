"""FMCW radar: raw complex cubes synthesised from the scene, and the reference map processing.

Synthesis. After dechirping, a point target at range ``r``, range rate ``v``
and angle ``theta`` adds to the raw cube (Rx antenna ``n``, fast-time sample
``s``, chirp ``c``) the term
``a * exp(j 2 pi (m s / S + v c / (2 v_max) + n sin(theta) / 2))`` with
``m = r / range_resolution`` (the target's range bin) and half-wavelength Rx
spacing. The term is an outer product of three 1-D exponentials, so the sum
over targets is one complex matrix product per frame (``[Rx*S, P] @ [P, C]``).
Every vehicle contributes a few scattering centres on its side facing the
radar (radar-equation amplitude ``sqrt(rcs) / r^2``, Swerling-1 fluctuation,
attenuated when another vehicle hides it); the receiver unit on the user's
roof carries a corner reflector, a strong stable (Swerling 0) point target
that only vehicles taller than the unit can hide; the wall adds static clutter
(removed by the chirp-mean subtraction, as in real data); receiver noise is
complex Gaussian. Light and weather do not enter (rain loss is negligible
over tens of metres), so radar maps do not depend on them.

Processing (:func:`cube_to_maps`), as the reference does it: range FFT over
samples, keep the first ``range_bins`` bins, subtract the mean over chirps,
Doppler FFT over chirps, angle FFT over antennas zero-padded to
``angle_bins``, fftshift on angle and Doppler; range-angle map =
``log2(1 + mean |.| over Doppler)``; Doppler-angle map =
``log2(1 + mean |.| over the kept range bins)``, its Doppler axis linearly
resampled to ``range_bins`` rows when the chirp count differs (no-op at the
defaults 64 chirps / 64 range bins and at paper scale 128 / 128). The two maps
are stacked ``[2, R, A]``. Cropping the range bins before the Doppler and
angle FFTs gives the same numbers as cropping afterwards (both act per range
bin) and halves the work.

Storage (:func:`normalise_maps`): ``max(map - map_offset, 0) / map_scale`` as
float16, with fixed constants from :class:`RadarConfig` so a live frame on a
board is normalised exactly like the training set. Defaults (offset 5, scale
10) put the synthetic maps in about [0, 1]: the noise floor near 0.2-0.3, the
strongest vehicles near 0.8-1.0.

This module imports only numpy (scipy.fft is used when present, for speed):
the on-board runtime may reuse :func:`cube_to_maps`.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics

import numpy as np

try:  # scipy's pocketfft keeps complex64 and is several times faster on non-last axes
    from scipy import fft as _fft
except ImportError:  # pragma: no cover - boards without scipy
    _fft = np.fft


@dataclasses.dataclass
class RadarConfig:
    rx_antennas: int = 4
    samples: int = 128  # fast-time ADC samples per chirp (paper: 256)
    chirps: int = 64  # chirps per frame (paper: 128)
    range_bins: int = 64  # kept range bins = map rows (paper: 128)
    angle_bins: int = 32  # zero-padded angle FFT = map columns (paper: 64)
    range_resolution_m: float = 0.5  # metres per range bin
    max_velocity_mps: float = 25.0  # the Doppler FFT spans +-max_velocity (unambiguous)
    fov_deg: float = 120.0  # antenna field of view; targets outside are not seen
    points_per_vehicle: int = 3
    rcs_car_m2: float = 10.0
    rcs_tall_m2: float = 40.0
    rcs_receiver_m2: float = 100.0  # the corner reflector on the user's receiver unit (a ~15 cm trihedral at 77 GHz)
    snr_ref_db: float = 0.0  # per-sample SNR of a 10 m^2 target at 10 m
    occlusion_db: float = 25.0  # a scatterer hidden behind another vehicle
    wall_clutter_points: int = 6
    map_offset: float = 5.0
    map_scale: float = 10.0

    def __post_init__(self):
        for name in ("rx_antennas", "samples", "chirps", "range_bins", "angle_bins", "range_resolution_m",
                     "max_velocity_mps", "fov_deg", "points_per_vehicle", "map_scale"):
            if getattr(self, name) <= 0:
                raise ValueError(f"radar.{name} must be positive, got {getattr(self, name)!r}")
        if self.range_bins > self.samples:
            raise ValueError("radar.range_bins must be <= radar.samples")
        if self.angle_bins < self.rx_antennas:
            raise ValueError("radar.angle_bins must be >= radar.rx_antennas")

    @property
    def map_shape(self) -> tuple[int, int, int]:
        return (2, self.range_bins, self.angle_bins)


# ---------------------------------------------------------------- synthesis

def synthesize_cube(range_m: np.ndarray, range_rate_mps: np.ndarray, angle_rad: np.ndarray,
                    amplitude: np.ndarray, cfg: RadarConfig, rng: np.random.Generator,
                    noise: bool = True) -> np.ndarray:
    """Raw complex64 cubes ``[F, Rx, S, C]`` from point targets ``[F, P]`` (amplitude is complex).

    Targets beyond the unambiguous range (``samples * range_resolution``) are
    removed by the IF filter and targets outside the antenna's field of view
    are not illuminated, so both are dropped here.
    """
    rx, s, c = cfg.rx_antennas, cfg.samples, cfg.chirps
    frames = range_m.shape[0]
    live = ((range_m < s * cfg.range_resolution_m) & (np.abs(angle_rad) <= np.deg2rad(cfg.fov_deg) / 2)
            & (amplitude != 0))
    # Only the live targets take part in the product: move them first, trim the rest.
    order = np.argsort(~live, axis=1, kind="stable")[:, : max(int(live.sum(axis=1).max()), 1)]
    pick = lambda a: np.take_along_axis(a, order, axis=1)  # noqa: E731
    range_m, range_rate_mps, angle_rad, amplitude = map(pick, (range_m, range_rate_mps, angle_rad, amplitude))
    amplitude = np.where(pick(live), amplitude, 0)
    fast = _cis(2 * np.pi * (range_m / cfg.range_resolution_m / s)[..., None] * np.arange(s))  # [F, P, S]
    slow = _cis(np.pi * (range_rate_mps / cfg.max_velocity_mps)[..., None] * np.arange(c))  # [F, P, C]
    space = _cis(np.pi * np.sin(angle_rad)[..., None] * np.arange(rx))  # [F, P, Rx]
    left = (space[..., :, None] * fast[..., None, :]).reshape(frames, -1, rx * s)  # [F, P, Rx*S]
    right = slow * amplitude.astype(np.complex64)[..., None]
    cube = complex_matmul(left.transpose(0, 2, 1), right).reshape(frames, rx, s, c)
    if noise:
        cube += complex_gaussian(rng, cube.shape)
    return cube


def _cis(phase: np.ndarray) -> np.ndarray:
    """``exp(j phase)`` as complex64 (phases reduced in float64 first, so float32 keeps them exact)."""
    phase = np.mod(phase, 2 * np.pi).astype(np.float32)
    out = np.empty(phase.shape, dtype=np.complex64)
    out.real = np.cos(phase)
    out.imag = np.sin(phase)
    return out


def complex_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for complex64 stacks via one real product (BLAS sgemm is much faster than cgemm here).

    ``[Re a, Im a] @ [[Re b, Im b], [-Im b, Re b]]`` with the output columns
    interleaved (re, im) is exactly the complex product's memory layout.
    """
    a = np.ascontiguousarray(a, dtype=np.complex64)
    b = np.asarray(b, dtype=np.complex64)
    a2 = np.concatenate([a.real, a.imag], axis=-1)  # [..., M, 2K]
    b2 = np.empty(b.shape[:-2] + (2 * b.shape[-2], 2 * b.shape[-1]), dtype=np.float32)
    k = b.shape[-2]
    b2[..., :k, 0::2] = b.real
    b2[..., :k, 1::2] = b.imag
    b2[..., k:, 0::2] = -b.imag
    b2[..., k:, 1::2] = b.real
    out = np.matmul(a2, b2)
    return out.view(np.complex64)


@functools.lru_cache(maxsize=1)
def _gaussian_table() -> np.ndarray:
    # Inverse-CDF table at 2^16 equiprobable levels: a 16-bit-quantised normal
    # (tails cut at 4.3 sigma), drawn from random bytes, which is several times
    # faster than numpy's ziggurat for the millions of noise samples per second.
    inv = statistics.NormalDist().inv_cdf
    levels = (np.arange(1 << 16) + 0.5) / (1 << 16)
    table = np.array([inv(p) for p in levels], dtype=np.float32)
    return table / table.std()


def complex_gaussian(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Circular complex Gaussian noise with unit variance (``E|n|^2 = 1``), complex64."""
    count = int(np.prod(shape))
    idx = rng.integers(0, 1 << 16, size=2 * count, dtype=np.uint16)
    parts = _gaussian_table()[idx] * np.float32(np.sqrt(0.5))
    return parts.view(np.complex64).reshape(shape)


def vehicle_targets(truth, cfg: RadarConfig, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Scattering centres of every vehicle, per frame: ``(range, range_rate, angle, amplitude)`` ``[F, P]``.

    ``truth`` is a :class:`edgekd.host.data.scene.DriveTruth`. Points sit on the side
    facing the radar; a point whose line of sight crosses another vehicle is
    attenuated by ``occlusion_db`` (decided per vehicle, at the middle of that side).
    """
    from edgekd.host.data.channel import segment_box_crossing

    frames, k = truth.center.shape[:2]
    p = cfg.points_per_vehicle
    frac = np.linspace(-0.4, 0.4, p) if p > 1 else np.zeros(1)
    length, width = truth.size[:, 0], truth.size[:, 1]
    x = truth.center[..., 0][..., None] + frac * length[:, None]  # [F, K, P]
    y = np.broadcast_to((truth.center[..., 1] - width / 2)[..., None], x.shape)
    rng_m = np.hypot(x, y)
    angle = np.arctan2(x, y)
    # Vehicles move along x: range rate = velocity projected on the line of sight.
    rate = truth.velocity_x[..., None] * x / np.maximum(rng_m, 1e-3)

    tall = truth.size[:, 2] > 2.5
    rcs = np.where(tall, cfg.rcs_tall_m2, cfg.rcs_car_m2)[:, None] / p
    fluct = rng.exponential(1.0, size=x.shape)  # Swerling 1: exponential RCS per frame
    amp_ref = 10 ** (cfg.snr_ref_db / 20) * 10.0 ** 2 / np.sqrt(10.0)  # 10 m^2 at 10 m -> snr_ref
    amp = amp_ref * np.sqrt(rcs * fluct) / np.maximum(rng_m, 1.0) ** 2

    # Occlusion is decided per vehicle, at the middle of its visible side.
    middle = np.stack([truth.center[..., 0], truth.center[..., 1] - width / 2], axis=-1)  # [F, K, 2]
    hit, _ = segment_box_crossing(np.zeros_like(middle), middle, truth.boxes()[:, None])
    hidden = np.any(hit & ~np.eye(k, dtype=bool), axis=-1)  # another vehicle's box is in the way
    amp = amp * np.where(hidden, 10 ** (-cfg.occlusion_db / 20), 1.0)[..., None]
    phase = np.exp(2j * np.pi * rng.random(x.shape))
    flat = lambda a: a.reshape(frames, k * p)  # noqa: E731
    return flat(rng_m), flat(rate), flat(angle), flat(amp * phase)


def receiver_target(truth, cfg: RadarConfig, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """The corner reflector on the user's receiver unit: ``(range, range_rate, angle, amplitude)`` ``[F, 1]``.

    A trihedral's RCS is steady over a wide angle (no Swerling fluctuation); only
    vehicles taller than the unit stand between it and the radar. All-zero
    amplitude when the user has no unit or ``rcs_receiver_m2`` is 0.
    """
    from edgekd.host.data.channel import segment_box_crossing

    x = truth.user_xy[:, 0]
    y = truth.user_xy[:, 1] - truth.unit[1] / 2  # the unit's face towards the radar
    rng_m = np.hypot(x, y)
    rate = truth.velocity_x[:, 0] * x / np.maximum(rng_m, 1e-3)
    amp_ref = 10 ** (cfg.snr_ref_db / 20) * 10.0 ** 2 / np.sqrt(10.0)  # as in vehicle_targets
    amp = amp_ref * np.sqrt(cfg.rcs_receiver_m2) / np.maximum(rng_m, 1.0) ** 2 * float(truth.has_unit)
    face = np.stack([x, y], axis=-1)
    hit, _ = segment_box_crossing(np.zeros_like(face), face, truth.boxes())
    taller = truth.size[:, 2] >= truth.unit_top_m
    taller[0] = False
    hidden = np.any(hit & taller, axis=-1)
    amp = amp * np.where(hidden, 10 ** (-cfg.occlusion_db / 20), 1.0)
    phase = np.exp(2j * np.pi * rng.random(x.shape))
    col = lambda a: np.asarray(a, dtype=np.float64)[:, None]  # noqa: E731
    return col(rng_m), col(rate), np.arctan2(x, y)[:, None], (amp * phase)[:, None]


def wall_clutter(frames: int, wall_y: float, cfg: RadarConfig, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Static scatterers on the building wall (zero Doppler), fixed over a pass."""
    n = cfg.wall_clutter_points
    half = np.deg2rad(cfg.fov_deg) / 2
    angle = rng.uniform(-half, half, size=n)
    rng_m = wall_y / np.cos(angle)
    amp = 10 ** (cfg.snr_ref_db / 20) * 100 / np.sqrt(10) * np.sqrt(30.0) / rng_m ** 2
    amp = amp * np.exp(2j * np.pi * rng.random(n))
    tile = lambda a: np.broadcast_to(a, (frames, n))  # noqa: E731
    return tile(rng_m), tile(np.zeros(n)), tile(angle), tile(amp)


def render_radar(truth, cfg: RadarConfig, rng: np.random.Generator, chunk: int = 32) -> np.ndarray:
    """Normalised float16 maps ``[F, 2, R, A]`` of a pass (synthesis + processing, in chunks)."""
    targets = vehicle_targets(truth, cfg, rng)
    reflector = receiver_target(truth, cfg, rng)
    clutter = wall_clutter(truth.num_frames, truth.wall_y, cfg, rng)
    r, v, a, amp = (np.concatenate(parts, axis=1) for parts in zip(targets, reflector, clutter))
    out = np.empty((truth.num_frames,) + cfg.map_shape, dtype=np.float16)
    for start in range(0, truth.num_frames, chunk):
        sl = slice(start, start + chunk)
        cube = synthesize_cube(r[sl], v[sl], a[sl], amp[sl], cfg, rng)
        out[sl] = normalise_maps(cube_to_maps(cube, cfg.range_bins, cfg.angle_bins), cfg)
    return out


# ---------------------------------------------------------------- processing

def cube_to_maps(cube: np.ndarray, range_bins: int, angle_bins: int) -> np.ndarray:
    """Raw cubes ``[..., Rx, S, C]`` -> float32 maps ``[..., 2, range_bins, angle_bins]`` (see module doc).

    Channel 0: range-angle ``log2(1 + mean_doppler |X|)``; channel 1:
    Doppler-angle ``log2(1 + mean_range |X|)``, Doppler resampled to ``range_bins``
    rows. Vectorised over any leading batch axes.
    """
    cube = np.asarray(cube)
    if cube.ndim < 3:
        raise ValueError(f"cube must be [..., Rx, samples, chirps], got shape {cube.shape}")
    rx, samples, chirps = cube.shape[-3:]
    if not 0 < range_bins <= samples:
        raise ValueError(f"range_bins must be in 1..{samples}, got {range_bins}")
    if angle_bins < rx:
        raise ValueError(f"angle_bins must be >= the {rx} Rx antennas, got {angle_bins}")
    dtype = np.complex64 if cube.dtype in (np.complex64, np.float32) else np.complex128
    x = _fft.fft(cube.astype(dtype, copy=False), axis=-2)[..., :range_bins, :]  # range FFT, crop
    x = x - x.mean(axis=-1, keepdims=True)  # remove static returns (zero Doppler)
    x = _fft.fft(x, axis=-1)  # Doppler FFT
    # Angle FFT zero-padded to angle_bins, as an exact DFT matrix product over the Rx axis.
    dft = np.exp(-2j * np.pi * np.outer(np.arange(rx), np.arange(angle_bins)) / angle_bins)
    x = np.moveaxis(x, -3, -1)  # [..., R, C, Rx]
    if dtype == np.complex64:
        lead = x.shape[:-1]
        x = complex_matmul(x.reshape(-1, rx), dft).reshape(lead + (angle_bins,))  # [..., R, C, A]
    else:
        x = x @ dft
    mag = np.abs(x)
    range_angle = np.log2(1 + mag.mean(axis=-2))  # [..., R, A]
    doppler_angle = np.log2(1 + mag.mean(axis=-3))  # [..., C, A]
    range_angle = np.fft.fftshift(range_angle, axes=-1)
    doppler_angle = np.fft.fftshift(doppler_angle, axes=(-2, -1))
    doppler_angle = _resample_rows(doppler_angle, range_bins)
    return np.stack([range_angle, doppler_angle], axis=-3).astype(np.float32)


def _resample_rows(a: np.ndarray, rows: int) -> np.ndarray:
    """Linear interpolation along axis -2 to ``rows`` rows (identity when already that size)."""
    n = a.shape[-2]
    if n == rows:
        return a
    pos = np.linspace(0, n - 1, rows)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    w = (pos - lo)[:, None]
    return a[..., lo, :] * (1 - w) + a[..., hi, :] * w


def normalise_maps(maps: np.ndarray, cfg: RadarConfig | None = None, *, offset: float | None = None,
                   scale: float | None = None) -> np.ndarray:
    """``max(maps - offset, 0) / scale`` as float16, with the fixed constants of ``cfg`` (or given ones).

    Values below the offset lie far under the noise floor: in practice only the
    zero-Doppler row that the chirp-mean subtraction empties (log2(1 + 0) = 0).
    """
    cfg = cfg or RadarConfig()
    offset = cfg.map_offset if offset is None else offset
    scale = cfg.map_scale if scale is None else scale
    return (np.maximum(maps - offset, 0) / scale).astype(np.float16)


def range_bin_of(range_m: float, cfg: RadarConfig) -> int:
    """Map row of a target at ``range_m`` in the range-angle map."""
    return int(round(range_m / cfg.range_resolution_m))


def angle_bin_of(angle_rad: float, angle_bins: int) -> int:
    """Map column of a target at ``angle_rad`` after the shifted angle FFT."""
    return int(round(angle_bins / 2 + angle_bins * np.sin(angle_rad) / 2)) % angle_bins
