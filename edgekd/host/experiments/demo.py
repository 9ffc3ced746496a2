"""`edgekd demo`: the whole pipeline on the embedded default scenario, in one command.

Stages (each writes under ``OUT/<stage>/`` and leaves ``OUT/stages/<stage>.json``
when it has finished, so ``--resume`` skips it on a rerun):

1. ``data``     synthesise the default scenario (all modalities) and a day -> night drive;
2. ``teachers`` train the image, radar and LiDAR teachers on the whole training split;
3. ``students`` distil the image and radar students (response or relation KD), the LiDAR student
                (response KD) and a second LiDAR student data-free (generator + teacher only; no
                training input); ``lidar_student`` picks which LiDAR student is deployed;
4. ``export``   export the students for the target (int8 TFLite + what the profile asks for),
                behind the parity gate (post-training quantisation);
5. ``qat``      quantisation-aware fine-tune of every student whose int8 files failed the gate
                (profile ``qat``: on_degraded, always or never), then export again: the bundle that
                the later stages use;
6. ``replay``   replay the drive through the multi-student runtime (auto switching, and the
                image-only runtime as the baseline);
7. ``bench``    benchmark latency, memory and energy of every student on this machine;
8. ``report``   ``OUT/report.md`` with the tables and the PNG plots.

A failing stage raises an error naming the stage; what earlier stages wrote stays, and
``--resume`` continues from there. ``OUT/plan.json`` pins the profile and the target, so a
resumed run never mixes two configurations. The named profiles are YAML files,
``profiles/demo-<name>.yaml``; BENCHMARKS.md says why their numbers are what they are.
"""


from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgekd.device.config import config_to_dict
from edgekd.device.contracts import RUNTIME_MODALITIES
from edgekd.device.errors import EdgekdError
from edgekd.host.distill.config import Precision
from edgekd.host.experiments import runner
from edgekd.host.experiments.demo_training import stage_students, stage_teachers
from edgekd.host.experiments.paper2_matrix import GeneratorLoss, StudentLoss

log = logging.getLogger(__name__)

PLAN_FORMAT = "edgekd-demo-plan/1"
STAGES = ("data", "teachers", "students", "export", "qat", "replay", "bench", "report")
QAT_WHEN = ("on_degraded", "always", "never")
MODALITIES = RUNTIME_MODALITIES
# the named profiles (profiles/demo-<name>.yaml): quick runs under 20 minutes on the 2-core host (issue 8),
# smoke is a tiny end-to-end pass for the tests whose numbers mean nothing
PROFILES = ("quick", "smoke")


