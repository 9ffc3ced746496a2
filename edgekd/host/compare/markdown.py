"""The Markdown table of a comparison report (what `edgekd bench --compare` prints)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from edgekd.host.compare.energy import energy_text
from edgekd.host.compare.formats import TEACHER

log = logging.getLogger(__name__)

MD_COLUMNS = ("Student", "Format", "Status", "Size (KiB)", "Top-2 (%)", "p50 (ms)", "p90 (ms)", "FPS",
              "Energy / inference", "p50 vs teacher")


def _num(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def to_markdown(report: dict[str, Any]) -> str:
    load = report.get("load_average_1m") or {}
    busy = (f" Load average (1 min) {load['before']:.1f} before, {load['after']:.1f} after on "
            f"{report['host'].get('cpus_usable') or report['host'].get('cpu_count')} CPUs."
            if load.get("before") is not None and load.get("after") is not None else "")
    lines = [f"# Format comparison: {report['bundle']} (target {report.get('target') or '-'})", "",
             f"Held-out test windows of `{report['data']}`; {report['threads']} thread(s) for every format; "
             f"{report['timing']}. Energy: {report['energy_meter']['method']}"
             + (f" ({report['energy_meter']['scope']})" if report['energy_meter']['scope'] else "") + "." + busy, "",
             "| " + " | ".join(MD_COLUMNS) + " |", "|" + "---|" * len(MD_COLUMNS)]
    for r in report["rows"]:
        lat = r["latency"] or {}
        size = None if r["size_bytes"] is None else r["size_bytes"] / 1024
        speedup = r["speedup_vs_teacher_p50"]
        size_text = _num(size, ".1f") + (" (weights)" if r["size_kind"] == "weights" else "")
        cells = (r["student"], r["label"], r["status"].replace("|", "/"), size_text,
                 _num(None if r["top2_mean"] is None else 100 * r["top2_mean"], ".1f"),
                 _num(lat.get("p50_ms"), ".3f"), _num(lat.get("p90_ms"), ".3f"), _num(r["fps"], ".0f"),
                 energy_text(r["energy"]), "-" if speedup is None else f"{speedup:.1f}x")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += floor_lines(report)
    lines += detail_lines(report["rows"])
    for name, verdict in report["acceptance"].items():
        if verdict.get("passed") is None:
            lines.append(f"- {name}: acceptance not evaluated ({verdict['reason']})")
        else:
            lines.append(f"- {name}: TFLite int8 is {verdict['speedup_p50']:.1f}x faster (p50) than the PyTorch fp32 "
                         f"teacher, top-2 {verdict['top2_vs_teacher_points']:+.1f} points: "
                         f"{'PASS' if verdict['passed'] else 'FAIL'} ({verdict['rule']})")
    found = report.get("found") or {}
    if found.get("demo"):
        what = [f"{k} {len(v) if isinstance(v, list) else v}" for k, v in found.items() if k != "demo"]
        lines.append(f"- inputs found in the demo folder {found['demo']}: " + ", ".join(what))
    if report["energy_meter"]["method"] == "estimated":
        lines.append("- energy is ESTIMATED from the target's power model (no readable meter), not measured")
    for note in report["notes"]:
        lines.append(f"- {note}")
    return "\n".join(lines) + "\n"


def floor_lines(report: dict[str, Any]) -> list[str]:
    """The compute floor of every int8 student: MACs at the measured peak int8 rate, and its share of p50."""
    peak = report.get("int8_peak")
    if not peak:
        return []
    m, k, n = peak["shape"]
    lines = [f"- compute floor: peak int8 rate of this CPU {peak['macs_per_s'] / 1e9:.0f} GMAC/s (best of "
             f"{peak['calls']} calls of a [{m}x{k}] x [{k}x{n}] int8 FULLY_CONNECTED, same interpreter, "
             f"{peak['threads']} thread(s))"]
    for r in report["rows"]:
        floor = r.get("compute_floor")
        if floor:
            share = "-" if floor["share_of_floor"] is None else f"{100 * floor['share_of_floor']:.1f}%"
            lines.append(f"- {r['student']}: {floor['macs'] / 1e6:.2f}M MACs -> floor {floor['floor_us']:.2f} us; "
                         f"TFLite int8 p50 {1e3 * r['latency']['p50_ms']:.1f} us = {share} of floor "
                         "(the rest: per-op overhead, input quantisation, output dequantisation)")
    return lines


def detail_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Per student, for TFLite int8: where its call goes, and the cold-cache figures next to the teacher's."""
    lines = []
    for r in rows:
        if r["format"] != "tflite_int8":
            continue
        phases = r.get("phases")
        if phases:
            us = {k: 1e3 * phases[f"{k}_p50_ms"] for k in ("quantize", "invoke", "dequantize")}
            lines.append(f"- {r['student']}: TFLite int8 call split (separate back-to-back pass, p50): quantise input "
                         f"{us['quantize']:.1f} us, invoke {us['invoke']:.1f} us, dequantise output "
                         f"{us['dequantize']:.1f} us")
        teacher = next((t for t in rows if t["student"] == r["student"] and t["format"] == TEACHER), None)
        if r["latency_after_switch"] and teacher is not None and teacher.get("latency_after_switch"):
            lines.append(f"- {r['student']}: first call after another format ran (cold caches, not the headline): "
                         f"TFLite int8 p50 {r['latency_after_switch']['p50_ms']:.3f} ms, teacher "
                         f"{teacher['latency_after_switch']['p50_ms']:.3f} ms "
                         f"({r['speedup_vs_teacher_p50_after_switch']:.1f}x)")
    return lines


