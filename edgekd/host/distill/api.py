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
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd.device.errors import EdgekdError
from edgekd.device.io import sha256_file
from edgekd.host.checkpoint import Checkpoint, load_checkpoint, update_checkpoint
from edgekd.host.distill import ddp
from edgekd.host.distill.config import TrainConfig
from edgekd.host.distill.methods import KD_METHODS, build_distiller, get_method
from edgekd.host.distill.trainer import (
    Trainer,
    TrainResult,
    accuracy_metrics,
    hidden_state_stats,
    predict,
    seed_everything,
    supervised_loss_value,
    train_indices,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# models and datasets


def _accepted_arguments(name: str) -> dict[str, Any]:
    import edgekd.host.models  # noqa: F401  (registers every family)
    from edgekd.host.models.base import MODELS, model_arguments

    if name not in MODELS:
        raise EdgekdError(f"unknown model '{name}'", field="model",
                          fix=f"known models: {', '.join(MODELS.names())} (see `edgekd models list`)")
    return model_arguments(name)


def infer_model_kwargs(name: str, meta: Mapping[str, Any], modalities: Sequence[str] | None = None) -> dict[str, Any]:
    """Shape kwargs (``num_beams``, ``window``, ``horizons``, ``image_size``, ``radar_shape``, ``lidar_bins``) from a dataset.

    Only those that the model's constructor accepts are returned, so e.g. a
    LiDAR model never receives ``image_size``.
    """
    shapes = {m: tuple(v["window_shape"]) for m, v in meta["modalities"].items()}
    candidates: dict[str, Any] = {"num_beams": int(meta["num_beams"]), "window": int(meta["window"]),
                                  "horizons": int(meta["horizons"])}
    if "image" in shapes:
        candidates["image_size"] = int(shapes["image"][-1])
    if "radar" in shapes:
        candidates["radar_shape"] = tuple(int(v) for v in shapes["radar"][-2:])
    if "lidar" in shapes:
        candidates["lidar_bins"] = int(shapes["lidar"][-1])
    accepted = _accepted_arguments(name)
    return {k: v for k, v in candidates.items() if k in accepted}


def check_model_fits_data(model: nn.Module, ds, *, where: object = None, role: str = "model") -> None:
    """The dataset must hold every modality of ``model`` with the per-window shape the model expects."""
    name = getattr(model, "registry_name", type(model).__name__)
    missing = [m for m in model.input_modalities if m not in ds.shapes]
    if missing:
        raise EdgekdError(f"{role} '{name}' needs modality '{missing[0]}' but the dataset has "
                          f"{', '.join(ds.shapes) or 'none'}", file=ds.path, field="modalities",
                          fix=f"synthesise/import a dataset with {', '.join(model.input_modalities)}, "
                              "or pick a model for the modalities you have")
    for modality, shape in model.input_shapes().items():
        if tuple(shape) != tuple(ds.shapes[modality]):
            raise EdgekdError(f"{role} '{name}' expects {modality} windows {tuple(shape)}, the dataset has "
                              f"{tuple(ds.shapes[modality])}", file=where or ds.path, field=f"shapes.{modality}",
                              fix="use a dataset made with the same image size / radar shape / window as the "
                                  "model, or train a new model on this dataset")
    if ds.num_beams != getattr(model, "num_beams", ds.num_beams):
        raise EdgekdError(f"{role} '{name}' predicts {model.num_beams} beams, the dataset has {ds.num_beams}",
                          file=where or ds.path, field="num_beams", fix="use a dataset with the same codebook")


def _load_splits(data_path: str | os.PathLike, modalities: Sequence[str]):
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


def _data_record(ds, modalities: Sequence[str], train_windows: int) -> dict[str, Any]:
    return {"path": str(Path(ds.path).resolve()), "fingerprint": ds.fingerprint, "modalities": list(modalities),
            "shapes": {m: list(ds.shapes[m]) for m in modalities}, "train_windows": int(train_windows)}


def _teacher_record(ckpt: Checkpoint | None) -> dict | None:
    if ckpt is None:
        return None
    return {"path": str(ckpt.path), "sha256": sha256_file(ckpt.path), "model": ckpt.model_name,
            "model_kwargs": dict(ckpt.model_kwargs)}


def _prepare_threads(cfg: TrainConfig) -> None:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)


def _resume_checkpoint(out: Path | None, resume: bool | str | os.PathLike, model_name: str, method: str):
    """The checkpoint to resume from (``resume=True`` means ``out``), checked against the run."""
    if not resume:
        return None
    if resume is True and out is None:
        raise EdgekdError("resume needs the checkpoint path", field="resume", fix="pass the out path of the run to resume")
    path = Path(out) if resume is True else Path(resume)
    ckpt = load_checkpoint(path, expect_model=model_name)
    state = ckpt.extra.get("train_state")
    if not state:
        raise EdgekdError("checkpoint has no training state to resume from", file=path, field="extra.train_state",
                          fix="resume only checkpoints written by `edgekd train`/`edgekd distill` of this version")
    if state.get("method") != method:
        raise EdgekdError(f"checkpoint was trained with method '{state.get('method')}', not '{method}'",
                          file=path, field="extra.train_state.method", fix=f"resume with --method {state.get('method')}")
    return ckpt


