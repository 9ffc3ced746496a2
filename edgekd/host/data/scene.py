"""Street geometry and traffic: the ground truth every sensor and the channel are rendered from.

Coordinates (metres, plan view): the base station stands at the origin on the
near roadside; the street runs along x; y grows across the street, away from
the base station. Lanes are numbered from the near curb: the near half drives
towards +x, the far half towards -x. A building wall along ``y = wall_y`` on
the far side of the street gives the specular reflection. Vehicles are boxes
aligned with the street (length along x).

One *pass* is the user's car crossing the base station's field of view, from
a little before the codebook's first beam to a little after its last; it is
sampled at the frame rate (10 Hz by default).

What makes the beam a function of the sensor data (as in DeepSense 6G
scenarios 8 and 9, where the receiving vehicle is the dominant target near the
base station): by default the user drives in the lanes nearest the base
station (``user.lanes``), and it carries the *receiver unit* on its roof, a
box holding the mmWave receiver, a radar corner reflector and a marker light
(DeepSense's test vehicle carried its sensor rack the same way). Every sensor
renders that unit (``DriveTruth.unit``): the camera sees a white box with a
dark band and a lamp, the radar a strong stable return, the LiDAR a return
above car-roof height. Other traffic is light; trucks and buses (the LOS
blockers) drive in every lane, so the LOS to a user in the second lane is
blocked when one passes in the first, and the reflected path when one passes
in the far lanes.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class StreetConfig:
    curb_offset_m: float = 3.0  # base station to near curb
    lane_width_m: float = 3.5
    lanes_each_way: int = 2
    sidewalk_m: float = 4.0  # far curb to the building wall
    wall_height_m: float = 12.0

    def __post_init__(self):
        for name in ("curb_offset_m", "lane_width_m", "lanes_each_way", "sidewalk_m", "wall_height_m"):
            if getattr(self, name) <= 0:
                raise ValueError(f"street.{name} must be positive, got {getattr(self, name)!r}")

    @property
    def num_lanes(self) -> int:
        return 2 * self.lanes_each_way

    @property
    def far_curb_m(self) -> float:
        return self.curb_offset_m + self.num_lanes * self.lane_width_m

    @property
    def wall_y(self) -> float:
        return self.far_curb_m + self.sidewalk_m

    def lane_center(self, lane: np.ndarray | int) -> np.ndarray:
        return self.curb_offset_m + (np.asarray(lane) + 0.5) * self.lane_width_m

    def lane_direction(self, lane: np.ndarray | int) -> np.ndarray:
        """+1 for the near half (driving towards +x), -1 for the far half."""
        return np.where(np.asarray(lane) < self.lanes_each_way, 1.0, -1.0)


@dataclasses.dataclass
class TrafficConfig:
    """Other vehicles. ``density_per_100m`` and ``tall_fraction`` set how often the LOS is blocked."""

    density_per_100m: float = 2.0  # mean vehicles per 100 m of lane
    tall_fraction: float = 0.4  # trucks and buses, tall enough to block the LOS
    speed_mps: tuple[float, float] = (5.0, 20.0)
    max_accel_mps2: float = 1.0
    min_gap_m: float = 4.0
    car_length_m: tuple[float, float] = (3.8, 5.0)
    car_width_m: float = 1.8
    car_height_m: tuple[float, float] = (1.4, 1.7)
    tall_length_m: tuple[float, float] = (8.0, 12.0)
    tall_width_m: float = 2.5
    tall_height_m: tuple[float, float] = (3.2, 4.2)

    def __post_init__(self):
        if self.density_per_100m < 0:
            raise ValueError("traffic.density_per_100m must be >= 0")
        if not 0 <= self.tall_fraction <= 1:
            raise ValueError("traffic.tall_fraction must be in [0, 1]")
        for name in ("speed_mps", "car_length_m", "car_height_m", "tall_length_m", "tall_height_m"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"traffic.{name} must be (low, high) with 0 < low <= high")


@dataclasses.dataclass
class UserConfig:
    """The user's car (the receiver) and the receiver unit on its roof."""

    speed_mps: tuple[float, float] = (5.0, 20.0)
    max_accel_mps2: float = 1.0
    lanes: tuple[int, ...] = (0, 1)  # lanes the user may drive in (0 = nearest the base station); empty = all
    margin_deg: float = -3.0  # a pass starts/ends this far outside the codebook's field of view (negative: inside)
    length_m: float = 4.5
    width_m: float = 1.8
    height_m: float = 1.5
    # The receiver unit on the roof (receiver, radar corner reflector, marker light); all zero = none.
    unit_length_m: float = 1.2
    unit_width_m: float = 1.0
    unit_height_m: float = 0.6

    def __post_init__(self):
        lo, hi = self.speed_mps
        if not 0 < lo <= hi:
            raise ValueError("user.speed_mps must be (low, high) with 0 < low <= high")
        for name in ("unit_length_m", "unit_width_m", "unit_height_m"):
            if getattr(self, name) < 0:
                raise ValueError(f"user.{name} must be >= 0, got {getattr(self, name)!r}")

    @property
    def unit(self) -> np.ndarray:
        """(length, width, height) of the receiver unit."""
        return np.array([self.unit_length_m, self.unit_width_m, self.unit_height_m], dtype=np.float64)


