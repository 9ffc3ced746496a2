"""`edgekd reproduce paper1`: the paper-1 experiment (Table II and Fig. 4), end to end.

The matrix, per seed:

- image only: the image teacher without and with self-KD, the image student
  without KD, with response KD (``kd``) and with relation KD (``rkd``);
- image + radar: the fusion teacher, the fusion student without KD, with
  response KD and with relation KD.

It runs in the setting the paper argues for (decentralised distilling): each
teacher learns at the server on the whole training split, each student at one
node on a small local dataset, the first ``local_fraction`` of the training
windows (whole early drives, like one node's log). Every run starts from the
shipped paper config of its kind (``edgekd/host/distill/configs/*.yaml``: the
paper's lr, alpha, temperature, RKD weights); the profile then overrides
what it must (a quick profile trains fewer epochs; ``methods`` may swap a
run's KD method for another of its family, e.g. Park et al.'s RKD for the
paper-1 relation variant), and the report prints every setting used.

The matrix and the profile live in :mod:`.paper1_matrix`, the report in
:mod:`.paper1_report`; named profiles are ``profiles/paper1-<name>.yaml``.

Each run keeps its checkpoint and JSONL log under ``OUT/runs/seed<S>/``; a
finished run also leaves a small ``<run>.json`` record, so a rerun skips it,
and an interrupted one resumes from its last epoch. ``OUT/plan.json`` pins the
profile and the dataset: a rerun with other settings into the same folder is
refused rather than mixing results.

Outputs: ``report.md`` (top-1/2/5 per horizon, mean ± std over seeds, gain over
the no-KD student, params, MACs, ratios to the teacher, the acceptance checks,
timings), ``results.csv`` (one row per model, aggregated over seeds),
``runs.csv`` (one row per run and seed) and ``fig4.png`` (grouped bars per
horizon, like the paper's Fig. 4).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click
import numpy as np

from edgekd.device.errors import EdgekdError
from edgekd.host.experiments import runner
from edgekd.host.experiments.paper1_matrix import (
    KS,
    MERGE_DEPTH,
    MIN_PARAM_RATIO,
    NEEDED_MODALITIES,
    PLAN_FORMAT,
    PROFILES,
    RUN_BY_NAME,
    RUNS,
    Paper1Profile,
    Paper1Result,
    RunRecord,
    RunSpec,
)
from edgekd.host.experiments.paper1_report import acceptance, aggregate, write_report

__all__ = ["KS", "MIN_PARAM_RATIO", "RUNS", "RUN_BY_NAME", "Paper1Profile", "command", "load_profile",
           "planned_runs", "run_paper1", "teacher_seed"]

log = logging.getLogger(__name__)


def load_profile(name: str, config_path: str | os.PathLike | None = None, **flags: Any) -> Paper1Profile:
    """``profiles/paper1-<name>.yaml``, then the keys of ``config_path`` (a Paper1Profile YAML), then
    non-None ``flags``; every run's overrides are checked against TrainConfig."""
    profile = runner.load_profile(Paper1Profile, "paper1", name, PROFILES, config_path=config_path,
                                  overrides=flags, depth=MERGE_DEPTH)
    source = str(config_path or runner.profile_path("paper1", name))
    for spec in RUNS:   # every override key must be a TrainConfig key with a valid value
        _train_config(spec, profile, seed=profile.first_seed, local_windows=None, source=source)
    return profile


def _train_config(spec: RunSpec, profile: Paper1Profile, *, seed: int, local_windows: int | None,
                  progress: bool = False, source: str = "<profile>"):
    from edgekd.host.distill.config import example_configs, load_train_config

    paper = example_configs()[spec.paper_config]
    overrides = profile.overrides_for(spec)
    try:
        cfg = load_train_config(paper, **overrides)
    except EdgekdError as exc:
        raise EdgekdError(f"run '{spec.name}': {exc.what}", file=source,
                          field=f"overrides of {spec.name}" + (f" ({exc.field})" if exc.field else ""),
                          fix=exc.fix or "use TrainConfig keys (see `edgekd distill --help`)") from None
    return dataclasses.replace(cfg, seed=seed, threads=profile.threads, progress=progress,
                               max_train_windows=local_windows if spec.role == "student" else None)


# ---------------------------------------------------------------------------
# data and plan


