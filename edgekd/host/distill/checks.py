"""Checks and records shared by the run-level APIs (:mod:`.api`, :mod:`.datafree`).

The inputs a user can get wrong (a dataset without the modality or with another
shape than the model, a checkpoint of another model or method) raise
:class:`EdgekdError` naming the file, the field and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from edgekd.device.errors import EdgekdError
from edgekd.device.io import sha256_file
from edgekd.host.checkpoint import Checkpoint, load_checkpoint
from edgekd.host.distill.config import TrainConfig

if TYPE_CHECKING:
    from edgekd.host.models.base import BeamModel


def accepted_arguments(name: str) -> dict[str, Any]:
    import edgekd.host.models  # noqa: F401  (registers every family)
    from edgekd.host.models.base import MODELS, model_arguments

    if name not in MODELS:
        raise EdgekdError(f"unknown model '{name}'", field="model",
                          fix=f"known models: {', '.join(MODELS.names())} (see `edgekd models list`)")
    return model_arguments(name)


def infer_model_kwargs(name: str, meta: Mapping[str, Any], modalities: Sequence[str] | None = None) -> dict[str, Any]:
    """Shape kwargs (``num_beams``, ``window``, ``horizons``, ``image_size``, ``radar_shape``, ``lidar_bins``).

    Read from a dataset's meta.json.

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
    accepted = accepted_arguments(name)
    return {k: v for k, v in candidates.items() if k in accepted}


def check_model_fits_data(model: BeamModel, ds, *, where: object = None, role: str = "model") -> None:
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


def teacher_record(ckpt: Checkpoint | None) -> dict | None:
    if ckpt is None:
        return None
    return {"path": str(ckpt.path), "sha256": sha256_file(ckpt.path) if ckpt.path else None, "model": ckpt.model_name,
            "model_kwargs": dict(ckpt.model_kwargs)}


def prepare_threads(cfg: TrainConfig) -> None:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)


def resume_checkpoint(out: Path | None, resume: bool | str | os.PathLike, model_name: str,
                      method: str) -> Checkpoint | None:
    """The checkpoint to resume from (``resume=True`` means ``out``), checked against the run."""
    if not resume:
        return None
    if resume is True:
        if out is None:
            raise EdgekdError("resume needs the checkpoint path", field="resume",
                              fix="pass the out path of the run to resume")
        path = Path(out)
    else:
        path = Path(resume)
    ckpt = load_checkpoint(path, expect_model=model_name)
    state = ckpt.extra.get("train_state")
    if not state:
        raise EdgekdError("checkpoint has no training state to resume from", file=path, field="extra.train_state",
                          fix="resume only checkpoints written by `edgekd train`/`edgekd distill` of this version")
    if state.get("method") != method:
        raise EdgekdError(f"checkpoint was trained with method '{state.get('method')}', not '{method}'",
                          file=path, field="extra.train_state.method",
                          fix=f"resume with --method {state.get('method')}")
    return ckpt
