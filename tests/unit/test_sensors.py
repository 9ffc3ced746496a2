"""Sensors rendered from the scene: camera, radar, LiDAR, GPS, and the shared preprocessing."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.device.errors import EdgekdError
from edgekd.host.data import lidar as lidar_mod
from edgekd.host.data.camera import (
    CameraConfig,
    preprocess_image,
    projection,
    render_images,
)
from edgekd.host.data.gps import GpsConfig, render_gps
from edgekd.host.data.lidar import (
    LidarConfig,
    cast_rays,
    points_to_bins,
    render_lidar,
    scene_to_sensor,
)
from edgekd.host.data.radar import (
    RadarConfig,
    angle_bin_of,
    complex_gaussian,
    cube_to_maps,
    range_bin_of,
    render_radar,
    synthesize_cube,
)
from edgekd.host.data.scene import DriveTruth, StreetConfig
from edgekd.host.data.synth import (
    SceneConfig,
    Schedule,
    ScheduleSegment,
    simulate_drive,
    synthesize,
)

STREET = StreetConfig()


def truth_of(vehicles: list[tuple[float, int, float, float, float]], frames: int = 4) -> DriveTruth:
    """Vehicles as (x, lane, length, height, speed), static positions over ``frames``."""
    center = np.array([[(x, float(STREET.lane_center(lane))) for x, lane, *_ in vehicles]] * frames)
    size = np.array([(length, 2.5 if height > 2.5 else 1.8, height) for _, _, length, height, _ in vehicles])
    vx = np.array([[speed for *_, speed in vehicles]] * frames)
    return DriveTruth(time_s=np.arange(frames) / 10.0, center=center.reshape(frames, len(vehicles), 2),
                      velocity_x=vx.reshape(frames, len(vehicles)), size=size.reshape(len(vehicles), 3),
                      shade=np.full(len(vehicles), 0.8), wall_y=STREET.wall_y)


def with_unit(truth: DriveTruth, unit=(1.2, 1.0, 0.6)) -> DriveTruth:
    """The same scene with the receiver unit on vehicle 0's roof."""
    truth.unit = np.array(unit, dtype=float)
    return truth


@pytest.fixture(scope="module")
def rec():
    return synthesize(SceneConfig(), windows=60, seed=2, image_size=64)


# ---------------------------------------------------------------- shapes, dtypes, ranges

def test_recording_shapes_dtypes_and_ranges(rec):
    f = rec.num_frames
    image, radar, lidar, gps = (rec.frames[k] for k in ("image", "radar", "lidar", "gps"))
    assert image.shape == (f, 1, 64, 64) and image.dtype == np.uint8
    assert radar.shape == (f, 2, 64, 32) and radar.dtype == np.float16
    assert lidar.shape == (f, 216) and lidar.dtype == np.float32
    assert gps.shape == (f, 2) and gps.dtype == np.float32
    assert rec.power.shape == (f, 64) and rec.power.dtype == np.float32
    assert rec.beams.dtype == np.int64 and rec.beams.min() >= 0 and rec.beams.max() < 64
    live = rec.frame_info["available_radar"]
    assert 0.0 <= float(radar[live].min()) and float(radar[live].max()) <= 1.5
    assert 0.05 < float(radar[live].astype(np.float32).mean()) < 0.6  # about [0, 1]
    assert lidar.min() >= 0 and lidar.max() <= 4.0 + 1e-3  # metres / 10, max range 40 m
    assert np.abs(gps).max() < 0.6  # metres / 100: the user is within ~50 m
    assert image.std() > 10
    for key, dtype in (("drive", np.int32), ("time_s", np.float32), ("lighting", np.int8),
                       ("weather", np.int8), ("los_blocked", np.bool_), ("available_image", np.bool_)):
        assert rec.frame_info[key].dtype == dtype and rec.frame_info[key].shape == (f,)


# ---------------------------------------------------------------- camera

def test_night_is_darker_than_day_and_shows_headlights():
    truth = truth_of([(0.0, 1, 4.5, 1.5, 10.0), (6.0, 2, 10.0, 3.8, -10.0)])
    rng = np.random.default_rng(0)
    cfg = CameraConfig()
    zeros = np.zeros(4, dtype=int)
    day = render_images(truth, zeros, zeros, cfg, STREET, rng)
    night = render_images(truth, zeros + 2, zeros, cfg, STREET, rng)
    dusk = render_images(truth, zeros + 1, zeros, cfg, STREET, rng)
    assert night.mean() < 0.4 * day.mean() and night.mean() < dusk.mean() < day.mean()
    assert (night > 200).sum() > 5  # head lights stand out of the dark
    assert night.astype(float).std() > 0  # noisy


