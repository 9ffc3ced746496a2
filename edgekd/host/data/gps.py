"""GPS of the user's car relative to the base station (metres, plan view).

A real receiver's error has a slowly varying part (satellite geometry,
multipath off the buildings) and a fast part; here a bias drawn once per pass
plus white noise per fix. Stored in metres / 100: see :data:`STORAGE_SCALE_M`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

STORAGE_SCALE_M = 100.0  # stored value = metres / 100


@dataclasses.dataclass
class GpsConfig:
    noise_m: float = 0.5  # white noise per axis, per fix
    bias_m: float = 0.5  # per-pass bias per axis

    def __post_init__(self):
        if self.noise_m < 0 or self.bias_m < 0:
            raise ValueError("gps.noise_m and gps.bias_m must be >= 0")


def render_gps(user_xy: np.ndarray, cfg: GpsConfig, rng: np.random.Generator) -> np.ndarray:
    """Noisy fixes ``[F, 2]`` (x along the street, y across), metres, float32."""
    bias = cfg.bias_m * rng.standard_normal(2)
    noise = cfg.noise_m * rng.standard_normal(user_xy.shape)
    return (user_xy + bias + noise).astype(np.float32)