def _build(method: str, student: nn.Module, teacher: nn.Module | None, cfg: TrainConfig):
    try:
        return build_distiller(method, student, teacher, cfg)
    except (ValueError, KeyError) as exc:
        raise EdgekdError(f"cannot set up KD method '{method}': {str(exc).strip(chr(39))}", field="method",
                          fix="check horizon_weights / rkd_feature / hint_feature against the method and models") from None


def _run(distiller, train, val, test, cfg: TrainConfig, out, log_path, meta, resume_ckpt, info) -> TrainResult:
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
                log_path: str | os.PathLike | None = None) -> tuple[nn.Module, TrainResult]:
    """Train ``model_name`` on the labels only (a teacher, or the no-KD baseline); save to ``out`` if given."""
    from edgekd.host.data import read_meta
    from edgekd.host.models import create_model

    cfg = cfg or TrainConfig()
    _prepare_threads(cfg)
    info = ddp.init_distributed(cfg.device)
    meta = read_meta(data_path)
    kwargs = {**infer_model_kwargs(model_name, meta), **(model_kwargs or {})}
    resume_ckpt = _resume_checkpoint(Path(out) if out else None, resume, model_name, "none")
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
                  log_path: str | os.PathLike | None = None) -> tuple[nn.Module, TrainResult]:
    """Distil ``student_name`` from the teacher checkpoint with KD method ``method``.

    ``self`` needs no student name (the student is a fresh copy of the teacher);
    ``dml`` needs no teacher (with one, it joins as a peer that keeps learning).
    """
    from edgekd.host.data import read_meta
    from edgekd.host.models import create_model

    cfg = cfg or TrainConfig()
    method = KD_METHODS.resolve(method)   # unknown: EdgekdError listing the known methods
    method_cls = get_method(method)
    teacher_ck = load_checkpoint(teacher_ckpt) if teacher_ckpt is not None else None
    if method_cls.needs_teacher and teacher_ck is None:
        raise EdgekdError(f"KD method '{method}' needs a teacher checkpoint", field="teacher",
                          fix="pass --teacher t.pt (train one with `edgekd train`)")
    if method == "self":
        if student_name not in (None, teacher_ck.model_name):
            raise EdgekdError(f"self-KD distils the teacher into a fresh copy of itself; --student is "
                              f"'{student_name}' but the teacher is '{teacher_ck.model_name}'", file=teacher_ck.path,
                              field="student", fix=f"omit --student or pass --student {teacher_ck.model_name}")
        student_name = teacher_ck.model_name
    if student_name is None:
        raise EdgekdError("no student model given", field="student", fix="pass --student NAME (see `edgekd models list`)")
    _prepare_threads(cfg)
    info = ddp.init_distributed(cfg.device)
    meta = read_meta(data_path)
    if method == "self":
        kwargs = {**teacher_ck.model_kwargs, **(student_kwargs or {})}
    else:
        kwargs = {**infer_model_kwargs(student_name, meta), **(student_kwargs or {})}
    resume_ckpt = _resume_checkpoint(Path(out) if out else None, resume, student_name, method)
    seed_everything(cfg.seed)
    student = create_model(student_name, **kwargs)
    teacher = teacher_ck.build() if teacher_ck is not None else None
    modalities = list(student.input_modalities)
    if teacher is not None:
        modalities += [m for m in teacher.input_modalities if m not in modalities]
    train, val, test = _load_splits(data_path, modalities)
    check_model_fits_data(student, train, role="student")
    if teacher is not None:
        check_model_fits_data(teacher, train, where=teacher_ck.path, role="teacher")
        _check_teacher_outputs(teacher, student, teacher_ck)
        if teacher_ck.data.get("fingerprint") not in (None, train.fingerprint):
            log.warning("teacher %s was trained on another dataset (fingerprint %s..., this one %s...)",
                        teacher_ck.path, str(teacher_ck.data.get("fingerprint"))[:12], train.fingerprint[:12])
    distiller = _build(method, student, teacher, cfg)
    record = {"config": {"method": method, "train": dataclasses.asdict(distiller.cfg),
                         "teacher": _teacher_record(teacher_ck)},
              "data": _data_record(train, student.input_modalities,
                                   len(train_indices(len(train), cfg.max_train_windows)))}
    result = _run(distiller, train, val, test, cfg, out, log_path, record, resume_ckpt, info)
    return distiller.deploy_model(), result


def _check_teacher_outputs(teacher: nn.Module, student: nn.Module, ckpt: Checkpoint) -> None:
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
