"""The synthetic beam-tracking scenario: drives of a street scene rendered into every modality.

``synthesize(cfg, windows=N, seed=S)`` simulates user passes (drives) until
they hold at least ``N`` windows (``window`` observed frames + ``future``
frames inside one drive, one window per start frame) and returns a
:class:`Recording`: per-frame sensor arrays, beam powers and labels, and
per-frame conditions. Drive ``d`` is simulated from its own generator seeded
with ``(seed, d)`` and every sensor draws from its own stream, so results are
byte-identical for the same inputs and one sensor's settings never change
another's samples (e.g. lighting cannot change the radar).

``simulate_drive(cfg, rng, n_frames=None, schedule=None)`` simulates one drive:
one pass of the user past the base station, or, with ``n_frames``, a long
drive past a row of identical base stations (pass after pass, continuous
time) whose conditions and sensor failures can follow a :class:`Schedule`.

The default configuration ships as ``edgekd/host/data/scenes/default.yaml``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import multiprocessing
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.device.config import config_to_dict, load_config
from edgekd.device.contracts import MODALITIES
from edgekd.device.errors import EdgekdError
from edgekd.host.data import camera as camera_mod
from edgekd.host.data import gps as gps_mod
from edgekd.host.data import lidar as lidar_mod
from edgekd.host.data import radar as radar_mod
from edgekd.host.data.camera import CameraConfig
from edgekd.host.data.channel import ArrayConfig, ChannelConfig, beam_powers, best_beam, normalise_rows, user_paths
from edgekd.host.data.gps import GpsConfig
from edgekd.host.data.lidar import LidarConfig
from edgekd.host.data.radar import RadarConfig
from edgekd.host.data.scene import DriveTruth, StreetConfig, TrafficConfig, UserConfig, simulate_pass
from edgekd.host.data.workers import one_thread_children, stop_pool, worker_init, workers_ignore_ctrl_c

log = logging.getLogger(__name__)

DEFAULT_SCENE = Path(__file__).with_name("scenes") / "default.yaml"
STREAMS = ("scene", "conditions", "channel", "image", "radar", "lidar", "gps", "availability")


@dataclasses.dataclass
class ConditionsConfig:
    """How lighting, weather and sensor dropouts vary across drives."""

    lighting_probs: tuple[float, float, float] = (0.5, 0.25, 0.25)  # day, dusk, night
    weather_probs: tuple[float, float, float] = (0.6, 0.25, 0.15)  # clear, rain, fog
    dropout_rate: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"image": 0.01, "radar": 0.005, "lidar": 0.005, "gps": 0.01})
    dropout_mean_frames: float = 3.0  # mean length of a dropout

    def __post_init__(self):
        for name in ("lighting_probs", "weather_probs"):
            probs = getattr(self, name)
            if any(p < 0 for p in probs) or not np.isclose(sum(probs), 1.0):
                raise ValueError(f"conditions.{name} must be 3 non-negative numbers summing to 1")
        unknown = set(self.dropout_rate) - set(MODALITIES)
        if unknown:
            raise ValueError(f"conditions.dropout_rate: unknown modality {sorted(unknown)[0]!r} "
                             f"(known: {', '.join(MODALITIES)})")
        if any(not 0 <= p <= 1 for p in self.dropout_rate.values()):
            raise ValueError("conditions.dropout_rate values must be in [0, 1]")
        if self.dropout_mean_frames < 1:
            raise ValueError("conditions.dropout_mean_frames must be >= 1")


@dataclasses.dataclass
class SceneConfig:
    """Everything about the synthetic scenario; defaults == ``scenes/default.yaml``."""

    frame_rate_hz: float = 10.0
    array: ArrayConfig = dataclasses.field(default_factory=ArrayConfig)
    channel: ChannelConfig = dataclasses.field(default_factory=ChannelConfig)
    street: StreetConfig = dataclasses.field(default_factory=StreetConfig)
    traffic: TrafficConfig = dataclasses.field(default_factory=TrafficConfig)
    user: UserConfig = dataclasses.field(default_factory=UserConfig)
    camera: CameraConfig = dataclasses.field(default_factory=CameraConfig)
    radar: RadarConfig = dataclasses.field(default_factory=RadarConfig)
    lidar: LidarConfig = dataclasses.field(default_factory=LidarConfig)
    gps: GpsConfig = dataclasses.field(default_factory=GpsConfig)
    conditions: ConditionsConfig = dataclasses.field(default_factory=ConditionsConfig)

    def __post_init__(self):
        if not 0 < self.frame_rate_hz <= 100:
            raise ValueError("frame_rate_hz must be in (0, 100]")


def load_scene_config(path: str | os.PathLike | None = None, **overrides: Any) -> SceneConfig:
    """A :class:`SceneConfig` from YAML (the shipped default when ``path`` is None)."""
    return load_config(SceneConfig, path if path is not None else DEFAULT_SCENE, **overrides)


# ---------------------------------------------------------------- schedules

@dataclasses.dataclass
class ScheduleSegment:
    """From ``start_s`` on (until the next segment): fixed conditions and forced sensor failures.

    ``None`` keeps the drive's own draw. ``unavailable`` sensors deliver nothing
    (e.g. ``("lidar",)`` for a LiDAR failure; a tunnel is ``lighting=1,
    unavailable=("gps",)``); ``dropout_rate`` overrides the random dropout rate of
    the named sensors (e.g. ``{"image": 0.2}`` for a flaky camera).
    """

    start_s: float
    lighting: int | None = None
    weather: int | None = None
    unavailable: tuple[str, ...] = ()
    dropout_rate: dict[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.lighting is not None and self.lighting not in (0, 1, 2):
            raise ValueError("schedule lighting must be 0 (day), 1 (dusk) or 2 (night)")
        if self.weather is not None and self.weather not in (0, 1, 2):
            raise ValueError("schedule weather must be 0 (clear), 1 (rain) or 2 (fog)")
        for name in (*self.unavailable, *self.dropout_rate):
            if name not in MODALITIES:
                raise ValueError(f"unknown modality {name!r} in schedule (known: {', '.join(MODALITIES)})")


@dataclasses.dataclass
class Schedule:
    """Conditions over time for a long drive: segments sorted by ``start_s``."""

    segments: tuple[ScheduleSegment, ...] = ()

    def __post_init__(self):
        starts = [s.start_s for s in self.segments]
        if starts != sorted(starts):
            raise ValueError("schedule segments must be sorted by start_s")

    def segment_index(self, time_s: np.ndarray) -> np.ndarray:
        """Index of the segment in force at each time (-1 before the first)."""
        starts = np.array([s.start_s for s in self.segments])
        # A frame stamped within a microsecond of a start belongs to the new segment (float stamps).
        return np.searchsorted(starts, np.asarray(time_s, dtype=np.float64) + 1e-6, side="right") - 1


# ---------------------------------------------------------------- recordings

@dataclasses.dataclass
class Recording:
    """Frames of one or more drives in time order (see the module doc and ``docs/CONTRACTS.md``)."""

    frames: dict[str, np.ndarray]
    power: np.ndarray
    beams: np.ndarray
    frame_info: dict[str, np.ndarray]
    config: dict
    seed: int

    @property
    def num_frames(self) -> int:
        return int(self.beams.shape[0])

    def drive_slices(self) -> list[slice]:
        """Frame ranges of each drive, in order."""
        drive = self.frame_info["drive"]
        cuts = np.flatnonzero(np.diff(drive)) + 1
        bounds = np.concatenate([[0], cuts, [drive.shape[0]]])
        return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def concat_recordings(parts: list[Recording]) -> Recording:
    """Join recordings in order (drive ids are kept as they are)."""
    if not parts:
        raise ValueError("nothing to concatenate")
    cat = lambda key, getter: np.concatenate([getter(p)[key] for p in parts])  # noqa: E731
    return Recording(
        frames={k: cat(k, lambda p: p.frames) for k in parts[0].frames},
        power=np.concatenate([p.power for p in parts]),
        beams=np.concatenate([p.beams for p in parts]),
        frame_info={k: cat(k, lambda p: p.frame_info) for k in parts[0].frame_info},
        config=parts[0].config,
        seed=parts[0].seed,
    )


def count_windows(frames_per_drive: np.ndarray | list[int], window: int = 8, future: int = 3) -> int:
    """Windows a set of drives holds: each start frame whose window and future fit in the drive."""
    need = window + future
    return int(sum(max(0, int(n) - need + 1) for n in frames_per_drive))


# ---------------------------------------------------------------- simulation

def synthesize(cfg: SceneConfig, windows: int, seed: int, image_size: int | None = 64, progress: bool = False,
               window: int = 8, future: int = 3, workers: int | None = None) -> Recording:
    """Simulate drives until they hold at least ``windows`` windows; deterministic in (cfg, seed, sizes).

    Drives too short for one window are skipped. ``workers``: processes to render
    drives in (0 = in this process; None = automatic: a process per core for
    large requests). The result does not depend on it: drive ``d`` always uses
    the generator seeded ``(seed, d)``.
    """
    if windows <= 0:
        raise EdgekdError(f"windows must be positive, got {windows}", field="windows", fix="pass --windows 1 or more")
    if image_size is not None and image_size <= 0:
        raise EdgekdError(f"image size must be positive, got {image_size}", field="image_size",
                          fix="pass e.g. --image-size 64")
    if image_size is not None:
        cfg = dataclasses.replace(cfg, camera=dataclasses.replace(cfg.camera, image_size=image_size))
    drives, gains = plan_drives(cfg, windows, seed, window, future)
    if workers is None:
        workers = min(os.cpu_count() or 1, 4) if windows >= 3000 else 0
    bar = _progress(windows, progress)
    parts = []
    for rec, gained in zip(_render_drives(cfg, seed, drives, workers), gains):
        parts.append(rec)
        bar.update(gained)
    bar.close()
    out = concat_recordings(parts)
    out.seed = seed
    log.info("synthesised %d drives, %d frames, %d windows", len(parts), out.num_frames, sum(gains))
    return out


def drive_rng(seed: int, drive: int) -> np.random.Generator:
    """The generator of drive ``drive`` of a dataset made with ``seed``."""
    return np.random.default_rng([seed, drive])


def plan_drives(cfg: SceneConfig, windows: int, seed: int, window: int = 8,
                future: int = 3) -> tuple[list[int], list[int]]:
    """Drive ids (and the windows each one holds) needed for ``windows`` windows.

    Only the scene stream decides a pass's length, so this replays just the
    traffic simulation (cheap) and renders nothing.
    """
    drives, gains, have, drive = [], [], 0, 0
    while have < windows:
        scene_rng = drive_rng(seed, drive).spawn(len(STREAMS))[STREAMS.index("scene")]
        truth = simulate_pass(cfg.street, cfg.traffic, cfg.user, cfg.array.codebook_fov_deg, cfg.frame_rate_hz,
                              scene_rng)
        gained = count_windows([truth.num_frames], window, future)
        if gained:
            drives.append(drive)
            gains.append(min(gained, windows - have))
            have += gained
        drive += 1
        if drive > 100 * (len(drives) + 10):
            raise EdgekdError("the scene's passes are too short to hold a window", field="user.speed_mps",
                              fix="lower the user's speed or widen the codebook's field of view")
    return drives, gains


def _render_one(args: tuple[SceneConfig, int, int]) -> Recording:
    cfg, seed, drive = args
    return simulate_drive(cfg, drive_rng(seed, drive), drive_id=drive)


def _render_drives(cfg: SceneConfig, seed: int, drives: list[int], workers: int):
    """Yield the rendered drives in order, in this process or in a pool of fresh processes."""
    jobs = [(cfg, seed, d) for d in drives]
    if workers <= 1:
        with _single_threaded_blas():
            yield from map(_render_one, jobs)
        return
    # Fresh (spawned) workers with single-threaded BLAS: the small matrix products
    # here gain nothing from BLAS threads, and on a busy machine those threads spin.
    ctx = multiprocessing.get_context("spawn")
    with one_thread_children():   # the pool starts its workers lazily: keep it for the whole run
        pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx, initializer=worker_init,
                                                      initargs=(os.getpid(),))
        try:
            with workers_ignore_ctrl_c():   # the workers are spawned inside map(): they inherit SIG_IGN
                results = pool.map(_render_one, jobs, chunksize=4)
            yield from results
        except BaseException:
            # Ctrl-C, an error or a consumer that stopped: drop the queued drives (a plain `with` would
            # render every one of them before letting the interrupt through)
            stop_pool(pool)
            raise
        pool.shutdown()


@contextlib.contextmanager
def _single_threaded_blas():
    """Limit BLAS to one thread in this process when threadpoolctl is installed (else a no-op)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def simulate_drive(cfg: SceneConfig, rng: np.random.Generator, n_frames: int | None = None,
                   schedule: Schedule | None = None, drive_id: int = 0) -> Recording:
    """One drive: a single pass, or ``n_frames`` of back-to-back passes following ``schedule``."""
    if n_frames is not None and n_frames <= 0:
        raise EdgekdError(f"n_frames must be positive, got {n_frames}", field="n_frames")
    # One independent stream per concern: changing one sensor's settings never shifts another's draws.
    streams = dict(zip(STREAMS, rng.spawn(len(STREAMS))))
    cond_rng = streams["conditions"]
    lighting = int(cond_rng.choice(3, p=cfg.conditions.lighting_probs))
    weather = int(cond_rng.choice(3, p=cfg.conditions.weather_probs))
    fog_visibility = float(cond_rng.uniform(*cfg.camera.fog_visibility_m))

    parts, done = [], 0
    while True:
        remaining = None if n_frames is None else n_frames - done
        truth = simulate_pass(cfg.street, cfg.traffic, cfg.user, cfg.array.codebook_fov_deg, cfg.frame_rate_hz,
                              streams["scene"], max_frames=remaining)
        # From the frame count, not a running sum: a sum drifts (9.9999 s) and a frame at a
        # segment's start would then take the previous segment's conditions.
        times = (done + np.arange(truth.num_frames)) / cfg.frame_rate_hz
        light = np.full(truth.num_frames, lighting, dtype=np.int8)
        weath = np.full(truth.num_frames, weather, dtype=np.int8)
        seg = schedule.segment_index(times) if schedule else np.full(truth.num_frames, -1)
        if schedule:
            for i, segment in enumerate(schedule.segments):
                here = seg == i
                if segment.lighting is not None:
                    light[here] = segment.lighting
                if segment.weather is not None:
                    weath[here] = segment.weather
        with _single_threaded_blas():
            parts.append(_render_pass(cfg, truth, times, light, weath, fog_visibility, streams))
        done += truth.num_frames
        if n_frames is None or done >= n_frames:
            break
    rec = concat_recordings(parts)
    rec.frame_info["drive"] = np.full(rec.num_frames, drive_id, dtype=np.int32)
    if n_frames is not None:
        # back-to-back passes are separate tracks (a new car enters the field of view): a model window
        # must not span two of them, as no dataset window does
        rec.frame_info["pass"] = np.repeat(np.arange(len(parts), dtype=np.int32), [p.num_frames for p in parts])
    _apply_availability(rec, cfg.conditions, streams["availability"], schedule)
    return rec


