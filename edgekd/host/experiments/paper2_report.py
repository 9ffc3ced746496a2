"""Paper 2's report: aggregation over seeds, the acceptance checks, report.md, results.csv, runs.csv, paper2.png.

A run's record is read through ``done(seed, key)`` (the experiment's finished-run markers).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.device.io import atomic_write_json, atomic_write_text
from edgekd.host.experiments.paper2_matrix import (
    MIN_SEEDS,
    MIN_TOP5_RATIO,
    VARIANTS,
    Paper2Profile,
    datafree_options,
    figure_rows,
)
from edgekd.host.experiments.writers import csv_text, grouped_bars, plus_minus, pyplot, save_png, std_over_seeds

Done = Callable[[int, str], Any]   # (seed, run key) -> the run's record


def aggregate(records: list[dict]) -> dict[str, Any]:
    """Mean and std (ddof 1; 0 for one seed) over seeds of top-1/top-5 per horizon and their means."""
    out: dict[str, Any] = {"seeds": len(records), "seconds": float(np.mean([r["seconds"] for r in records]))}
    for metric in ("top1", "top5"):
        values = np.asarray([r[metric] for r in records], dtype=np.float64)      # [seeds, horizons]
        means = values.mean(axis=1)
        out[metric] = values.mean(axis=0).tolist()
        out[f"{metric}_std"] = std_over_seeds(values).tolist()
        out[f"{metric}_mean"] = float(means.mean())
        out[f"{metric}_mean_std"] = float(std_over_seeds(means[:, None])[0])
    return out


def summarize(done: Done, best: str, seeds: list[int]) -> dict[str, dict]:
    keys = {row.key for row in figure_rows(best)}
    return {key: aggregate([done(s, key) for s in seeds]) for key in sorted(keys)}


def acceptance(summary: Mapping[str, dict], seeds: list[int]) -> list[dict]:
    df, teacher = summary["df_metadata_mse"], summary["teacher"]
    ratio = df["top5_mean"] / teacher["top5_mean"] if teacher["top5_mean"] > 0 else 0.0
    meta = summary["df_metadata_kl"]
    return [
        {"check": f"DF-KD (metadata generator, MSE) top-5 mean >= {MIN_TOP5_RATIO:.0%} of the teacher's",
         "value": f"{df['top5_mean']:.3f} / {teacher['top5_mean']:.3f} = {ratio:.1%}",
         "passed": ratio >= MIN_TOP5_RATIO and len(seeds) >= MIN_SEEDS},
        {"check": "metadata-only generator beats activation-only (top-5 mean, KL student)",
         "value": f"{meta['top5_mean']:.3f} vs {summary['df_activation_kl']['top5_mean']:.3f}",
         "passed": meta["top5_mean"] > summary["df_activation_kl"]["top5_mean"]},
        {"check": "metadata-only generator beats entropy-only (top-5 mean, KL student)",
         "value": f"{meta['top5_mean']:.3f} vs {summary['df_entropy_kl']['top5_mean']:.3f}",
         "passed": meta["top5_mean"] > summary["df_entropy_kl"]["top5_mean"]},
        {"check": f"at least {MIN_SEEDS} seeds", "value": str(len(seeds)), "passed": len(seeds) >= MIN_SEEDS},
    ]


# paper 2's CSVs have always been written with the csv module's default \r\n line ends: kept, so files compare
CRLF = "\r\n"


def results_csv(summary: Mapping[str, dict], best: str) -> str:
    rows = []
    for row in figure_rows(best):
        agg = summary[row.key]
        for metric in ("top1", "top5"):
            for h, (m, s) in enumerate(zip(agg[metric], agg[f"{metric}_std"])):
                rows.append([row.figure, row.key, row.label, metric, f"t{h}", f"{m:.4f}", f"{s:.4f}", agg["seeds"]])
            rows.append([row.figure, row.key, row.label, metric, "mean", f"{agg[f'{metric}_mean']:.4f}",
                         f"{agg[f'{metric}_mean_std']:.4f}", agg["seeds"]])
    return csv_text(rows, ["figure", "run", "label", "metric", "horizon", "mean", "std", "seeds"], lineterminator=CRLF)


def runs_csv(done: Done, keys: list[str], seeds: list[int]) -> str:
    rows = []
    for key in keys:
        for seed in seeds:
            r = done(seed, key)
            rows.append([key, seed, *[f"{v:.4f}" for v in r["top1"]], *[f"{v:.4f}" for v in r["top5"]],
                         f"{r['top1_mean']:.4f}", f"{r['top5_mean']:.4f}", r["seconds"]])
    header = ["run", "seed", *[f"top1_t{h}" for h in range(4)], *[f"top5_t{h}" for h in range(4)],
              "top1_mean", "top5_mean", "seconds"]
    return csv_text(rows, header, lineterminator=CRLF)


def plot_figures(summary: Mapping[str, dict], best: str, path: Path) -> None:
    """Figs. 3-5: one row per figure, top-1 and top-5 panels, grouped bars per horizon with std bars."""
    plt = pyplot()
    rows = figure_rows(best)
    titles = {"fig3": "Fig. 3: generator loss (KL student)", "fig4": "Fig. 4: student loss",
              "fig5": "Fig. 5: teacher, KD baselines, DF-KD"}
    fig, axes = plt.subplots(3, 2, figsize=(11, 11), squeeze=False)
    for i, figure in enumerate(("fig3", "fig4", "fig5")):
        members = [r for r in rows if r.figure == figure]
        for j, metric in enumerate(("top1", "top5")):
            ax = axes[i][j]
            grouped_bars(ax, [(row.label, summary[row.key][metric], summary[row.key][f"{metric}_std"], None)
                              for row in members])
            ax.set_ylim(0, 1)
            ax.set_title(f"{titles[figure]}: top-{metric[-1]}", fontsize="medium")
            ax.grid(axis="y", alpha=0.3)
        axes[i][0].set_ylabel("accuracy (mean ± std over seeds)")
        axes[i][1].legend(fontsize="x-small", loc="lower right")
    fig.tight_layout()
    save_png(fig, path, dpi=110)


def _fmt(agg: Mapping[str, Any], metric: str) -> list[str]:
    n = agg["seeds"]
    cells = [f"{m:.3f}{plus_minus(s, n, '.3f')}" for m, s in zip(agg[metric], agg[f"{metric}_std"])]
    return cells + [f"**{agg[f'{metric}_mean']:.3f}{plus_minus(agg[f'{metric}_mean_std'], n, '.3f')}**"]

def _datafree_options_note(profile: Paper2Profile) -> str:
    options = datafree_options(profile)
    init = ("weight transfer: the student starts from the teacher's first layer, kept frozen (DistilBERT-style, "
            "no data)" if options["student_init"] == "teacher_embedding"
            else "the student starts from scratch (no teacher weight)")
    if options["input_noise"] > 0:
        width = options["input_noise_width"]
        init += (f"; every synthetic batch gets Gaussian noise of std {options['input_noise']:g}"
                 + (f" (smoothed along the bins, kernel std {width:g} bins)" if width > 0 else "")
                 + " and the teacher labels the noisy windows")
    prior = (f"; every generator variant adds a scan smoothness prior (weight {options['smoothness_weight']:g})"
             if options["smoothness_weight"] > 0 else "")
    return f"Beyond the paper: {init}{prior}."


def report_markdown(profile_name: str, profile: Paper2Profile, data: Path, summary: Mapping[str, dict], best: str,
                    checks: list[dict], done: Done, seeds: list[int], seconds: float) -> str:
    from edgekd.device.metrics import count_params
    from edgekd.host.data import read_meta
    from edgekd.host.models import create_model

    meta = read_meta(data)
    lines = [
        "# Paper 2 reproduction: data-free KD for the LiDAR student",
        "",
        f"Command: `edgekd reproduce paper2 --profile {profile_name} --seeds {len(seeds)}"
        f"{'' if str(data).endswith('/data') else f' --data {data}'}`; seeds {', '.join(map(str, seeds))}; "
        f"total {seconds / 60:.1f} min.",
        f"Dataset: `{data}` ({meta.get('source')}, fingerprint {meta['fingerprint'][:12]}...), windows "
        + ", ".join(f"{k} {v['windows']}" for k, v in meta["splits"].items()) + ". Every number is on test.",
        f"Teacher `lidar_teacher` {count_params(create_model('lidar_teacher')):,} parameters, student "
        f"`lidar_student` {count_params(create_model('lidar_student')):,}.",
        "Data-free students read no training input and no label: the generator learns from the frozen teacher "
        "and its stored metadata only (last hidden state plus per-step layer statistics), the student from the "
        "generator's synthetic sets only"
        + (", a fresh set every epoch" if profile.resample_each_epoch else "") + ". " + _datafree_options_note(profile),
        "",
        "## Acceptance",
        "",
        "| check | value | result |",
        "|---|---|---|",
        *[f"| {c['check']} | {c['value']} | {'pass' if c['passed'] else 'FAIL'} |" for c in checks],
        "",
    ]
    titles = {"fig3": "Fig. 3: generator loss variants (student loss KL, T = "
                      f"{profile.datafree_temperature:g})",
              "fig4": f"Fig. 4: student loss KL vs MSE with the best generator ({best})",
              "fig5": "Fig. 5: teacher, student without KD, standard KD "
                      f"(alpha {profile.kd_alpha:g}, T {profile.kd_temperature:g}), KD-MSE, DF-KD"}
    for figure in ("fig3", "fig4", "fig5"):
        lines += [f"## {titles[figure]}", ""]
        for metric in ("top1", "top5"):
            lines += [f"top-{metric[-1]} (mean ± std over {len(seeds)} seeds)", "",
                      "| run | t0 | t1 | t2 | t3 | mean |", "|---|---|---|---|---|---|"]
            lines += [f"| {row.label} | " + " | ".join(_fmt(summary[row.key], metric)) + " |"
                      for row in figure_rows(best) if row.figure == figure]
            lines.append("")
    lines += ["## Synthetic sets (last seed)", "",
              "Spread across windows (`input_window_std`, 0 = the generator collapsed onto one window) and how "
              "confident and varied the teacher is on them.", "",
              "| generator | input mean | input std | window std | teacher entropy | distinct t0 beams |",
              "|---|---|---|---|---|---|"]
    for variant in VARIANTS:
        syn = done(seeds[-1], f"df_{variant}_kl").get("synthetic", {})
        if syn:
            lines.append(f"| {variant} | {syn['input_mean']:.3f} | {syn['input_std']:.3f} | "
                         f"{syn['input_window_std']:.3f} | {syn['teacher_entropy']:.3f} | "
                         f"{syn['teacher_distinct_t0_beams']} |")
    lines += ["", "## Settings", "", "```", json.dumps(dataclasses.asdict(profile), indent=1), "```", "",
              "Mean seconds per run: " + ", ".join(f"{k} {v['seconds']:.0f}" for k, v in summary.items()) + ".", ""]
    return "\n".join(lines)


def write_report(profile_name: str, profile: Paper2Profile, data: Path, out: Path, done: Done, keys: list[str],
                 best: str, seeds: list[int], seconds: float) -> dict[str, Any]:
    """Write results.csv, runs.csv, paper2.png, report.md and summary.json; returns the summary and checks."""
    summary = summarize(done, best, seeds)
    checks = acceptance(summary, seeds)
    atomic_write_text(out / "results.csv", results_csv(summary, best))
    atomic_write_text(out / "runs.csv", runs_csv(done, keys, seeds))
    plot_figures(summary, best, out / "paper2.png")
    atomic_write_text(out / "report.md",
                      report_markdown(profile_name, profile, data, summary, best, checks, done, seeds, seconds))
    atomic_write_json(out / "summary.json", {"best_variant": best, "seeds": seeds, "seconds": round(seconds, 1),
                                             "summary": summary, "acceptance": checks})
    return {"best_variant": best, "summary": summary, "acceptance": checks, "seconds": seconds}
