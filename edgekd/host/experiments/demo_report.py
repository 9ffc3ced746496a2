"""``OUT/report.md`` of `edgekd demo`: tables from what the stages wrote, plus the PNG plots.

Every figure is read back from the stage outputs (stage markers, the bundle
manifest, the replay summaries, ``bench.json``), never recomputed here, so the
report says exactly what the pipeline produced.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.device.io import atomic_write_text
from edgekd.host.experiments.writers import grouped_bars, pyplot, save_png

HORIZON_NAMES = ("t0", "t1", "t2", "t3")
# issue 6's acceptance: night top-5 (t0) with switching >= image-only + 15 points and within 5 of daytime
NIGHT_GAIN_POINTS = 15.0
LIDAR_STUDENTS = {"kd": "response KD", "datafree": "data-free"}
DAY_NIGHT_GAP_POINTS = 5.0


def write_demo_report(demo) -> Path:
    """Write ``report.md`` (and its PNGs) into the demo folder; returns its path."""
    out = demo.out
    stages = {name: demo.finished(name) for name in ("data", "teachers", "students", "export", "qat", "replay",
                                                      "bench")}
    manifest = json.loads((demo.output("qat", "bundle") / "manifest.json").read_text())
    replays = {name: json.loads(demo.output("replay", "summaries", name).read_text())
               for name in stages["replay"]["summaries"]}
    bench = json.loads(demo.output("bench", "report").read_text())
    plot_accuracy(out / "accuracy.png", stages["teachers"]["test"], stages["students"]["test"])
    for name in replays:
        shutil.copyfile(out / "replay" / name / "timeline.png", out / f"timeline_{name}.png")
    sections = [
        header(demo, stages, bench["host"]),
        dataset_section(stages["data"], out),
        accuracy_section(stages["teachers"]["test"], stages["students"]["test"],
                         {name: extra["test"] for name, extra in stages["students"].get("not_deployed", {}).items()},
                         stages["students"].get("deployed", {})),
        compression_section({m: demo.output("teachers", "checkpoints", m) for m in stages["students"]["checkpoints"]},
                            {m: demo.output("students", "checkpoints", m) for m in stages["students"]["checkpoints"]},
                            manifest),
        parity_section(manifest) + qat_section(demo, stages["qat"], manifest),
        switching_section(replays),
        bench_section(bench),
    ]
    return atomic_write_text(out / "report.md", "\n".join(sections))


# ---------------------------------------------------------------------------
# sections


def header(demo, stages: Mapping[str, dict], host: Mapping[str, Any]) -> str:
    """Title, machine (as firmware_bench recorded it in bench.json), profile and stage timings."""
    total = sum(s["seconds"] for s in stages.values())
    timings = " | ".join(f"{name} {s['seconds']:.0f} s" for name, s in stages.items())
    cpu = sum(s.get("cpu_seconds", 0.0) for s in stages.values())
    loads = [s["load_average"][0] for s in stages.values() if s.get("load_average")]
    p = demo.profile
    return (f"# edgekd demo report\n\n"
            f"Target **{demo.target.name}** ({demo.target.description}); generated "
            f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {host['machine']} ({host['platform']}, "
            f"{host.get('cpus_usable', host['cpu_count'])} CPUs), Python {host['python']}.\n\n"
            f"Profile: {p.windows} synthetic windows at {p.image_size}x{p.image_size}, image and radar teachers at "
            f"width {p.teacher_width:g} for {p.teacher_epochs} epochs (lr {p.teacher_lr or 'of teacher.yaml'}), the "
            f"LiDAR teacher {p.lidar_teacher_epochs} epochs, the image and radar (width {p.radar_student_width:g}) "
            f"students {p.student_epochs} and {p.radar_student_epochs} epochs with "
            f"{'response' if p.kd_method == 'kd' else 'relation'} KD, the LiDAR students by response KD "
            f"({p.lidar_student_epochs} epochs) and data-free ({p.generator_loss} generator, {p.student_loss} "
            f"student loss), the {LIDAR_STUDENTS[p.lidar_student]} one deployed, seed {p.seed}.\n\n"
            f"Stage wall times (first run of each stage): {timings}; total {total / 60:.1f} min wall, "
            f"{cpu / 60:.1f} min CPU (this process and its converter children)"
            + (f"; 1-minute load average at the stage ends {min(loads):.1f}-{max(loads):.1f}" if loads else "")
            + ".\n\n"
            f"Reproduce: `edgekd demo --out DIR --target {demo.target.name}` (add `--resume` to continue "
            f"an interrupted run).\n")


def dataset_section(data: Mapping[str, Any], out: Path) -> str:
    splits = ", ".join(f"{name} {count}" for name, count in data["splits"].items())
    return (f"## 1. Data\n\nSynthetic default scenario (60 GHz, 16-element ULA, 64 beams; camera, radar, LiDAR, "
            f"GPS rendered from one ground truth): windows {splits}. Day -> night drive for the runtime: "
            f"{data['drive_frames']} frames at 10 Hz.\n\n![one window of every modality](data/dataset.png)\n")


def accuracy_section(teachers: Mapping[str, dict], students: Mapping[str, dict],
                     others: Mapping[str, dict] | None = None, deployed: Mapping[str, str] | None = None) -> str:
    """Teacher and deployed student per modality; ``others`` ("lidar_datafree": metrics) are students trained
    but not deployed, shown under their modality."""
    others, deployed = others or {}, deployed or {}
    rows = []
    for modality in students:
        kind = deployed.get(modality)
        entries = [("teacher", teachers[modality]),
                   (f"student ({LIDAR_STUDENTS[kind]}, deployed)" if kind else "student", students[modality])]
        entries += [(f"student ({LIDAR_STUDENTS.get(name.split('_', 1)[1], name)}, not deployed)", metrics)
                    for name, metrics in others.items() if name.split("_", 1)[0] == modality]
        for role, metrics in entries:
            for k in (1, 2, 5):
                values = metrics[f"top{k}"]
                rows.append([modality, role, f"top-{k}", *(_pct(v) for v in values), _pct(metrics[f"top{k}_mean"])])
            if role != "teacher":
                share = _ratio(metrics["top5_mean"], teachers[modality]["top5_mean"])
                rows.append([modality, f"{role} / teacher", "top-5", "", "", "", "", share])
    table = _table(["modality", "model", "metric", *HORIZON_NAMES, "mean"], rows)
    return ("## 2. Accuracy per horizon (PyTorch fp32, test split)\n\n"
            "Teachers learn on the whole training split; the image, radar and LiDAR students are distilled from "
            "their teacher on the same split (response KD). The data-free LiDAR student never sees a training "
            "input (data-free KD from the teacher, its stored per-layer statistics and a frozen copy of its "
            "first layer; paper 2).\n\n"
            f"{table}\n![top-5 per horizon, teacher vs student](accuracy.png)\n")


def compression_section(teachers: Mapping[str, Path], students: Mapping[str, Path], manifest: Mapping) -> str:
    rows = []
    for modality, student_ckpt in students.items():
        t_params, t_macs = model_cost(teachers[modality])
        s_params, s_macs = model_cost(student_ckpt)
        artifacts = manifest["students"][modality]["artifacts"]
        fp32, int8 = artifacts["tflite_fp32"]["size"], artifacts["tflite_int8"]["size"]
        rows.append([modality, f"{t_params:,}", f"{s_params:,}", f"{t_params / s_params:.1f}x",
                     f"{t_macs / 1e6:.2f}M", f"{s_macs / 1e6:.2f}M", f"{fp32:,}", f"{int8:,}", f"{fp32 / int8:.2f}x"])
    table = _table(["student", "teacher params", "student params", "param ratio", "teacher MACs", "student MACs",
                    "TFLite fp32 bytes", "TFLite int8 bytes", "fp32/int8"], rows)
    return ("## 3. Compression\n\nMACs count one multiply-accumulate per matmul/conv product "
            "(`torch.utils.flop_counter` FLOPs / 2) at batch 1.\n\n" + table)


def _row_verdict(student: str, kind: str, parity: Mapping) -> str:
    """The gate's verdict on one artifact: FAIL only where a failure names it; a row the drops are measured
    against (fp32, no drop of its own) is the reference, not a pass or a fail."""
    if any(f.startswith(f"{student}/{kind} ") for f in parity.get("failures", [])):
        return "FAIL"
    return "pass" if kind in parity.get("drops", {}) else "reference"


def parity_section(manifest: Mapping) -> str:
    rows = []
    for name, student in manifest["students"].items():
        parity = student["parity"]
        for kind, artifact in student["artifacts"].items():
            acc = artifact.get("accuracy") or {}
            drop = parity["drops"].get(kind, {})
            rows.append([name, kind, f"{artifact['size']:,}", _pct(acc.get("top2_mean")), _pct(acc.get("top5_mean")),
                         f"{drop['points']:+.1f}" if drop else "", _pct(parity["top1_agreement"].get(kind)),
                         _row_verdict(name, kind, parity)])
    table = _table(["student", "artifact", "bytes", "top-2", "top-5", "top-2 drop vs fp32 (points)",
                    "top-1 agreement with fp32", "gate"], rows)
    budget = manifest["target"].get("int8_max_top2_drop")
    degraded = ("\n**The bundle is marked degraded:** " + "; ".join(manifest["degraded_reasons"]) + "\n"
                if manifest.get("degraded") else "")
    return (f"## 4. Export parity (real interpreters, held-out test windows)\n\nGate: int8 top-2 (mean over "
            f"horizons) may drop at most {budget} point(s) below float32, and no artifact may predict a "
            f"constant beam.\n\n{table}{degraded}")


def drops_text(drops: Mapping) -> str:
    """A parity entry's drops in one line: ``tflite_int8 +0.41, onnx_int8_qdq -0.08``."""
    return ", ".join(f"{fmt} {d['points']:+.2f}" for fmt, d in drops.items())


