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


def test_the_gate_table_marks_only_the_failing_artifact_and_says_the_budget_in_full():
    from edgekd.host.experiments.demo_report import parity_section

    beams = np.repeat((np.arange(40) % 3)[:, None], 4, axis=1)        # beams 0, 1, 2 in turn
    good = np.full((40, 4, 64), -5.0, np.float32)
    np.put_along_axis(good, beams[..., None], 5.0, axis=-1)             # float: right on every window
    bad = good.copy()
    bad[:10] = -5.0
    bad[:10, :, 60] = 5.0                                               # int8: a quarter of the windows wrong
    report = parity_gate("image", {"tflite_fp32": good, "tflite_int8": bad}, beams, budget_points=1.0)
    assert report.failures == [report.failures[0]]
    assert report.failures[0].endswith("the target allows at most 1 point (int8_max_top2_drop)")
    size = {"size": 1000}
    manifest = {"target": {"int8_max_top2_drop": 1.0}, "students": {"image": {
        "parity": report.to_dict(),
        "artifacts": {"tflite_fp32": {**size, "accuracy": report.accuracies["tflite_fp32"]},
                      "tflite_int8": {**size, "accuracy": report.accuracies["tflite_int8"]}}}}}
    rows = {line.split("|")[2].strip(): line.split("|")[-2].strip()
            for line in parity_section(manifest).splitlines() if line.startswith("| image")}
    assert rows == {"tflite_fp32": "reference", "tflite_int8": "FAIL"}