def prepare_data(profile: Paper1Profile, out: Path, data: Path | None, *, progress: bool) -> Path:
    """``data`` checked for image + radar, or the profile's synthetic dataset under ``out/data`` (made once)."""
    from edgekd.host.data import read_meta

    if data is None:
        data = out / "data"
        if not (data / "meta.json").is_file():
            from edgekd.host.data.store import synthesize_dataset

            log.info("synthesising %d windows at %dx%d into %s", profile.windows, profile.image_size,
                     profile.image_size, data)
            synthesize_dataset(data, windows=profile.windows, seed=profile.data_seed, image_size=profile.image_size,
                               split=profile.split, overwrite=data.exists(), progress=progress)
    meta = read_meta(data)
    missing = [m for m in NEEDED_MODALITIES if m not in meta.get("modalities", {})]
    if missing:
        raise EdgekdError(f"the dataset has no '{missing[0]}' modality (paper 1 needs image and radar)", file=data,
                          field="modalities", fix="synthesise one with `edgekd data synth`, or omit --data")
    splits = meta.get("splits", {})
    for split in ("train", "test"):
        if int(splits.get(split, {}).get("windows", 0)) < 2:
            raise EdgekdError(f"the '{split}' split has fewer than 2 windows", file=data, field=f"splits.{split}",
                              fix="use a dataset with more drives (e.g. `edgekd data synth --windows 2000`)")
    return data


def check_plan(out: Path, profile: Paper1Profile, data: Path) -> dict[str, Any]:
    """Write ``out/plan.json`` or check that an existing one describes the same experiment (the dataset's
    path may change, its fingerprint may not)."""
    from edgekd.host.data import load_dataset

    train = load_dataset(data, "train", modalities=NEEDED_MODALITIES)
    plan = {"format": PLAN_FORMAT, "profile": profile.fingerprint_fields(),
            "data": {"path": str(Path(data).resolve()), "fingerprint": train.fingerprint}}
    runner.check_plan(out, plan, ignore={"data.path"}, fix="pass another --out, or delete the folder to start over")
    return plan


# ---------------------------------------------------------------------------
# running


def run_dir(out: Path, seed: int) -> Path:
    return out / "runs" / f"seed{seed}"


def teacher_seed(profile: Paper1Profile, seed: int) -> int:
    return seed if profile.teachers_per_seed else profile.first_seed


def planned_runs(profile: Paper1Profile) -> list[tuple[int, RunSpec]]:
    """(seed, run) in execution order: per seed, teachers first, then students."""
    plan = []
    for seed in profile.seed_list():
        for spec in RUNS:
            if spec.method == "self":
                if seed in profile.self_kd_seed_list():
                    plan.append((seed, spec))
            elif spec.role != "teacher" or teacher_seed(profile, seed) == seed:
                plan.append((seed, spec))   # shared teachers are trained once, with the first seed
    return plan


def _finished(out: Path, seed: int, spec: RunSpec) -> dict[str, Any] | None:
    """The record a finished run left (its ``<run>.json``, with its checkpoint still there), else None."""
    done = runner.Markers(out / "runs").done(f"seed{seed}/{spec.name}")
    return done if done is not None and (run_dir(out, seed) / f"{spec.name}.pt").is_file() else None


def execute_run(spec: RunSpec, seed: int, profile: Paper1Profile, out: Path, data: Path, local_windows: int,
                *, progress: bool) -> RunRecord:
    """Train (or resume, or just read) one run; returns its record and writes ``<run>.json``."""
    from edgekd.host.checkpoint import load_checkpoint
    from edgekd.host.distill.api import distill_model, evaluate_checkpoint, train_model

    done = _finished(out, seed, spec)
    if done is not None:
        return dataclasses.replace(RunRecord.from_json(done), skipped=True)
    markers, key = runner.Markers(out / "runs"), f"seed{seed}/{spec.name}"
    ckpt = run_dir(out, seed) / f"{spec.name}.pt"
    cfg = _train_config(spec, profile, seed=seed, local_windows=local_windows, progress=progress)
    clock = runner.Clock()
    state = load_checkpoint(ckpt).extra.get("train_state", {}) if ckpt.is_file() else {}
    if state.get("finished"):
        # trained to the end but stopped before its record was written: evaluate, do not train on
        result_metrics = evaluate_checkpoint(ckpt, data, "test")
        epochs_run, best_epoch = int(state["epoch"]), int(state["best_epoch"])
    else:
        resume = ckpt.is_file()
        if resume:
            log.info("resuming %s (seed %d) after epoch %s", spec.name, seed, state.get("epoch"))
        if spec.teacher_run is None and spec.method == "none":
            _, result = train_model(spec.model, data, cfg, out=ckpt, resume=resume)
        else:
            teacher = run_dir(out, teacher_seed(profile, seed)) / f"{spec.teacher_run}.pt"
            student = None if spec.method == "self" else spec.model
            _, result = distill_model(teacher, student, profile.method_of(spec), data, cfg, out=ckpt, resume=resume)
        if "test" not in result.metrics:
            raise EdgekdError("the dataset has no test windows", file=data, field="splits.test",
                              fix="use a dataset with a test split")
        result_metrics = result.metrics["test"]
        epochs_run, best_epoch = result.epochs_run, result.best_epoch
    train_windows = int(load_checkpoint(ckpt).data.get("train_windows", 0))
    record = RunRecord(run=spec.name, seed=seed, model=spec.model, method=profile.method_of(spec),
                       checkpoint=str(ckpt),
                       train_windows=train_windows, epochs_run=epochs_run, best_epoch=best_epoch,
                       seconds=round(clock.seconds(), 2), test=_plain(result_metrics),
                       cpu_seconds=round(clock.cpu(), 2))
    markers.mark(key, dataclasses.asdict(record))
    return record


