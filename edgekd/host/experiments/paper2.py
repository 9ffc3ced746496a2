"""`edgekd reproduce paper2`: data-free KD for the LiDAR student (paper 2, Figs. 3-5), end to end.

Per seed:

- the LiDAR teacher (labels only; its checkpoint carries the metadata, i.e. the
  mean/variance of its last hidden state over the training split, plus the per-step
  layer statistics of ``edgekd metadata``, see :mod:`edgekd.host.distill.datafree`);
- the student without KD, standard KD (alpha * KL(T) + (1 - alpha) * CE,
  alpha 0.6, T 2) and KD-MSE (KL replaced by the logit MSE), on the real
  training split;
- data-free KD (:mod:`edgekd.host.distill.datafree`), which never reads a training
  input or label: one generator per loss variant (weighted, metadata,
  activation, entropy), each synthesising a fixed set on which a student
  learns with KL (Fig. 3); the best variant (highest top-5 averaged over
  horizons and seeds, on test as in the paper) also trains an MSE student
  (Fig. 4); Fig. 5's data-free row is the metadata generator with the MSE
  student, as in the paper.

Every number is on the test split. Each run keeps its checkpoint under
``OUT/runs/seed<S>/`` with a ``<run>.json`` record, so a rerun into the same
folder skips finished runs; ``OUT/plan.json`` pins the profile and dataset.
Outputs: ``report.md`` (tables of top-1/top-5 per horizon, mean ± std over
seeds, the acceptance checks, timings), ``results.csv`` (per run label,
metric and horizon: mean, std, seeds), ``runs.csv`` (one row per run and
seed) and ``paper2.png`` (Figs. 3-5 as grouped bars with std error bars).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click
import numpy as np

from edgekd.device.config import config_from_dict, load_yaml
from edgekd.device.errors import EdgekdError
from edgekd.device.io import atomic_write_bytes, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

PLAN_FORMAT = "edgekd-paper2-plan/1"
VARIANTS = ("weighted", "metadata", "activation", "entropy")
# Acceptance (issue 4): the data-free student (metadata generator, MSE student) keeps at least this share
# of the teacher's top-5 averaged over horizons, mean over at least MIN_SEEDS seeds.
MIN_TOP5_RATIO = 0.90
MIN_SEEDS = 3
QUICK_LIMIT_S = 15 * 60


# ---------------------------------------------------------------------------
# profiles


@dataclasses.dataclass
class Paper2Profile:
    """Everything that decides the experiment besides the seeds (YAML keys, unknown ones rejected)."""

    windows: int = 4000            # dataset synthesised when --data is not given (LiDAR only)
    data_seed: int = 0
    seeds: int = 3
    first_seed: int = 42
    threads: int | None = 1
    lr: float = 1e-3
    batch_size: int = 32
    teacher_epochs: int = 15
    student_epochs: int = 12       # no-KD / KD / KD-MSE students on the real training split
    patience: int = 20
    kd_alpha: float = 0.6
    kd_temperature: float = 2.0
    generator_steps: int = 400
    synthetic_samples: int = 3000
    # data-free students: a fresh set every epoch, so they cannot overfit a fixed one; batch 128 at lr 1e-2
    # trains as well as batch 32 at 3e-3 in half the CPU time (the unrolled GRU costs per step, not per window)
    datafree_epochs: int = 30
    datafree_lr: float = 1e-2
    datafree_batch_size: int = 128
    resample_each_epoch: bool = True    # a fresh synthetic set every student epoch (DataFreeConfig)
    output_mapping: str = "no_return"   # how the generator's tanh becomes a scan (DataFreeConfig.output_mapping)
    datafree_temperature: float = 2.0
    metadata_weight: float = 1.0   # alpha / beta / gamma of the weighted generator loss
    activation_weight: float = 0.1
    entropy_weight: float = 0.1

    def __post_init__(self) -> None:
        for name in ("windows", "seeds", "lr", "batch_size", "teacher_epochs", "student_epochs", "patience",
                     "generator_steps", "synthetic_samples", "datafree_epochs", "datafree_lr",
                     "datafree_batch_size", "kd_temperature", "datafree_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not 0.0 <= self.kd_alpha <= 1.0:
            raise ValueError(f"kd_alpha must be in [0, 1], got {self.kd_alpha}")
        if self.threads is not None and self.threads <= 0:
            raise ValueError(f"threads must be positive or null, got {self.threads}")

    def seed_list(self) -> list[int]:
        return [self.first_seed + i for i in range(self.seeds)]

    def fingerprint_fields(self) -> dict[str, Any]:
        """What a finished run depends on (seed count and threads may change between reruns)."""
        fields = dataclasses.asdict(self)
        fields.pop("seeds")
        fields.pop("threads")
        return fields


PROFILES: dict[str, dict[str, Any]] = {
    # a tiny end-to-end pass for the tests (numbers mean nothing)
    "smoke": {"windows": 400, "seeds": 2, "teacher_epochs": 2, "student_epochs": 2, "patience": 5,
              "generator_steps": 20, "synthetic_samples": 256, "datafree_epochs": 2},
    # under 15 minutes on the 2-core host (BENCHMARKS.md)
    "quick": {},
    # the paper's schedule: 100 epochs (patience 20) on real data, 500 generator epochs of 5000/32 steps
    # and 500 student epochs on the 5000 fixed synthetic sequences
    "paper": {"windows": 20000, "teacher_epochs": 100, "student_epochs": 100, "patience": 20,
              "generator_steps": 500 * 157, "synthetic_samples": 5000, "datafree_epochs": 500, "threads": None,
              "datafree_lr": 1e-3, "datafree_batch_size": 32, "resample_each_epoch": False},
}


def load_profile(name: str, config_path: Path | None = None, **overrides: Any) -> Paper2Profile:
    if name not in PROFILES:
        raise EdgekdError(f"unknown profile {name!r}", field="profile", fix=f"use one of {', '.join(PROFILES)}")
    values = dict(PROFILES[name])
    if config_path is not None:
        values.update(load_yaml(config_path))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return config_from_dict(Paper2Profile, values, source=str(config_path or f"profile {name}"))


# ---------------------------------------------------------------------------
# the runs


@dataclasses.dataclass(frozen=True)
class Row:
    """One bar group of a figure: which run label it shows."""

    figure: str
    key: str       # run key in the records, e.g. "df_metadata_mse"
    label: str


def figure_rows(best: str) -> list[Row]:
    rows = [Row("fig3", f"df_{v}_kl", f"generator: {v}") for v in VARIANTS]
    rows += [Row("fig4", f"df_{best}_kl", f"KL ({best} generator)"),
             Row("fig4", f"df_{best}_mse", f"MSE ({best} generator)")]
    rows += [Row("fig5", "teacher", "teacher"), Row("fig5", "student_none", "student w/o KD"),
             Row("fig5", "student_kd", "standard KD"), Row("fig5", "student_kd_mse", "KD-MSE"),
             Row("fig5", "df_metadata_mse", "DF-KD (metadata, MSE)")]
    return rows


class Experiment:
    """The matrix of runs in one output folder; each finished run leaves ``runs/seed<S>/<key>.json``."""

    def __init__(self, profile: Paper2Profile, out: Path, data: Path, *, progress: bool = True):
        self.profile, self.out, self.data, self.progress = profile, out, data, progress
        self.records: dict[tuple[int, str], dict] = {}

    # -- bookkeeping ------------------------------------------------------------------------------
    def run_dir(self, seed: int) -> Path:
        path = self.out / "runs" / f"seed{seed}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def done(self, seed: int, key: str) -> dict | None:
        path = self.run_dir(seed) / f"{key}.json"
        if (seed, key) not in self.records and path.is_file():
            self.records[(seed, key)] = json.loads(path.read_text())
        return self.records.get((seed, key))

    def record(self, seed: int, key: str, metrics: Mapping[str, Any], seconds: float, **info: Any) -> dict:
        rec = {"seed": seed, "key": key, "seconds": round(seconds, 2),
               "top1": list(metrics["top1"]), "top5": list(metrics["top5"]),
               "top1_mean": metrics["top1_mean"], "top5_mean": metrics["top5_mean"], **info}
        atomic_write_json(self.run_dir(seed) / f"{key}.json", rec)
        self.records[(seed, key)] = rec
        return rec

    def train_config(self, seed: int, epochs: int, **extra: Any):
        from edgekd.host.distill.config import TrainConfig

        p = self.profile
        return TrainConfig(epochs=epochs, batch_size=p.batch_size, lr=p.lr, patience=p.patience, seed=seed,
                           supervised_loss="ce", threads=p.threads, progress=False, **extra)

    # -- real-data runs ---------------------------------------------------------------------------
    def teacher(self, seed: int) -> Path:
        from edgekd.host.distill.api import train_model

        ckpt = self.run_dir(seed) / "teacher.pt"
        if self.done(seed, "teacher") is None or not ckpt.is_file():
            start = time.perf_counter()
            _, result = train_model("lidar_teacher", self.data, self.train_config(seed, self.profile.teacher_epochs),
                                    out=ckpt)
            self.record(seed, "teacher", result.metrics["test"], time.perf_counter() - start,
                        epochs=result.epochs_run, best_epoch=result.best_epoch)
        self.teacher_layer_metadata(ckpt)
        return ckpt

    def teacher_layer_metadata(self, ckpt: Path) -> None:
        """Teacher side: store the per-layer metadata (``edgekd metadata``) the data-free generators match."""
        from edgekd.host.checkpoint import load_checkpoint
        from edgekd.host.distill import datafree as D

        if "layers" not in (load_checkpoint(ckpt).teacher_stats or {}):
            D.add_layer_metadata(ckpt, self.data)

    def student_none(self, seed: int) -> None:
        from edgekd.host.distill.api import train_model

        if self.done(seed, "student_none") is None:
            start = time.perf_counter()
            _, result = train_model("lidar_student", self.data, self.train_config(seed, self.profile.student_epochs),
                                    out=self.run_dir(seed) / "student_none.pt")
            self.record(seed, "student_none", result.metrics["test"], time.perf_counter() - start,
                        epochs=result.epochs_run, best_epoch=result.best_epoch)

    def student_kd(self, seed: int, teacher: Path, method: str, key: str) -> None:
        from edgekd.host.distill.api import distill_model

        if self.done(seed, key) is None:
            p = self.profile
            cfg = self.train_config(seed, p.student_epochs, alpha=p.kd_alpha, temperature=p.kd_temperature)
            start = time.perf_counter()
            _, result = distill_model(teacher, "lidar_student", method, self.data, cfg,
                                      out=self.run_dir(seed) / f"{key}.pt")
            self.record(seed, key, result.metrics["test"], time.perf_counter() - start,
                        epochs=result.epochs_run, best_epoch=result.best_epoch)

    # -- data-free runs ---------------------------------------------------------------------------
    def datafree_config(self, seed: int, variant: str, student_loss: str):
        from edgekd.host.distill.config import DataFreeConfig

        p = self.profile
        df = DataFreeConfig(generator_loss=variant, student_loss=student_loss, metadata_weight=p.metadata_weight,
                            activation_weight=p.activation_weight, entropy_weight=p.entropy_weight,
                            generator_steps=p.generator_steps, synthetic_samples=p.synthetic_samples,
                            output_mapping=p.output_mapping, resample_each_epoch=p.resample_each_epoch)
        cfg = self.train_config(seed, p.datafree_epochs, temperature=p.datafree_temperature, datafree=df)
        return dataclasses.replace(cfg, lr=p.datafree_lr, batch_size=p.datafree_batch_size)

    def datafree(self, seed: int, teacher: Path, variant: str, losses: tuple[str, ...]) -> None:
        """One generator for ``variant``, then one student per student loss on its synthetic set."""
        from edgekd.host.distill import datafree as D

        todo = [loss for loss in losses if self.done(seed, f"df_{variant}_{loss}") is None]
        if not todo:
            return
        cfg = self.datafree_config(seed, variant, todo[0])
        if cfg.threads:
            import torch

            torch.set_num_threads(cfg.threads)
        start = time.perf_counter()
        _, teacher_model, metadata = D.load_teacher(teacher, cfg.datafree)
        generator, history = D.train_generator(teacher_model, metadata, cfg.datafree, seed=seed, progress=False)
        synthetic = D.synthesize_set(generator, teacher_model, cfg.datafree.synthetic_samples, seed=seed + 1)
        generator_seconds = time.perf_counter() - start
        for loss in todo:
            start = time.perf_counter()
            cfg = self.datafree_config(seed, variant, loss)
            _, result = D.distill_datafree(teacher, "lidar_student", cfg, self.run_dir(seed) / f"df_{variant}_{loss}.pt",
                                           data=self.data, synthetic=synthetic, generator=generator,
                                           generator_history=history)
            self.record(seed, f"df_{variant}_{loss}", result.metrics["test"],
                        time.perf_counter() - start + generator_seconds, generator_seconds=round(generator_seconds, 2),
                        synthetic=result.synthetic, generator_final=history[-1] if history else {})

    # -- the whole matrix -------------------------------------------------------------------------
    def run(self, echo: Callable[[str], None] = log.info) -> dict[str, Any]:
        from tqdm.auto import tqdm

        seeds = self.profile.seed_list()
        steps = [(s, "real") for s in seeds] + [(s, v) for s in seeds for v in VARIANTS]
        bar = tqdm(total=len(steps) + len(seeds) + 1, desc="paper2", unit="stage", disable=not self.progress)
        teachers = {}
        for seed in seeds:
            bar.set_postfix_str(f"seed {seed}: teacher, no-KD, KD, KD-MSE")
            teachers[seed] = self.teacher(seed)
            self.student_none(seed)
            self.student_kd(seed, teachers[seed], "kd", "student_kd")
            self.student_kd(seed, teachers[seed], "mse", "student_kd_mse")
            bar.update(1)
        for seed in seeds:
            for variant in VARIANTS:
                bar.set_postfix_str(f"seed {seed}: generator {variant}")
                # the metadata generator also trains the MSE student of Fig. 5 on the same synthetic set
                self.datafree(seed, teachers[seed], variant, ("kl", "mse") if variant == "metadata" else ("kl",))
                bar.update(1)
        best = self.best_variant(seeds)
        echo(f"best generator (top-5 mean on test, Fig. 3): {best}")
        for seed in seeds:
            bar.set_postfix_str(f"seed {seed}: {best} generator, MSE student")
            self.datafree(seed, teachers[seed], best, ("mse",))
            bar.update(1)
        bar.update(1)
        bar.close()
        return {"best_variant": best, "seeds": seeds}

    def best_variant(self, seeds: list[int]) -> str:
        scores = {v: float(np.mean([self.done(s, f"df_{v}_kl")["top5_mean"] for s in seeds])) for v in VARIANTS}
        return max(VARIANTS, key=lambda v: (scores[v], v == "metadata"))


# ---------------------------------------------------------------------------
# the dataset


def synthesize_lidar_dataset(out: Path, windows: int, seed: int) -> Path:
    """The synthetic scenario with only the LiDAR frames stored (the camera is rendered at 16x16 and dropped)."""
    from edgekd.host.data import synth
    from edgekd.host.data.store import write_dataset

    cfg = synth.load_scene_config()
    recording = synth.synthesize(cfg, windows=windows, seed=seed, image_size=16, progress=False)
    info = {k: v for k, v in recording.frame_info.items()
            if not k.startswith("available_") or k == "available_lidar"}
    preprocessing = {"lidar": {"bins": cfg.lidar.bins, "fov_deg": cfg.lidar.fov_deg,
                               "max_range_m": cfg.lidar.max_range_m}}
    return write_dataset(out, frames={"lidar": recording.frames["lidar"]}, power=recording.power,
                         beams=recording.beams, frame_info=info, source="synthetic", config=recording.config,
                         seed=seed, overwrite=True, preprocessing=preprocessing,
                         extra_meta={"requested_windows": windows, "note": "LiDAR-only copy for paper 2"})


def prepare_data(profile: Paper2Profile, out: Path, data: Path | None) -> Path:
    if data is not None:
        from edgekd.host.data import read_meta

        meta = read_meta(data)
        if "lidar" not in meta.get("modalities", {}):
            raise EdgekdError("the dataset has no LiDAR frames", file=data, field="modalities",
                              fix="synthesise one with `edgekd data synth` or omit --data")
        missing = [s for s in ("train", "val", "test") if s not in meta.get("splits", {})]
        if missing:
            raise EdgekdError(f"the dataset has no {missing[0]} split", file=data, field="splits",
                              fix="paper 2 splits 70/15/15: `edgekd data synth --split 0.7,0.15,0.15`")
        return data
    path = out / "data"
    if not (path / "meta.json").is_file():
        synthesize_lidar_dataset(path, profile.windows, profile.data_seed)
    return path


def check_plan(out: Path, profile: Paper2Profile, data: Path) -> None:
    """A rerun into the same folder must use the same settings and dataset (finished runs are reused)."""
    from edgekd.host.data import read_meta

    plan = {"format": PLAN_FORMAT, "profile": profile.fingerprint_fields(), "datafree_options": datafree_options(),
            "data_fingerprint": read_meta(data)["fingerprint"]}
    path = out / "plan.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != plan:
            raise EdgekdError("this folder holds runs of another profile or dataset", file=path,
                              fix="choose another --out, or delete the folder to start over")
    atomic_write_json(path, plan)


# ---------------------------------------------------------------------------
# aggregation and the report


def aggregate(records: list[dict]) -> dict[str, Any]:
    """Mean and std (ddof 1; 0 for one seed) over seeds of top-1/top-5 per horizon and their means."""
    out: dict[str, Any] = {"seeds": len(records), "seconds": float(np.mean([r["seconds"] for r in records]))}
    for metric in ("top1", "top5"):
        values = np.asarray([r[metric] for r in records], dtype=np.float64)      # [seeds, horizons]
        means = values.mean(axis=1)
        ddof = 1 if len(records) > 1 else 0
        out[metric] = values.mean(axis=0).tolist()
        out[f"{metric}_std"] = values.std(axis=0, ddof=ddof).tolist()
        out[f"{metric}_mean"] = float(means.mean())
        out[f"{metric}_mean_std"] = float(means.std(ddof=ddof))
    return out


def summarize(exp: Experiment, best: str, seeds: list[int]) -> dict[str, dict]:
    keys = {row.key for row in figure_rows(best)}
    return {key: aggregate([exp.done(s, key) for s in seeds]) for key in sorted(keys)}


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


def results_csv(summary: Mapping[str, dict], best: str) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["figure", "run", "label", "metric", "horizon", "mean", "std", "seeds"])
    for row in figure_rows(best):
        agg = summary[row.key]
        for metric in ("top1", "top5"):
            for h, (m, s) in enumerate(zip(agg[metric], agg[f"{metric}_std"])):
                writer.writerow([row.figure, row.key, row.label, metric, f"t{h}", f"{m:.4f}", f"{s:.4f}", agg["seeds"]])
            writer.writerow([row.figure, row.key, row.label, metric, "mean", f"{agg[f'{metric}_mean']:.4f}",
                             f"{agg[f'{metric}_mean_std']:.4f}", agg["seeds"]])
    return buffer.getvalue()


def runs_csv(exp: Experiment, keys: list[str], seeds: list[int]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["run", "seed", *[f"top1_t{h}" for h in range(4)], *[f"top5_t{h}" for h in range(4)],
                     "top1_mean", "top5_mean", "seconds"])
    for key in keys:
        for seed in seeds:
            r = exp.done(seed, key)
            writer.writerow([key, seed, *[f"{v:.4f}" for v in r["top1"]], *[f"{v:.4f}" for v in r["top5"]],
                             f"{r['top1_mean']:.4f}", f"{r['top5_mean']:.4f}", r["seconds"]])
    return buffer.getvalue()


def plot_figures(summary: Mapping[str, dict], best: str, path: Path) -> None:
    """Figs. 3-5: one row per figure, top-1 and top-5 panels, grouped bars per horizon with std bars."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = figure_rows(best)
    titles = {"fig3": "Fig. 3: generator loss (KL student)", "fig4": "Fig. 4: student loss",
              "fig5": "Fig. 5: teacher, KD baselines, DF-KD"}
    fig, axes = plt.subplots(3, 2, figsize=(11, 11), squeeze=False)
    for i, figure in enumerate(("fig3", "fig4", "fig5")):
        members = [r for r in rows if r.figure == figure]
        width = 0.8 / len(members)
        for j, metric in enumerate(("top1", "top5")):
            ax = axes[i][j]
            for k, row in enumerate(members):
                agg = summary[row.key]
                x = np.arange(len(agg[metric])) + (k - (len(members) - 1) / 2) * width
                ax.bar(x, agg[metric], width=width, yerr=agg[f"{metric}_std"], capsize=2, label=row.label)
            ax.set_xticks(range(4), [f"$t_{h}$" for h in range(4)])
            ax.set_ylim(0, 1)
            ax.set_title(f"{titles[figure]}: top-{metric[-1]}", fontsize="medium")
            ax.grid(axis="y", alpha=0.3)
        axes[i][0].set_ylabel("accuracy (mean ± std over seeds)")
        axes[i][1].legend(fontsize="x-small", loc="lower right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _fmt(agg: Mapping[str, Any], metric: str) -> list[str]:
    cells = [f"{m:.3f} ± {s:.3f}" for m, s in zip(agg[metric], agg[f"{metric}_std"])]
    return cells + [f"**{agg[f'{metric}_mean']:.3f} ± {agg[f'{metric}_mean_std']:.3f}**"]


def datafree_options() -> dict[str, Any]:
    """The data-free settings beyond the paper that are not profile fields (DataFreeConfig's defaults)."""
    from edgekd.host.distill import datafree as D
    from edgekd.host.distill.config import DataFreeConfig

    return D.beyond_paper_options(DataFreeConfig())


def _datafree_options_note() -> str:
    options = datafree_options()
    init = ("the student starts from the teacher's first layer, kept frozen (DistilBERT-style, no data)"
            if options["student_init"] == "teacher_embedding" else "the student starts from scratch")
    prior = (f"; every generator variant adds a scan smoothness prior (weight {options['smoothness_weight']:g})"
             if options["smoothness_weight"] > 0 else "")
    return f"Beyond the paper: {init}{prior}."


def report_markdown(profile_name: str, profile: Paper2Profile, data: Path, summary: Mapping[str, dict], best: str,
                    checks: list[dict], exp: Experiment, seeds: list[int], seconds: float) -> str:
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
        + (", a fresh set every epoch" if profile.resample_each_epoch else "") + ". " + _datafree_options_note(),
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
        syn = exp.done(seeds[-1], f"df_{variant}_kl").get("synthetic", {})
        if syn:
            lines.append(f"| {variant} | {syn['input_mean']:.3f} | {syn['input_std']:.3f} | "
                         f"{syn['input_window_std']:.3f} | {syn['teacher_entropy']:.3f} | "
                         f"{syn['teacher_distinct_t0_beams']} |")
    lines += ["", "## Settings", "", "```", json.dumps(dataclasses.asdict(profile), indent=1), "```", "",
              "Mean seconds per run: " + ", ".join(f"{k} {v['seconds']:.0f}" for k, v in summary.items()) + ".", ""]
    return "\n".join(lines)


def run_paper2(profile_name: str, profile: Paper2Profile, out: Path, data: Path | None, *, progress: bool = True,
               echo: Callable[[str], None] = log.info) -> dict[str, Any]:
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    data = prepare_data(profile, out, data)
    check_plan(out, profile, data)
    exp = Experiment(profile, out, data, progress=progress)
    plan = exp.run(echo)
    best, seeds = plan["best_variant"], plan["seeds"]
    summary = summarize(exp, best, seeds)
    checks = acceptance(summary, seeds)
    seconds = time.perf_counter() - start
    keys = sorted({key for (_, key) in exp.records})
    atomic_write_text(out / "results.csv", results_csv(summary, best))
    atomic_write_text(out / "runs.csv", runs_csv(exp, keys, seeds))
    plot_figures(summary, best, out / "paper2.png")
    atomic_write_text(out / "report.md",
                      report_markdown(profile_name, profile, data, summary, best, checks, exp, seeds, seconds))
    atomic_write_json(out / "summary.json", {"best_variant": best, "seeds": seeds, "seconds": round(seconds, 1),
                                             "summary": summary, "acceptance": checks})
    return {"best_variant": best, "summary": summary, "acceptance": checks, "seconds": seconds}


@click.command("paper2")
@click.option("--profile", "profile_name", type=click.Choice(list(PROFILES)), default="quick", show_default=True,
              help="quick: under 15 min on 2 cores; paper: the paper's epochs; smoke: a tiny pass for tests.")
@click.option("--seeds", type=int, default=None, help="Number of seeds (first_seed, first_seed+1, ...) [profile: 3].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("paper2"), show_default=True,
              help="Output folder (report.md, results.csv, runs.csv, paper2.png, runs/); reruns reuse finished runs.")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Dataset with LiDAR and train/val/test splits [default: synthesise a LiDAR-only one in OUT/data].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="YAML with Paper2Profile keys applied over the profile (unknown keys are errors).")
@click.option("--threads", type=int, default=None, help="torch intra-op threads per run [profile: 1].")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show the progress bar.")
def command(profile_name: str, seeds: int | None, out: Path, data: Path | None, config_path: Path | None,
            threads: int | None, progress: bool) -> None:
    """Data-free KD for the LiDAR student (paper 2, Figs. 3-5): report.md, results.csv, paper2.png."""
    profile = load_profile(profile_name, config_path, seeds=seeds, threads=threads)
    result = run_paper2(profile_name, profile, out, data, progress=progress, echo=click.echo)
    for check in result["acceptance"]:
        click.echo(f"{'pass' if check['passed'] else 'FAIL'}: {check['check']}: {check['value']}")
    click.echo(f"wrote {out / 'report.md'}, {out / 'results.csv'}, {out / 'runs.csv'}, {out / 'paper2.png'} "
               f"in {result['seconds'] / 60:.1f} min")