def qat_section(demo, qat: Mapping, manifest: Mapping) -> str:
    """What the qat stage did: the PTQ drops that sent a student there, and its drops after QAT
    (``manifest``: the deployed bundle's, i.e. the one exported after QAT)."""
    from edgekd.host.checkpoint import load_checkpoint

    p = demo.profile
    if not qat["fine_tuned"]:
        why = ("profile `qat: never`" if p.qat == "never" else
               "only a data-free student failed (QAT would read training windows)" if qat["not_fine_tuned_data_free"]
               else "every student's post-training int8 files passed the gate")
        return f"\nThe bundle above is post-training quantised: no QAT fine-tune ({why}).\n"
    rows = []
    for modality, ckpt in qat["fine_tuned"].items():
        metrics = load_checkpoint(demo.out / ckpt).metrics
        cost = metrics["qat"]
        rows.append([modality, drops_text(qat["ptq_drops"][modality]),
                     drops_text(manifest["students"][modality]["parity"]["drops"]),
                     f"{_pct(metrics['float_run']['test']['top2_mean'])} -> {_pct(metrics['test']['top2_mean'])}",
                     f"{cost['epochs']} ({cost['seconds']:.0f} s, +{100 * cost['cost_vs_float_run']:.0f}%)"])
    table = _table(["student", "PTQ top-2 drop (points)", "after QAT", "float top-2 before -> after",
                    "QAT epochs (time, vs float run)"], rows)
    return ("\nQuantisation-aware fine-tune (stage `qat`, profile `qat: " + p.qat + "`): the students below were "
            "fine-tuned with fake quantisation where the int8 graph rounds and exported again; the table above "
            "is that export.\n\n" + table)