def local_window_count(data: Path, fraction: float) -> int:
    from edgekd.host.data import read_meta

    train = int(read_meta(data)["splits"]["train"]["windows"])
    return max(2, int(round(fraction * train)))


def run_paper1(profile: Paper1Profile, out: str | os.PathLike, data: str | os.PathLike | None = None, *,
               progress: bool = True, echo: Callable[[str], None] | None = None) -> Paper1Result:
    """Run (or finish) the matrix under ``out`` and write the report; see the module docstring."""
    from edgekd.host.data import read_meta

    echo = echo or log.info
    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_path = prepare_data(profile, out, Path(data) if data is not None else None, progress=progress)
    synth_seconds = time.perf_counter() - started
    check_plan(out, profile, data_path)
    local = local_window_count(data_path, profile.local_fraction)
    train_windows = int(read_meta(data_path)["splits"]["train"]["windows"])
    echo(f"paper 1: data {data_path} ({train_windows} training windows; students use the first {local}); "
         f"{profile.seeds} seed(s); results in {out}")
    plan = planned_runs(profile)
    first = [(seed, spec) for seed, spec in plan if spec.role == "teacher" and spec.teacher_run is None]
    rest = [(seed, spec) for seed, spec in plan if (seed, spec) not in first]
    records = [_run_and_echo(i, len(plan), seed, spec, profile, out, data_path, local, progress, echo)
               for i, (seed, spec) in enumerate(first, start=1)]
    # with workers, what is left to train goes side by side; finished runs are only read back, here
    todo = [(seed, spec) for seed, spec in rest if _finished(out, seed, spec) is None]
    parallel = todo if profile.workers > 1 and len(todo) > 1 else []
    records += [_run_and_echo(i, len(plan), seed, spec, profile, out, data_path, local, progress, echo)
                for i, (seed, spec) in enumerate(rest, start=len(first) + 1) if (seed, spec) not in parallel]
    if parallel:
        records += _runs_side_by_side(parallel, profile, out, data_path, local, progress=progress, echo=echo)
    costs = model_costs(data_path)
    result = Paper1Result(profile=profile, data=data_path, records=records, local_windows=local,
                          train_windows=train_windows, model_costs=costs,
                          wall_seconds=time.perf_counter() - started, synth_seconds=synth_seconds,
                          load_average=(load_start, os.getloadavg()[0]))
    write_report(result, out)
    return result


def _run_and_echo(i: int, total: int, seed: int, spec: RunSpec, profile: Paper1Profile, out: Path, data: Path,
                  local: int, progress: bool, echo: Callable[[str], None]) -> RunRecord:
    started = time.perf_counter()
    record = execute_run(spec, seed, profile, out, data, local, progress=progress)
    top2 = record.test.get("top2_mean", math.nan)
    how = "done before, skipped" if record.skipped else \
        f"{record.epochs_run} epochs in {time.perf_counter() - started:.1f} s"
    echo(f"[{i}/{total}] seed {seed} {spec.name}: {how}; test top-2 mean {100 * top2:.1f}%")
    return record


def _job_run(run: str, seed: int, profile: Paper1Profile, out: Path, data: Path, local: int) -> dict:
    """One run in a side-by-side worker (module level: it is pickled to a fresh process)."""
    return dataclasses.asdict(execute_run(RUN_BY_NAME[run], seed, profile, out, data, local, progress=False))


