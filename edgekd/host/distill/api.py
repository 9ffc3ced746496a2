"""The Python API over the trainer: what the CLI and the experiment runner call.

``train_model`` (teacher or no-KD baseline), ``distill_model`` (any registered
KD method), ``evaluate_checkpoint`` and ``add_teacher_stats``. They check the
inputs a user can get wrong (a dataset without the modality or with another
shape than the model, a checkpoint of another model, an unknown student) and
raise :class:`EdgekdError` naming the file, the field and the fix.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from edgekd.device.errors import EdgekdError
from edgekd.host.checkpoint import Checkpoint, load_checkpoint, update_checkpoint
from edgekd.host.distill import ddp
from edgekd.host.distill.checks import (
    check_model_fits_data,
    infer_model_kwargs,
    prepare_threads,
    resume_checkpoint,
    teacher_record,
)
from edgekd.host.distill.config import TrainConfig
from edgekd.host.distill.datafree import distill_datafree
from edgekd.host.distill.methods import KD_METHODS, Distiller, build_distiller, get_method
from edgekd.host.distill.sources import hidden_state_stats, predict, train_indices
from edgekd.host.distill.trainer import (
    Trainer,
    TrainResult,
    accuracy_metrics,
    seed_everything,
    supervised_loss_value,
)

if TYPE_CHECKING:
    from edgekd.host.models.base import BeamModel

__all__ = ["add_teacher_stats", "check_model_fits_data", "distill_model", "evaluate_checkpoint",
           "infer_model_kwargs", "qat_finetune", "train_model"]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# models and datasets


def _load_splits(data_path: str | os.PathLike, modalities: Sequence[str]) -> tuple[Any, Any, Any]:
    from edgekd.host.data import load_dataset, read_meta

    meta = read_meta(data_path)
    splits = meta.get("splits", {})
    train = load_dataset(data_path, "train", modalities=modalities)
    val = load_dataset(data_path, "val", modalities=modalities) if "val" in splits else None
    test = load_dataset(data_path, "test", modalities=modalities) if "test" in splits else None
    if len(train) < 2:
        raise EdgekdError(f"the training split has {len(train)} windows", file=data_path, field="splits.train",
                          fix="use a dataset with more drives in the training split")
    return train, val, test


def _data_record(ds: Any, modalities: Sequence[str], train_windows: int) -> dict[str, Any]:
    return {"path": str(Path(ds.path).resolve()), "fingerprint": ds.fingerprint, "modalities": list(modalities),
            "shapes": {m: list(ds.shapes[m]) for m in modalities}, "train_windows": int(train_windows)}


def _build(method: str, student: BeamModel, teacher: BeamModel | None, cfg: TrainConfig) -> Distiller:
    try:
        return build_distiller(method, student, teacher, cfg)
    except (ValueError, KeyError) as exc:
        raise EdgekdError(f"cannot set up KD method '{method}': {str(exc).strip(chr(39))}", field="method",
                          fix="check horizon_weights / rkd_feature / hint_feature against the method and models"
                          ) from None


def _run(distiller: Distiller, train: Any, val: Any, test: Any, cfg: TrainConfig, out: str | os.PathLike | None,
         log_path: str | os.PathLike | None, meta: Mapping[str, Any], resume_ckpt: Checkpoint | None,
         info: ddp.DistInfo) -> TrainResult:
    trainer = Trainer(distiller, train, val, cfg, test_ds=test, out=out, log_path=log_path,
                      checkpoint_meta=meta, dist=info)
    if resume_ckpt is not None:
        trainer.load_resume_state(resume_ckpt.extra["train_state"], resume_ckpt.state_dict)
    return trainer.fit()


# ---------------------------------------------------------------------------
# the API


def train_model(model_name: str, data_path: str | os.PathLike, cfg: TrainConfig | None = None,
                out: str | os.PathLike | None = None, model_kwargs: Mapping[str, Any] | None = None, *,
                resume: bool | str | os.PathLike = False,
                log_path: str | os.PathLike | None = None) -> tuple[BeamModel, TrainResult]:
    """Train ``model_name`` on the labels only (a teacher, or the no-KD baseline); save to ``out`` if given."""
    from edgekd.host.data import read_meta
    from edgekd.host.models import create_model

    cfg = cfg or TrainConfig()
    prepare_threads(cfg)
    info = ddp.init_distributed(cfg.device)
    meta = read_meta(data_path)
    kwargs = {**infer_model_kwargs(model_name, meta), **(model_kwargs or {})}
    resume_ckpt = resume_checkpoint(Path(out) if out else None, resume, model_name, "none")
    seed_everything(cfg.seed)
    model = create_model(model_name, **kwargs)
    train, val, test = _load_splits(data_path, model.input_modalities)
    check_model_fits_data(model, train)
    distiller = _build("none", model, None, cfg)
    record = {"config": {"method": "none", "train": dataclasses.asdict(distiller.cfg), "teacher": None},
              "data": _data_record(train, model.input_modalities,
                                   len(train_indices(len(train), cfg.max_train_windows)))}
    result = _run(distiller, train, val, test, cfg, out, log_path, record, resume_ckpt, info)
    return distiller.deploy_model(), result


def distill_model(teacher_ckpt: str | os.PathLike | None, student_name: str | None, method: str,
                  data_path: str | os.PathLike, cfg: TrainConfig | None = None,
                  out: str | os.PathLike | None = None, *, student_kwargs: Mapping[str, Any] | None = None,
                  resume: bool | str | os.PathLike = False,
                  log_path: str | os.PathLike | None = None) -> tuple[BeamModel, TrainResult]:
    """Distil ``student_name`` from the teacher checkpoint with KD method ``method``.

    ``self`` needs no student name (the student is a fresh copy of the teacher);
    ``dml`` needs no teacher (with one, it joins as a peer that keeps learning);
    ``datafree`` reads no training window (:func:`edgekd.host.distill.datafree.distill_datafree`:
    only the test split of ``data_path``, for evaluation; the student defaults to ``lidar_student``).
    """
    from edgekd.host.data import read_meta
    from edgekd.host.models import create_model

    cfg = cfg or TrainConfig()
    method = KD_METHODS.resolve(method)   # unknown: EdgekdError listing the known methods
    teacher_ck = load_checkpoint(teacher_ckpt) if teacher_ckpt is not None else None
    if get_method(method).needs_teacher and teacher_ck is None:
        raise EdgekdError(f"KD method '{method}' needs a teacher checkpoint", field="teacher",
                          fix="pass --teacher t.pt (train one with `edgekd train`)")
    if method == "datafree":
        assert teacher_ck is not None
        return distill_datafree(teacher_ck, student_name or "lidar_student", cfg, out, data=data_path,
                                student_kwargs=student_kwargs, resume=resume, log_path=log_path)
    student_name = _student_name(method, student_name, teacher_ck)
    prepare_threads(cfg)
    info = ddp.init_distributed(cfg.device)
    if method == "self" and teacher_ck is not None:
        kwargs = {**teacher_ck.model_kwargs, **(student_kwargs or {})}
    else:
        kwargs = {**infer_model_kwargs(student_name, read_meta(data_path)), **(student_kwargs or {})}
    resume_ckpt = resume_checkpoint(Path(out) if out else None, resume, student_name, method)
    seed_everything(cfg.seed)
    student = create_model(student_name, **kwargs)
    distiller, train, val, test = _distiller_for(method, student, teacher_ck, data_path, cfg)
    record = {"config": {"method": method, "train": dataclasses.asdict(distiller.cfg),
                         "teacher": teacher_record(teacher_ck)},
              "data": _data_record(train, student.input_modalities,
                                   len(train_indices(len(train), cfg.max_train_windows)))}
    result = _run(distiller, train, val, test, cfg, out, log_path, record, resume_ckpt, info)
    if distiller.cfg.qat.enabled:
        return _qat_phase(distiller, result, train, val, test, out, log_path, record, info)
    return distiller.deploy_model(), result


def _distiller_for(method: str, student: BeamModel, teacher_ck: Checkpoint | None, data_path: str | os.PathLike,
                   cfg: TrainConfig) -> tuple[Distiller, Any, Any, Any]:
    """The teacher built, the splits both models read loaded and checked against them, the distiller built."""
    teacher = teacher_ck.build() if teacher_ck is not None else None
    train, val, test = _load_splits(data_path, _union_modalities(student, teacher))
    check_model_fits_data(student, train, role="student")
    if teacher is not None and teacher_ck is not None:
        _check_teacher(teacher, student, teacher_ck, train)
    return _build(method, student, teacher, cfg), train, val, test


def qat_finetune(student_ckpt: str | os.PathLike, data_path: str | os.PathLike, out: str | os.PathLike, *,
                 teacher_ckpt: str | os.PathLike | None = None, epochs: int | None = None,
                 threads: int | None = None, progress: bool | None = None,
                 log_path: str | os.PathLike | None = None) -> tuple[BeamModel, TrainResult]:
    """QAT fine-tune of a student that is already trained (the demo's ``qat`` stage; ``distill --qat`` does
    the same right after its float run): the checkpoint's own KD method, train config and teacher (or
    ``teacher_ckpt``), ``epochs`` QAT epochs (None: the config's ``qat.epochs``, else 8% of its float
    epochs). Writes the float student with the fine-tuned weights to ``out``; ``student_ckpt`` is left as is.
    """
    from edgekd.device.config import config_from_dict

    ck = load_checkpoint(student_ckpt)
    method = ck.config.get("method")
    if method not in KD_METHODS.names() or method == "datafree":
        why = "a data-free student must not read training windows" if method == "datafree" else "no KD method"
        raise EdgekdError(f"cannot QAT fine-tune this checkpoint ({why}: method {method!r})", file=student_ckpt,
                          field="config.method", fix="QAT fine-tune a student trained by `edgekd train`/`distill`")
    cfg = config_from_dict(TrainConfig, dict(ck.config["train"]), source=str(student_ckpt), prefix="config.train")
    overrides: dict[str, Any] = {"qat": dataclasses.replace(cfg.qat, enabled=True,
                                                            epochs=epochs if epochs is not None else cfg.qat.epochs)}
    if threads is not None:
        overrides["threads"] = threads
    if progress is not None:
        overrides["progress"] = progress
    cfg = dataclasses.replace(cfg, **overrides)
    teacher_path = teacher_ckpt if teacher_ckpt is not None else (ck.config.get("teacher") or {}).get("path")
    teacher_ck = load_checkpoint(teacher_path) if teacher_path is not None and get_method(method).needs_teacher \
        else None
    if get_method(method).needs_teacher and teacher_ck is None:
        raise EdgekdError(f"KD method '{method}' needs the student's teacher", file=student_ckpt,
                          field="config.teacher", fix="pass the teacher checkpoint it was distilled from")
    prepare_threads(cfg)
    info = ddp.init_distributed(cfg.device)
    seed_everything(cfg.seed)
    distiller, train, val, test = _distiller_for(method, ck.build(eval_mode=False), teacher_ck, data_path, cfg)
    float_result = TrainResult(method=method, epochs_run=cfg.epochs, best_epoch=int(ck.metrics.get("best_epoch", 0)),
                               best_val_loss=None, stopped_early=False, metrics=dict(ck.metrics),
                               teacher_stats=ck.teacher_stats, history=[],
                               seconds=_float_run_seconds(Path(student_ckpt).with_suffix(".log.jsonl")))
    record = {"config": {**ck.config, "teacher": teacher_record(teacher_ck)}, "data": ck.data}
    return _qat_phase(distiller, float_result, train, val, test, out, log_path, record, info)


def _float_run_seconds(log_path: Path) -> float:
    """Training seconds of the float run from its JSONL log (0 when there is none: the cost is then unknown)."""
    import json

    if not log_path.is_file():
        return 0.0
    seconds = 0.0
    for line in log_path.read_text().splitlines():
        entry = json.loads(line) if line.strip() else {}
        if entry.get("phase") != "qat" and "epoch" in entry:
            seconds += float(entry.get("seconds", 0.0))
    return seconds


def _qat_phase(distiller: Distiller, float_result: TrainResult, train: Any, val: Any, test: Any,
               out: str | os.PathLike | None, log_path: str | os.PathLike | None, record: dict[str, Any],
               info: ddp.DistInfo) -> tuple[BeamModel, TrainResult]:
    """``--qat``: fine-tune the best float student with fake quantisation (edgekd.host.distill.qat), same method
    and loss, then save the float student with the fine-tuned weights at ``out`` (the float run's checkpoint
    is replaced; its metrics stay in the checkpoint as ``float_run``)."""
    import copy
    import time

    from edgekd.host.checkpoint import save_checkpoint
    from edgekd.host.distill.qat import calibrate, fake_quant_count, prepare_qat, strip_qat
    from edgekd.host.export.calibration import draw_calibration_set, load_recipe
    from edgekd.host.export.pipeline import student_name

    if info.world_size > 1:
        raise EdgekdError("--qat runs on one process", field="qat", fix="run the QAT fine-tune without torchrun")
    start = time.perf_counter()
    float_cfg = distiller.cfg
    epochs = float_cfg.qat.epochs_after(float_cfg.epochs)
    float_student = distiller.deploy_model()           # the best-on-val weights (Trainer._finish loaded them)
    prepared = prepare_qat(float_student)
    modalities = tuple(float_student.input_modalities)
    windows = draw_calibration_set(train, load_recipe(student_name(modalities)), modalities)
    calibrate(prepared, [torch.from_numpy(windows.inputs[m]) for m in modalities])
    distiller.student = prepared                       # the same method, loss, teacher and teacher cache
    # the float run's teacher cache when there was one (distill --qat); a fresh distiller (qat_finetune) computes
    # its own once: a live teacher (10-20x the student's MACs) made the image student's QAT cost +105 %
    qat_cfg = dataclasses.replace(float_cfg, epochs=epochs, lr=float_cfg.lr * float_cfg.qat.lr_scale,
                                  cache_teacher=float_cfg.cache_teacher and not distiller.has_teacher_cache,
                                  patience=max(epochs, 1))
    distiller.cfg = qat_cfg
    base = log_path if log_path is not None else (Path(out).with_suffix(".log.jsonl") if out is not None else None)
    qat_log = Path(base).with_suffix(".qat.jsonl") if base is not None else None
    trainer = Trainer(distiller, train, val, qat_cfg, test_ds=test, out=None, log_path=qat_log,
                      checkpoint_meta={}, dist=info, log_tags={"phase": "qat"})
    qat_result = trainer.fit()
    deployed = strip_qat(prepared, copy.deepcopy(float_student))
    seconds = time.perf_counter() - start
    cost = seconds / max(float_result.seconds, 1e-9)
    qat_record: dict[str, Any] = {"epochs": epochs, "lr": qat_cfg.lr, "seconds": round(seconds, 2),
                  "float_run_seconds": float_result.seconds,
                  "cost_vs_float_run": round(cost, 3),
                  "fake_quant_modules": fake_quant_count(prepared),
                  "fake_quant_val": qat_result.metrics.get("val"), "fake_quant_test": qat_result.metrics.get("test")}
    evaluator = Trainer(distiller, train, val, float_cfg, dist=info)
    metrics: dict[str, Any] = {"best_epoch": float_result.best_epoch, "qat": qat_record,
                               "float_run": {k: float_result.metrics.get(k) for k in ("val", "test")}}
    if val is not None and len(val):
        metrics["val"] = evaluator.evaluate(val, deployed)
    if test is not None and len(test):
        metrics["test"] = evaluator.evaluate(test, deployed)
    distiller.student, distiller.cfg = deployed, float_cfg
    if out is not None and info.is_main:
        config = {**record["config"], "qat": {"epochs": epochs, "lr": qat_cfg.lr}}
        save_checkpoint(out, deployed, config=config, data=record["data"], metrics=metrics,
                        teacher_stats=float_result.teacher_stats, extra={"qat": qat_record})
    log.info("QAT: %d epochs in %.1f s (%.0f%% of the float run's %.1f s)", epochs, seconds,
             100 * cost, float_result.seconds)
    result = dataclasses.replace(float_result, metrics=metrics, history=float_result.history + qat_result.history,
                                 seconds=round(float_result.seconds + seconds, 3))
    return deployed, result


def _student_name(method: str, student_name: str | None, teacher_ck: Checkpoint | None) -> str:
    """The student architecture: ``--student``, or the teacher's own for self-KD."""
    if method == "self" and teacher_ck is not None:
        if student_name not in (None, teacher_ck.model_name):
            raise EdgekdError(f"self-KD distils the teacher into a fresh copy of itself; --student is "
                              f"'{student_name}' but the teacher is '{teacher_ck.model_name}'", file=teacher_ck.path,
                              field="student", fix=f"omit --student or pass --student {teacher_ck.model_name}")
        return teacher_ck.model_name
    if student_name is None:
        raise EdgekdError("no student model given", field="student",
                          fix="pass --student NAME (see `edgekd models list`)")
    return student_name


