"""The CSV table of a comparison report (one line per format of a student)."""

from __future__ import annotations

import csv
import io
import logging
from typing import Any

log = logging.getLogger(__name__)

CSV_COLUMNS = ("student", "format", "label", "status", "size_bytes", "size_kind", "top2_mean", "top2_t0", "top2_t1",
               "top2_t2", "top2_t3", "accuracy_n", "runs", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms",
               "max_ms", "fps", "p50_after_switch_ms", "energy_method", "energy_per_inference_mj", "energy_scope",
               "speedup_vs_teacher_p50", "top2_vs_teacher_points", "source")



def to_csv(report: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in report["rows"]:
        lat, energy, top2 = r["latency"] or {}, r["energy"] or {}, r["top2"] or [None] * 4
        row = {"student": r["student"], "format": r["format"], "label": r["label"], "status": r["status"],
               "size_bytes": r["size_bytes"], "size_kind": r["size_kind"], "top2_mean": r["top2_mean"],
               **{f"top2_t{h}": top2[h] for h in range(4)}, "accuracy_n": r["accuracy_n"], "runs": r.get("runs"),
               **{k: lat.get(k) for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms")},
               "fps": r["fps"], "p50_after_switch_ms": (r.get("latency_after_switch") or {}).get("p50_ms"),
               "energy_method": energy.get("method"),
               "energy_per_inference_mj": energy.get("per_inference_mj"), "energy_scope": energy.get("scope"),
               "speedup_vs_teacher_p50": r["speedup_vs_teacher_p50"],
               "top2_vs_teacher_points": r["top2_vs_teacher_points"], "source": r["source"]}
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