def test_weather_lowers_contrast():
    truth = truth_of([(0.0, 1, 4.5, 1.5, 10.0), (5.0, 3, 4.5, 1.5, -10.0)])
    rng = np.random.default_rng(0)
    cfg = CameraConfig()
    light = np.zeros(4, dtype=int)
    clear = render_images(truth, light, light, cfg, STREET, rng).astype(float)
    rain = render_images(truth, light, light + 1, cfg, STREET, rng).astype(float)
    fog = render_images(truth, light, light + 2, cfg, STREET, rng, fog_visibility_m=20.0).astype(float)
    assert fog.std() < 0.7 * clear.std()
    assert rain.std() < clear.std()


def test_vehicles_appear_where_they_are():
    cfg = CameraConfig(noise_std=(0.0, 0.0, 0.0))
    proj = projection(cfg)
    rng = np.random.default_rng(0)
    zeros = np.zeros(4, dtype=int)
    empty = render_images(truth_of([(1e4, 0, 4.5, 1.5, 0.0)]), zeros, zeros, cfg, STREET, rng)[0, 0]
    for x in (-6.0, 0.0, 6.0):
        truth = truth_of([(x, 1, 4.5, 1.5, 0.0)])
        image = render_images(truth, zeros, zeros, cfg, STREET, rng)[0, 0]
        changed = np.flatnonzero((image != empty).any(axis=0))
        face = float(STREET.lane_center(1)) - 0.9
        expected = proj.column(np.array([x - 2.25, x + 2.25]), face)
        assert changed.min() == pytest.approx(expected[0], abs=1.5)
        assert changed.max() == pytest.approx(expected[1], abs=1.5)


def test_receiver_unit_is_drawn_on_the_user_roof_with_its_band_and_lamp():
    cfg = CameraConfig(noise_std=(0.0, 0.0, 0.0))
    proj = projection(cfg)
    rng = np.random.default_rng(0)
    zeros = np.zeros(1, dtype=int)
    scene = [(0.0, 0, 4.5, 1.5, 10.0)]
    bare = render_images(truth_of(scene, frames=1), zeros, zeros, cfg, STREET, rng)[0, 0].astype(int)
    user = with_unit(truth_of(scene, frames=1))
    marked = render_images(user, zeros, zeros, cfg, STREET, rng)[0, 0].astype(int)
    rows, cols = np.nonzero(marked != bare)
    face = float(STREET.lane_center(0)) - 0.5
    assert cols.min() == pytest.approx(proj.column(np.array(-0.6), face), abs=1.5)
    assert cols.max() == pytest.approx(proj.column(np.array(0.6), face), abs=1.5)
    assert rows.max() <= proj.row(np.array(1.5), face) + 1  # above the car's roof line
    assert marked.max() >= 240 and (marked[rows, cols] < 40).any()  # white box, dark band
    night = render_images(user, zeros + 2, zeros, cfg, STREET, rng)[0, 0].astype(int)
    night_bare = render_images(truth_of(scene, frames=1), zeros + 2, zeros, cfg, STREET, rng)[0, 0].astype(int)
    top = int(proj.row(np.array(2.1), face))
    assert night[max(top - 2, 0):top + 2].max() > night_bare[max(top - 2, 0):top + 2].max() + 80  # marker lamp


def test_image_sizes_up_to_224():
    truth = truth_of([(0.0, 1, 4.5, 1.5, 10.0)], frames=1)
    image = render_images(truth, np.zeros(1, int), np.zeros(1, int), CameraConfig(image_size=224), STREET,
                          np.random.default_rng(0))
    assert image.shape == (1, 1, 224, 224) and image.dtype == np.uint8


def test_preprocess_image():
    rgb = np.zeros((120, 160, 3), dtype=np.uint8)
    rgb[..., 0] = 255  # pure red: ITU-R 601 luma 0.299 * 255 = 76
    out = preprocess_image(rgb, 64)
    assert out.shape == (1, 64, 64) and out.dtype == np.uint8
    assert abs(int(out.mean()) - 76) <= 1
    gray = np.tile(np.arange(200, dtype=np.uint8), (100, 1))
    g = preprocess_image(gray, 32)
    assert g.shape == (1, 32, 32) and np.all(np.diff(g[0, 0].astype(int)) >= 0)  # left-to-right ramp kept
    assert preprocess_image(np.dstack([rgb, np.full((120, 160), 255, np.uint8)]), 8).shape == (1, 8, 8)
    with pytest.raises(EdgekdError):
        preprocess_image(np.zeros((4, 4, 2), dtype=np.uint8), 8)
    with pytest.raises(EdgekdError):
        preprocess_image(np.zeros((4, 4), dtype=np.float32), 8)