def _union_modalities(student: BeamModel, teacher: BeamModel | None) -> list[str]:
    modalities = list(student.input_modalities)
    if teacher is not None:
        modalities += [m for m in teacher.input_modalities if m not in modalities]
    return modalities


def _check_teacher(teacher: BeamModel, student: BeamModel, teacher_ck: Checkpoint, train: Any) -> None:
    check_model_fits_data(teacher, train, where=teacher_ck.path, role="teacher")
    _check_teacher_outputs(teacher, student, teacher_ck)
    if teacher_ck.data.get("fingerprint") not in (None, train.fingerprint):
        log.warning("teacher %s was trained on another dataset (fingerprint %s..., this one %s...)",
                    teacher_ck.path, str(teacher_ck.data.get("fingerprint"))[:12], train.fingerprint[:12])


def _check_teacher_outputs(teacher: BeamModel, student: BeamModel, ckpt: Checkpoint) -> None:
    with torch.no_grad():
        t_shape = tuple(teacher(*teacher.example_inputs(batch=1)).shape)
        s_shape = tuple(student(*student.example_inputs(batch=1)).shape)
    if t_shape != s_shape:
        raise EdgekdError(f"teacher '{ckpt.model_name}' outputs {t_shape[1:]} but the student outputs {s_shape[1:]}",
                          file=ckpt.path, field="model_kwargs",
                          fix="give the student the teacher's num_beams and horizons")