@dataclasses.dataclass
class DemoProfile:
    """What the demo does besides the target; YAML keys (``--config``), unknown ones rejected.
    The defaults are the quick profile's (``profiles/demo-quick.yaml``)."""

    windows: int = 4000               # synthetic dataset size (train/val/test 70/15/15)
    image_size: int = 64
    data_seed: int = 0
    drive_minutes: float = 12.0       # the day -> night drive replayed through the runtime
    drive_seed: int = 1
    seed: int = 42
    threads: int | None = 2           # torch threads for training (None: torch's default)
    workers: int = 1                  # training jobs side by side (processes of one thread each); 1: in turn
    teacher_epochs: int = 16          # image and radar teachers
    teacher_width: float = 0.5        # channel width of the image and radar teachers (1.0 = the paper's)
    # the image teacher's training arithmetic (TrainConfig.precision): auto = bf16 autocast on a CPU with
    # native bf16 (AVX512-BF16/AMX: its epochs take ~half the time), fp32 elsewhere; the other models are
    # too small to gain (BENCHMARKS.md, "The demo in 10 minutes")
    image_teacher_precision: Precision = "auto"
    student_epochs: int = 25          # the image student
    radar_student_epochs: int = 80
    radar_student_width: float = 1.5
    teacher_lr: float | None = 0.003  # None: the paper config's (teacher.yaml, 1e-3)
    student_lr: float | None = 0.002  # None: the paper config's of the KD method (8e-4 / 9.5e-4)
    kd_method: str = "kd"             # image/radar students: kd (response) or rkd (relation, paper-1 variant)
    lidar_teacher_epochs: int = 25
    # The deployed LiDAR student: "kd" = response KD from the LiDAR teacher on the training split (paper 2's
    # standard-KD baseline), "datafree" = the data-free student. Both are trained and reported either way.
    lidar_student: str = "kd"
    lidar_student_epochs: int = 60    # the KD LiDAR student
    lidar_student_lr: float = 0.003
    generator_loss: GeneratorLoss = "metadata"  # data-free LiDAR student (issue 4's acceptance setting)
    student_loss: StudentLoss = "mse"
    generator_steps: int | None = None     # None: the paper-2 quick profile's values
    synthetic_samples: int | None = None
    datafree_epochs: int | None = None
    calibration_size: int | None = None    # None: the calibration recipe's size
    eval_windows: int | None = None        # parity-gate test windows per student (None: every one)
    allow_degraded: bool = True            # a failed parity gate is reported (report section 4), not fatal
    bench_seconds: float = 3.0             # per student (the MLPerf minimum is 10 s; flagged in the report)
    # the qat stage: fine-tune with fake quantisation the students whose PTQ files failed the parity gate
    # (on_degraded), every student (always), or none (never); None epochs: 8% of the student's float epochs
    qat: str = "on_degraded"
    qat_epochs: int | None = None

    def __post_init__(self) -> None:
        for name in ("windows", "image_size", "drive_minutes", "teacher_epochs", "student_epochs",
                     "lidar_teacher_epochs", "eval_windows", "bench_seconds", "teacher_lr", "student_lr",
                     "teacher_width", "lidar_student_epochs", "lidar_student_lr", "radar_student_epochs",
                     "radar_student_width"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.kd_method not in ("kd", "rkd"):
            raise ValueError(f"kd_method must be 'kd' or 'rkd', got {self.kd_method!r}")
        if self.lidar_student not in ("kd", "datafree"):
            raise ValueError(f"lidar_student must be 'kd' or 'datafree', got {self.lidar_student!r}")
        if self.threads is not None and self.threads <= 0:
            raise ValueError(f"threads must be positive or null, got {self.threads}")
        if self.qat not in QAT_WHEN:
            raise ValueError(f"qat must be one of {', '.join(QAT_WHEN)}, got {self.qat!r}")
        if self.qat_epochs is not None and self.qat_epochs < 1:
            raise ValueError(f"qat_epochs must be at least 1 or null, got {self.qat_epochs}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")


def load_profile(name: str, config_path: str | os.PathLike | None = None) -> DemoProfile:
    """``profiles/demo-<name>.yaml``, then the keys of ``config_path``."""
    return runner.load_profile(DemoProfile, "demo", name, PROFILES, config_path=config_path)


# ---------------------------------------------------------------------------
# the output folder


class Demo:
    """The output folder, the plan and the stage markers; the stages are functions below."""

    def __init__(self, out: Path, profile: DemoProfile, target: str, *, progress: bool = True,
                 echo: Callable[[str], None] = click.echo):
        from edgekd.device.targets import load_target

        self.out, self.profile, self.progress, self.echo = out, profile, progress, echo
        self.target = load_target(target)
        self.markers = runner.Markers(out / "stages")

    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)

    def rel(self, path: str | os.PathLike) -> str:
        """``path`` relative to the output folder, as the stage markers store it (the folder can move)."""
        return Path(path).relative_to(self.out).as_posix()

    def output(self, stage: str, *keys: str) -> Path:
        """A path that an earlier stage recorded, e.g. ``output("data", "dataset")``."""
        value: Any = self.finished(stage)
        for key in keys:
            value = value[key]
        return self.path(value)

    def finished(self, stage: str) -> dict | None:
        return self.markers.done(stage)

    def check_plan(self, resume: bool) -> None:
        """Start a fresh folder, or (``resume``) continue one that holds the same plan."""
        plan = {"format": PLAN_FORMAT, "profile": config_to_dict(self.profile), "target": self.target.name}
        runner.check_plan(self.out, plan, resume=resume,
                          fix="rerun with the original --profile/--config/--target, or --overwrite")

    def run_stage(self, index: int, stage: str, body: Callable[[Demo], dict]) -> dict:
        return runner.run_stage(self.markers, stage, lambda: body(self), head=f"[{index}/{len(STAGES)}] {stage}",
                                about=STAGE_HELP[stage], echo=self.echo)


# ---------------------------------------------------------------------------
# stages


def stage_data(demo: Demo) -> dict:
    from edgekd.host.data.drive import record_drive, write_drive
    from edgekd.host.data.plot import plot_dataset
    from edgekd.host.data.store import summarize_dataset, synthesize_dataset

    p = demo.profile
    data = demo.path("data", "dataset")
    synthesize_dataset(data, windows=p.windows, seed=p.data_seed, image_size=p.image_size,
                       overwrite=data.exists(), progress=demo.progress)
    arrays, meta = record_drive(minutes=p.drive_minutes, seed=p.drive_seed, image_size=p.image_size)
    drive = write_drive(demo.path("data", "drive.npz"), arrays, meta, overwrite=True)
    plot_dataset(data, demo.path("data", "dataset.png"))
    summary = summarize_dataset(data, verify=False)
    return {"dataset": demo.rel(data), "drive": demo.rel(drive), "drive_frames": int(meta["frames"]),
            "splits": {name: info["windows"] for name, info in summary["splits"].items()}}


