"""The mmWave channel between the base station and the user: paths, losses, beams.

Pure numpy functions, vectorised over a leading frame axis. The base station
carries a uniform linear array (ULA) along the street (x axis) whose boresight
looks across the street (+y); an angle ``theta`` is measured from boresight,
positive towards +x, so a point ``(x, y)`` is at ``theta = atan2(x, y)``.

The channel is a sum of discrete paths ``h = sum_p g_p a(theta_p)`` (LOS, the
wall's specular reflection found with the image method, weak diffuse paths);
every path's mean power comes from a link budget (free-space loss, oxygen
absorption, reflection loss, knife-edge blockage), and its complex gain gets
Rician small-scale fading. A beam sweep measures ``P_b = |w_b^H h + n_b|^2``
with independent receiver noise ``n_b`` per beam (each beam is measured in its
own slot of the sweep); the label is the argmax beam.
"""

from __future__ import annotations

import dataclasses

import numpy as np

SPEED_OF_LIGHT = 299_792_458.0
BOLTZMANN_DBM_PER_HZ = -174.0  # thermal noise density kT at 290 K


@dataclasses.dataclass
class ArrayConfig:
    """The base station's phased array and its beam codebook."""

    carrier_ghz: float = 60.0
    elements: int = 16
    spacing_wavelengths: float = 0.5
    num_beams: int = 64
    codebook_fov_deg: float = 120.0  # beams steered uniformly in angle over +-fov/2
    height_m: float = 3.0  # antenna height above the road

    def __post_init__(self):
        for name in ("carrier_ghz", "elements", "spacing_wavelengths", "num_beams", "codebook_fov_deg"):
            if getattr(self, name) <= 0:
                raise ValueError(f"array.{name} must be positive, got {getattr(self, name)!r}")
        if not 0 < self.codebook_fov_deg < 180:
            raise ValueError("array.codebook_fov_deg must be in (0, 180)")

    @property
    def wavelength_m(self) -> float:
        return SPEED_OF_LIGHT / (self.carrier_ghz * 1e9)


@dataclasses.dataclass
class ChannelConfig:
    """Link budget, propagation losses, fading and noise (the difficulty knobs live here too)."""

    tx_power_dbm: float = 30.0
    bandwidth_mhz: float = 400.0
    noise_figure_db: float = 9.0
    oxygen_db_per_km: float = 15.0  # 60 GHz oxygen absorption
    wall_reflection_loss_db: float = 7.0
    max_blockage_db: float = 40.0  # cap on the summed knife-edge losses of one path
    los_k_factor_db: float = 9.0  # Rician K of a clear LOS path
    blocked_k_factor_db: float = 0.0  # Rician K of a diffracted (blocked) path
    reflected_k_factor_db: float = 5.0
    diffuse_paths: int = 3  # weak Rayleigh paths scattered around the user
    diffuse_power_db: float = -15.0  # total diffuse power relative to the LOS power (blockage included)
    diffuse_spread_deg: float = 25.0  # their angular spread around the LOS angle
    user_height_m: float = 1.8  # receiver inside the roof-top receiver unit (roof 1.5 m, unit top 2.1 m)

    def __post_init__(self):
        for name in ("bandwidth_mhz", "max_blockage_db", "diffuse_spread_deg", "user_height_m"):
            if getattr(self, name) <= 0:
                raise ValueError(f"channel.{name} must be positive, got {getattr(self, name)!r}")
        if self.diffuse_paths < 0:
            raise ValueError("channel.diffuse_paths must be >= 0")

    @property
    def noise_dbm(self) -> float:
        return BOLTZMANN_DBM_PER_HZ + 10 * np.log10(self.bandwidth_mhz * 1e6) + self.noise_figure_db


# ---------------------------------------------------------------- array and codebook

def array_response(theta: np.ndarray, elements: int, spacing_wavelengths: float = 0.5) -> np.ndarray:
    """ULA steering vectors ``a(theta)[n] = exp(j 2 pi d n sin theta)``, shape ``theta.shape + (elements,)``.

    Not normalised: ``|a|^2 = elements`` so that a matched beam gives the full array gain.
    """
    theta = np.asarray(theta, dtype=np.float64)
    phase = 2 * np.pi * spacing_wavelengths * np.sin(theta)[..., None] * np.arange(elements)
    return np.exp(1j * phase)


def codebook_angles(num_beams: int, fov_deg: float) -> np.ndarray:
    """Steering angles (radians) of the codebook, increasing, uniformly spanning ``+-fov/2``."""
    half = np.deg2rad(fov_deg) / 2
    return np.linspace(-half, half, num_beams)


def codebook(cfg: ArrayConfig) -> np.ndarray:
    """Unit-norm beamforming vectors ``w_b``, shape ``[num_beams, elements]``."""
    angles = codebook_angles(cfg.num_beams, cfg.codebook_fov_deg)
    return array_response(angles, cfg.elements, cfg.spacing_wavelengths) / np.sqrt(cfg.elements)


