"""The synthetic scene: geometry, channel and labels, configs, determinism, schedules."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgekd.device.config import config_from_dict
from edgekd.device.errors import EdgekdError
from edgekd.host.data.channel import (
    ArrayConfig,
    ChannelConfig,
    array_response,
    beam_gains,
    beam_powers,
    best_beam,
    codebook,
    codebook_angles,
    knife_edge_loss_db,
    segment_box_crossing,
    user_paths,
)
from edgekd.host.data.scene import DriveTruth, StreetConfig, simulate_pass
from edgekd.host.data.synth import (
    SceneConfig,
    Schedule,
    ScheduleSegment,
    count_windows,
    load_scene_config,
    plan_drives,
    simulate_drive,
    synthesize,
)

ARRAY = ArrayConfig()
STREET = StreetConfig()


def nearest_beam(theta: np.ndarray) -> np.ndarray:
    angles = codebook_angles(ARRAY.num_beams, ARRAY.codebook_fov_deg)
    return np.argmin(np.abs(np.asarray(theta)[..., None] - angles), axis=-1)


def clean_channel() -> ChannelConfig:
    return ChannelConfig(diffuse_paths=0)


def labels(user_xy, boxes, heights, chan=None, fading=False, noise=False, seed=0):
    chan = chan or clean_channel()
    rng = np.random.default_rng(seed)
    paths, blocked = user_paths(user_xy, boxes, heights, STREET.wall_y, ARRAY, chan, rng, fading=fading)
    power = beam_powers(paths, ARRAY, chan, rng, noise=noise)
    return best_beam(power), blocked, paths


# ---------------------------------------------------------------- array and codebook

def test_codebook_is_unit_norm_and_each_beam_peaks_at_its_angle():
    w = codebook(ARRAY)
    assert w.shape == (64, 16)
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 1.0, rtol=1e-12)
    angles = codebook_angles(64, ARRAY.codebook_fov_deg)
    assert angles[0] == pytest.approx(-np.pi / 3) and angles[-1] == pytest.approx(np.pi / 3)
    gains = beam_gains(angles, ARRAY)  # [angle, beam]
    np.testing.assert_array_equal(np.argmax(gains, axis=1), np.arange(64))
    np.testing.assert_allclose(np.diag(gains), 16.0, rtol=1e-9)  # full array gain on the matched beam
    assert np.all(gains <= 16.0 + 1e-9)


def test_array_response_is_half_wavelength_ula():
    a = array_response(np.array([0.0, np.pi / 6]), 16)
    np.testing.assert_allclose(a[0], 1.0)
    # sin(30 deg) = 1/2: phase step pi/2 between neighbouring elements.
    np.testing.assert_allclose(np.angle(a[1, 1] / a[1, 0]), np.pi / 2, atol=1e-12)


def test_knife_edge_loss_shape():
    d = np.full(5, 10.0)
    loss = knife_edge_loss_db(np.array([-5.0, -0.01, 0.0, 0.5, 2.0]), d, d, ARRAY.wavelength_m)
    assert loss[0] == 0.0
    assert loss[2] == pytest.approx(6.0, abs=0.1)  # grazing incidence: about 6 dB
    assert np.all(np.diff(loss) >= 0) and loss[-1] > 30


def test_segment_box_crossing():
    start = np.zeros((3, 2))
    end = np.array([[0.0, 10.0], [10.0, 10.0], [0.0, 2.0]])
    boxes = np.array([[[-1.0, 4.0, 1.0, 6.0]]] * 3)
    hit, s_exit = segment_box_crossing(start, end, boxes)
    assert hit[:, 0].tolist() == [True, False, False]
    assert s_exit[0, 0] == pytest.approx(0.6)


# ---------------------------------------------------------------- labels follow the geometry

def test_label_follows_the_user_angle_while_the_los_is_clear():
    x = np.linspace(-25, 25, 26)
    user = np.stack([x, np.full_like(x, float(STREET.lane_center(3)))], axis=-1)
    no_boxes = np.zeros((len(x), 0, 4))
    beam, blocked, paths = labels(user, no_boxes, np.zeros((len(x), 0)))
    assert not blocked.any()
    # Exact up to one beam: the weaker wall reflection interferes with the LOS at a random phase.
    off = np.abs(beam - nearest_beam(np.arctan2(x, user[:, 1])))
    assert off.max() <= 1 and np.mean(off == 0) > 0.8
    assert np.all(np.diff(beam) >= 0) and beam[0] < 10 and beam[-1] > 54


def test_label_jumps_to_the_wall_reflection_when_a_truck_blocks_the_los():
    user = np.array([[15.0, float(STREET.lane_center(3))]])
    los, ref = np.arctan2(15.0, user[0, 1]), np.arctan2(15.0, 2 * STREET.wall_y - user[0, 1])
    y0 = float(STREET.lane_center(0)) - 1.25
    truck = np.array([[[3.4, y0, 7.4, y0 + 2.5]]])  # on the LOS ray, clear of the reflected ray
    clear_beam, clear_blocked, _ = labels(user, np.zeros((1, 0, 4)), np.zeros((1, 0)))
    beam, blocked, paths = labels(user, truck, np.array([[4.0]]))
    assert not clear_blocked[0] and blocked[0]
    assert clear_beam[0] == nearest_beam(los)
    assert beam[0] == nearest_beam(ref)
    assert abs(int(nearest_beam(los)) - int(nearest_beam(ref))) >= 6
    # A car (lower than the ray) at the same place does not block.
    car_beam, car_blocked, _ = labels(user, truck, np.array([[1.5]]))
    assert not car_blocked[0] and car_beam[0] == nearest_beam(los)


def test_labels_with_fading_and_noise_follow_los_or_reflection():
    """Statistically, on the default scene: clear LOS -> the LOS beam; LOS blocked but the
    reflection clear and much stronger -> the reflection's beam."""
    cfg = SceneConfig()
    rng = np.random.default_rng(7)
    clear, reflected = [], []
    for _ in range(40):
        truth = simulate_pass(cfg.street, cfg.traffic, cfg.user, cfg.array.codebook_fov_deg, 10.0, rng)
        paths, blocked = user_paths(truth.user_xy, truth.boxes()[:, 1:], truth.heights()[:, 1:],
                                    truth.wall_y, cfg.array, cfg.channel, rng)
        beam = best_beam(beam_powers(paths, cfg.array, cfg.channel, rng))
        los_beam, ref_beam = nearest_beam(paths.angle[:, 0]), nearest_beam(paths.angle[:, 1])
        clear += list(np.abs(beam - los_beam)[~blocked] <= 1)
        strong_ref = blocked & (paths.power_mw[:, 1] > 10 * paths.power_mw[:, 0])
        reflected += list(np.abs(beam - ref_beam)[strong_ref] <= 1)
    assert len(clear) > 500 and np.mean(clear) > 0.9
    assert len(reflected) > 10 and np.mean(reflected) > 0.7


