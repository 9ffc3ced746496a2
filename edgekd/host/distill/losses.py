"""Distillation losses: pure functions over tensors, thin ``nn.Module`` wrappers, one combiner.

Shapes follow the contract: logits are ``[B, H, C]`` (H = 4 horizons t0..t3,
C = 64 beams); every logit loss averages over the ``B x H`` rows, optionally
weighted per horizon. Relation losses take features ``[B, ...]`` and flatten
all but the batch dimension (the "temporal" feature ``[B, 4, hidden]`` becomes
one vector per window, as in the paper-1 reference).

Every wrapper returns a dict of named terms (``loss_ce``, ``loss_kd``, ...);
:func:`combine` turns named terms and weights into ``{"loss": total, **terms}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ---------------------------------------------------------------------------
# helpers


def horizon_weight_tensor(weights: Sequence[float] | Tensor | None, horizons: int,
                          *, like: Tensor | None = None) -> Tensor | None:
    """Per-horizon weights normalised to mean 1 (so the loss scale does not change), or None."""
    if weights is None:
        return None
    w = torch.as_tensor(weights, dtype=like.dtype if like is not None else torch.float32,
                        device=like.device if like is not None else None)
    if w.ndim != 1 or w.numel() != horizons:
        raise ValueError(f"need {horizons} horizon weights, got {tuple(w.shape)}")
    if bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ValueError("horizon weights must be non-negative with a positive sum")
    return w / w.mean()


def _reduce_rows(per_row: Tensor, horizon_weights: Sequence[float] | Tensor | None) -> Tensor:
    """Mean of a ``[B, H]`` per-row loss, each horizon column scaled by its (mean-1) weight."""
    w = horizon_weight_tensor(horizon_weights, per_row.shape[1], like=per_row)
    if w is not None:
        per_row = per_row * w
    return per_row.mean()


def _check_logits(logits: Tensor, name: str = "logits") -> None:
    if logits.ndim != 3:
        raise ValueError(f"{name} must be [B, horizons, beams], got {tuple(logits.shape)}")


# ---------------------------------------------------------------------------
# supervised terms


def cross_entropy_loss(logits: Tensor, beams: Tensor,
                       horizon_weights: Sequence[float] | Tensor | None = None) -> Tensor:
    """Cross-entropy of ``[B, H, C]`` logits against ``[B, H]`` beam indices, mean over rows."""
    _check_logits(logits)
    per_row = F.cross_entropy(logits.flatten(0, 1), beams.flatten(), reduction="none")
    return _reduce_rows(per_row.view(beams.shape), horizon_weights)


def focal_loss(logits: Tensor, beams: Tensor, gamma: float = 2.0,
               horizon_weights: Sequence[float] | Tensor | None = None) -> Tensor:
    """Focal loss ``-(1 - p_y)^gamma log p_y`` (Lin et al.), mean over the B x H rows.

    ``gamma = 0`` is exactly cross-entropy.
    """
    _check_logits(logits)
    log_p = F.log_softmax(logits, dim=-1).gather(-1, beams.unsqueeze(-1)).squeeze(-1)
    modulation = (1.0 - log_p.exp()).clamp_min(0.0).pow(gamma) if gamma else 1.0
    return _reduce_rows(-modulation * log_p, horizon_weights)


# ---------------------------------------------------------------------------
# response-based terms


def kl_div_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0,
                horizon_weights: Sequence[float] | Tensor | None = None) -> Tensor:
    """Hinton KD: ``KL(softmax(t/T) || softmax(s/T)) * T^2``, summed over beams, mean over rows.

    (``F.kl_div(log_softmax(s/T), softmax(t/T))`` in PyTorch's argument order.)
    The teacher side is detached: gradients only ever reach the student.
    """
    _check_logits(student_logits, "student_logits")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)} "
                         "logits differ")
    log_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    per_row = (log_t.exp() * (log_t - log_s)).sum(-1)
    return _reduce_rows(per_row, horizon_weights) * temperature ** 2


def logit_mse_loss(student_logits: Tensor, teacher_logits: Tensor,
                   horizon_weights: Sequence[float] | Tensor | None = None) -> Tensor:
    """MSE between raw logits (no temperature), mean over beams then rows."""
    _check_logits(student_logits, "student_logits")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)} "
                         "logits differ")
    per_row = (student_logits - teacher_logits.detach()).pow(2).mean(-1)
    return _reduce_rows(per_row, horizon_weights)


# ---------------------------------------------------------------------------
# relation-based terms


def sample_partners(batch: int, partners: int, generator: torch.Generator | None = None,
                    device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Pair every anchor with ``partners`` distinct random other windows of the batch.

    Returns index vectors ``(anchor, partner)`` of length ``batch * k`` where
    ``k = min(partners, batch - 1)``. Sampling goes through ``generator`` so a
    seeded run picks the same pairs.
    """
    k = min(partners, batch - 1)
    if k <= 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty
    # Random ranks over the other B-1 windows: shifting indices >= anchor by one skips the anchor itself.
    scores = torch.rand(batch, batch - 1, generator=generator)
    picks = scores.argsort(dim=1)[:, :k]
    anchor = torch.arange(batch).unsqueeze(1).expand(batch, k)
    partner = picks + (picks >= anchor).long()
    return anchor.reshape(-1).to(device), partner.reshape(-1).to(device)


def _flat(features: Tensor) -> Tensor:
    return features.reshape(features.shape[0], -1)


def relation_loss(student_features: Tensor, teacher_features: Tensor, partners: int = 4,
                  generator: torch.Generator | None = None, eps: float = 1e-8) -> dict[str, Tensor]:
    """Paper-1 relation KD over sampled pairs: ``{"loss_rkd_distance", "loss_rkd_angle"}``.

    Each window (anchor) is paired with ``partners`` random others. Distance
    term: MSE between the pairs' L2 distances, each model's distances divided by
    their batch mean. Angle term: MSE between ``1 - cosine similarity`` of the
    same pairs. Both are invariant to rescaling either model's features.
    """
    s, t = _flat(student_features), _flat(teacher_features.detach())
    anchor, partner = sample_partners(s.shape[0], partners, generator, device=s.device)
    if anchor.numel() == 0:
        zero = s.sum() * 0.0
        return {"loss_rkd_distance": zero, "loss_rkd_angle": zero}
    d_s = (s[anchor] - s[partner]).norm(dim=1)
    d_t = (t[anchor] - t[partner]).norm(dim=1)
    d_s = d_s / d_s.mean().clamp_min(eps)
    d_t = d_t / d_t.mean().clamp_min(eps)
    a_s = 1.0 - F.cosine_similarity(s[anchor], s[partner], dim=1, eps=eps)
    a_t = 1.0 - F.cosine_similarity(t[anchor], t[partner], dim=1, eps=eps)
    return {"loss_rkd_distance": F.mse_loss(d_s, d_t), "loss_rkd_angle": F.mse_loss(a_s, a_t)}


def _pairwise_distances(x: Tensor, eps: float) -> Tensor:
    # sqrt of a clamped squared distance: differentiable where two rows coincide (the diagonal).
    sq = (x.unsqueeze(0) - x.unsqueeze(1)).pow(2).sum(-1)
    return sq.clamp_min(eps).sqrt() * (1.0 - torch.eye(x.shape[0], dtype=x.dtype, device=x.device))


def _triplet_angles(x: Tensor, eps: float) -> Tensor:
    # cos of the angle at vertex j between i and k: <e_ji, e_jk> with e = normalised difference.
    diff = x.unsqueeze(0) - x.unsqueeze(1)          # diff[j, i] = x_i - x_j
    unit = F.normalize(diff, p=2, dim=2, eps=eps)
    return torch.bmm(unit, unit.transpose(1, 2)).reshape(-1)


def rkd_park_loss(student_features: Tensor, teacher_features: Tensor,
                  eps: float = 1e-12) -> dict[str, Tensor]:
    """Original RKD (Park et al., CVPR 2019): ``{"loss_rkd_distance", "loss_rkd_angle"}``.

    Distance: smooth-L1 (Huber) between the n x n pairwise distance matrices, each
    model's divided by the mean of its off-diagonal (non-zero) distances; the Huber
    mean runs over the full matrix, its zero diagonal included, as the reference
    code does (lenscloth/RKD ``metric/loss.py`` ``RkdDistance``: ``pdist`` zeroes the
    diagonal, ``d / d[d > 0].mean()``, then ``F.smooth_l1_loss(d, t_d)`` over all n^2
    entries; torchdistill ``losses/mid_level.py`` ``RKDLoss.compute_rkd_distance_loss``
    is the same). Averaging over the off-diagonal entries only would be n/(n-1) larger.
    Angle: smooth-L1 between the cosines of all n^3 triplet angles (``RKdAngle``).
    """
    s, t = _flat(student_features), _flat(teacher_features.detach())
    n = s.shape[0]
    if n < 2:
        zero = s.sum() * 0.0
        return {"loss_rkd_distance": zero, "loss_rkd_angle": zero}
    off = ~torch.eye(n, dtype=torch.bool, device=s.device)
    d_s, d_t = _pairwise_distances(s, eps), _pairwise_distances(t, eps)   # zero diagonal
    d_s = d_s / d_s[off].mean().clamp_min(eps)
    d_t = d_t / d_t[off].mean().clamp_min(eps)
    distance = F.smooth_l1_loss(d_s, d_t)   # mean over all n * n entries (the reference's reduction)
    angle = F.smooth_l1_loss(_triplet_angles(s, eps), _triplet_angles(t, eps)) if n >= 3 else s.sum() * 0.0
    return {"loss_rkd_distance": distance, "loss_rkd_angle": angle}


# ---------------------------------------------------------------------------
# feature-based term


def hint_loss(connected_student: Tensor, teacher_features: Tensor) -> Tensor:
    """FitNets hint: MSE between the connector's output and the (detached) teacher feature."""
    if connected_student.shape != teacher_features.shape:
        raise ValueError(f"connector output {tuple(connected_student.shape)} does not match teacher "
                         f"feature {tuple(teacher_features.shape)}")
    return F.mse_loss(connected_student, teacher_features.detach())


class HintConnector(nn.Module):
    """Learned map from a student feature to the teacher's feature width (FitNets' regressor).

    A ``Linear`` on the last dimension for vector/sequence features (``[B, D]``,
    ``[B, T, D]``), a 1x1 convolution for feature maps (``[B, C, H, W]``).
    Spatial sizes must already agree.
    """

    def __init__(self, student_shape: Sequence[int], teacher_shape: Sequence[int]):
        super().__init__()
        student_shape, teacher_shape = tuple(student_shape), tuple(teacher_shape)
        if len(student_shape) != len(teacher_shape):
            raise ValueError(f"student feature {student_shape} and teacher feature {teacher_shape} differ in rank")
        self.conv = len(student_shape) == 4
        if self.conv:
            if student_shape[2:] != teacher_shape[2:]:
                raise ValueError(f"feature maps differ in size: {student_shape[2:]} vs {teacher_shape[2:]}")
            self.proj: nn.Module = nn.Conv2d(student_shape[1], teacher_shape[1], kernel_size=1, bias=False)
        else:
            if student_shape[1:-1] != teacher_shape[1:-1]:
                raise ValueError(f"features differ beyond width: {student_shape} vs {teacher_shape}")
            self.proj = nn.Linear(student_shape[-1], teacher_shape[-1])

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


# ---------------------------------------------------------------------------
# combining named terms


def combine(terms: Mapping[str, Tensor], weights: Mapping[str, float]) -> dict[str, Tensor]:
    """Weighted sum of named terms: ``{"loss": sum_k w_k * term_k, **terms}``.

    Every weight must name a term (a typo is an error, not a silently ignored
    knob); terms without a weight are reported but do not enter the total.
    """
    missing = sorted(set(weights) - set(terms))
    if missing:
        raise KeyError(f"weights for unknown loss terms {missing}; terms are {sorted(terms)}")
    total = None
    for name, weight in weights.items():
        if weight == 0:
            continue
        part = terms[name] * weight
        total = part if total is None else total + part
    if total is None:
        total = next(iter(terms.values())) * 0.0
    return {"loss": total, **terms}


def alpha_weights(alpha: float, distill: Mapping[str, float]) -> dict[str, float]:
    """The paper's blend ``(1 - alpha) * supervised + alpha * sum(distill weights * terms)``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return {"loss_ce": 1.0 - alpha, **{name: alpha * w for name, w in distill.items()}}


# ---------------------------------------------------------------------------
# thin modules (each returns named terms)


class SupervisedLoss(nn.Module):
    """Focal (default, gamma=2) or plain cross-entropy; always reported as ``loss_ce``."""

    def __init__(self, kind: str = "focal", gamma: float = 2.0):
        super().__init__()
        if kind not in ("focal", "ce"):
            raise ValueError(f"supervised loss must be 'focal' or 'ce', got {kind!r}")
        self.kind, self.gamma = kind, gamma

    def forward(self, logits: Tensor, beams: Tensor) -> dict[str, Tensor]:
        if self.kind == "ce":
            return {"loss_ce": cross_entropy_loss(logits, beams)}
        return {"loss_ce": focal_loss(logits, beams, self.gamma)}


class KLDivLoss(nn.Module):
    def __init__(self, temperature: float = 4.0, horizon_weights: Sequence[float] | None = None,
                 name: str = "loss_kd"):
        super().__init__()
        self.temperature, self.horizon_weights, self.name = temperature, horizon_weights, name

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> dict[str, Tensor]:
        return {self.name: kl_div_loss(student_logits, teacher_logits, self.temperature, self.horizon_weights)}


class LogitMSELoss(nn.Module):
    def __init__(self, horizon_weights: Sequence[float] | None = None, name: str = "loss_mse"):
        super().__init__()
        self.horizon_weights, self.name = horizon_weights, name

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> dict[str, Tensor]:
        return {self.name: logit_mse_loss(student_logits, teacher_logits, self.horizon_weights)}


class RelationLoss(nn.Module):
    """Paper-1 sampled-pair relation KD; owns its seeded partner generator."""

    def __init__(self, partners: int = 4, seed: int = 0):
        super().__init__()
        self.partners = partners
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, student_features: Tensor, teacher_features: Tensor) -> dict[str, Tensor]:
        return relation_loss(student_features, teacher_features, self.partners, self.generator)

    # The sampler's state travels in state_dict, so a resumed run draws the same partners.
    def get_extra_state(self) -> Tensor:
        return self.generator.get_state()

    def set_extra_state(self, state: Tensor) -> None:
        self.generator.set_state(state)


class RKDParkLoss(nn.Module):
    def forward(self, student_features: Tensor, teacher_features: Tensor) -> dict[str, Tensor]:
        return rkd_park_loss(student_features, teacher_features)


class HintLoss(nn.Module):
    """FitNets: the connector is a submodule, so it trains with the student."""

    def __init__(self, student_shape: Sequence[int], teacher_shape: Sequence[int]):
        super().__init__()
        self.connector = HintConnector(student_shape, teacher_shape)

    def forward(self, student_features: Tensor, teacher_features: Tensor) -> dict[str, Tensor]:
        return {"loss_hint": hint_loss(self.connector(student_features), teacher_features)}