def switching_section(replays: Mapping[str, dict]) -> str:
    auto, fixed = replays["auto"], replays["image-only"]
    fixed_by = {r["group"]: r for r in fixed["rows"]}
    rows = []
    for row in auto["rows"]:
        base = fixed_by.get(row["group"], {})
        rows.append([row["group"], row["frames"], row["students"], _pct(row["top1_t0"]), _pct(row["top5_t0"]),
                     _pct(base.get("top5_t0")), f"{row['latency_p50_ms']:.2f}", f"{row['latency_p99_ms']:.2f}"])
    table = _table(["segment", "frames", "active student (share)", "top-1 t0", "top-5 t0",
                    "image-only top-5 t0", "latency p50 ms", "p99 ms"], rows)
    night, day = auto["top5_t0"].get("night"), auto["top5_t0"].get("day")
    night_fixed = fixed["top5_t0"].get("night")
    checks = ""
    if None not in (night, day, night_fixed):
        gain, gap = 100 * (night - night_fixed), 100 * (day - night)
        checks = (f"\nNight top-5 (t0): {_pct(night)} with switching vs {_pct(night_fixed)} image-only "
                  f"({gain:+.1f} points; target >= +{NIGHT_GAIN_POINTS:.0f}: "
                  f"{'met' if gain >= NIGHT_GAIN_POINTS else 'not met'}); daytime {_pct(day)} "
                  f"(night is {gap:.1f} points below; target <= {DAY_NIGHT_GAP_POINTS:.0f}: "
                  f"{'met' if gap <= DAY_NIGHT_GAP_POINTS else 'not met'}).\n")
    kinds = ", ".join(f"{k} {v}" for k, v in auto["switches_by_kind"].items())
    return (f"## 5. Day -> night drive through the multi-student runtime\n\n{auto['frames']} frames replayed as "
            f"fast as possible; {auto['switches']} switches ({kinds}) over {auto['condition_changes']} condition "
            f"changes; runtime overhead (all but invoke) p50 {auto['overhead_ms']['p50']:.3f} ms.\n\n"
            f"{_tracks_sentence(auto['counters'])}\n\n{table}{checks}\n"
            "![timeline with switching](timeline_auto.png)\n\n"
            "![timeline of the image-only runtime](timeline_image-only.png)\n")


