"""The parity gate: every artifact scored with its real interpreter on held-out windows.

An export fails (exit code 2) when an int8 artifact's top-2 accuracy, averaged
over horizons, falls more than the target's ``int8_max_top2_drop`` points
below its float32 reference, or when any artifact predicts a constant (one
top-1 beam for every window) - the "int8 model that silently predicts nothing"
failure. ``--allow-degraded`` turns the failure into a recorded
``"degraded": true`` with the reasons.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping

import numpy as np

from edgekd.device.contracts import INT8_KINDS

log = logging.getLogger(__name__)

# Which float artifact an artifact is compared against, in order of preference.
REFERENCES: dict[str, tuple[str, ...]] = {
    "tflite_int8": ("tflite_fp32", "onnx_fp32"),
    "onnx_int8_qdq": ("onnx_fp32", "tflite_fp32"),
    "tflite_fp16": ("tflite_fp32", "onnx_fp32"),
}


def predict(run: Callable[[dict[str, np.ndarray]], np.ndarray], inputs: Mapping[str, np.ndarray],
            progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Logits ``[N, H, B]`` of a batch-1 runner over ``inputs`` (modality -> ``[N, ...]``)."""
    count = len(next(iter(inputs.values())))
    rows = []
    for i in range(count):
        rows.append(run({m: x[i:i + 1] for m, x in inputs.items()})[0])
        if progress is not None:
            progress(1)
    return np.stack(rows).astype(np.float32)


def accuracy(logits: np.ndarray, beams: np.ndarray) -> dict:
    """The manifest's accuracy entry (fractions in [0, 1]; top-1/2/3/5 per horizon, DBA) from edgekd.device.metrics."""
    from edgekd.device.metrics import evaluate_predictions

    return evaluate_predictions(logits, beams, ks=(1, 2, 3, 5))


def is_constant(logits: np.ndarray) -> bool:
    """True when the artifact gives the same top-1 beam for every window and horizon."""
    return len(np.unique(np.argmax(logits, axis=-1))) == 1


@dataclasses.dataclass
class ParityReport:
    student: str
    budget_points: float
    accuracies: dict[str, dict]                      # artifact kind -> accuracy entry
    drops: dict[str, dict] = dataclasses.field(default_factory=dict)   # kind -> {reference, points}
    failures: list[str] = dataclasses.field(default_factory=list)
    agreement: dict[str, float] = dataclasses.field(default_factory=dict)  # top-1 agreement with reference

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {"budget_top2_points": self.budget_points, "drops": self.drops,
                "top1_agreement": self.agreement, "passed": self.passed, "failures": self.failures}

    def table(self) -> str:
        lines = [f"{'artifact':<14} {'top1 mean':>9} {'top2 mean':>9} {'top5 mean':>9} {'DBA':>6} {'drop(pt)':>8}"]
        for kind, acc in self.accuracies.items():
            drop = self.drops.get(kind, {}).get("points")
            lines.append(f"{kind:<14} {np.mean(acc['top1']):>9.3f} {acc['top2_mean']:>9.3f} "
                         f"{np.mean(acc['top5']):>9.3f} {acc['dba']:>6.3f} "
                         f"{'' if drop is None else f'{drop:+.2f}':>8}")
        return "\n".join(lines)


def parity_gate(student: str, logits: Mapping[str, np.ndarray], beams: np.ndarray, *,
                budget_points: float) -> ParityReport:
    """Score every artifact's logits and apply the gate (constant predictions, int8 top-2 drop)."""
    accuracies = {kind: accuracy(out, beams) for kind, out in logits.items()}
    report = ParityReport(student=student, budget_points=budget_points, accuracies=accuracies)
    for kind, out in logits.items():
        if is_constant(out):
            beam = int(np.argmax(out, axis=-1).ravel()[0])
            report.failures.append(f"{student}/{kind} predicts beam {beam} for every one of {len(out)} windows")
    for kind, candidates in REFERENCES.items():
        reference = next((c for c in candidates if c in logits), None)
        if kind not in logits or reference is None:
            continue
        points = 100.0 * (accuracies[reference]["top2_mean"] - accuracies[kind]["top2_mean"])
        report.drops[kind] = {"reference": reference, "points": round(points, 3)}
        report.agreement[kind] = float(np.mean(np.argmax(logits[kind], -1) == np.argmax(logits[reference], -1)))
        # a drop of exactly the budget is allowed ("at most"): compare without float noise (0.41 - 0.40 > 0.01)
        if kind in INT8_KINDS and round(points, 6) > budget_points:
            report.failures.append(
                f"{student}/{kind} top-2 (mean over horizons) is {points:.2f} points below {reference} "
                f"({accuracies[kind]['top2_mean']:.3f} vs {accuracies[reference]['top2_mean']:.3f}); "
                f"the target allows at most {budget_points:g} point{'' if budget_points == 1 else 's'} "
                "(int8_max_top2_drop)")
    return report
