"""Fleet results: one row per topology (report.md, summary.json), per-AP CSV, the ledger JSON, PNGs.

Every number comes from the ledger and the APs' metrics of the run; the acceptance checks at the
end of ``report.md`` are computed here from those rows, not typed in.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.device.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from edgekd.host.fleet import learn
from edgekd.host.fleet.config import FleetConfig
from edgekd.host.fleet.ledger import Ledger

MB = 1e6


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def worst_decile(values: Sequence[float]) -> float:
    """Mean of the lowest 10% (at least one) of the values."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    return float(v[: max(1, int(np.ceil(len(v) / 10)))].mean()) if len(v) else float("nan")


def summarize(cfg: FleetConfig, names: Sequence[str], runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One row per topology over the seeds. ``runs``: one dict per seed with ``results``, ``ledger``, ``aps``."""
    rows: dict[str, dict[str, Any]] = {}
    for name in names:
        top2 = [m["top2"] for r in runs for m in r["results"][name].values()]
        server = [m["top2_server"] for r in runs for m in r["results"][name].values() if "top2_server" in m]
        teacher = [m["teacher_top2"] for r in runs for m in r["results"][name].values() if "teacher_top2" in m]
        worst = [worst_decile([m["top2"] for m in r["results"][name].values()]) for r in runs]
        per_seed_mean = [_mean([m["top2"] for m in r["results"][name].values()]) for r in runs]
        totals = [r["ledger"].totals(name, r["aps"]) for r in runs]
        row: dict[str, Any] = {"topology": name, "seeds": len(runs), "aps": runs[0]["aps"],
                               "top2_mean": _mean(top2), "top2_std": float(np.std(top2)) if top2 else float("nan"),
                               "top2_seed_means": per_seed_mean, "top2_worst_decile": _mean(worst),
                               "top2_server": _mean(server) if server else None,
                               "teacher_top2_at_aps": _mean(teacher) if teacher else None,
                               "aps_evaluated": len(top2)}
        for key in totals[0]:
            if isinstance(totals[0][key], (int, float)):
                row[key] = _mean([t[key] for t in totals])
        rows[name] = row
    local = rows.get("local")
    oracle = rows.get("oracle")
    for row in rows.values():
        row["gain_over_local_pts"] = 100 * (row["top2_mean"] - local["top2_mean"]) if local else None
        row["gap_to_oracle_pts"] = 100 * (oracle["top2_mean"] - row["top2_mean"]) if oracle else None
    return rows


def acceptance(cfg: FleetConfig, rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's acceptance lines that this run can speak to, each with its measured figure."""
    out: list[dict[str, Any]] = []
    t_cost, s_cost = learn.model_cost(cfg.teacher), learn.model_cost(cfg.student)

    def add(what: str, figure: str, ok: bool | None) -> None:
        out.append({"check": what, "measured": figure, "pass": ok})

    errs = [(n, max(r[f"{d}_closed_rel_err"] for d in ("down", "up", "ap2ap"))) for n, r in rows.items()]
    worst = max(errs, key=lambda e: e[1]) if errs else ("-", 0.0)
    add("measured ledger = closed form within 1% (every topology)",
        f"largest relative difference {100 * worst[1]:.3f}% ({worst[0]})", worst[1] <= 0.01)
    if "decentralized" in rows and "centralized" in rows:
        # the model parts of the closed form: params only (buffers are BatchNorm statistics)
        ratio = t_cost["params"] / s_cost["params"]
        measured = rows["decentralized"]["down_bytes"] / rows["centralized"]["down_bytes"]
        add("decentralized / centralized downlink = teacher params / student params",
            f"params ratio {ratio:.4f}; closed-form params bytes ratio {ratio:.4f} (exact); measured message "
            f"ratio {measured:.4f} (buffers + headers)", abs(measured / ratio - 1) < 0.01)
        add("centralized worst-decile >= 3 pts below decentralized's",
            f"centralized {100 * rows['centralized']['top2_worst_decile']:.1f}% vs decentralized "
            f"{100 * rows['decentralized']['top2_worst_decile']:.1f}%",
            rows["decentralized"]["top2_worst_decile"] - rows["centralized"]["top2_worst_decile"] >= 0.03)
    if "decentralized" in rows and "local" in rows:
        gain = 100 * (rows["decentralized"]["top2_mean"] - rows["local"]["top2_mean"])
        add(f"decentralized beats local-only by >= 2 top-2 pts ({rows['local']['seeds']} seed(s))",
            f"{gain:+.2f} pts", gain >= 2)
    if "semi-centralized" in rows and "decentralized" in rows:
        semi, dec = rows["semi-centralized"], rows["decentralized"]
        gap = 100 * (dec["top2_mean"] - semi["top2_mean"])
        down = semi["down_bytes"] / dec["down_bytes"] if dec["down_bytes"] else float("nan")
        dec_macs = dec["edge_train_macs_per_ap"] + dec["edge_teacher_macs_per_ap"]
        macs = (semi["edge_train_macs_per_ap"] + semi["edge_teacher_macs_per_ap"]) / dec_macs if dec_macs else 0.0
        add("semi-centralized within 2 pts of decentralized, <= 1/10 downlink, <= 1/3 edge MACs "
            f"(teacher/student params {t_cost['params'] / s_cost['params']:.1f}x)",
            f"gap {gap:+.2f} pts; downlink {down:.3f}x; edge MACs {macs:.3f}x",
            gap <= 2 and down <= 0.1 and macs <= 1 / 3)
    if "semi-centralized" in rows and "semi-norehearsal" in rows:
        a, b = rows["semi-centralized"]["top2_server"], rows["semi-norehearsal"]["top2_server"]
        if a is not None and b is not None:
            add("rehearsal reduces forgetting (top-2 on the server's test set)",
                f"with rehearsal {100 * a:.1f}% vs without {100 * b:.1f}% ({100 * (a - b):+.2f} pts)", a > b)
    if "fd" in rows and "fedavg" in rows:
        fd, fa = rows["fd"], rows["fedavg"]
        ratio = fa["mean_round_bytes"] / fd["mean_round_bytes"] if fd["mean_round_bytes"] else float("nan")
        cost = 100 * (fa["top2_mean"] - fd["top2_mean"])
        add("federated distillation moves >= 10x fewer bytes per round than FedAvg",
            f"{ratio:.1f}x fewer; accuracy cost {cost:+.2f} pts (FedAvg - FD)", ratio >= 10)
    return out


def per_ap_rows(runs: Sequence[dict[str, Any]], names: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for r in runs:
        ledger: Ledger = r["ledger"]
        for name in names:
            for ap, m in sorted(r["results"][name].items()):
                comp = [c for c in ledger.compute if c.topology == name and c.ap == ap]
                msgs = [e for e in ledger.entries if e.topology == name and e.ap == ap]
                spec = r["specs"][ap]
                rows.append({"seed": r["seed"], "topology": name, "ap": ap, "board": spec["board"],
                             "curb_offset_m": spec["curb_offset_m"], "lanes_each_way": spec["lanes_each_way"],
                             "beam_js": r["heterogeneity"]["per_ap_js"].get(ap),
                             "top1": round(m["top1"], 4), "top2": round(m["top2"], 4),
                             "top2_server": round(m["top2_server"], 4) if "top2_server" in m else "",
                             "teacher_top2": round(m["teacher_top2"], 4) if "teacher_top2" in m else "",
                             "down_bytes": sum(e.measured for e in msgs if e.direction == "down"),
                             "up_bytes": sum(e.measured for e in msgs if e.direction == "up"),
                             "train_macs": sum(c.train_macs for c in comp),
                             "teacher_macs": sum(c.teacher_macs for c in comp),
                             "sim_seconds": round(sum(c.seconds for c in comp), 4)})
    return rows


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()


def markdown(cfg: FleetConfig, rows: dict[str, dict[str, Any]], checks: list[dict[str, Any]],
             run: dict[str, Any]) -> str:
    aps = next(iter(rows.values()))["aps"]
    lines = [f"# edgekd fleet: {aps} access points, {cfg.modality} student, {run['seeds']} seed(s), "
             f"engine {run['engine']}", "",
             f"Student `{cfg.student}` ({learn.model_cost(cfg.student)['params']:,} params), teacher `{cfg.teacher}` "
             f"({learn.model_cost(cfg.teacher)['params']:,} params). Heterogeneity: mean JS divergence of an AP's "
             f"beam histogram from the fleet's {run['heterogeneity_mean_js']:.3f} (server data vs fleet "
             f"{run['server_vs_fleet_js']:.3f}). Wall time {run['wall_s']:.0f} s, peak memory "
             f"{run['peak_rss_mb']:.0f} MB (process tree), load average {run['load_average']}. Each AP holds "
             f"{cfg.train_windows} labelled training windows"
             + (f" and {cfg.unlabelled_windows} unlabelled ones (no beam label; only decentralized learns from "
                "them, through the teacher's outputs)" if cfg.unlabelled_windows else "")
             + f", and {cfg.test_windows} test windows.", "",
             "| topology | rounds | MB down | MB up | MB AP-AP | MB down/AP | MB up/AP | int8 MB down | "
             "edge GMAC/AP train | edge GMAC/AP teacher | server GMAC | top-2 % (mean ± std) | worst decile % | "
             "gain vs local pts | gap to oracle pts | ledger vs closed form | sim. time s |",
             "|" + "---|" * 17]
    for name, r in rows.items():
        err = max(r[f"{d}_closed_rel_err"] for d in ("down", "up", "ap2ap"))

        def pts(v: float | None) -> str:
            return "-" if v is None else f"{v:+.2f}"

        lines.append(
            f"| {name} | {r['rounds']:.0f} | {r['down_bytes'] / MB:.2f} | {r['up_bytes'] / MB:.2f} | "
            f"{r['ap2ap_bytes'] / MB:.2f} | {r['down_bytes'] / MB / aps:.3f} | {r['up_bytes'] / MB / aps:.3f} | "
            f"{r['down_int8_bytes'] / MB:.2f} | {r['edge_train_macs_per_ap'] / 1e9:.2f} | "
            f"{r['edge_teacher_macs_per_ap'] / 1e9:.2f} | {r['server_macs'] / 1e9:.1f} | "
            f"{100 * r['top2_mean']:.1f} ± {100 * r['top2_std']:.1f} | {100 * r['top2_worst_decile']:.1f} | "
            f"{pts(r['gain_over_local_pts'])} | {pts(r['gap_to_oracle_pts'])} | {100 * err:.2f}% | "
            f"{r['sim_seconds']:.1f} |")
    lines += ["", "MB = 10^6 bytes measured from the engine's records (Flower: `ArrayRecord.count_bytes()`); "
              "the closed form (params x 4 B, logits x 4 B, frames x frame size) is in ledger.json beside "
              "each message. int8: the same messages with int8 weights (1 B per param + a scale per tensor). "
              "Edge MACs: student training = 3 x forward MACs per sample pass; teacher = forward MACs per window "
              "it labels. Simulated time: bytes over the links "
              f"({cfg.downlink_mbps:g}/{cfg.uplink_mbps:g} Mbit/s) + MACs over each board's assumed rate.", ""]
    teacher_rows = {name: r["teacher_top2_at_aps"] for name, r in rows.items()
                    if r.get("teacher_top2_at_aps") is not None}
    if teacher_rows:
        lines += ["The shipped teacher's own top-2 on the APs' test windows (mean over APs and seeds; measured at "
                  "the AP, not charged to the ledger), beside the local-only student's: KD can add little over "
                  "an AP's own labels where the teacher knows the site less. "
                  + "; ".join(f"{name}: teacher {100 * v:.1f}%" for name, v in teacher_rows.items())
                  + (f"; local-only student {100 * rows['local']['top2_mean']:.1f}%" if "local" in rows else "")
                  + ".", ""]
    if run.get("stragglers"):
        lines += ["Slowest APs (simulated round time, first seed):", ""]
        for name, s in run["stragglers"].items():
            lines.append(f"- {name}: " + ", ".join(f"AP {x['ap']} ({x['board']}) {x['seconds']:.2f} s" for x in s))
        lines.append("")
    if checks:
        lines += ["## Acceptance checks (computed from this run)", "", "| check | measured | pass |", "|---|---|---|"]
        for c in checks:
            ok = "-" if c["pass"] is None else ("yes" if c["pass"] else "**no**")
            lines.append(f"| {c['check']} | {c['measured']} | {ok} |")
        lines.append("")
    lines += ["Files: summary.json (these rows), per_ap.csv, ledger.json (every message), accuracy_vs_mb.png, "
              "per_ap_accuracy.png, run.json.", ""]
    return "\n".join(lines)


def plots(out: Path, rows: dict[str, dict[str, Any]], per_ap: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in rows.items():
        mb = (r["down_bytes"] + r["up_bytes"] + r["ap2ap_bytes"]) / MB
        ax.scatter(max(mb, 1e-3), 100 * r["top2_mean"], s=40)
        ax.annotate(name, (max(mb, 1e-3), 100 * r["top2_mean"]), textcoords="offset points", xytext=(4, 4),
                    fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("MB moved (down + up + AP-AP, whole fleet; 0 shown at 1e-3)")
    ax.set_ylabel("top-2 accuracy, mean over APs (%)")
    ax.set_title("accuracy vs bytes moved")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, out / "accuracy_vs_mb.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(rows)), 4.5))
    names = list(rows)
    data = [[100 * p["top2"] for p in per_ap if p["topology"] == n] for n in names]
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right")
    ax.set_ylabel("top-2 accuracy per AP (%)")
    ax.set_title("per-AP accuracy distribution")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    _save(fig, out / "per_ap_accuracy.png")
    plt.close(fig)


def _save(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(path, buf.getvalue())


def write_outputs(out: Path, cfg: FleetConfig, names: Sequence[str], runs: Sequence[dict[str, Any]],
                  run_info: dict[str, Any]) -> dict[str, Any]:
    rows = summarize(cfg, names, runs)
    checks = acceptance(cfg, rows)
    per_ap = per_ap_rows(runs, names)
    atomic_write_json(out / "summary.json", {"rows": rows, "acceptance": checks, "run": run_info})
    atomic_write_text(out / "per_ap.csv", _csv(per_ap))
    atomic_write_json(out / "ledger.json", {"seeds": [{"seed": r["seed"], **r["ledger"].to_json(),
                                                       "totals": {n: r["ledger"].totals(n, r["aps"]) for n in names}}
                                                      for r in runs]})
    atomic_write_text(out / "report.md", markdown(cfg, rows, checks, run_info))
    plots(out, rows, per_ap)
    return {"rows": rows, "acceptance": checks}