# ---------------------------------------------------------------- radar

def test_cube_to_maps_peaks_at_the_target_range_angle_and_doppler():
    cfg = RadarConfig()
    r, v, theta = 12.0, 5.0, np.deg2rad(20.0)
    cube = synthesize_cube(np.array([[r]]), np.array([[v]]), np.array([[theta]]), np.array([[1.0 + 0j]]),
                           cfg, np.random.default_rng(0), noise=False)
    assert cube.shape == (1, 4, 128, 64) and cube.dtype == np.complex64
    maps = cube_to_maps(cube, cfg.range_bins, cfg.angle_bins)[0]
    assert maps.shape == (2, 64, 32)
    row, col = np.unravel_index(np.argmax(maps[0]), maps[0].shape)
    assert row == range_bin_of(r, cfg) == 24
    assert col == angle_bin_of(theta, cfg.angle_bins) == 21
    d_row, d_col = np.unravel_index(np.argmax(maps[1]), maps[1].shape)
    assert d_row == round(cfg.chirps / 2 + v / (2 * cfg.max_velocity_mps) * cfg.chirps)  # shifted Doppler bin
    assert d_col == col


def test_cube_to_maps_removes_static_returns_and_is_batched():
    cfg = RadarConfig()
    rng = np.random.default_rng(1)
    static = synthesize_cube(np.array([[10.0]]), np.array([[0.0]]), np.array([[0.0]]), np.array([[5.0 + 0j]]),
                             cfg, rng, noise=False)
    assert np.abs(cube_to_maps(static, 64, 32)).max() < 1e-3  # zero Doppler is subtracted
    cubes = complex_gaussian(rng, (3, 4, 128, 64))
    batched = cube_to_maps(cubes, 64, 32)
    for i in range(3):
        np.testing.assert_allclose(batched[i], cube_to_maps(cubes[i], 64, 32), rtol=1e-5, atol=1e-5)
    nested = cube_to_maps(cubes[None], 64, 32)
    assert nested.shape == (1, 3, 2, 64, 32)


def test_cube_to_maps_at_paper_scale_and_resampled_doppler():
    rng = np.random.default_rng(2)
    assert cube_to_maps(complex_gaussian(rng, (4, 256, 128)), 128, 64).shape == (2, 128, 64)
    assert cube_to_maps(complex_gaussian(rng, (4, 128, 64)), 32, 16).shape == (2, 32, 16)
    real = rng.standard_normal((4, 64, 32)).astype(np.float32)  # a real-valued cube is accepted too
    assert cube_to_maps(real, 32, 8).dtype == np.float32


def test_complex_gaussian_statistics():
    n = complex_gaussian(np.random.default_rng(0), (200_000,))
    assert n.dtype == np.complex64
    assert np.mean(np.abs(n) ** 2) == pytest.approx(1.0, rel=0.02)
    assert abs(np.mean(n.real)) < 0.01 and np.mean(n.real * n.imag) == pytest.approx(0.0, abs=0.01)


def test_radar_maps_do_not_depend_on_lighting():
    cfg = SceneConfig()
    day = Schedule((ScheduleSegment(0.0, lighting=0),))
    night = Schedule((ScheduleSegment(0.0, lighting=2),))
    a = simulate_drive(cfg, np.random.default_rng(5), schedule=day)
    b = simulate_drive(cfg, np.random.default_rng(5), schedule=night)
    assert a.frames["radar"].tobytes() == b.frames["radar"].tobytes()
    assert a.frames["lidar"].tobytes() == b.frames["lidar"].tobytes()
    assert a.frames["image"].mean() > 2 * b.frames["image"].mean()


def test_radar_sees_moving_vehicles_where_they_are():
    cfg = RadarConfig()
    truth = truth_of([(5.0, 1, 4.5, 1.5, 12.0)], frames=2)
    maps = render_radar(truth, cfg, np.random.default_rng(0)).astype(np.float32)
    face_y = float(STREET.lane_center(1)) - 0.9
    row, col = np.unravel_index(np.argmax(maps[0, 0]), maps[0, 0].shape)
    assert abs(row - range_bin_of(np.hypot(5.0, face_y), cfg)) <= 3
    assert abs(col - angle_bin_of(np.arctan2(5.0, face_y), cfg.angle_bins)) <= 2


