"""Data-free knowledge distillation for the LiDAR student (paper 2, Alg. 1).

A generator inverts the frozen teacher, then the student learns from the
generator's output only. No training input and no label is ever read.

1. The teacher checkpoint carries its *metadata*: the mean and variance of its
   last hidden state over the real training set (``teacher_stats``, written by
   ``edgekd train`` or ``edgekd metadata CKPT --data D``).
2. The generator ``z (500) -> Linear 64 -> ReLU -> Linear T*216 -> tanh`` is
   trained against the frozen teacher with named loss terms (:func:`generator_loss_terms`):
   ``loss_metadata`` (batch mean/variance of the teacher's last hidden state vs
   the metadata), ``loss_activation`` (negative norm of a teacher activation)
   and ``loss_entropy`` (entropy of the teacher's softmax); the variant
   ``weighted`` sums them with alpha/beta/gamma, the others keep one term.
3. As the reference does, the trained generator then synthesises a *fixed* set
   (5000 windows by default) and the teacher labels it once with its logits.
4. The student is trained on that set only (:class:`edgekd.host.distill.methods.DataFreeKD`):
   KL at temperature T (x T^2) or MSE between raw logits. By default it starts from
   the teacher's first layer, kept frozen (``DataFreeConfig.student_init``).
5. With ``data=`` the student (and the teacher, for reference) are evaluated on
   the *test* split; that split is the only real data the data-free run opens
   (:func:`open_evaluation_split`). The teacher side (:func:`add_layer_metadata`,
   run by ``edgekd metadata`` where the teacher was trained) is the one function
   that reads training windows, to write the metadata.

Richer metadata (beyond the paper): ``edgekd metadata`` also stores per-step mean
and variance of the teacher's first-layer pre-activations and of its GRU state at
every step (:data:`METADATA_LAYERS`), like DeepInversion's batch-norm statistics;
the metadata loss then matches all of them. On the synthetic scenario, matching the
last hidden state alone leaves the generator far from real scans (student at ~30% of
the teacher's top-5); see BENCHMARKS.md.

Input mapping: real inputs are ranges in metres / 10 per azimuth bin, in
``[0, max_range / 10]`` (0 = no return; 40 m -> 4.0 in the synthetic scenario).
The generator's ``tanh`` output ``y`` in ``[-1, 1]`` is mapped affinely onto
``input_range = (low, high)`` (default ``(0, 4)``): ``x = low + (y + 1) / 2 * (high - low)``
(``sigmoid``: ``x = low + y * (high - low)``). ``output_mapping: no_return``
reads ``y < 0`` as a missing return instead: ``x = low + max(y, 0) * (high - low)``,
so the generator can emit the exact zeros that a third of real bins hold. The generator makes the T = 8
observed frames; the horizons - 1 future steps are padded inside the model,
exactly as for real inputs (a zero scan, see :mod:`edgekd.host.models.lidar`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from edgekd.device.errors import EdgekdError
from edgekd.device.io import atomic_write_text, sha256_file
from edgekd.host.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from edgekd.host.distill import losses as L
from edgekd.host.distill.config import DataFreeConfig, TrainConfig
from edgekd.host.distill.methods import build_distiller, freeze
from edgekd.host.models.blocks import seq_apply

log = logging.getLogger(__name__)

EVALUATION_SPLIT = "test"        # the only split of a dataset the data-free path may open
MODALITY = "lidar"
GENERATOR_VARIANTS = ("weighted", "metadata", "activation", "entropy")
SHAPE_KWARGS = ("num_beams", "window", "horizons", "lidar_bins")   # what the student takes from the teacher
# per-step teacher features whose training-set mean/variance the metadata may carry (teacher_layer_features)
METADATA_LAYERS = ("embedding_pre", "gru_hidden")
STUDENT_INITS = ("scratch", "teacher_embedding")
# DataFreeConfig's settings beyond the paper, recorded with every student and in the paper-2 report:
#  smoothness_weight: weight of the scan smoothness prior in every generator variant (0: off, the
#  default: with per-layer metadata it moved the student by < 1 point, within seed noise; with
#  last-hidden-only metadata it outweighs that term and the student fell from ~81% to ~35%);
#  student_init: "teacher_embedding" starts the student from the teacher's first layer (Linear
#  bins -> 64, the same shape in both) and keeps it frozen, as DistilBERT starts from teacher
#  layers: no data involved, and the student then only learns the recurrent part on the
#  teacher's own view of a scan (generated scans can stray in directions the teacher ignores;
#  a student with its own first layer would learn from that noise); "scratch": the paper's student.
BEYOND_PAPER_OPTIONS = ("smoothness_weight", "student_init")


def beyond_paper_options(cfg: DataFreeConfig) -> dict[str, Any]:
    return {name: getattr(cfg, name) for name in BEYOND_PAPER_OPTIONS}


# ---------------------------------------------------------------------------
# the generator


class LidarGenerator(nn.Module):
    """``z [B, noise_dim] -> Linear hidden -> ReLU -> Linear window*bins -> tanh|sigmoid`` -> ``[B, window, bins]``.

    The output activation is mapped affinely onto ``input_range`` (see the module doc).
    """

    def __init__(self, *, noise_dim: int = 500, hidden: int = 64, window: int = 8, bins: int = 216,
                 output: str = "tanh", input_range: tuple[float, float] = (0.0, 4.0), mapping: str = "affine"):
        super().__init__()
        if output not in ("tanh", "sigmoid"):
            raise ValueError(f"generator output must be 'tanh' or 'sigmoid', got {output!r}")
        if mapping not in ("affine", "no_return") or (mapping == "no_return" and output != "tanh"):
            raise ValueError(f"output mapping must be 'affine' or 'no_return' (tanh only), got {mapping!r}")
        self.noise_dim, self.window, self.bins, self.output, self.mapping = noise_dim, window, bins, output, mapping
        self.low, self.high = float(input_range[0]), float(input_range[1])
        self.net = nn.Sequential(nn.Linear(noise_dim, hidden), nn.ReLU(), nn.Linear(hidden, window * bins))

    @classmethod
    def from_config(cls, cfg: DataFreeConfig, *, window: int, bins: int) -> LidarGenerator:
        return cls(noise_dim=cfg.noise_dim, hidden=cfg.generator_hidden, window=window, bins=bins,
                   output=cfg.generator_output, input_range=cfg.input_range, mapping=cfg.output_mapping)

    def constructor_kwargs(self) -> dict[str, Any]:
        return {"noise_dim": self.noise_dim, "hidden": self.net[0].out_features, "window": self.window,
                "bins": self.bins, "output": self.output, "input_range": [self.low, self.high],
                "mapping": self.mapping}

    def noise(self, batch: int, generator: torch.Generator | None = None) -> Tensor:
        """Standard normal noise ``[batch, noise_dim]`` (seeded through ``generator``)."""
        return torch.randn(batch, self.noise_dim, generator=generator)

    def forward(self, z: Tensor) -> Tensor:
        raw = self.net(z)
        if self.mapping == "no_return":
            unit = torch.tanh(raw).clamp_min(0.0)
        elif self.output == "tanh":
            unit = (torch.tanh(raw) + 1.0) * 0.5
        else:
            unit = torch.sigmoid(raw)
        return (self.low + (self.high - self.low) * unit).reshape(z.shape[0], self.window, self.bins)


# ---------------------------------------------------------------------------
# generator loss terms (pure functions)


def metadata_loss(hidden: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """MSE of the batch mean plus MSE of the batch (population) variance of ``hidden`` vs the stored ones."""
    flat = hidden.reshape(hidden.shape[0], -1)
    if flat.shape[1] != mean.numel() or flat.shape[1] != var.numel():
        raise ValueError(f"hidden state has {flat.shape[1]} units, metadata has {mean.numel()} / {var.numel()}")
    return (F.mse_loss(flat.mean(0), mean.to(flat)) +
            F.mse_loss(flat.var(0, unbiased=False), var.to(flat)))


def activation_loss(features: Tensor, norm: str = "l2") -> Tensor:
    """Negative mean per-sample norm of ``features`` (maximising it = strong teacher activations).

    Normalised by the width so the scale does not grow with it: L2 gives minus
    the mean RMS activation, L1 minus the mean absolute activation.
    """
    flat = features.reshape(features.shape[0], -1)
    if norm == "l2":
        return -(flat.norm(p=2, dim=1) / flat.shape[1] ** 0.5).mean()
    if norm == "l1":
        return -(flat.abs().sum(1) / flat.shape[1]).mean()
    raise ValueError(f"activation norm must be 'l1' or 'l2', got {norm!r}")


def entropy_loss(logits: Tensor) -> Tensor:
    """Mean entropy (nats) of ``softmax(logits)`` over every (window, horizon) row: low = confident teacher."""
    log_p = F.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(-1).mean()


def layer_metadata_loss(features: Mapping[str, Tensor], layers: Mapping[str, tuple[Tensor, Tensor]]) -> Tensor:
    """Sum over the stored layers of :func:`metadata_loss` on every (step, unit) of that teacher feature.

    Like DeepInversion's batch-norm statistics: each layer's per-step batch mean and
    variance must match those the teacher showed on its training set.
    """
    total = None
    for name, (mean, var) in layers.items():
        if name not in features:
            raise ValueError(f"teacher has no feature {name!r} for its stored metadata (has {sorted(features)})")
        term = metadata_loss(features[name], mean.reshape(-1), var.reshape(-1))
        total = term if total is None else total + term
    if total is None:
        raise ValueError("no layer metadata given")
    return total


def smoothness_loss(lidar: Tensor) -> Tensor:
    """Mean absolute difference between neighbouring azimuth bins plus between consecutive frames.

    The data-free counterpart of DeepInversion's total-variation image prior: a real
    scan is piecewise smooth along the bins (a wall, a vehicle) and changes little
    from one frame to the next, which the teacher's statistics alone do not pin down.
    """
    return ((lidar[:, :, 1:] - lidar[:, :, :-1]).abs().mean() + (lidar[:, 1:] - lidar[:, :-1]).abs().mean())


def generator_loss_weights(cfg: DataFreeConfig) -> dict[str, float]:
    """Weights of the named terms for the variant ``cfg.generator_loss``."""
    if cfg.generator_loss == "weighted":
        weights = {"loss_metadata": cfg.metadata_weight, "loss_activation": cfg.activation_weight,
                   "loss_entropy": cfg.entropy_weight}
        if not any(weights.values()):
            raise ValueError("the weighted generator loss needs a positive metadata/activation/entropy weight")
        return weights
    if cfg.generator_loss not in GENERATOR_VARIANTS:
        raise ValueError(f"unknown generator loss {cfg.generator_loss!r} (known: {', '.join(GENERATOR_VARIANTS)})")
    return {f"loss_{cfg.generator_loss}": 1.0}


def generator_loss_terms(features: Mapping[str, Tensor], metadata: TeacherMetadata | tuple[Tensor, Tensor] | None,
                         cfg: DataFreeConfig, *, inputs: Tensor | None = None,
                         smoothness_weight: float = 0.0) -> dict[str, Tensor]:
    """``{"loss": weighted sum, "loss_metadata", "loss_activation", "loss_entropy"}`` on teacher features.

    ``loss_metadata`` is left out when no metadata is given (allowed only when its weight is 0);
    with per-layer metadata (:class:`TeacherMetadata`) it adds :func:`layer_metadata_loss`
    (``features`` must then come from :func:`teacher_layer_features`). With
    ``smoothness_weight > 0`` the generated ``inputs`` also pay ``loss_smoothness``
    (:func:`smoothness_loss`), in every variant: it is a prior on scans, not a teacher signal.
    """
    if cfg.activation_feature not in features:
        raise ValueError(f"teacher has no feature {cfg.activation_feature!r} (has {sorted(features)})")
    terms = {"loss_activation": activation_loss(features[cfg.activation_feature], cfg.activation_norm),
             "loss_entropy": entropy_loss(features["logits"])}
    if metadata is not None:
        meta = metadata if isinstance(metadata, TeacherMetadata) else TeacherMetadata(*metadata)
        terms["loss_metadata"] = metadata_loss(features["last_hidden"], meta.mean, meta.var)
        if meta.layers:
            terms["loss_metadata"] = terms["loss_metadata"] + layer_metadata_loss(features, meta.layers)
    weights = {k: w for k, w in generator_loss_weights(cfg).items() if w != 0 or k in terms}
    if smoothness_weight > 0:
        if inputs is None:
            raise ValueError("the smoothness prior needs the generated inputs")
        terms["loss_smoothness"] = smoothness_loss(inputs)
        weights["loss_smoothness"] = smoothness_weight
    return L.combine(terms, weights)


# ---------------------------------------------------------------------------
# the teacher and its metadata


def needs_metadata(cfg: DataFreeConfig) -> bool:
    return generator_loss_weights(cfg).get("loss_metadata", 0.0) > 0


@dataclasses.dataclass
class TeacherMetadata:
    """The stored statistics of the teacher over its training set.

    ``mean``/``var``: its last hidden state (the paper's metadata). ``layers``: optional
    per-step ``(mean, var)`` of more features (:data:`METADATA_LAYERS`, shape
    ``[steps, units]``), written by ``edgekd metadata``; empty for older checkpoints.
    """

    mean: Tensor
    var: Tensor
    layers: dict[str, tuple[Tensor, Tensor]] = dataclasses.field(default_factory=dict)


def teacher_layer_features(teacher: nn.Module, lidar: Tensor) -> dict[str, Tensor]:
    """The LiDAR teacher's ``forward_features`` plus the per-step features its layer metadata describes.

    ``embedding_pre`` ``[B, T, 64]``: the first layer before its ReLU (every unit is a
    linear view of the scan, as a batch-norm input is in DeepInversion); ``gru_hidden``
    ``[B, T + horizons - 1, H]``: the GRU state after every step, padded ones included.
    Recomputed from the teacher's own modules in eval mode (dropout is then the
    identity); :func:`load_teacher` checks the logits equal the teacher's.
    """
    pre = seq_apply(teacher.embed, lidar, teacher.lidar_bins, teacher.embed.out_features)
    embedding = F.relu(pre)
    seq, last_hidden = teacher.head.gru(embedding, future_steps=teacher.horizons - 1,
                                        future_input=F.relu(teacher.embed.bias))
    logits = seq_apply(teacher.head.classifier, seq[:, -teacher.horizons:], teacher.hidden_size, teacher.num_beams)
    return {"embedding": embedding, "last_hidden": last_hidden, "logits": logits,
            "embedding_pre": pre, "gru_hidden": seq}


@torch.no_grad()
def layer_statistics(teacher: nn.Module, batches) -> dict[str, Any]:
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
    from edgekd.host.distill.trainer import batch_slices, train_indices

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
                 ) -> tuple[Checkpoint, nn.Module, TeacherMetadata | None]:
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


def check_layer_metadata(ck: Checkpoint, teacher: nn.Module, metadata: TeacherMetadata) -> None:
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


# ---------------------------------------------------------------------------
# step 2: train the generator


def train_generator(teacher: nn.Module, metadata: TeacherMetadata | tuple[Tensor, Tensor] | None,
                    cfg: DataFreeConfig, *, seed: int, progress: bool = True,
                    log_every: int = 50) -> tuple[LidarGenerator, list[dict]]:
    """Fit a generator against the frozen ``teacher``; returns it (eval mode) and a loss history.

    Every step draws a fresh noise batch; only the generator's weights move
    (the teacher is frozen and in eval mode, its gradients reach the inputs only).
    With per-layer metadata the teacher runs through :func:`teacher_layer_features`.
    """
    if needs_metadata(cfg) and metadata is None:
        raise ValueError("the generator loss uses the metadata term but no metadata was given")
    if metadata is not None and not isinstance(metadata, TeacherMetadata):
        metadata = TeacherMetadata(*metadata)
    features_of = (functools.partial(teacher_layer_features, teacher) if metadata is not None and metadata.layers
                   else teacher.forward_features)
    smoothness = cfg.smoothness_weight
    freeze(teacher)
    window, bins = teacher.input_shapes()[MODALITY]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = LidarGenerator.from_config(cfg, window=window, bins=bins)
    optimizer = torch.optim.Adam(generator.parameters(), lr=cfg.generator_lr)
    noise = torch.Generator().manual_seed(seed)
    history, sums = [], {}
    generator.train()
    bar = tqdm(range(1, cfg.generator_steps + 1), desc=f"generator ({cfg.generator_loss})", unit="step",
               leave=False, disable=not progress)
    for step in bar:
        inputs = generator(generator.noise(cfg.generator_batch_size, noise))
        terms = generator_loss_terms(features_of(inputs), metadata, cfg, inputs=inputs, smoothness_weight=smoothness)
        if not torch.isfinite(terms["loss"].detach()):
            raise EdgekdError(f"generator loss became {terms['loss'].item()} at step {step}",
                              field="datafree.generator_lr", fix="lower datafree.generator_lr or the loss weights")
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach())
        if step % log_every == 0 or step == cfg.generator_steps:
            count = step - (history[-1]["step"] if history else 0)
            history.append({"step": step, **{k: v / count for k, v in sums.items()}})
            bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
            sums = {}
    return generator.eval(), history


# ---------------------------------------------------------------------------
# step 3: the fixed synthetic set


@dataclasses.dataclass
class SyntheticSet:
    """Generated inputs ``[N, T, bins]`` and the frozen teacher's logits ``[N, horizons, beams]`` on them."""

    inputs: Tensor
    teacher_logits: Tensor

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def summary(self) -> dict[str, float]:
        """Input statistics and how confident the teacher is on the set (for logs and reports)."""
        x, logits = self.inputs, self.teacher_logits
        return {"n": len(self), "input_mean": float(x.mean()), "input_std": float(x.std()),
                "input_window_std": float(x.std(dim=0).mean()),   # spread across windows: 0 = mode collapse
                "teacher_entropy": float(entropy_loss(logits)),
                "teacher_distinct_t0_beams": int(logits[:, 0].argmax(-1).unique().numel())}