def beam_gains(theta: np.ndarray, cfg: ArrayConfig) -> np.ndarray:
    """Power gain ``|w_b^H a(theta)|^2`` of every beam towards ``theta``: ``theta.shape + (num_beams,)``."""
    resp = array_response(theta, cfg.elements, cfg.spacing_wavelengths)
    return np.abs(resp @ codebook(cfg).conj().T) ** 2


# ---------------------------------------------------------------- losses

def free_space_loss_db(distance_m: np.ndarray, wavelength_m: float) -> np.ndarray:
    """Friis free-space path loss ``20 log10(4 pi d / lambda)``."""
    return 20 * np.log10(4 * np.pi * np.maximum(distance_m, 1e-3) / wavelength_m)


def knife_edge_loss_db(excess_height_m: np.ndarray, d1_m: np.ndarray, d2_m: np.ndarray,
                       wavelength_m: float) -> np.ndarray:
    """Single knife-edge diffraction loss (ITU-R P.526 approximation), 0 dB when the edge is well clear.

    ``excess_height_m`` is how far the obstacle's top rises above the ray (negative: below it);
    ``d1``/``d2`` are the distances from the two ends of the link to the obstacle.
    """
    d1 = np.maximum(d1_m, 1e-3)
    d2 = np.maximum(d2_m, 1e-3)
    nu = excess_height_m * np.sqrt(2 * (d1 + d2) / (wavelength_m * d1 * d2))
    loss = 6.9 + 20 * np.log10(np.sqrt((nu - 0.1) ** 2 + 1) + nu - 0.1)
    return np.where(nu > -0.78, np.maximum(loss, 0.0), 0.0)


# ---------------------------------------------------------------- geometry helpers