def _tracks_sentence(counters: Mapping) -> str:
    """How the frames without a prediction split into track warm-up and the rest."""
    if "tracks" not in counters:  # a replay summary from before tracks existed
        return f"Frames without a prediction: {counters['no_prediction']}."
    return (f"The drive is {counters['tracks']} passes (tracks) of the user through a base station's view; at "
            f"each the runtime starts empty windows, so the first frames of a track ({counters['warm_up_frames']} "
            f"in all) have no prediction and are not scored, as no dataset window spans two passes. Frames "
            f"without a prediction after warm-up: {counters['no_prediction_after_warm_up']}.")


def bench_section(bench: Mapping) -> str:
    rows = []
    for r in bench["results"]:
        inv, e2e, energy = r["latency"]["invoke"], r["latency"]["end_to_end"], r["energy"]
        mj = energy.get("per_inference_mj")
        rows.append([r["student"], r["artifact"], r["latency"]["runs"], f"{r['latency']['init_ms']:.1f}",
                     f"{inv['p50_ms']:.3f}", f"{inv['p90_ms']:.3f}", f"{inv['p99_ms']:.3f}", f"{e2e['p50_ms']:.3f}",
                     f"{r['memory']['peak_rss_during_runs_bytes'] / 2**20:.0f}",
                     f"{r['memory']['file_bytes']['model']:,}",
                     f"{mj:.3f} ({energy['method']})" if mj is not None else energy["method"]])
    table = _table(["student", "artifact", "runs", "init ms", "invoke p50 ms", "p90", "p99", "end-to-end p50 ms",
                    "RSS MiB", "model bytes", "energy mJ/inference"], rows)
    flags = sorted({flag for r in bench["results"] for flag in r.get("flags", [])})
    notes = "".join(f"- {flag}\n" for flag in flags)
    return (f"## 6. Benchmark on this machine (`firmware_bench`)\n\nEnd-to-end = quantise input + invoke + "
            f"dequantise output. On a board: `edgekd bench --target NAME --bundle bundle/` (needs only "
            f"`edgekd[device]`).\n\n{table}\nFlags:\n\n{notes}")


# ---------------------------------------------------------------------------
# helpers


def model_cost(checkpoint: str | Path) -> tuple[int, int]:
    """(parameters, MACs at batch 1) of a checkpoint's model."""
    from edgekd.host.checkpoint import load_checkpoint
    from edgekd.host.reports.model_cost import count_macs, count_params

    model: Any = load_checkpoint(checkpoint).build().eval()
    return count_params(model), count_macs(model, model.example_inputs(batch=1))


def plot_accuracy(path: Path, teachers: Mapping[str, dict], students: Mapping[str, dict]) -> Path:
    """Top-5 per horizon, teacher vs student, one panel per modality."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(students), figsize=(4 * len(students), 3.2), sharey=True, squeeze=False)
    for ax, modality in zip(axes[0], students):
        grouped_bars(ax, [("teacher", teachers[modality]["top5"], None, None),
                          ("student", students[modality]["top5"], None, None)])
        ax.set_xticks(np.arange(len(HORIZON_NAMES)), HORIZON_NAMES)
        ax.set_title(modality)
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("top-5 accuracy (test)")
    axes[0][0].legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return save_png(fig, path, dpi=110)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def _ratio(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "n/a"