@torch.no_grad()
def synthesize_set(generator: LidarGenerator, teacher: nn.Module, n: int, *, seed: int,
                   batch_size: int = 500) -> SyntheticSet:
    """``n`` windows from fixed seeded noise, labelled by the teacher (eval mode) with its logits."""
    generator.eval()
    teacher.eval()
    noise = torch.Generator().manual_seed(seed)
    inputs, logits = [], []
    for start in range(0, n, batch_size):
        x = generator(generator.noise(min(batch_size, n - start), noise))
        inputs.append(x)
        logits.append(teacher(x))
    return SyntheticSet(torch.cat(inputs), torch.cat(logits))


# ---------------------------------------------------------------------------
# step 4: train the student on the synthetic set


def init_student_from_teacher(student: nn.Module, teacher: nn.Module, how: str) -> nn.Module:
    """``teacher_embedding``: copy the teacher's first layer into the student and freeze it (see BEYOND_PAPER_OPTIONS)."""
    if how not in STUDENT_INITS:
        raise ValueError(f"student init must be one of {STUDENT_INITS}, got {how!r}")
    if how == "scratch":
        return student
    if student.embed.weight.shape != teacher.embed.weight.shape:
        raise EdgekdError(f"the student's first layer {tuple(student.embed.weight.shape)} differs from the teacher's "
                          f"{tuple(teacher.embed.weight.shape)}", field="datafree.student_init",
                          fix="use student_init: scratch for this pair")
    with torch.no_grad():
        student.embed.weight.copy_(teacher.embed.weight)
        student.embed.bias.copy_(teacher.embed.bias)
    student.embed.requires_grad_(False)
    return student