def segment_box_crossing(start: np.ndarray, end: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where 2-D segments cross axis-aligned boxes (slab test).

    ``start``/``end``: ``[..., 2]`` segment end points; ``boxes``: ``[..., K, 4]`` as
    ``(x0, y0, x1, y1)``, broadcast against the segments' leading axes. Returns
    ``(hit [..., K] bool, s_exit [..., K])``: whether the segment passes through the
    box and the fraction along the segment where it leaves it (the lowest point of a
    descending ray inside the box, i.e. its most obstructed point).
    """
    p = start[..., None, :]
    d = (end - start)[..., None, :]
    lo = boxes[..., :2]
    hi = boxes[..., 2:]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / np.where(d == 0, np.inf, d)  # zero direction: the slab is hit iff p is inside it
        t0 = (lo - p) * inv
        t1 = (hi - p) * inv
    inside = (p >= lo) & (p <= hi)
    t_min = np.where(d == 0, np.where(inside, -np.inf, np.inf), np.minimum(t0, t1))
    t_max = np.where(d == 0, np.where(inside, np.inf, -np.inf), np.maximum(t0, t1))
    enter = np.max(t_min, axis=-1)
    leave = np.min(t_max, axis=-1)
    hit = (enter <= leave) & (leave > 0) & (enter < 1)
    return hit, np.clip(leave, 0.0, 1.0)


def blockage_loss_db(start: np.ndarray, end: np.ndarray, start_h: float, end_h: float,
                     boxes: np.ndarray, box_heights: np.ndarray, wavelength_m: float,
                     cap_db: float) -> tuple[np.ndarray, np.ndarray]:
    """Summed knife-edge loss of every box a ray crosses, capped at ``cap_db``.

    The ray descends linearly from height ``start_h`` to ``end_h``; a box is an
    obstacle of height ``box_heights`` (``[..., K]``). Returns ``(loss_db [...],
    geometrically_blocked [...])``; the latter is True when some box crossing the
    ray in plan view rises above the ray.
    """
    hit, s = segment_box_crossing(start, end, boxes)
    length = np.linalg.norm(end - start, axis=-1)[..., None]
    ray_h = start_h + s * (end_h - start_h)
    excess = box_heights - ray_h
    loss = knife_edge_loss_db(excess, s * length, (1 - s) * length, wavelength_m)
    loss = np.where(hit, loss, 0.0).sum(axis=-1)
    blocked = np.any(hit & (excess > 0), axis=-1)
    return np.minimum(loss, cap_db), blocked


def mirror_boxes(boxes: np.ndarray, wall_y: float) -> np.ndarray:
    """Boxes mirrored in the wall ``y = wall_y`` (image method: the reflected leg becomes straight)."""
    x0, y0, x1, y1 = np.moveaxis(boxes, -1, 0)
    return np.stack([x0, 2 * wall_y - y1, x1, 2 * wall_y - y0], axis=-1)


# ---------------------------------------------------------------- paths -> beam powers

@dataclasses.dataclass
class Paths:
    """Discrete propagation paths per frame: angles (rad) and mean powers (mW), ``[F, P]``."""

    angle: np.ndarray
    power_mw: np.ndarray
    k_factor: np.ndarray  # linear Rician K per path (0 = Rayleigh, inf = no fading)


def user_paths(user_xy: np.ndarray, blockers: np.ndarray, blocker_heights: np.ndarray, wall_y: float,
               array: ArrayConfig, chan: ChannelConfig, rng: np.random.Generator | None,
               fading: bool = True) -> tuple[Paths, np.ndarray]:
    """LOS + wall reflection (+ diffuse) paths to the user in every frame.

    ``user_xy``: ``[F, 2]``; ``blockers``: ``[F, K, 4]`` boxes of the other vehicles
    with heights ``[F, K]`` (the user's own car excluded). Returns the paths and
    ``los_blocked [F]`` (a vehicle rises above the LOS ray).
    """
    lam = array.wavelength_m
    frames = user_xy.shape[0]
    origin = np.zeros_like(user_xy)
    los_dist = np.linalg.norm(user_xy, axis=-1)
    los_angle = np.arctan2(user_xy[:, 0], user_xy[:, 1])
    los_block, los_blocked = blockage_loss_db(origin, user_xy, array.height_m, chan.user_height_m,
                                              blockers, blocker_heights, lam, chan.max_blockage_db)

    image = np.stack([user_xy[:, 0], 2 * wall_y - user_xy[:, 1]], axis=-1)
    ref_dist = np.linalg.norm(image, axis=-1)
    ref_angle = np.arctan2(image[:, 0], image[:, 1])
    both = np.concatenate([blockers, mirror_boxes(blockers, wall_y)], axis=-2)
    both_h = np.concatenate([blocker_heights, blocker_heights], axis=-1)
    ref_block, _ = blockage_loss_db(origin, image, array.height_m, chan.user_height_m,
                                    both, both_h, lam, chan.max_blockage_db)

    def rx_dbm(dist, extra_db):
        return chan.tx_power_dbm - free_space_loss_db(dist, lam) - chan.oxygen_db_per_km * dist / 1e3 - extra_db

    angles = [los_angle, ref_angle]
    powers = [rx_dbm(los_dist, los_block), rx_dbm(ref_dist, chan.wall_reflection_loss_db + ref_block)]
    k_los = np.where(los_blocked, _db_to_lin(chan.blocked_k_factor_db), _db_to_lin(chan.los_k_factor_db))
    k_ref = np.full(frames, _db_to_lin(chan.reflected_k_factor_db))
    ks = [k_los, k_ref]
    if chan.diffuse_paths and rng is not None:
        spread = np.deg2rad(chan.diffuse_spread_deg)
        offsets = rng.uniform(-spread, spread, size=(frames, chan.diffuse_paths))
        # Scatterers near the user sit behind the same blocker as the user, so they share its loss.
        each_db = rx_dbm(los_dist, los_block)[:, None] + chan.diffuse_power_db - 10 * np.log10(chan.diffuse_paths)
        angles += list((los_angle[:, None] + offsets).T)
        powers += list(np.broadcast_to(each_db, offsets.shape).T)
        ks += [np.zeros(frames)] * chan.diffuse_paths
    paths = Paths(angle=np.stack(angles, axis=-1), power_mw=_db_to_lin(np.stack(powers, axis=-1)),
                  k_factor=np.stack(ks, axis=-1))
    if not fading:
        paths.k_factor = np.full_like(paths.k_factor, np.inf)
    return paths, los_blocked


def path_gains(paths: Paths, rng: np.random.Generator) -> np.ndarray:
    """Complex gains with Rician fading: a fixed-amplitude specular part with a random phase
    plus a Rayleigh part, split by the K-factor; mean power equals ``power_mw``."""
    shape = paths.power_mw.shape
    k = paths.k_factor
    with np.errstate(invalid="ignore"):  # inf / inf where there is no fading; replaced below
        specular = np.where(np.isinf(k), 1.0, np.sqrt(k / (k + 1)))
    diffuse_std = np.where(np.isinf(k), 0.0, np.sqrt(1 / (k + 1)))
    phase = np.exp(1j * rng.uniform(0, 2 * np.pi, size=shape))
    scatter = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2)
    return np.sqrt(paths.power_mw) * (specular * phase + diffuse_std * scatter)


def beam_powers(paths: Paths, array: ArrayConfig, chan: ChannelConfig, rng: np.random.Generator,
                noise: bool = True) -> np.ndarray:
    """Measured power of every beam, ``[F, num_beams]`` in mW: ``|w_b^H h + n_b|^2``."""
    gains = path_gains(paths, rng)
    steer = array_response(paths.angle, array.elements, array.spacing_wavelengths)  # [F, P, N]
    h = np.einsum("fp,fpn->fn", gains, steer)
    y = h @ codebook(array).conj().T  # [F, B] = w_b^H h
    if noise:
        sigma = np.sqrt(_db_to_lin(chan.noise_dbm) / 2)
        y = y + sigma * (rng.standard_normal(y.shape) + 1j * rng.standard_normal(y.shape))
    return np.abs(y) ** 2


def normalise_rows(power: np.ndarray) -> np.ndarray:
    """Each row divided by its max (the stored power format), float32."""
    return (power / np.max(power, axis=-1, keepdims=True)).astype(np.float32)


def best_beam(power: np.ndarray) -> np.ndarray:
    """Label: argmax beam (0-based), int64."""
    return np.argmax(power, axis=-1).astype(np.int64)


def _db_to_lin(db):
    return 10.0 ** (np.asarray(db, dtype=np.float64) / 10)