def stage_export(demo: Demo) -> dict:
    from edgekd.host.export.pipeline import export_bundle

    p = demo.profile
    data = demo.output("data", "dataset")
    students = {m: demo.output("students", "checkpoints", m) for m in MODALITIES}
    bundle = demo.path("bundle")
    demo.echo(f"  exporting {', '.join(students)} for {demo.target.name} (ONNX -> TFLite int8, parity gate)")
    manifest = export_bundle([students[m] for m in MODALITIES], demo.target, data, bundle, overwrite=True,
                             allow_degraded=p.allow_degraded, calibration_size=p.calibration_size,
                             eval_windows=p.eval_windows, threads=p.threads or 1,
                             progress=demo.progress)
    return {"bundle": demo.rel(bundle), "degraded": manifest.get("degraded", False)}


def stage_qat(demo: Demo) -> dict:
    """QAT where post-training quantisation missed the gate; the bundle the later stages use."""
    import json

    from edgekd.host.distill.api import qat_finetune
    from edgekd.host.experiments.demo_report import drops_text
    from edgekd.host.export.pipeline import export_bundle

    p = demo.profile
    ptq_bundle = demo.output("export", "bundle")
    ptq_manifest = json.loads((ptq_bundle / "manifest.json").read_text())
    ptq = ptq_manifest["students"]
    checkpoints = {m: demo.output("students", "checkpoints", m) for m in MODALITIES}
    failing = [m for m in MODALITIES if not ptq[m]["parity"]["passed"]]
    chosen = {"on_degraded": failing, "always": list(MODALITIES), "never": []}[p.qat]
    datafree = [m for m in chosen if _method_of(checkpoints[m]) == "datafree"]
    chosen = [m for m in chosen if m not in datafree]    # QAT reads training windows: not for a data-free student
    record: dict[str, Any] = {"ptq_drops": {m: ptq[m]["parity"]["drops"] for m in MODALITIES},
                              "ptq_failing": failing, "not_fine_tuned_data_free": datafree}
    if not chosen:
        why = {"never": "profile qat: never"}.get(p.qat, "every student passed the gate after PTQ")
        demo.echo(f"  no QAT: {why if not datafree else 'the failing student is data-free'}")
        return {**record, "bundle": demo.rel(ptq_bundle), "fine_tuned": {},
                "degraded": ptq_manifest.get("degraded", False)}
    fine_tuned = {}
    for m in chosen:
        source = checkpoints[m]
        target = source.with_name(source.stem + ".qat.pt")
        demo.echo(f"  QAT fine-tune of {source.name} (PTQ drops {drops_text(ptq[m]['parity']['drops'])})")
        qat_finetune(source, demo.output("data", "dataset"), target,
                     teacher_ckpt=demo.output("teachers", "checkpoints", m), epochs=p.qat_epochs,
                     threads=p.threads, progress=demo.progress, log_path=target.with_suffix(".jsonl"))
        checkpoints[m] = fine_tuned[m] = target
    bundle = demo.path("bundle-qat")
    demo.echo(f"  exporting again with the QAT students of {', '.join(chosen)}")
    manifest = export_bundle([checkpoints[m] for m in MODALITIES], demo.target, demo.output("data", "dataset"),
                             bundle, overwrite=True, allow_degraded=p.allow_degraded,
                             calibration_size=p.calibration_size, eval_windows=p.eval_windows,
                             threads=p.threads or 1, progress=demo.progress)
    return {**record, "bundle": demo.rel(bundle), "fine_tuned": {m: demo.rel(c) for m, c in fine_tuned.items()},
            "degraded": manifest.get("degraded", False)}


def _method_of(checkpoint: Path) -> str | None:
    from edgekd.host.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint).config.get("method")


def deployed_bundle(demo: Demo) -> Path:
    """The bundle after the qat stage (the PTQ one when no student needed QAT)."""
    return demo.output("qat", "bundle")


REPLAY_POLICIES = {"auto": "auto", "image-only": "fixed:image"}


def stage_replay(demo: Demo) -> dict:
    from edgekd.device.runtime.engine import Runtime
    from edgekd.device.runtime.replay import load_drive, replay, summarize, write_report

    bundle = deployed_bundle(demo)
    drive = load_drive(demo.output("data", "drive"))
    summaries = {}
    for name, policy in REPLAY_POLICIES.items():
        demo.echo(f"  replaying {drive.num_frames} frames, policy {policy}")
        runtime = Runtime.from_bundle(bundle, demo.target, policy=policy)
        result = replay(runtime, drive, progress=demo.progress)
        summary = summarize(result, drive, runtime.hub.window, policy)
        summary["runtime"] = runtime.describe()
        write_report(demo.path("replay", name), result, drive, summary)
        summaries[name] = demo.rel(demo.path("replay", name, "summary.json"))
    return {"summaries": summaries}