def _render_pass(cfg: SceneConfig, truth: DriveTruth, times: np.ndarray, lighting: np.ndarray,
                 weather: np.ndarray, fog_visibility: float, streams: dict) -> Recording:
    heights = truth.heights()
    paths, los_blocked = user_paths(truth.user_xy, truth.boxes()[:, 1:], heights[:, 1:], truth.wall_y,
                                    cfg.array, cfg.channel, streams["channel"])
    power = beam_powers(paths, cfg.array, cfg.channel, streams["channel"])
    frames = {
        "image": camera_mod.render_images(truth, lighting, weather, cfg.camera, cfg.street, streams["image"],
                                          fog_visibility_m=fog_visibility),
        "radar": radar_mod.render_radar(truth, cfg.radar, streams["radar"]),
        "lidar": (lidar_mod.render_lidar(truth, weather, cfg.lidar, streams["lidar"])
                  / np.float32(lidar_mod.STORAGE_SCALE_M)).astype(np.float32),
        "gps": (gps_mod.render_gps(truth.user_xy, cfg.gps, streams["gps"])
                / np.float32(gps_mod.STORAGE_SCALE_M)).astype(np.float32),
    }
    info: dict[str, np.ndarray] = {
        "drive": np.zeros(truth.num_frames, dtype=np.int32),
        "time_s": times.astype(np.float32),
        "lighting": lighting.astype(np.int8),
        "weather": weather.astype(np.int8),
        "los_blocked": los_blocked.astype(bool),
    }
    return Recording(frames=frames, power=normalise_rows(power), beams=best_beam(power), frame_info=info,
                     config=config_to_dict(cfg), seed=0)


