"""The demo's training stages: teachers, then students, as jobs that can run side by side.

Each job is a module-level function of plain arguments (a worker process pickles it); it trains one
model and returns its test metrics. ``DemoProfile.workers`` > 1 runs a stage's jobs on that many
processes of one torch thread each (:mod:`edgekd.host.experiments.side_by_side`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.device.contracts import RUNTIME_MODALITIES as MODALITIES
from edgekd.host.experiments import side_by_side

if TYPE_CHECKING:
    from edgekd.host.experiments.demo import Demo, DemoProfile


def _train_cfg(profile: DemoProfile, paper_config: str, epochs: int, lr: float | None = None, *,
               student: bool = False, progress: bool = True, threads: int | None = None):
    from edgekd.host.distill.config import example_configs, load_train_config

    # a deployment run trains to the end of its short schedule; patience matters only for long ones
    overrides: dict[str, Any] = {"epochs": epochs, "patience": max(epochs, 20),
                                 **({"lr": lr} if lr is not None else {})}
    if student:
        # Students keep the epoch of best validation top-2, what they are deployed for: with heavy dropout
        # their validation loss is noisy and picked a radar student 7 points of test top-2 below the one
        # at the end of its 80 epochs (epoch 36 of 80).
        overrides["monitor"] = "top2"
    cfg = load_train_config(example_configs()[paper_config], **overrides)
    return dataclasses.replace(cfg, seed=profile.seed, threads=threads or profile.threads, progress=progress)


def _lidar_experiment(profile: DemoProfile, out: Path, data: Path, *, progress: bool = True,
                      threads: int | None = None):
    """Paper 2's experiment object: the LiDAR teacher and data-free settings stay those of `reproduce paper2`."""
    from edgekd.host.experiments.paper2 import Experiment
    from edgekd.host.experiments.paper2 import load_profile as paper2_profile

    p = profile
    overrides = {k: v for k, v in (("teacher_epochs", p.lidar_teacher_epochs), ("generator_steps", p.generator_steps),
                                   ("synthetic_samples", p.synthetic_samples),
                                   ("datafree_epochs", p.datafree_epochs), ("threads", threads or p.threads))
                 if v is not None}
    paper2 = paper2_profile("quick", None, **overrides)
    return Experiment(paper2, out / "students" / "lidar", data, progress=progress), paper2


# The training jobs: module-level functions of plain arguments, so that they run in a worker process
# (side_by_side) as well as in this one. Each returns the test metrics of what it trained.

def job_teacher(profile: DemoProfile, modality: str, data: Path, ckpt: Path, progress: bool,
                threads: int | None) -> dict:
    from edgekd.host.distill.api import train_model

    cfg = _train_cfg(profile, "teacher", profile.teacher_epochs, profile.teacher_lr, progress=progress,
                     threads=threads)
    if modality == "image":
        cfg = dataclasses.replace(cfg, precision=profile.image_teacher_precision)
    _, result = train_model(f"{modality}_teacher", data, cfg, out=ckpt, resume=ckpt.is_file(),
                            model_kwargs={"width": profile.teacher_width})
    return {"test": result.metrics["test"]}


def job_lidar_teacher(profile: DemoProfile, out: Path, data: Path, ckpt: Path, progress: bool,
                      threads: int | None) -> dict:
    from edgekd.host.distill.api import train_model

    exp, paper2 = _lidar_experiment(profile, out, data, progress=progress, threads=threads)
    _, result = train_model("lidar_teacher", data, exp.train_config(profile.seed, paper2.teacher_epochs),
                            out=ckpt, resume=ckpt.is_file())
    # the per-layer statistics the data-free generator matches (teacher side: reads the training split)
    exp.teacher_layer_metadata(ckpt)
    return {"test": result.metrics["test"]}


def job_student(profile: DemoProfile, modality: str, teacher: Path, data: Path, ckpt: Path, progress: bool,
                threads: int | None) -> dict:
    from edgekd.host.distill.api import distill_model

    p = profile
    width: float | None = None
    lr: float | None
    if modality == "lidar":
        config, epochs, lr, method = "lidar_kd", p.lidar_student_epochs, p.lidar_student_lr, "kd"
    else:
        config = f"{'image' if modality == 'image' else 'fusion'}_student_{p.kd_method}"
        epochs = p.student_epochs if modality == "image" else p.radar_student_epochs
        width = 1.0 if modality == "image" else p.radar_student_width
        lr, method = p.student_lr, p.kd_method
    cfg = _train_cfg(p, config, epochs, lr, student=True, progress=progress, threads=threads)
    _, result = distill_model(teacher, f"{modality}_student", method, data, cfg, out=ckpt,
                              student_kwargs=None if width is None else {"width": width}, resume=ckpt.is_file())
    return {"test": result.metrics["test"]}


def job_lidar_datafree(profile: DemoProfile, out: Path, teacher: Path, data: Path, ckpt: Path, progress: bool,
                       threads: int | None) -> dict:
    from edgekd.host.distill import datafree

    exp, _ = _lidar_experiment(profile, out, data, progress=progress, threads=threads)
    cfg = dataclasses.replace(exp.datafree_config(profile.seed, profile.generator_loss, profile.student_loss),
                              progress=progress)
    _, free = datafree.distill_datafree(teacher, "lidar_student", cfg, ckpt, data=data)
    return {"test": free.metrics["test"]}