def _runs_side_by_side(runs: list[tuple[int, RunSpec]], profile: Paper1Profile, out: Path, data: Path, local: int,
                       *, progress: bool, echo: Callable[[str], None]) -> list[RunRecord]:
    """The runs after the teachers (they only read the teachers' checkpoints), ``profile.workers`` at a time,
    one torch thread each; the costliest (the teacher-sized self-KD runs) start first."""
    from edgekd.host.experiments import side_by_side

    one_thread = dataclasses.replace(profile, threads=1)
    jobs = []
    for seed, spec in runs:
        cfg = _train_config(spec, profile, seed=seed, local_windows=local)
        windows = 1.0 if spec.role == "student" else 1.0 / profile.local_fraction
        jobs.append(side_by_side.Job(
            f"seed{seed}/{spec.name}", _job_run, {"run": spec.name, "seed": seed, "profile": one_thread, "out": out,
                                                  "data": data, "local": local},
            epochs=cfg.epochs, log=run_dir(out, seed) / f"{spec.name}.log.jsonl",
            cost=cfg.epochs * windows * (10.0 if spec.model.endswith("teacher") else 1.0),
            about=f"seed {seed} {spec.name}"))
    echo(f"{len(jobs)} runs side by side on {profile.workers} worker processes, one torch thread each")
    results = side_by_side.run_jobs(jobs, profile.workers, progress=progress, desc="paper 1 runs", echo=echo)
    records = []
    for seed, spec in runs:
        record = RunRecord.from_json(results[f"seed{seed}/{spec.name}"])
        top2 = record.test.get("top2_mean", math.nan)
        echo(f"seed {seed} {spec.name}: " + ("done before, skipped" if record.skipped else
                                             f"{record.epochs_run} epochs") + f"; test top-2 mean {100 * top2:.1f}%")
        records.append(record)
    return records


def model_costs(data: Path) -> dict[str, dict[str, int]]:
    """Params and MACs (batch 1, matmul convention and thop convention) of each model at the dataset's shapes."""
    from edgekd.host.data import read_meta
    from edgekd.host.distill.api import infer_model_kwargs
    from edgekd.host.models import create_model
    from edgekd.host.reports.model_cost import count_macs, count_params

    meta = read_meta(data)
    costs = {}
    for name in sorted({spec.model for spec in RUNS}):
        model = create_model(name, **infer_model_kwargs(name, meta))
        inputs = model.example_inputs(batch=1)
        costs[name] = {"params": count_params(model), "macs": count_macs(model, inputs),
                       "macs_thop": count_macs(model, inputs, convention="thop")}
    return costs


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    return obj


# ---------------------------------------------------------------------------
# the command


@click.command("paper1")
@click.option("--profile", "profile_name", type=click.Choice(sorted(PROFILES)), default="quick", show_default=True,
              help="quick: a small synthetic run for this 2-core host (< 25 min); paper: the paper's schedule.")
@click.option("--seeds", type=int, default=None,
              help="Number of seeds (first_seed, first_seed+1, ...) [profile quick: 5, paper: 3].")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("paper1"),
              show_default=True, help="Folder for the runs, the logs and the report; a rerun resumes it.")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Dataset with image and radar [default: synthesise the profile's dataset under OUT/data].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="YAML with Paper1Profile keys overriding the profile (unknown keys are errors).")
@click.option("--threads", type=int, default=None, help="torch intra-op threads per run [profile: 2 for quick].")
@click.option("--workers", type=int, default=None,
              help="After the teachers, run this many students side by side, one torch thread each "
                   "[profile: 1, one after another].")
@click.option("--local-fraction", type=float, default=None,
              help="Share of the training windows a node (student) holds [profile: 0.25].")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show per-epoch progress bars.")
def command(profile_name: str, seeds: int | None, out: Path, data: Path | None, config_path: Path | None,
            threads: int | None, workers: int | None, local_fraction: float | None, progress: bool) -> None:
    """Run the paper-1 matrix (image-only and image+radar teachers and students, no KD / response KD /
    relation KD / self-KD) over seeds and write report.md, results.csv, runs.csv and fig4.png."""
    if seeds is not None and seeds <= 0:
        raise EdgekdError(f"must be positive, got {seeds}", field="seeds", fix="pass --seeds 3 or more")
    profile = load_profile(profile_name, config_path, seeds=seeds, threads=threads, workers=workers,
                           local_fraction=local_fraction)
    result = run_paper1(profile, out, data, progress=progress, echo=click.echo)
    summary = aggregate(result.records)
    for check in acceptance(result, summary):
        click.echo(f"{'pass' if check['passed'] else 'FAIL'}: {check['check']}: {check['value']}")
    click.echo(f"wrote {out / 'report.md'}, {out / 'results.csv'}, {out / 'runs.csv'}, {out / 'fig4.png'} "
               f"in {result.wall_seconds:.0f} s")