def train_student(student: nn.Module, teacher: nn.Module, synthetic: SyntheticSet, cfg: TrainConfig, *,
                  progress: bool | None = None,
                  resample: Callable[[int], SyntheticSet] | None = None) -> tuple[nn.Module, list[dict]]:
    """Fit ``student`` to the teacher's logits on ``synthetic`` (KL or MSE, ``cfg.datafree.student_loss``).

    With ``resample``, epoch ``e > 1`` trains on ``resample(e)`` instead (a fresh
    synthetic set per epoch, ``datafree.resample_each_epoch``).

    Adam/AdamW at ``cfg.lr``, cosine schedule over ``cfg.epochs``, gradient
    clipping, batches of ``cfg.batch_size`` in a (seed, epoch) shuffled order.
    No validation data exists in a data-free run: the last epoch's weights are kept.
    """
    from edgekd.host.distill.trainer import batch_slices, epoch_permutation

    distiller = build_distiller("datafree", student, teacher, cfg)
    cfg = distiller.cfg
    params = [p for p in student.parameters() if p.requires_grad]
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
                 if cfg.scheduler == "cosine" else None)
    show = cfg.progress if progress is None else progress
    history = []
    for epoch in tqdm(range(1, cfg.epochs + 1), desc=f"student ({cfg.datafree.student_loss})", unit="epoch",
                      leave=False, disable=not show):
        distiller.train()
        if resample is not None and epoch > 1:
            synthetic = resample(epoch)
        sums, steps = {}, 0
        for chunk in batch_slices(epoch_permutation(len(synthetic), cfg.seed, epoch), cfg.batch_size, min_last=2):
            index = torch.from_numpy(chunk)
            batch = {MODALITY: synthetic.inputs[index], "teacher_logits": synthetic.teacher_logits[index]}
            _, terms = distiller(batch)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            steps += 1
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
        if scheduler is not None:
            scheduler.step()
        history.append({"epoch": epoch, **{k: v / max(steps, 1) for k, v in sums.items()}})
    return student.eval(), history


