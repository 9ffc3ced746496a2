"""Benchmark reports: JSON (everything), CSV (one row per student/artifact), a short text table.

Every energy figure travels with its method (``measured:<meter>``,
``estimated`` or ``unavailable``) and every latency row with the MLPerf flag
when the run was below the single-stream minimum, in all three outputs.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from edgekd.device.io import atomic_write_json, atomic_write_text
from firmware_bench.memory import mib

JSON_NAME = "bench.json"
CSV_NAME = "bench.csv"

CSV_COLUMNS = (
    "student", "artifact", "backend", "precision", "threads", "interpreter", "runs", "wall_s",
    "mlperf_single_stream", "init_ms", "first_inference_ms", "min_ms", "p50_ms", "p90_ms", "p99_ms",
    "max_ms", "mean_ms", "std_ms", "throughput_ips", "end_to_end_ips", "quantize_p50_ms",
    "dequantize_p50_ms", "end_to_end_p50_ms", "rss_after_load_mib", "peak_rss_mib",
    "peak_rss_during_runs_mib", "model_bytes", "energy_method", "energy_scope", "energy_per_inference_mj",
    "mean_power_w", "idle_power_w", "above_idle_per_inference_mj", "top2_mean", "flags",
)


def csv_row(result: dict[str, Any]) -> dict[str, Any]:
    lat, inv, mem, energy = result["latency"], result["latency"]["invoke"], result["memory"], result["energy"]
    mlperf = lat["mlperf_single_stream"]
    interp = result.get("interpreter") or {}
    return {
        "student": result["student"],
        "artifact": result["artifact"],
        "backend": result["backend"],
        "precision": result["precision"],
        "threads": result["threads"],
        "interpreter": f"{interp.get('module')} {interp.get('version')}",
        "runs": lat["runs"],
        "wall_s": lat["wall_s"],
        "mlperf_single_stream": "compliant" if mlperf["compliant"] else mlperf["flag"],
        "init_ms": lat["init_ms"],
        "first_inference_ms": lat["first_inference"]["end_to_end_ms"],
        **{k: inv[k] for k in ("min_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms", "std_ms")},
        "throughput_ips": lat["throughput_ips"],
        "end_to_end_ips": lat["end_to_end_ips"],
        "quantize_p50_ms": lat["quantize"]["p50_ms"],
        "dequantize_p50_ms": lat["dequantize"]["p50_ms"],
        "end_to_end_p50_ms": lat["end_to_end"]["p50_ms"],
        "rss_after_load_mib": mib(mem["rss_after_load_bytes"]),
        "peak_rss_mib": mib(mem["peak_rss_bytes"]),
        "peak_rss_during_runs_mib": mib(mem["peak_rss_during_runs_bytes"]),
        "model_bytes": mem["file_bytes"].get("model"),
        "energy_method": energy["method"],
        "energy_scope": energy["scope"],
        "energy_per_inference_mj": energy["per_inference_mj"],
        "mean_power_w": energy["mean_power_w"],
        "idle_power_w": energy["idle_power_w"],
        "above_idle_per_inference_mj": energy["above_idle_per_inference_mj"],
        "top2_mean": (result.get("accuracy") or {}).get("top2_mean"),
        "flags": "; ".join(result["flags"]),
    }


def to_csv(report: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for result in report["results"]:
        writer.writerow({k: ("" if v is None else v) for k, v in csv_row(result).items()})
    return buffer.getvalue()


def energy_text(energy: dict[str, Any]) -> str:
    """``1.234 mJ (estimated)``: never a number without its method."""
    if energy["per_inference_mj"] is None:
        return f"n/a ({energy['method']})"
    return f"{energy['per_inference_mj']:.3f} mJ ({energy['method']})"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def to_text(report: dict[str, Any]) -> str:
    """A short table for the terminal, with the flags under it."""
    host = report["host"]
    lines = [f"firmware_bench: {report['bundle']} (target {report.get('target') or '-'}) on "
             f"{host.get('board') or host['machine']}, python {host['python']}, numpy {host['numpy']}"]
    header = ("student", "artifact", "thr", "runs", "init ms", "p50 ms", "p90 ms", "p99 ms", "FPS",
              "peak MiB", "energy/inference")
    rows = [header]
    for r in report["results"]:
        lat, inv = r["latency"], r["latency"]["invoke"]
        rows.append((r["student"], r["artifact"], _fmt(r["threads"]), str(lat["runs"]), _fmt(lat["init_ms"], 1),
                     _fmt(inv["p50_ms"]), _fmt(inv["p90_ms"]), _fmt(inv["p99_ms"]),
                     _fmt(lat["throughput_ips"], 1), _fmt(mib(r["memory"]["peak_rss_bytes"]), 1),
                     energy_text(r["energy"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    for r in report["results"]:
        energy = r["energy"]
        if energy["method"] != "unavailable":
            lines.append(f"  {r['student']}: energy {energy['method']}, covers: {energy['scope']}")
        for flag in r["flags"]:
            lines.append(f"  {r['student']}: {flag}")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out: str | os.PathLike) -> dict[str, Path]:
    """bench.json and bench.csv in ``out`` (created if needed), each written atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / JSON_NAME, "csv": out / CSV_NAME}
    atomic_write_json(paths["json"], report)
    atomic_write_text(paths["csv"], to_csv(report))
    return paths


def load_report(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