@dataclasses.dataclass
class DriveTruth:
    """Ground truth of one pass: every vehicle's box in every frame. Vehicle 0 is the user."""

    time_s: np.ndarray  # [F]
    center: np.ndarray  # [F, K, 2] box centres (x, y)
    velocity_x: np.ndarray  # [F, K] signed speed along the street
    size: np.ndarray  # [K, 3] length, width, height
    shade: np.ndarray  # [K] paint brightness in [0, 1] (camera)
    wall_y: float
    # Receiver unit on vehicle 0's roof: (length, width, height); zeros = none.
    unit: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(3))

    @property
    def num_frames(self) -> int:
        return self.time_s.shape[0]

    @property
    def has_unit(self) -> bool:
        return bool(np.all(np.asarray(self.unit) > 0))

    @property
    def unit_top_m(self) -> float:
        """Height of the receiver unit's top above the road."""
        return float(self.size[0, 2] + self.unit[2])

    def unit_boxes(self) -> np.ndarray:
        """``[F, 4]`` plan box (x0, y0, x1, y1) of the receiver unit, centred on the user's roof."""
        half = np.asarray(self.unit[:2], dtype=np.float64) / 2
        return np.concatenate([self.user_xy - half, self.user_xy + half], axis=-1)

    @property
    def user_xy(self) -> np.ndarray:
        return self.center[:, 0]

    def boxes(self) -> np.ndarray:
        """``[F, K, 4]`` as (x0, y0, x1, y1)."""
        half = self.size[None, :, :2] / 2
        return np.concatenate([self.center - half, self.center + half], axis=-1)

    def heights(self) -> np.ndarray:
        return np.broadcast_to(self.size[:, 2], self.center.shape[:2])


def pass_x_limits(lane_y: float, direction: float, array_fov_deg: float, margin_deg: float) -> tuple[float, float]:
    """Start and end x of a pass in a lane at ``lane_y``: the angles ``-+(fov/2 + margin)``."""
    reach = lane_y * np.tan(np.deg2rad(min(array_fov_deg / 2 + margin_deg, 85.0)))
    return (-direction * reach, direction * reach)


def simulate_pass(street: StreetConfig, traffic: TrafficConfig, user: UserConfig, array_fov_deg: float,
                  frame_rate_hz: float, rng: np.random.Generator, view_range_m: float = 60.0,
                  max_frames: int | None = None) -> DriveTruth:
    """One pass of the user's car through the field of view, with traffic in every lane.

    Vehicles in the user's lane drive at the user's speed (a platoon, so nobody
    runs into anybody); every other lane has its own speed. Only vehicles that come
    within ``view_range_m`` of the base station during the pass are kept.
    """
    lanes = np.array(user.lanes if user.lanes else range(street.num_lanes))
    if np.any((lanes < 0) | (lanes >= street.num_lanes)):
        raise ValueError(f"user.lanes must be in 0..{street.num_lanes - 1}")
    user_lane = int(rng.choice(lanes))
    direction = float(street.lane_direction(user_lane))
    x_start, x_end = pass_x_limits(float(street.lane_center(user_lane)), direction, array_fov_deg,
                                   user.margin_deg)

    distance = abs(x_end - x_start)
    t, user_travel, user_speed = _user_timeline(user, distance, frame_rate_hz, rng, max_frames)
    span = float(user_travel[-1]) + view_range_m
    fleet = _Fleet(street)
    fleet.add(user_lane, x_start, user_travel, user_speed, user.length_m, user.width_m, user.height_m,
              rng.uniform(0.3, 0.9))
    for lane in range(street.num_lanes):
        d = float(street.lane_direction(lane))
        if lane == user_lane:
            # Behind and ahead of the user, leaving room for its own box.
            for side in (-1.0, 1.0):
                edge = x_start + side * d * user.length_m / 2
                for offset, tall, length in _platoon(traffic, rng, span + distance):
                    kind = _vehicle(traffic, rng, tall, length)
                    fleet.add(lane, edge + side * d * (offset + length / 2), user_travel, user_speed, *kind)
            continue
        v0 = rng.uniform(*traffic.speed_mps)
        acc = rng.uniform(-traffic.max_accel_mps2, traffic.max_accel_mps2)
        travel = _travel(t, v0, acc, traffic.speed_mps)
        speed = np.clip(v0 + acc * t, *traffic.speed_mps)
        # Start upstream far enough that the lane is populated in view for the whole pass.
        upstream = float(travel[-1]) + view_range_m
        for offset, tall, length in _platoon(traffic, rng, upstream + view_range_m):
            kind = _vehicle(traffic, rng, tall, length)
            fleet.add(lane, -d * upstream + d * (offset + length / 2), travel, speed, *kind)
    return fleet.truth(t, street, user, view_range_m)


