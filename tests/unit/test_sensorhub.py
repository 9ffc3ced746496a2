"""Sensor hub: ring buffers in time order without copies, staleness, quality signals, bad frames."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgekd.device.runtime.hub import (
    QualityConfig,
    SensorHub,
    image_quality,
    lidar_quality,
    radar_quality,
)

T = 4
SHAPES = {"image": (1, 8, 8), "radar": (2, 6, 4), "lidar": (16,)}


def make_hub(staleness_s: float = 0.35) -> SensorHub:
    return SensorHub(SHAPES, T, staleness_s=staleness_s)


def test_window_is_the_last_T_frames_oldest_first_and_a_view():
    hub = make_hub()
    for i in range(11):
        assert hub.push("lidar", np.full(16, i, np.float32), 0.1 * i)
        window = hub.window_of("lidar")
        got = window[:, 0]
        want = np.arange(max(0, i - T + 1), i + 1)
        assert np.array_equal(got[-len(want):], want)
    assert window.base is not None and np.shares_memory(window, hub.buffers["lidar"]._frames)
    assert window.flags["C_CONTIGUOUS"]


def test_uint8_images_are_scaled_like_the_dataset_loader():
    hub = make_hub()
    frame = np.full((1, 8, 8), 255, np.uint8)
    hub.push("image", frame, 0.0)
    assert hub.window_of("image")[-1].max() == pytest.approx(1.0)


def test_available_needs_a_full_window_and_fresh_frames():
    hub = make_hub(staleness_s=0.35)
    for i in range(T - 1):
        hub.push("radar", np.ones((2, 6, 4), np.float32), 0.1 * i)
    h = hub.health()["radar"]
    assert not h.available and "warming up" in h.reason
    hub.push("radar", np.ones((2, 6, 4), np.float32), 0.3)
    assert hub.health()["radar"].available
    assert hub.health(now=0.6)["radar"].available          # 0.3 s old: within budget
    late = hub.health(now=0.7)["radar"]
    assert not late.available and "stale" in late.reason     # 0.4 s old
    assert not hub.health()["image"].available and hub.health()["image"].reason == "no frame yet"


@pytest.mark.parametrize("bad", [np.full(16, np.nan, np.float32), np.r_[np.zeros(15), np.inf].astype(np.float32),
                                 np.zeros(17, np.float32), np.zeros((4, 4), np.float32)])
def test_bad_frames_are_counted_mark_unhealthy_and_never_crash(bad):
    hub = make_hub()
    for i in range(T):
        hub.push("lidar", np.ones(16, np.float32), 0.1 * i)
    before = hub.window_of("lidar").copy()
    assert hub.push("lidar", bad, 0.4) is False
    assert hub.counters()["lidar"] == {"received": T + 1, "rejected": 1}
    h = hub.health()["lidar"]
    assert not h.available and h.reason.startswith("bad frame")
    assert np.array_equal(hub.window_of("lidar"), before)  # the window never holds the bad frame
    hub.push("lidar", np.ones(16, np.float32), 0.5)           # the next good frame heals it
    assert hub.health()["lidar"].available


def test_unknown_modality_is_counted_not_raised():
    hub = make_hub()
    assert hub.push("thermal", np.zeros(3), 0.0) is False
    assert hub.unknown_pushes == 1


def test_image_quality_separates_day_dusk_night_and_fog():
    cfg = QualityConfig()
    rng = np.random.default_rng(0)
    texture = rng.uniform(-1, 1, (1, 64, 64)).astype(np.float32)

    def image(mean, spread):
        return np.clip(mean + spread * texture * math.sqrt(3), 0, 1).astype(np.float32)

    day, dusk, night, fog = image(0.5, 0.24), image(0.26, 0.157), image(0.07, 0.09), image(0.5, 0.08)
    q = {k: image_quality(v, cfg) for k, v in dict(day=day, dusk=dusk, night=night, fog=fog).items()}
    assert q["day"][0] > 0.95 and q["day"][1] > cfg.day_luminance
    assert cfg.night_luminance < q["dusk"][1] < cfg.day_luminance
    assert q["night"][1] < cfg.night_luminance and q["night"][0] < 0.15
    assert q["fog"][0] < 0.5 < q["dusk"][0] < q["day"][0]


def test_radar_snr_and_lidar_share():
    cfg = QualityConfig()
    flat = np.full((2, 6, 4), 0.15, np.float32)
    peaked = flat.copy()
    peaked[0, 2, 2] = 0.6
    assert radar_quality(flat, cfg) == (0.0, 0.0)
    quality, snr = radar_quality(peaked, cfg)
    assert quality == 1.0 and snr > 20
    scan = np.zeros(16, np.float32)
    scan[:4] = 1.0
    assert lidar_quality(scan, cfg) == (0.5, 0.25)


def test_quality_is_smoothed_over_recent_frames():
    hub = make_hub()
    for i in range(T):
        hub.push("lidar", np.ones(16, np.float32), 0.1 * i)
    assert hub.health()["lidar"].quality == 1.0
    hub.push("lidar", np.zeros(16, np.float32), 0.4)  # one empty scan moves quality by a quarter only
    assert hub.health()["lidar"].quality == pytest.approx(0.75)


def test_new_track_empties_every_window_but_keeps_the_counters():
    hub = make_hub()
    for i in range(T):
        for name, shape in SHAPES.items():
            hub.push(name, np.ones(shape, np.float32), 0.1 * i)
    assert all(h.available for h in hub.health(0.3).values())
    hub.push("lidar", np.full(16, np.nan, np.float32), 0.35)
    hub.new_track()
    health = hub.health(0.4)
    assert not any(h.available for h in health.values())
    hub.push("radar", np.ones(SHAPES["radar"], np.float32), 0.4)
    assert hub.health(0.4)["radar"].reason == f"warming up (1/{T} frames)"
    assert hub.counters()["lidar"] == {"received": T + 1, "rejected": 1}