# ---------------------------------------------------------------------------
# step 5: evaluation on the test split only


def open_evaluation_split(data_path: str | os.PathLike):
    """The test split (LiDAR only) of ``data_path``: the only real data the data-free path reads."""
    from edgekd.host.data import load_dataset

    return load_dataset(data_path, EVALUATION_SPLIT, modalities=(MODALITY,))


def evaluate_on(model: nn.Module, ds, batch_size: int = 256) -> dict[str, Any]:
    """Top-k / DBA per horizon of ``model`` on every window of ``ds``."""
    from edgekd.host.distill.api import check_model_fits_data
    from edgekd.host.distill.trainer import accuracy_metrics, predict

    check_model_fits_data(model, ds)
    logits, beams = predict(model, ds, np.arange(len(ds)), batch_size, torch.device("cpu"))
    if len(beams) == 0:
        raise EdgekdError(f"the {EVALUATION_SPLIT} split has no windows", file=ds.path, field="splits.test",
                          fix="use a dataset with a test split")
    return accuracy_metrics(logits, beams)


# ---------------------------------------------------------------------------
# the whole run


@dataclasses.dataclass
class DataFreeResult:
    method: str
    generator_loss: str
    student_loss: str
    generator_history: list[dict]
    student_history: list[dict]
    synthetic: dict
    metrics: dict                     # "test" (student) and "teacher_test" when data was given
    checkpoint: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def student_kwargs_from_teacher(ckpt: Checkpoint, student_name: str) -> dict[str, Any]:
    """The shape kwargs (beams, window, horizons, bins) of the teacher that the student accepts."""
    from edgekd.host.distill.api import _accepted_arguments

    accepted = _accepted_arguments(student_name)
    return {k: v for k, v in ckpt.model_kwargs.items() if k in SHAPE_KWARGS and k in accepted}