def _user_timeline(user: UserConfig, distance: float, frame_rate_hz: float, rng: np.random.Generator,
                   max_frames: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times, distance driven, speed) of the user's car over the pass (draws its speed and acceleration)."""
    user_v0 = rng.uniform(*user.speed_mps)
    user_acc = rng.uniform(-user.max_accel_mps2, user.max_accel_mps2)
    slowest = max(min(user.speed_mps[0], user_v0 - user.max_accel_mps2 * 10), 1.0)
    horizon = int(np.ceil(distance / slowest * frame_rate_hz)) + 2
    t = np.arange(horizon) / frame_rate_hz
    user_travel = _travel(t, user_v0, user_acc, user.speed_mps)
    frames = int(np.searchsorted(user_travel, distance, side="right"))
    frames = max(frames, 2)
    if max_frames is not None:
        frames = min(frames, max_frames)
    t = t[:frames]
    return t, user_travel[:frames], np.clip(user_v0 + user_acc * t, *user.speed_mps)


class _Fleet:
    """The vehicles of one pass (the user's car first), collected lane by lane."""

    def __init__(self, street: StreetConfig):
        self.street = street
        self.lengths: list[float] = []
        self.widths: list[float] = []
        self.heights: list[float] = []
        self.shades: list[float] = []
        self.xs: list[np.ndarray] = []
        self.vxs: list[np.ndarray] = []
        self.ys: list[float] = []

    def add(self, lane: int, x0: float, travel: np.ndarray, speed: np.ndarray, length: float, width: float,
            height: float, shade: float) -> None:
        d = float(self.street.lane_direction(lane))
        self.lengths.append(length)
        self.widths.append(width)
        self.heights.append(height)
        self.shades.append(shade)
        self.xs.append(x0 + d * travel)
        self.vxs.append(d * speed)
        self.ys.append(float(self.street.lane_center(lane)))

    def truth(self, t: np.ndarray, street: StreetConfig, user: UserConfig, view_range_m: float) -> DriveTruth:
        """The pass, keeping only vehicles that come within ``view_range_m`` of the base station."""
        x = np.stack(self.xs, axis=1)
        vx = np.stack(self.vxs, axis=1)
        y = np.broadcast_to(np.array(self.ys), x.shape)
        keep = np.min(np.abs(x), axis=0) < view_range_m
        keep[0] = True
        size = np.stack([self.lengths, self.widths, self.heights], axis=1)[keep]
        return DriveTruth(time_s=t.astype(np.float64), center=np.stack([x, y], axis=-1)[:, keep],
                          velocity_x=vx[:, keep], size=size, shade=np.array(self.shades)[keep],
                          wall_y=street.wall_y, unit=user.unit)


def _travel(t: np.ndarray, v0: float, acc: float, speed_range: tuple[float, float]) -> np.ndarray:
    """Distance driven at times ``t`` with constant acceleration, speed clamped to the range."""
    speed = np.clip(v0 + acc * t, *speed_range)
    dt = np.diff(t, prepend=t[0])
    return np.cumsum(speed * dt)


def _platoon(traffic: TrafficConfig, rng: np.random.Generator, extent: float):
    """Yield (offset of the rear bumper from the lane start, tall, length) along ``extent`` metres."""
    if traffic.density_per_100m <= 0:
        return
    mean_gap = max(100.0 / traffic.density_per_100m, traffic.min_gap_m + 1.0)
    pos = rng.exponential(mean_gap / 2)
    while pos < extent:
        tall = rng.random() < traffic.tall_fraction
        length = rng.uniform(*(traffic.tall_length_m if tall else traffic.car_length_m))
        yield pos, tall, length
        pos += length + traffic.min_gap_m + rng.exponential(max(mean_gap - traffic.min_gap_m - 5.0, 1.0))


def _vehicle(traffic: TrafficConfig, rng: np.random.Generator, tall: bool, length: float):
    """(length, width, height, shade) of a car or a tall vehicle (truck, bus)."""
    if tall:
        return length, traffic.tall_width_m, rng.uniform(*traffic.tall_height_m), rng.uniform(0.4, 0.95)
    return length, traffic.car_width_m, rng.uniform(*traffic.car_height_m), rng.uniform(0.1, 0.95)