def test_pass_geometry_is_plausible():
    cfg = SceneConfig()
    rng = np.random.default_rng(0)
    for _ in range(10):
        truth = simulate_pass(cfg.street, cfg.traffic, cfg.user, cfg.array.codebook_fov_deg, 10.0, rng)
        speed = np.abs(np.diff(truth.user_xy[:, 0])) * 10
        assert np.all((speed >= 4.9) & (speed <= 20.1))
        assert np.allclose(truth.user_xy[:, 1], truth.user_xy[0, 1])  # stays in its lane
        theta = np.degrees(np.arctan2(*truth.user_xy.T))
        assert abs(theta[0]) > 56 and abs(theta[-1]) > 45  # the last frame is within one step of the end
        assert np.sign(theta[0]) != np.sign(theta[-1])  # the pass crosses the boresight
        np.testing.assert_allclose(np.diff(truth.time_s), 0.1)


# ---------------------------------------------------------------- configs

def test_default_yaml_equals_the_dataclass_defaults():
    assert load_scene_config() == SceneConfig()


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(EdgekdError, match="radar.range_bin"):
        config_from_dict(SceneConfig, {"radar": {"range_bin": 3}})
    with pytest.raises(EdgekdError, match="must be positive"):
        config_from_dict(SceneConfig, {"array": {"num_beams": 0}})
    with pytest.raises(EdgekdError):
        config_from_dict(SceneConfig, {"conditions": {"dropout_rate": {"sonar": 0.1}}})
    with pytest.raises(EdgekdError):
        synthesize(SceneConfig(), windows=0, seed=0)


