"""Runtime pieces that need no interpreter: top-k, policy parsing, artifact choice, switch kinds."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.device.errors import EdgekdError
from edgekd.device.runtime.engine import _artifact_kind, _parse_policy, top_k
from edgekd.device.runtime.replay import switch_kind
from edgekd.device.targets import load_target


def test_top_k_matches_a_plain_softmax_ranking():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 64)).astype(np.float32) * 3
    beams, probs = top_k(logits, 5)
    soft = np.exp(logits - logits.max(axis=1, keepdims=True))
    soft /= soft.sum(axis=1, keepdims=True)
    want = np.argsort(-soft, axis=1)[:, :5]
    assert np.array_equal(beams, want)
    assert np.allclose(probs, np.take_along_axis(soft, want, axis=1), atol=1e-6)
    assert top_k(logits, 100)[0].shape == (4, 64)


def test_policy_strings():
    assert _parse_policy("auto") is None and _parse_policy("fixed:image") == "image"
    for bad in ("fixed:", "image", "manual"):
        with pytest.raises(EdgekdError, match="fixed:<student>"):
            _parse_policy(bad)


def test_artifact_choice_follows_the_target_backend():
    arts = {"tflite_int8": {}, "onnx_fp32": {}, "onnx_int8_qdq": {}}
    assert _artifact_kind(arts, load_target("jetson"), "b", "image") == "onnx_int8_qdq"
    assert _artifact_kind(arts, load_target("x86-ap"), "b", "image") == "tflite_int8"
    assert _artifact_kind(arts, load_target("rpi4"), "b", "image") == "tflite_int8"
    with pytest.raises(EdgekdError, match="export the bundle with --target jetson-orin-nano"):
        _artifact_kind({"tflite_int8": {}}, load_target("jetson"), "b", "image")


def test_switch_kinds():
    assert switch_kind("night: radar preferred") == "preference"
    assert switch_kind("day: radar (...); image cannot be fed (image stale (0.40 s))") == "forced"
    assert switch_kind("fallback: radar inference failed (x); night: lidar") == "fallback"


def test_rolling_hit_rate_counts_scored_frames_in_the_last_span():
    from edgekd.device.runtime.replay import rolling_hit_rate

    t = np.arange(6, dtype=float)                       # one frame per second
    hit = np.array([1, 0, 1, 1, 0, 0], dtype=bool)
    scored = np.array([0, 1, 1, 1, 1, 0], dtype=bool)   # frame 0 is warm-up, frame 5 has no label
    rate = rolling_hit_rate(hit, scored, t, span_s=2.0)  # frames in (t - 2, t]
    assert np.isnan(rate[0])                            # nothing scored yet
    assert rate[1:].tolist() == [0.0, 0.5, 1.0, 0.5, 0.0]


def test_track_positions_and_labels_never_cross_a_track_end():
    from edgekd.device.runtime.replay import track_position
    from edgekd.host.data.drive import track_labels

    track = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    assert track_position(track).tolist() == [0, 1, 2, 0, 1, 0, 1, 2, 3]
    beams = np.arange(9) * 10
    labels = track_labels(beams, track, horizons=3)
    assert labels[:, 0].tolist() == beams.tolist()
    assert labels[1].tolist() == [10, 20, -1] and labels[3].tolist() == [30, 40, -1]
    assert labels[5].tolist() == [50, 60, 70] and labels[8].tolist() == [80, -1, -1]
