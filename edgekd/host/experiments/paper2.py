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

The profile and the figure rows live in :mod:`.paper2_matrix`, the report in
:mod:`.paper2_report`; named profiles are ``profiles/paper2-<name>.yaml``.

Every number is on the test split. Each run keeps its checkpoint under
``OUT/runs/seed<S>/`` with a ``<run>.json`` record, so a rerun into the same
folder skips finished runs; ``OUT/plan.json`` pins the profile and dataset.
Outputs: ``report.md`` (tables of top-1/top-5 per horizon, mean ± std over
seeds, the acceptance checks, timings), ``results.csv`` (per run label,
metric and horizon: mean, std, seeds), ``runs.csv`` (one row per run and
seed) and ``paper2.png`` (Figs. 3-5 as grouped bars with std error bars).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click
import numpy as np

from edgekd.device.errors import EdgekdError
from edgekd.host.experiments import runner
from edgekd.host.experiments.paper2_matrix import (
    PLAN_FORMAT,
    PROFILES,
    VARIANTS,
    GeneratorLoss,
    Paper2Profile,
    StudentLoss,
    datafree_options,
)
from edgekd.host.experiments.paper2_report import aggregate, write_report

__all__ = ["PROFILES", "Experiment", "Paper2Profile", "aggregate", "command", "load_profile", "run_paper2"]

log = logging.getLogger(__name__)


def load_profile(name: str, config_path: Path | None = None, **overrides: Any) -> Paper2Profile:
    """``profiles/paper2-<name>.yaml``, then the keys of ``config_path``, then non-None ``overrides``."""
    return runner.load_profile(Paper2Profile, "paper2", name, PROFILES, config_path=config_path,
                               overrides=overrides)


# ---------------------------------------------------------------------------
# the runs


class Experiment:
    """The matrix of runs in one output folder; each finished run leaves ``runs/seed<S>/<key>.json``."""

    def __init__(self, profile: Paper2Profile, out: Path, data: Path, *, progress: bool = True):
        self.profile, self.out, self.data, self.progress = profile, out, data, progress
        self.records: dict[tuple[int, str], dict] = {}
        self.markers = runner.Markers(out / "runs")

    # -- bookkeeping ------------------------------------------------------------------------------
    def run_dir(self, seed: int) -> Path:
        path = self.out / "runs" / f"seed{seed}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def done(self, seed: int, key: str) -> dict | None:
        if (seed, key) not in self.records:
            self.run_dir(seed)
            found = self.markers.done(f"seed{seed}/{key}")
            if found is not None:
                self.records[(seed, key)] = found
        return self.records.get((seed, key))

    def finished(self, seed: int, key: str) -> dict:
        """The record of a run that must have finished."""
        rec = self.done(seed, key)
        if rec is None:
            raise EdgekdError(f"run {key} (seed {seed}) has no record", file=self.markers.path(f"seed{seed}/{key}"),
                              fix="rerun the experiment into the same --out to finish it")
        return rec

    def record(self, seed: int, key: str, metrics: Mapping[str, Any], seconds: float, **info: Any) -> dict:
        rec = {"seed": seed, "key": key, "seconds": round(seconds, 2),
               "top1": list(metrics["top1"]), "top5": list(metrics["top5"]),
               "top1_mean": metrics["top1_mean"], "top5_mean": metrics["top5_mean"], **info}
        self.run_dir(seed)
        self.records[(seed, key)] = self.markers.mark(f"seed{seed}/{key}", rec)
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
    def datafree_config(self, seed: int, variant: GeneratorLoss, student_loss: StudentLoss):
        from edgekd.host.distill.config import DataFreeConfig

        p = self.profile
        df = DataFreeConfig(generator_loss=variant, student_loss=student_loss, metadata_weight=p.metadata_weight,
                            activation_weight=p.activation_weight, entropy_weight=p.entropy_weight,
                            generator_steps=p.generator_steps, synthetic_samples=p.synthetic_samples,
                            output_mapping=p.output_mapping, resample_each_epoch=p.resample_each_epoch,
                            student_init=p.student_init, input_noise=p.input_noise,
                            input_noise_width=p.input_noise_width)
        cfg = self.train_config(seed, p.datafree_epochs, temperature=p.datafree_temperature, datafree=df)
        return dataclasses.replace(cfg, lr=p.datafree_lr, batch_size=p.datafree_batch_size)

    def datafree(self, seed: int, teacher: Path, variant: GeneratorLoss, losses: tuple[StudentLoss, ...]) -> None:
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
            ckpt = self.run_dir(seed) / f"df_{variant}_{loss}.pt"
            _, result = D.distill_datafree(teacher, "lidar_student", cfg, ckpt, data=self.data, synthetic=synthetic,
                                           generator=generator, generator_history=history)
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

    def best_variant(self, seeds: list[int]) -> GeneratorLoss:
        scores = {v: float(np.mean([self.finished(s, f"df_{v}_kl")["top5_mean"] for s in seeds])) for v in VARIANTS}
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

    plan = {"format": PLAN_FORMAT, "profile": profile.fingerprint_fields(),
            "datafree_options": datafree_options(profile), "data_fingerprint": read_meta(data)["fingerprint"]}
    runner.check_plan(out, plan, fix="choose another --out, or delete the folder to start over")


def run_paper2(profile_name: str, profile: Paper2Profile, out: Path, data: Path | None, *, progress: bool = True,
               echo: Callable[[str], None] = log.info) -> dict[str, Any]:
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    data = prepare_data(profile, out, data)
    check_plan(out, profile, data)
    exp = Experiment(profile, out, data, progress=progress)
    plan = exp.run(echo)
    best, seeds = plan["best_variant"], plan["seeds"]
    seconds = time.perf_counter() - start
    keys = sorted({key for (_, key) in exp.records})
    return write_report(profile_name, profile, data, out, exp.done, keys, best, seeds, seconds)


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