def _run_training(demo: Demo, jobs: list[side_by_side.Job], desc: str) -> dict[str, dict]:
    """The stage's jobs, side by side (profile ``workers``) or one after the other."""
    p = demo.profile
    workers = min(p.workers, len(jobs))
    if workers > 1:
        demo.echo(f"  {len(jobs)} jobs on {workers} worker processes, one torch thread each")
    return side_by_side.run_jobs(jobs, workers, progress=demo.progress, desc=desc, echo=demo.echo)


def _job_args(demo: Demo) -> dict[str, Any]:
    """Side by side, a job's own bars would interleave (the parent shows one) and each gets one thread."""
    parallel = demo.profile.workers > 1
    return {"progress": demo.progress and not parallel, "threads": 1 if parallel else demo.profile.threads}


def stage_teachers(demo: Demo) -> dict:
    p = demo.profile
    data = demo.output("data", "dataset")
    folder = demo.path("teachers")
    ckpts = {m: folder / f"{m}_teacher.pt" for m in MODALITIES}
    args = _job_args(demo)
    jobs = [side_by_side.Job(f"{m}_teacher", job_teacher, {"profile": p, "modality": m, "data": data,
                                                           "ckpt": ckpts[m], **args},
                             p.teacher_epochs, ckpts[m].with_suffix(".log.jsonl"), cost=p.teacher_epochs * weight,
                             about=f"training {m}_teacher ({p.teacher_epochs} epochs)")
            for m, weight in (("image", 3.0), ("radar", 2.0))]
    jobs.append(side_by_side.Job("lidar_teacher", job_lidar_teacher,
                                 {"profile": p, "out": demo.out, "data": data, "ckpt": ckpts["lidar"], **args},
                                 p.lidar_teacher_epochs, ckpts["lidar"].with_suffix(".log.jsonl"),
                                 cost=p.lidar_teacher_epochs * 1.0,
                                 about=f"training lidar_teacher ({p.lidar_teacher_epochs} epochs; stores its "
                                       "hidden-state metadata)"))
    results = _run_training(demo, jobs, "teachers")
    return {"checkpoints": {m: demo.rel(ckpts[m]) for m in MODALITIES},
            "test": {m: results[f"{m}_teacher"]["test"] for m in MODALITIES},
            "job_seconds": {name: r["seconds"] for name, r in results.items()}}


def stage_students(demo: Demo) -> dict:
    p = demo.profile
    data = demo.output("data", "dataset")
    teachers = {m: demo.output("teachers", "checkpoints", m) for m in MODALITIES}
    folder = demo.path("students")
    ckpts = {"image": folder / "image_student.pt", "radar": folder / "radar_student.pt",
             "lidar_kd": folder / "lidar_student_kd.pt", "lidar_datafree": folder / "lidar_student_datafree.pt"}
    args = _job_args(demo)
    epochs = {"image": p.student_epochs, "radar": p.radar_student_epochs, "lidar_kd": p.lidar_student_epochs}
    jobs = []
    for key, modality, cost in (("image", "image", 3.0), ("radar", "radar", 1.0), ("lidar_kd", "lidar", 0.5)):
        about = (f"distilling {modality}_student from {modality}_teacher "
                 f"({p.kd_method if modality != 'lidar' else 'kd'}, {epochs[key]} epochs)")
        jobs.append(side_by_side.Job(f"{key}_student" if modality != "lidar" else "lidar_student_kd", job_student,
                                     {"profile": p, "modality": modality, "teacher": teachers[modality],
                                      "data": data, "ckpt": ckpts[key], **args},
                                     epochs[key], ckpts[key].with_suffix(".log.jsonl"), cost=epochs[key] * cost,
                                     about=about))
    jobs.append(side_by_side.Job("lidar_student_datafree", job_lidar_datafree,
                                 {"profile": p, "out": demo.out, "teacher": teachers["lidar"], "data": data,
                                  "ckpt": ckpts["lidar_datafree"], **args}, 1, None, cost=20.0,
                                 about=f"data-free lidar_student ({p.generator_loss} generator, {p.student_loss} "
                                       "student loss; no training input is read)"))
    results = _run_training(demo, jobs, "students")
    tests = {key: results[name]["test"] for key, name in (("image", "image_student"), ("radar", "radar_student"),
                                                          ("lidar_kd", "lidar_student_kd"),
                                                          ("lidar_datafree", "lidar_student_datafree"))}
    lidar = {kind: (demo.rel(ckpts[f"lidar_{kind}"]), tests[f"lidar_{kind}"]) for kind in ("kd", "datafree")}
    students = {"image": demo.rel(ckpts["image"]), "radar": demo.rel(ckpts["radar"])}
    metrics = {"image": tests["image"], "radar": tests["radar"]}
    students["lidar"], metrics["lidar"] = lidar[p.lidar_student]
    others = {f"lidar_{kind}": {"checkpoint": ckpt, "test": m} for kind, (ckpt, m) in lidar.items()
              if kind != p.lidar_student}
    return {"checkpoints": students, "test": metrics, "deployed": {"lidar": p.lidar_student}, "not_deployed": others,
            "job_seconds": {name: r["seconds"] for name, r in results.items()}}
