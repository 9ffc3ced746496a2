"""The export parity gate: a drop of exactly the budget passes, one prediction more fails."""

import numpy as np

from edgekd.host.export.parity import parity_gate


def logits_hitting(beams: np.ndarray, hits: int, rng: np.random.Generator) -> np.ndarray:
    """[N, 4, 64] logits whose top-1 (and top-2) is right for the first ``hits`` windows of every horizon."""
    n, horizons = beams.shape
    out = rng.normal(0, 0.01, (n, horizons, 64)).astype(np.float32)
    for i in range(n):
        for h in range(horizons):
            right = beams[i, h] if i < hits else (beams[i, h] + 7) % 64
            out[i, h, right] = 5.0
            out[i, h, (right + 20) % 64] = 4.0   # the second guess is wrong too for the misses
    return out


def test_drop_of_exactly_the_budget_passes_and_more_fails():
    rng = np.random.default_rng(0)
    beams = rng.integers(0, 64, (100, 4))
    fp32 = logits_hitting(beams, 41, rng)          # top-2 0.41
    exact = parity_gate("s", {"tflite_fp32": fp32, "tflite_int8": logits_hitting(beams, 40, rng)}, beams,
                        budget_points=1.0)         # 0.41 - 0.40: 1.0 point, float noise says 1.0000000000000009
    assert exact.drops["tflite_int8"]["points"] == 1.0 and not exact.failures
    worse = parity_gate("s", {"tflite_fp32": fp32, "tflite_int8": logits_hitting(beams, 39, rng)}, beams,
                        budget_points=1.0)
    assert len(worse.failures) == 1 and "2.00 points below tflite_fp32" in worse.failures[0]