def _apply_availability(rec: Recording, cond: ConditionsConfig, rng: np.random.Generator,
                        schedule: Schedule | None) -> None:
    """Random dropouts (a two-state Markov chain per sensor) plus scheduled failures.

    An unavailable frame is stored as zeros (what a dead sensor delivers), and
    its ``available_<modality>`` flag is False.
    """
    n = rec.num_frames
    seg = schedule.segment_index(rec.frame_info["time_s"]) if schedule else np.full(n, -1)
    recover = 1.0 / cond.dropout_mean_frames
    for name in MODALITIES:
        rate = np.full(n, cond.dropout_rate.get(name, 0.0))
        forced = np.zeros(n, dtype=bool)
        if schedule:
            for i, segment in enumerate(schedule.segments):
                here = seg == i
                if name in segment.dropout_rate:
                    rate[here] = segment.dropout_rate[name]
                if name in segment.unavailable:
                    forced |= here
        u = rng.random(n)
        up = np.empty(n, dtype=bool)
        state = True
        for i in range(n):
            state = (u[i] >= rate[i]) if state else (u[i] < recover)
            up[i] = state
        up &= ~forced
        rec.frame_info[f"available_{name}"] = up
        if not up.all():
            rec.frames[name][~up] = 0


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="synth", unit="win")
