"""Rows of the report (accuracy, latency statistics, ratios to the teacher) and the acceptance verdicts."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgekd.host.compare.formats import TEACHER, Candidate

log = logging.getLogger(__name__)

def summarise(cands: Sequence[Candidate], beams: np.ndarray) -> list[dict[str, Any]]:
    """Rows with accuracy, latency statistics and the ratios against the teacher."""
    from edgekd.device.metrics import evaluate_predictions
    from firmware_bench.latency import latency_stats

    rows = []
    for c in cands:
        row: dict[str, Any] = {"student": c.student, "format": c.key, "label": c.label, "status": c.status,
                               "source": c.source, "size_bytes": c.size_bytes, "size_kind": c.size_kind,
                               "info": c.info, "top2_mean": None, "top2": None, "accuracy_n": None,
                               "latency": None, "latency_after_switch": None, "fps": None, "energy": c.energy,
                               "speedup_vs_teacher_p50": None, "speedup_vs_teacher_p50_after_switch": None,
                               "top2_vs_teacher_points": None}
        if c.ok and len(c.outputs) == len(beams):
            logits = np.concatenate(c.outputs).reshape(len(beams), *c.outputs[0].shape[1:])
            acc = evaluate_predictions(logits, beams, ks=(1, 2))
            row.update(top2_mean=acc["top2_mean"], top2=acc["top2"], top1_mean=acc["top1_mean"], accuracy_n=acc["n"])
        if c.ok and len(c.latencies_ns):
            stats = latency_stats(c.latencies_ns)
            row["latency"] = stats
            row["fps"] = 1e3 / stats["mean_ms"] if stats["mean_ms"] > 0 else None
            row["runs"] = stats["n"]
        if c.ok and len(c.switch_ns):
            row["latency_after_switch"] = latency_stats(c.switch_ns)
        row["phases"] = c.phases
        rows.append(row)
    teacher = next((r for r in rows if r["format"] == TEACHER and r["latency"]), None)
    if teacher is not None:
        for r in rows:
            if r["latency"]:
                r["speedup_vs_teacher_p50"] = teacher["latency"]["p50_ms"] / r["latency"]["p50_ms"]
            if r["latency_after_switch"] and teacher["latency_after_switch"]:
                r["speedup_vs_teacher_p50_after_switch"] = (teacher["latency_after_switch"]["p50_ms"]
                                                            / r["latency_after_switch"]["p50_ms"])
            if r["top2_mean"] is not None and teacher["top2_mean"] is not None:
                r["top2_vs_teacher_points"] = 100.0 * (r["top2_mean"] - teacher["top2_mean"])
    return rows


def acceptance(rows: Sequence[dict[str, Any]], rule: dict[str, Any]) -> dict[str, Any]:
    """Per student: TFLite int8 against the PyTorch teacher under ``rule`` (``CompareSettings.rule()``).

    The verdict carries the rule it was judged by (the user's ``--min-speedup`` / ``--max-top2-drop``,
    or their documented defaults), never a bare PASS/FAIL.
    """
    result = {}
    for r in rows:
        if r["format"] != "tflite_int8":
            continue
        speedup, delta = r["speedup_vs_teacher_p50"], r["top2_vs_teacher_points"]
        if speedup is None or delta is None:
            result[r["student"]] = {"passed": None, "reason": "teacher or int8 student not measured",
                                    "rule": rule["text"]}
            continue
        passed = speedup >= rule["min_speedup_p50"] and delta >= -rule["max_top2_drop_points"]
        result[r["student"]] = {"speedup_p50": speedup, "top2_vs_teacher_points": delta, "passed": bool(passed),
                                "rule": rule["text"]}
    return result