def evaluate_checkpoint(ckpt: str | os.PathLike | Checkpoint, data_path: str | os.PathLike, split: str = "test",
                        *, batch_size: int = 256, device: str = "cpu") -> dict[str, Any]:
    """Per-horizon top-k / DBA (and the supervised loss) of a checkpoint on one split."""
    from edgekd.host.data import load_dataset

    ck = ckpt if isinstance(ckpt, Checkpoint) else load_checkpoint(ckpt)
    model = ck.build()
    ds = load_dataset(data_path, split, modalities=model.input_modalities)
    check_model_fits_data(model, ds, where=ck.path)
    if ck.data.get("fingerprint") not in (None, ds.fingerprint):
        log.warning("evaluating %s on a dataset other than the one it was trained on", ck.path)
    logits, beams = predict(model, ds, np.arange(len(ds)), batch_size, torch.device(device))
    if len(beams) == 0:
        raise EdgekdError(f"split '{split}' has no windows", file=data_path, field="split",
                          fix="choose a split with windows")
    metrics = accuracy_metrics(logits, beams)
    train_cfg = ck.config.get("train", {})
    cfg = TrainConfig(supervised_loss=train_cfg.get("supervised_loss", "focal"),
                      focal_gamma=float(train_cfg.get("focal_gamma", 2.0)))
    metrics["loss"] = supervised_loss_value(torch.from_numpy(logits), torch.from_numpy(beams), cfg)
    metrics["n"] = int(len(beams))
    return {"checkpoint": str(ck.path), "model": ck.model_name, "method": ck.config.get("method"),
            "data": str(data_path), "split": split, **metrics}


def add_teacher_stats(ckpt_path: str | os.PathLike, data_path: str | os.PathLike, *,
                      max_train_windows: int | None = None, batch_size: int = 256) -> dict[str, Any]:
    """(Re)compute ``teacher_stats`` on the training split and write them into the checkpoint atomically.

    Uses the same training windows as the run that made the checkpoint
    (its ``max_train_windows``) unless ``max_train_windows`` is given.
    """
    from edgekd.host.data import load_dataset

    ck = load_checkpoint(ckpt_path)
    model = ck.build()
    ds = load_dataset(data_path, "train", modalities=model.input_modalities)
    check_model_fits_data(model, ds, where=ck.path)
    if max_train_windows is None:
        max_train_windows = ck.config.get("train", {}).get("max_train_windows")
    stats = hidden_state_stats(model, ds, train_indices(len(ds), max_train_windows), batch_size)
    update_checkpoint(ckpt_path, teacher_stats=stats)
    return stats