def test_receiver_corner_reflector_is_the_strongest_radar_return():
    """Among cars around it and a bus beyond it, the user's corner reflector dominates the map.

    (A truck's near end much closer to the radar than the user can outshine it in
    some frames: radar-equation amplitude falls with range squared.)"""
    cfg = RadarConfig()
    truth = with_unit(truth_of([(3.0, 1, 4.5, 1.5, 8.0), (-6.0, 0, 4.5, 1.5, 12.0), (-15.0, 1, 4.5, 1.6, 8.0),
                                (12.0, 2, 11.0, 3.5, -6.0)], frames=20))
    maps = render_radar(truth, cfg, np.random.default_rng(0)).astype(np.float32)
    face = float(STREET.lane_center(1)) - 0.5
    want_row, want_col = range_bin_of(np.hypot(3.0, face), cfg), angle_bin_of(np.arctan2(3.0, face), cfg.angle_bins)
    peaks = [np.unravel_index(np.argmax(m[0]), m[0].shape) for m in maps]
    on_user = [abs(r - want_row) <= 2 and abs(c - want_col) <= 2 for r, c in peaks]
    assert np.mean(on_user) >= 0.9
    # Hidden behind a bus taller than the unit, it fades under the occlusion loss.
    hidden = with_unit(truth_of([(0.0, 1, 4.5, 1.5, 8.0), (0.0, 0, 11.0, 3.5, 8.0)], frames=20))
    no_unit = truth_of([(0.0, 1, 4.5, 1.5, 8.0), (0.0, 0, 11.0, 3.5, 8.0)], frames=20)
    from edgekd.host.data.radar import receiver_target
    amp_hidden = np.abs(receiver_target(hidden, cfg, np.random.default_rng(0))[3])
    amp_clear = np.abs(receiver_target(with_unit(truth_of([(0.0, 1, 4.5, 1.5, 8.0)], frames=20)), cfg,
                                       np.random.default_rng(0))[3])
    np.testing.assert_allclose(amp_hidden, amp_clear * 10 ** (-cfg.occlusion_db / 20), rtol=1e-6)
    assert not np.abs(receiver_target(no_unit, cfg, np.random.default_rng(0))[3]).any()


# ---------------------------------------------------------------- LiDAR

def test_lidar_occlusion_by_a_blocker():
    # A scan plane at road level (scan_height_m=0) hits every vehicle.
    cfg = LidarConfig(range_noise_m=0.0, dropout=(0.0, 0.0, 0.0), scan_height_m=0.0)
    rng = np.random.default_rng(0)
    centre = cfg.bins // 2  # straight across the street
    truck_far = truth_of([(0.0, 3, 10.0, 3.8, -10.0)], frames=1)
    both = truth_of([(0.0, 3, 10.0, 3.8, -10.0), (0.0, 0, 4.5, 1.5, 10.0)], frames=1)
    empty = truth_of([(1e4, 0, 4.5, 1.5, 0.0)], frames=1)
    scan_truck = render_lidar(truck_far, np.zeros(1, int), cfg, rng)[0]
    scan_both = render_lidar(both, np.zeros(1, int), cfg, rng)[0]
    scan_empty = render_lidar(empty, np.zeros(1, int), cfg, rng)[0]
    truck_face = float(STREET.lane_center(3)) - 1.25
    car_face = float(STREET.lane_center(0)) - 0.9
    assert scan_empty[centre] == pytest.approx(STREET.wall_y, abs=0.05)
    assert scan_truck[centre] == pytest.approx(truck_face, abs=0.05)  # the wall is hidden
    assert scan_both[centre] == pytest.approx(car_face, abs=0.05)  # the car hides the truck
    assert scan_empty[0] == 0.0  # along the street: beyond the maximum range, no return


def test_lidar_drops_more_returns_in_fog():
    cfg = LidarConfig()
    truth = truth_of([(0.0, 1, 4.5, 1.5, 10.0)], frames=50)
    rng = np.random.default_rng(0)
    clear = render_lidar(truth, np.zeros(50, int), cfg, rng)
    fog = render_lidar(truth, np.full(50, 2), cfg, rng)
    assert (fog == 0).mean() > (clear == 0).mean() + 0.2