# ---------------------------------------------------------------- recordings

def test_synthesize_is_deterministic_and_counts_windows():
    cfg = SceneConfig()
    a = synthesize(cfg, windows=40, seed=3, image_size=32)
    b = synthesize(cfg, windows=40, seed=3, image_size=32)
    c = synthesize(cfg, windows=40, seed=4, image_size=32)
    for key in a.frames:
        assert a.frames[key].tobytes() == b.frames[key].tobytes()
    assert a.power.tobytes() == b.power.tobytes() and np.array_equal(a.beams, b.beams)
    for key in a.frame_info:
        assert np.array_equal(a.frame_info[key], b.frame_info[key])
    assert a.power.tobytes() != c.power.tobytes()
    lengths = [s.stop - s.start for s in a.drive_slices()]
    assert count_windows(lengths) >= 40 > count_windows(lengths[:-1])
    assert a.frames["image"].shape[1:] == (1, 32, 32)
    np.testing.assert_array_equal(a.beams, np.argmax(a.power, axis=1))
    np.testing.assert_allclose(a.power.max(axis=1), 1.0)
    assert a.config["array"]["num_beams"] == 64 and a.seed == 3


def test_result_does_not_depend_on_worker_count():
    cfg = SceneConfig()
    serial = synthesize(cfg, windows=60, seed=11, image_size=32, workers=0)
    pooled = synthesize(cfg, windows=60, seed=11, image_size=32, workers=2)
    for key in serial.frames:
        assert serial.frames[key].tobytes() == pooled.frames[key].tobytes()
    assert np.array_equal(serial.frame_info["drive"], pooled.frame_info["drive"])


def test_plan_matches_rendered_drives():
    cfg = SceneConfig()
    drives, gains = plan_drives(cfg, 50, seed=5)
    rec = synthesize(cfg, windows=50, seed=5, image_size=32)
    assert sorted(set(rec.frame_info["drive"].tolist())) == drives
    assert sum(gains) == 50


def test_conditions_and_availability_vary_across_drives():
    cfg = dataclasses.replace(SceneConfig(), conditions=dataclasses.replace(
        SceneConfig().conditions, dropout_rate={"image": 0.2, "radar": 0.0, "lidar": 0.0, "gps": 0.0}))
    rec = synthesize(cfg, windows=400, seed=1, image_size=32)
    info = rec.frame_info
    assert set(np.unique(info["lighting"])) == {0, 1, 2}
    assert len(np.unique(info["weather"])) >= 2
    assert 0.02 < info["los_blocked"].mean() < 0.6
    dropped = ~info["available_image"]
    assert 0.1 < dropped.mean() < 0.7 and info["available_radar"].all()
    assert not rec.frames["image"][dropped].any()  # a dead camera delivers zeros


