"""Modality policy: preference by inferred lighting, hysteresis (no flapping), forced switches, fallback."""

from __future__ import annotations

import numpy as np

from edgekd.device.runtime.hub import Health, QualityConfig
from edgekd.device.runtime.policy import (
    LightingEstimator,
    ModalityPolicy,
    PolicySettings,
)
from edgekd.device.targets import load_target

STUDENTS = {"image": ("image",), "radar": ("radar",), "lidar": ("lidar",)}
CFG = QualityConfig()


def settings(**kw) -> PolicySettings:
    return PolicySettings.from_profile(load_target("x86-ap").policy, **kw)


def health(luminance=0.5, image_q=1.0, radar_q=1.0, lidar_q=1.0, up=("image", "radar", "lidar")):
    def h(name, q, signal):
        return Health(name in up, q if name in up else 0.0, signal, 0.0, "" if name in up else "stale (1.00 s)")

    return {"image": h("image", image_q, luminance), "radar": h("radar", radar_q, 20.0),
            "lidar": h("lidar", lidar_q, 0.8)}


def run(policy, frames):
    return [policy.decide(f) for f in frames]


def test_day_prefers_image_and_night_prefers_radar_from_luminance_only():
    policy = ModalityPolicy(settings(), STUDENTS, CFG)
    day = run(policy, [health(0.5)] * 20)
    assert {d.student for d in day} == {"image"} and day[-1].lighting == "day"
    night = run(policy, [health(0.07, image_q=0.1)] * 30)
    assert night[-1].student == "radar" and night[-1].lighting == "night"
    assert policy.switches == 1
    assert sum(d.switched for d in night) == 1


def test_no_flapping_when_luminance_hovers_at_the_day_dusk_threshold():
    rng = np.random.default_rng(0)
    policy = ModalityPolicy(settings(), STUDENTS, CFG)
    run(policy, [health(0.5)] * 20)
    # a signal hovering around the day|dusk threshold (noise smaller than the hysteresis band) ...
    hover = CFG.day_luminance + rng.uniform(-0.035, 0.035, 500)
    decisions = run(policy, [health(x, image_q=min(1.0, x / CFG.image_luminance_ok)) for x in hover])
    assert policy.switches == 0
    # ... and once it settles in dusk: exactly one switch (dusk prefers radar over image)
    decisions += run(policy, [health(0.26, image_q=0.57)] * 40)
    assert policy.switches == 1 and decisions[-1].student == "radar"


def test_no_flapping_when_a_noisy_signal_crosses_the_threshold_often():
    # noise bigger than the band: the confirmation (min dwell) still prevents flip-flopping
    rng = np.random.default_rng(1)
    policy = ModalityPolicy(settings(), STUDENTS, CFG)
    run(policy, [health(0.5)] * 20)
    hover = CFG.day_luminance + rng.choice([-0.06, 0.06], 400)  # alternates sides almost every frame
    run(policy, [health(x) for x in hover])
    assert policy.switches <= 1


def test_no_flapping_when_quality_hovers_at_min_quality():
    rng = np.random.default_rng(2)
    policy = ModalityPolicy(settings(), STUDENTS, CFG)
    run(policy, [health(0.5)] * 20)
    # fog: image quality hovers around min_quality by day (within the quality margin)
    q = settings().min_quality + rng.uniform(-0.08, 0.08, 400)
    decisions = run(policy, [health(0.5, image_q=x) for x in q])
    assert policy.switches == 0 and decisions[-1].student == "image"
    decisions = run(policy, [health(0.5, image_q=0.15)] * 30)   # clearly too foggy: one switch to radar
    assert policy.switches == 1 and decisions[-1].student == "radar"
    assert "image" not in decisions[-1].reason or "radar" in decisions[-1].reason


def test_minimum_dwell_delays_a_preference_switch():
    policy = ModalityPolicy(settings(min_quality=0.4), STUDENTS, CFG)
    decisions = run(policy, [health(0.5)] * 3)            # image active for 3 frames only
    assert decisions[-1].student == "image"
    # image quality collapses (but image still feedable): wait for the dwell before switching
    decisions = run(policy, [health(0.5, image_q=0.05)] * 12)
    first = next(i for i, d in enumerate(decisions) if d.student == "radar")
    assert first == settings().min_dwell_frames - 3
    assert "dwell" in decisions[0].reason


def test_outage_of_the_active_sensor_switches_at_once_and_back_after_dwell():
    policy = ModalityPolicy(settings(), STUDENTS, CFG)
    run(policy, [health(0.5)] * 20)
    out = policy.decide(health(0.5, up=("radar", "lidar")))
    assert out.student == "radar" and out.switched and "image cannot be fed" in out.reason
    back = run(policy, [health(0.5)] * 30)
    assert back[-1].student == "image" and policy.switches == 2


def test_nothing_feedable_says_so_instead_of_guessing():
    policy = ModalityPolicy(settings(), STUDENTS, CFG)
    d = policy.decide(health(up=()))
    assert d.student is None and d.reason.startswith("no student can be fed") and "stale" in d.reason


def test_degraded_choice_beats_no_prediction():
    policy = ModalityPolicy(settings(), STUDENTS, CFG)
    d = policy.decide(health(0.07, image_q=0.05, up=("image",)))
    assert d.student == "image" and "degraded" in d.reason


def test_fallback_after_inference_failure_benches_the_student():
    policy = ModalityPolicy(settings(failure_cooldown_frames=5), STUDENTS, CFG)
    run(policy, [health(0.07, image_q=0.1)] * 5)
    assert policy.active == "radar"
    d = policy.fallback("radar", health(0.07, image_q=0.1), "RuntimeError: boom")
    assert d.student == "lidar" and d.switched and "radar inference failed" in d.reason
    assert [x.student for x in run(policy, [health(0.07, image_q=0.1)] * 3)] == ["lidar"] * 3
    later = run(policy, [health(0.07, image_q=0.1)] * 30)
    assert later[-1].student == "radar"   # back after the cooldown and the dwell


def test_fixed_policy_never_switches():
    policy = ModalityPolicy(settings(fixed="image"), STUDENTS, CFG)
    decisions = run(policy, [health(0.5)] * 5 + [health(0.07, image_q=0.1)] * 30)
    assert {d.student for d in decisions} == {"image"}
    assert policy.decide(health(up=("radar",))).student is None


def test_lighting_estimator_holds_while_camera_is_out():
    est = LightingEstimator(CFG, confirm_frames=3)
    assert est.update(0.07) == "night"
    assert est.update(None) == "night"
    assert [est.update(0.5) for _ in range(3)] == ["night", "night", "day"]


def test_a_gap_with_nothing_feedable_keeps_the_active_student_without_a_switch():
    # a new track's warm-up (or a total outage) must not turn into a fresh start: at dusk a fresh start
    # would pick by quality again and could land on another student than before the gap
    policy = ModalityPolicy(settings(), STUDENTS, CFG)
    run(policy, [health(0.5)] * 20)
    gap = run(policy, [health(0.5, up=())] * 7)
    assert all(d.student is None for d in gap) and policy.active == "image"
    after = policy.decide(health(0.5))
    assert after.student == "image" and not after.switched and policy.switches == 0