def distill_datafree(teacher_ckpt: str | os.PathLike | Checkpoint, student_name: str = "lidar_student",
                     cfg: TrainConfig | None = None, out: str | os.PathLike | None = None, *,
                     data: str | os.PathLike | None = None, student_kwargs: Mapping[str, Any] | None = None,
                     synthetic: SyntheticSet | None = None, generator: LidarGenerator | None = None,
                     generator_history: list[dict] | None = None,
                     log_path: str | os.PathLike | None = None) -> tuple[nn.Module, DataFreeResult]:
    """Data-free KD of ``student_name`` from a LiDAR teacher checkpoint (see the module doc).

    Reads the teacher checkpoint and, only when ``data`` is given, the *test*
    split of that dataset for evaluation. ``synthetic`` reuses an already
    generated set (e.g. the same generator for a KL and an MSE student; pass
    its ``generator`` and ``generator_history`` too, to store them).
    ``out`` gets the student checkpoint and a JSONL log (``log_path``, default
    ``OUT.log.jsonl``) of the generator and student losses.
    """
    from edgekd.host.distill.trainer import seed_everything
    from edgekd.host.models import create_model

    start = time.perf_counter()
    cfg = cfg or TrainConfig()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    df = cfg.datafree
    test_ds = open_evaluation_split(data) if data is not None else None   # fail fast on a bad path
    ck, teacher, metadata = load_teacher(teacher_ckpt, df)
    if synthetic is None:
        generator, generator_history = train_generator(teacher, metadata, df, seed=cfg.seed, progress=cfg.progress)
        synthetic = synthesize_set(generator, teacher, df.synthetic_samples, seed=cfg.seed + 1)
    log.info("synthetic set: %s", synthetic.summary())
    kwargs = {**student_kwargs_from_teacher(ck, student_name), **(student_kwargs or {})}
    seed_everything(cfg.seed + 2)
    student = create_model(student_name, **kwargs)
    if tuple(student.input_modalities) != (MODALITY,) or student.input_shapes() != teacher.input_shapes():
        raise EdgekdError(f"student '{student_name}' does not take the teacher's LiDAR windows "
                          f"{teacher.input_shapes()}", field="student", fix="pick a LiDAR student, e.g. lidar_student")
    init_student_from_teacher(student, teacher, df.student_init)
    resample = None
    if df.resample_each_epoch:
        if generator is None:
            raise ValueError("resample_each_epoch needs the generator, not only a synthetic set")
        resample = lambda epoch: synthesize_set(generator, teacher, df.synthetic_samples,  # noqa: E731
                                                seed=cfg.seed + 1 + 1000 * epoch)
    student, student_history = train_student(student, teacher, synthetic, cfg, resample=resample)
    metrics: dict[str, Any] = {}
    if test_ds is not None:
        if ck.data.get("fingerprint") not in (None, test_ds.fingerprint):
            log.warning("teacher %s was trained on another dataset than %s", ck.path, data)
        metrics["test"] = evaluate_on(student, test_ds)
        metrics["teacher_test"] = evaluate_on(teacher, test_ds)
    result = DataFreeResult(method="datafree", generator_loss=df.generator_loss, student_loss=df.student_loss,
                            generator_history=generator_history or [], student_history=student_history,
                            synthetic=synthetic.summary(), metrics=metrics)
    if out is not None:
        result.checkpoint = str(save_datafree_checkpoint(out, student, ck, cfg, result, generator, test_ds,
                                                         log_path=log_path))
    result.seconds = round(time.perf_counter() - start, 3)
    return student, result