def test_schedule_drives_conditions_and_failures():
    cfg = SceneConfig()
    schedule = Schedule((ScheduleSegment(0.0, lighting=0, weather=0),
                         ScheduleSegment(10.0, lighting=2, unavailable=("lidar",)),
                         ScheduleSegment(20.0, lighting=1, weather=2, unavailable=("gps",))))
    rec = simulate_drive(cfg, np.random.default_rng(0), n_frames=300, schedule=schedule, drive_id=7)
    t = rec.frame_info["time_s"]
    assert rec.num_frames == 300 and np.all(rec.frame_info["drive"] == 7)
    np.testing.assert_allclose(np.diff(t), 0.1, atol=1e-4)  # one continuous drive over many passes
    night = (t >= 10) & (t < 20)
    assert np.all(rec.frame_info["lighting"][night] == 2) and np.all(rec.frame_info["lighting"][t < 10] == 0)
    assert not rec.frame_info["available_lidar"][night].any()
    assert not rec.frames["lidar"][night].any()
    assert np.all(rec.frame_info["weather"][t >= 20] == 2)
    assert not rec.frame_info["available_gps"][t >= 20].any()
    assert rec.frames["image"][t < 10].mean() > 2 * rec.frames["image"][night].mean()


def test_custom_truth_roundtrip():
    truth = DriveTruth(time_s=np.array([0.0]), center=np.array([[[0.0, 8.0]]]), velocity_x=np.array([[10.0]]),
                       size=np.array([[4.0, 2.0, 1.5]]), shade=np.array([0.5]), wall_y=21.0)
    np.testing.assert_allclose(truth.boxes()[0, 0], [-2.0, 7.0, 2.0, 9.0])


# ---------------------------------------------------------------- learnability and alignment

def test_sensor_frames_and_labels_describe_the_same_instant():
    """The receiver unit's angle in the LiDAR scan of frame f gives the beam of frame f (LOS clear),
    not the beam of frame f - 1 or f + 1: labels and sensor frames are not shifted in time."""
    from edgekd.host.data.lidar import bin_edges

    cfg = SceneConfig()
    rec = synthesize(cfg, windows=150, seed=0, image_size=32)
    scan = rec.frames["lidar"] * 10.0
    edges = bin_edges(cfg.lidar.bins, cfg.lidar.fov_deg)
    centres = (edges[:-1] + edges[1:]) / 2
    near = np.where((scan > 0) & (scan < 10.0), scan, np.inf)  # the near lanes (the wall is ~21 m away)
    seen = np.isfinite(near).any(axis=1) & ~rec.frame_info["los_blocked"]
    close = near <= np.min(near, axis=1, keepdims=True) + 1.0
    theta = -(close * centres).sum(axis=1) / np.maximum(close.sum(axis=1), 1)  # sensor azimuth -> scene angle
    beam = nearest_beam(theta)
    drive = rec.frame_info["drive"]
    agree = {}
    for lag in (-1, 0, 1):
        f = np.arange(max(0, -lag), rec.num_frames - max(0, lag))
        ok = seen[f] & (drive[f] == drive[f + lag])
        assert ok.sum() > 100
        agree[lag] = np.mean(np.abs(beam[f][ok] - rec.beams[f + lag][ok]) <= 2)
    assert agree[0] > 0.6 and agree[0] > 2 * max(agree[-1], agree[1])


def test_default_scene_puts_the_user_near_and_blocks_the_los_sometimes():
    cfg = SceneConfig()
    rng = np.random.default_rng(3)
    lanes, blocked = [], []
    for _ in range(150):
        truth = simulate_pass(cfg.street, cfg.traffic, cfg.user, cfg.array.codebook_fov_deg, 10.0, rng)
        assert truth.has_unit and truth.unit_top_m == pytest.approx(2.1)
        _, b = user_paths(truth.user_xy, truth.boxes()[:, 1:], truth.heights()[:, 1:], truth.wall_y,
                          cfg.array, cfg.channel, None)
        lanes.append(truth.user_xy[0, 1])
        blocked += list(b)
    assert set(np.round(lanes, 2)) == {float(STREET.lane_center(0)), float(STREET.lane_center(1))}
    assert 0.03 < np.mean(blocked) < 0.15  # LOS blocked in roughly 5-15 % of frames