def stage_bench(demo: Demo) -> dict:
    from edgekd.device.bench import settings_from_target
    from firmware_bench.harness import run_benchmark

    settings = settings_from_target(demo.target, seconds=demo.profile.bench_seconds, op_profile=False)
    demo.echo(f"  {demo.profile.bench_seconds:g} s per student, {settings.threads} thread(s), "
              f"power meter {settings.power_meter}")
    run_benchmark(deployed_bundle(demo), settings=settings, out=demo.path("bench"))
    return {"report": demo.rel(demo.path("bench", "bench.json"))}


def stage_report(demo: Demo) -> dict:
    from edgekd.host.experiments.demo_report import write_demo_report

    path = write_demo_report(demo)
    return {"report": demo.rel(path)}


STAGE_BODIES: dict[str, Callable[[Demo], dict]] = {
    "data": stage_data, "teachers": stage_teachers, "students": stage_students, "export": stage_export,
    "qat": stage_qat, "replay": stage_replay, "bench": stage_bench, "report": stage_report,
}
STAGE_HELP = {
    "data": "synthesise the default scenario and a day -> night drive",
    "teachers": "train the image, radar and LiDAR teachers",
    "students": "distil the image, radar and LiDAR students (and a data-free LiDAR student)",
    "export": "export the students to an int8 bundle behind the parity gate",
    "qat": "quantisation-aware fine-tune where post-training int8 failed the gate, and export again",
    "replay": "replay the drive through the multi-student runtime (auto vs image-only)",
    "bench": "benchmark latency, memory and energy per student",
    "report": "write report.md and the plots",
}


def run_demo(out: str | os.PathLike, profile: DemoProfile, target: str = "x86-ap", *, resume: bool = False,
             overwrite: bool = False, progress: bool = True,
             echo: Callable[[str], None] = click.echo) -> Path:
    """Run (or finish, with ``resume``) every stage into ``out``; returns the path of ``report.md``."""
    out = Path(out)
    if overwrite and out.exists():
        if not (out / "plan.json").is_file() and any(out.iterdir()):
            raise EdgekdError("--overwrite only replaces an earlier demo folder", file=out, field="--out",
                              fix="choose another --out (this folder has no plan.json from `edgekd demo`)")
        shutil.rmtree(out)
    demo = Demo(out, profile, target, progress=progress, echo=echo)
    demo.check_plan(resume)
    started = time.perf_counter()
    for index, stage in enumerate(STAGES, start=1):
        demo.run_stage(index, stage, STAGE_BODIES[stage])
    echo(f"demo finished in {time.perf_counter() - started:.0f} s (this invocation)")
    _say_if_degraded(demo, echo)
    return demo.path("report.md")


def _say_if_degraded(demo: Demo, echo: Callable[[str], None]) -> None:
    """A bundle past a failed parity gate must not be visible in report.md only."""
    from edgekd.device.bundle import degraded_note, open_bundle

    deployed = demo.finished("qat") or {}
    if deployed.get("degraded"):
        note = degraded_note(open_bundle(deployed_bundle(demo), verify=False,
                                         allow_degraded=True).manifest)
        echo(f"WARNING: {note} (report section 4); `edgekd run` refuses it unless --allow-degraded")


@click.command("demo", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("edgekd-demo"),
              show_default=True, help="Output folder: report.md, plots, dataset, checkpoints, bundle, logs.")
@click.option("--target", "-t", default="x86-ap", show_default=True,
              help="Target profile the bundle is exported for and the runtime/bench use (see `edgekd targets list`).")
@click.option("--profile", "profile_name", type=click.Choice(list(PROFILES)), default="quick", show_default=True,
              help="quick: under 20 min on a 2-core host; smoke: a tiny pass whose numbers mean nothing.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="YAML with DemoProfile keys over the profile (windows, teacher_epochs, kd_method, ...).")
@click.option("--resume", is_flag=True, help="Continue an earlier run in --out: finished stages are skipped.")
@click.option("--overwrite", is_flag=True, help="Delete an earlier demo run in --out and start over.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")
def demo(out: Path, target: str, profile_name: str, config_path: Path | None, resume: bool, overwrite: bool,
         progress: bool) -> None:
    """The whole pipeline on the embedded default scenario: data, teachers, students, export, runtime, bench.

    Writes OUT/report.md (accuracy per horizon, compression, export parity, switching per drive segment,
    benchmark) with PNG plots, and prints where it is.
    """
    if resume and overwrite:
        raise EdgekdError("--resume and --overwrite contradict each other", field="--resume",
                          fix="pass one of them")
    profile = load_profile(profile_name, config_path)
    report = run_demo(out, profile, target, resume=resume, overwrite=overwrite, progress=progress)
    click.echo(f"report: {report}")