def save_datafree_checkpoint(out: str | os.PathLike, student: nn.Module, teacher_ck: Checkpoint, cfg: TrainConfig,
                             result: DataFreeResult, generator: LidarGenerator | None, test_ds, *,
                             log_path: str | os.PathLike | None = None) -> Path:
    """The student checkpoint (no training data: ``data.train_windows`` is 0) and a JSONL log beside it."""
    shapes = {m: list(s) for m, s in student.input_shapes().items()}
    data = {"path": None, "fingerprint": None, "modalities": [MODALITY], "shapes": shapes, "train_windows": 0,
            "real_training_inputs": 0}
    if test_ds is not None:
        data["evaluation"] = {"path": str(Path(test_ds.path).resolve()), "split": EVALUATION_SPLIT,
                              "fingerprint": test_ds.fingerprint}
    teacher = {"path": str(teacher_ck.path), "sha256": sha256_file(teacher_ck.path) if teacher_ck.path else None,
               "model": teacher_ck.model_name, "model_kwargs": dict(teacher_ck.model_kwargs)}
    options = beyond_paper_options(cfg.datafree)
    extra: dict[str, Any] = {"datafree": {"synthetic": result.synthetic, "options": options,
                                          "generator_history": result.generator_history,
                                          "student_history": result.student_history}}
    if generator is not None:
        extra["generator"] = {"kwargs": generator.constructor_kwargs(),
                              "state_dict": {k: v.detach().cpu() for k, v in generator.state_dict().items()}}
    path = save_checkpoint(out, student, config={"method": "datafree", "train": dataclasses.asdict(cfg),
                                                 "teacher": teacher},
                           data=data, metrics=result.metrics, extra=extra)
    lines = [json.dumps({"phase": "generator", **r}) for r in result.generator_history]
    lines += [json.dumps({"phase": "student", **r}) for r in result.student_history]
    atomic_write_text(log_path or Path(out).with_suffix(".log.jsonl"), "\n".join(lines) + "\n")
    return path


__all__ = [
    "DataFreeResult", "EVALUATION_SPLIT", "GENERATOR_VARIANTS", "LidarGenerator", "METADATA_LAYERS",
    "BEYOND_PAPER_OPTIONS", "STUDENT_INITS", "SyntheticSet", "TeacherMetadata", "activation_loss", "add_layer_metadata",
    "beyond_paper_options", "distill_datafree", "entropy_loss", "evaluate_on", "generator_loss_terms",
    "generator_loss_weights", "init_student_from_teacher", "layer_metadata_loss", "layer_statistics", "load_teacher",
    "metadata_loss", "open_evaluation_split", "smoothness_loss", "synthesize_set", "teacher_layer_features",
    "teacher_metadata", "train_generator", "train_student",
]
