"""The frozen LiDAR teacher of data-free KD and its metadata (paper 2, step 1).

``teacher_stats`` of the checkpoint: the mean and variance of the last hidden
state over the real training set (the paper's metadata) and, with ``edgekd
metadata``, per-step statistics of more layers (:data:`METADATA_LAYERS`).
:func:`add_layer_metadata` is the one function of the data-free package that
reads training windows: it runs where the teacher was trained, never in a
data-free run.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from edgekd.device.errors import EdgekdError
from edgekd.host.checkpoint import Checkpoint, load_checkpoint
from edgekd.host.distill.config import DataFreeConfig
from edgekd.host.distill.datafree.losses import TeacherMetadata, needs_metadata
from edgekd.host.distill.methods import freeze
from edgekd.host.models.blocks import seq_apply

if TYPE_CHECKING:
    from edgekd.host.models.base import BeamModel
    from edgekd.host.models.lidar import _LidarGRU

log = logging.getLogger(__name__)

MODALITY = "lidar"
# per-step teacher features whose training-set mean/variance the metadata may carry (teacher_layer_features)
METADATA_LAYERS = ("embedding_pre", "gru_hidden")


def teacher_layer_features(teacher: BeamModel, lidar: Tensor) -> dict[str, Tensor]:
    """The LiDAR teacher's ``forward_features`` plus the per-step features its layer metadata describes.

    ``embedding_pre`` ``[B, T, 64]``: the first layer before its ReLU (every unit is a
    linear view of the scan, as a batch-norm input is in DeepInversion); ``gru_hidden``
    ``[B, T + horizons - 1, H]``: the GRU state after every step, padded ones included.
    Recomputed from the teacher's own modules in eval mode (dropout is then the
    identity); :func:`load_teacher` checks the logits equal the teacher's.
    """
    gru = cast("_LidarGRU", teacher)   # the LiDAR GRU family (load_teacher checks the modality)
    pre = seq_apply(gru.embed, lidar, gru.lidar_bins, gru.embed.out_features)
    embedding = F.relu(pre)
    seq, last_hidden = gru.head.gru(embedding, future_steps=gru.horizons - 1, future_input=F.relu(gru.embed.bias))
    logits = seq_apply(gru.head.classifier, seq[:, -gru.horizons:], gru.hidden_size, gru.num_beams)
    return {"embedding": embedding, "last_hidden": last_hidden, "logits": logits,
            "embedding_pre": pre, "gru_hidden": seq}


@torch.no_grad()
def layer_statistics(teacher: BeamModel, batches) -> dict[str, Any]:
    """Per-step mean and population variance of :data:`METADATA_LAYERS` over LiDAR input ``batches``.

    Teacher side only: ``edgekd metadata`` (and the paper-2 teacher stage) pass the
    training windows the teacher learned from. Float64 sums, so the batch size does not matter.
    """
    was_training = teacher.training
    teacher.eval()
    sums: dict[str, tuple] = {}
    count = 0
    for lidar in batches:
        features = teacher_layer_features(teacher, torch.as_tensor(lidar, dtype=torch.float32))
        for name in METADATA_LAYERS:
            value = features[name].double()
            total, total_sq = sums.get(name, (0.0, 0.0))
            sums[name] = (total + value.sum(0), total_sq + value.pow(2).sum(0))
        count += int(lidar.shape[0])
    teacher.train(was_training)
    if count == 0:
        raise ValueError("no windows to compute the layer metadata from")
    layers = {}
    for name, (total, total_sq) in sums.items():
        mean = total / count
        layers[name] = {"mean": mean.float().tolist(),
                        "var": (total_sq / count - mean.pow(2)).clamp_min(0.0).float().tolist()}
    return {"layers": layers, "layers_count": count}


def add_layer_metadata(ckpt_path: str | os.PathLike, data_path: str | os.PathLike, *,
                       max_train_windows: int | None = None, batch_size: int = 256) -> dict[str, Any]:
    """Teacher side: compute :func:`layer_statistics` on the teacher's training split and store them.

    The one function here that reads training windows: it belongs with the teacher
    (``edgekd metadata``, the paper-2 teacher stage), never with the data-free run,
    which only reads what it writes into ``teacher_stats["layers"]``. Uses the
    windows of the teacher's own run (its ``max_train_windows``) unless told otherwise.
    """
    from edgekd.host.checkpoint import update_checkpoint
    from edgekd.host.data import load_dataset
    from edgekd.host.distill.sources import batch_slices, train_indices

    ck = load_checkpoint(ckpt_path)
    teacher = ck.build()
    if tuple(teacher.input_modalities) != (MODALITY,) or not hasattr(teacher, "embed"):
        raise EdgekdError(f"layer metadata is defined for the LiDAR GRU teachers, not '{ck.model_name}'",
                          file=ck.path, field="model", fix="pass a lidar_teacher checkpoint")
    ds = load_dataset(data_path, "train", modalities=(MODALITY,))
    if max_train_windows is None:
        max_train_windows = ck.config.get("train", {}).get("max_train_windows")
    chunks = batch_slices(train_indices(len(ds), max_train_windows), batch_size)
    layers = layer_statistics(teacher, (torch.from_numpy(ds.batch(c)[MODALITY]) for c in chunks))
    update_checkpoint(ckpt_path, teacher_stats={**(ck.teacher_stats or {}), **layers})
    return layers


def teacher_metadata(ckpt: Checkpoint) -> TeacherMetadata:
    """The teacher's stored metadata (last hidden state, plus per-layer statistics when present)."""
    stats = ckpt.teacher_stats or {}
    fix = (f"add it with `edgekd metadata {ckpt.path} --data DATASET` (the dataset the teacher was trained on), "
           "or retrain the teacher with `edgekd train`, which stores it")
    if "last_hidden_mean" not in stats or "last_hidden_var" not in stats:
        raise EdgekdError("teacher checkpoint has no metadata (mean/variance of its last hidden state over the "
                          "training set), which the data-free generator loss needs",
                          file=ckpt.path, field="teacher_stats", fix=fix)
    mean = torch.tensor(stats["last_hidden_mean"], dtype=torch.float32)
    var = torch.tensor(stats["last_hidden_var"], dtype=torch.float32)
    if mean.ndim != 1 or mean.shape != var.shape or not torch.isfinite(mean).all() or (var < 0).any():
        raise EdgekdError("teacher metadata is malformed (mean/var must be equal-length finite vectors, var >= 0)",
                          file=ckpt.path, field="teacher_stats", fix=fix)
    layers = {}
    for name, entry in (stats.get("layers") or {}).items():
        m = torch.tensor(entry["mean"], dtype=torch.float32)
        v = torch.tensor(entry["var"], dtype=torch.float32)
        if m.shape != v.shape or not torch.isfinite(m).all() or not torch.isfinite(v).all() or (v < 0).any():
            raise EdgekdError(f"teacher layer metadata {name!r} is malformed (equal shapes, finite, var >= 0)",
                              file=ckpt.path, field="teacher_stats.layers",
                              fix=f"recompute it with `edgekd metadata {ckpt.path} --data DATASET`")
        layers[name] = (m, v)
    return TeacherMetadata(mean, var, layers)