def test_points_to_bins():
    pts = np.array([[10.0, 0.0, 0.5], [9.0, 0.01, 0.2], [-5.0, 0.0, 0.0], [50.0, 1.0, 0.0], [0.0, 3.0, 0.0]])
    out = points_to_bins(pts, bins=216, fov_deg=180.0, max_range=40.0)
    assert out.shape == (216,) and out.dtype == np.float32
    assert out[108] == pytest.approx(9.0, abs=1e-3)  # nearest of the two points ahead
    assert out[215] == pytest.approx(3.0)  # straight left: the last bin
    assert np.count_nonzero(out) == 2  # behind the sensor and beyond max range: ignored
    assert np.count_nonzero(points_to_bins(pts, z_range=(0.3, 1.0))) == 1
    assert not points_to_bins(np.zeros((0, 3))).any()


def test_default_scan_plane_passes_over_cars_and_hits_the_receiver_unit():
    """At 1.8 m the plane clears car roofs but hits trucks and the unit on the user's roof."""
    cfg = LidarConfig(range_noise_m=0.0, dropout=(0.0, 0.0, 0.0))
    centre = cfg.bins // 2
    rng = np.random.default_rng(0)
    weather = np.zeros(1, int)
    user_face = float(STREET.lane_center(1)) - 0.5  # the unit is 1.0 m wide
    user = with_unit(truth_of([(0.0, 1, 4.5, 1.5, 10.0), (-20.0, 3, 4.5, 1.5, -10.0)], frames=1))
    car_ahead = truth_of([(0.0, 0, 4.5, 1.7, 10.0)], frames=1)
    truck_ahead = truth_of([(0.0, 0, 10.0, 3.8, 10.0)], frames=1)
    bare_user = truth_of([(0.0, 1, 4.5, 1.5, 10.0)], frames=1)
    assert render_lidar(user, weather, cfg, rng)[0, centre] == pytest.approx(user_face, abs=0.05)
    assert render_lidar(car_ahead, weather, cfg, rng)[0, centre] == pytest.approx(STREET.wall_y, abs=0.05)
    assert render_lidar(bare_user, weather, cfg, rng)[0, centre] == pytest.approx(STREET.wall_y, abs=0.05)
    truck_face = float(STREET.lane_center(0)) - 1.25
    assert render_lidar(truck_ahead, weather, cfg, rng)[0, centre] == pytest.approx(truck_face, abs=0.05)
    # The unit is 1.2 m long: at 7.75 m it covers about 9 degrees, i.e. ~10 of the 216 bins.
    scan = render_lidar(user, weather, cfg, rng)[0]
    hits = (scan > 0) & (scan < STREET.wall_y - 1)
    assert 8 <= hits.sum() <= 12


def test_points_to_bins_agrees_with_the_simulated_scan():
    cfg = LidarConfig(range_noise_m=0.0, dropout=(0.0, 0.0, 0.0), scan_height_m=0.0)
    truth = truth_of([(3.0, 0, 4.5, 1.5, 10.0), (-8.0, 2, 10.0, 3.8, -10.0), (12.0, 3, 4.5, 1.5, -8.0)], frames=1)
    scan = render_lidar(truth, np.zeros(1, int), cfg, np.random.default_rng(0))[0]
    edges = lidar_mod.bin_edges(cfg.bins, cfg.fov_deg)
    centres = (edges[:-1] + edges[1:]) / 2
    dist = cast_rays(centres, truth.boxes(), truth.wall_y)[0]
    hits = np.isfinite(dist)
    scene_xy = np.stack([-np.sin(centres), np.cos(centres)], axis=-1)[hits] * dist[hits, None]
    sensor = scene_to_sensor(scene_xy)
    cloud = np.concatenate([sensor, np.zeros((len(sensor), 1))], axis=1)
    np.testing.assert_allclose(points_to_bins(cloud, cfg.bins, cfg.fov_deg, cfg.max_range_m), scan, atol=1e-4)


# ---------------------------------------------------------------- GPS

def test_gps_noise_is_metres():
    truth_xy = np.tile([[5.0, 8.0]], (2000, 1))
    fix = render_gps(truth_xy, GpsConfig(noise_m=1.0, bias_m=0.0), np.random.default_rng(0))
    err = fix - truth_xy
    assert fix.dtype == np.float32
    assert np.std(err) == pytest.approx(1.0, rel=0.1) and np.abs(err.mean(axis=0)).max() < 0.1
