"""The data-free generator's loss terms (pure functions) and the teacher metadata they match.

See :mod:`edgekd.host.distill.datafree` for the method; the terms are named as in
the paper: ``loss_metadata``, ``loss_activation``, ``loss_entropy`` (plus the
optional ``loss_smoothness`` prior beyond the paper).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import torch.nn.functional as F
from torch import Tensor

from edgekd.host.distill import losses as L
from edgekd.host.distill.config import DataFreeConfig

GENERATOR_VARIANTS = ("weighted", "metadata", "activation", "entropy")


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


def needs_metadata(cfg: DataFreeConfig) -> bool:
    return generator_loss_weights(cfg).get("loss_metadata", 0.0) > 0


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


def competition_loss(teacher_logits: Tensor, student_logits: Tensor) -> Tensor:
    """``1 - JS(teacher || student) / ln 2`` over every (window, horizon) row, in [0, 1].

    Adaptive DeepInversion's competition term (Yin et al., CVPR 2020): a generator that lowers it makes
    inputs on which the student disagrees with the teacher, i.e. the ones the student still has to learn.
    """
    p = F.softmax(teacher_logits, dim=-1)
    q = F.softmax(student_logits, dim=-1)
    log_m = (0.5 * (p + q)).clamp_min(1e-30).log()   # finite where both softmaxes underflow to 0
    # kl_div(log m, p) = sum p (log p - log m), with 0 log 0 = 0
    js = 0.5 * (F.kl_div(log_m, p, reduction="none") + F.kl_div(log_m, q, reduction="none")).sum(-1)
    return 1.0 - js.mean() / math.log(2.0)


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