def load_teacher(teacher_ckpt: str | os.PathLike | Checkpoint, cfg: DataFreeConfig
                 ) -> tuple[Checkpoint, BeamModel, TeacherMetadata | None]:
    """The checkpoint, the frozen LiDAR teacher and its metadata (None when the loss does not use it)."""
    ck = teacher_ckpt if isinstance(teacher_ckpt, Checkpoint) else load_checkpoint(teacher_ckpt)
    teacher = freeze(ck.build())
    if tuple(teacher.input_modalities) != (MODALITY,):
        raise EdgekdError(f"data-free KD generates LiDAR windows; teacher '{ck.model_name}' takes "
                          f"{', '.join(teacher.input_modalities)}", file=ck.path, field="model",
                          fix="pass a LiDAR teacher checkpoint (e.g. one trained with --model lidar_teacher)")
    metadata = teacher_metadata(ck) if needs_metadata(cfg) else None
    if metadata is not None:
        width = teacher.forward_features(*teacher.example_inputs(batch=2))["last_hidden"].reshape(2, -1).shape[1]
        if metadata.mean.numel() != width:
            raise EdgekdError(f"teacher metadata has {metadata.mean.numel()} units, the teacher's last hidden state "
                              f"has {width}", file=ck.path, field="teacher_stats",
                              fix=f"recompute it with `edgekd metadata {ck.path} --data DATASET`")
        if metadata.layers:
            check_layer_metadata(ck, teacher, metadata)
        else:
            log.warning("teacher %s carries only last-hidden-state metadata; `edgekd metadata %s --data DATASET` "
                        "adds per-layer statistics, which make much more realistic synthetic scans", ck.path, ck.path)
    return ck, teacher, metadata


def check_layer_metadata(ck: Checkpoint, teacher: BeamModel, metadata: TeacherMetadata) -> None:
    """The layer features reproduce the teacher's logits and have the stored metadata's shapes."""
    x = torch.rand(2, *teacher.input_shapes()[MODALITY], generator=torch.Generator().manual_seed(0)) * 4
    features = teacher_layer_features(teacher, x)
    if not torch.allclose(features["logits"], teacher(x), atol=1e-5):
        raise EdgekdError("the teacher's layer features do not reproduce its output (model code changed?)",
                          file=ck.path, field="model", fix="update edgekd.host.distill.datafree.teacher_layer_features")
    for name, (mean, _) in metadata.layers.items():
        if name not in features or tuple(features[name].shape[1:]) != tuple(mean.shape):
            raise EdgekdError(f"teacher layer metadata {name!r} has shape {tuple(mean.shape)}, the teacher's feature "
                              f"{tuple(features[name].shape[1:]) if name in features else 'does not exist'}",
                              file=ck.path, field="teacher_stats.layers",
                              fix=f"recompute it with `edgekd metadata {ck.path} --data DATASET`")
