"""KD methods: one ``Distiller`` base, one small class per method, one registry.

A distiller wraps the model being trained (and a frozen teacher where the
method needs one). ``forward_train(batch) -> (student_logits, terms)`` where
``terms`` is ``{"loss": total, "loss_ce": ..., "loss_kd": ...}`` built by
:func:`edgekd.host.distill.losses.combine`. ``forward`` is ``forward_train`` so a
``DistributedDataParallel`` wrapper sees the whole computation.

``deploy_model()`` is the network that is validated, saved and exported: the
student for most methods, the EMA copy for ``self``, peer 0 for ``dml``.

New methods (e.g. ``datafree``) register with ``@register_method("name")``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from edgekd.device.registry import Registry
from edgekd.host.distill import losses as L
from edgekd.host.distill.config import TrainConfig, resolve_config

if TYPE_CHECKING:
    from edgekd.host.models.base import BeamModel

M = TypeVar("M", bound=nn.Module)

Batch = Mapping[str, Tensor]

KD_METHODS: Registry[type[Distiller]] = Registry("KD method")


def register_method(name: str, *, aliases: tuple[str, ...] = ()):
    """Class decorator: ``@register_method("kd") class ResponseKD(Distiller): ...``."""
    def decorator(cls: type[Distiller]) -> type[Distiller]:
        cls.method = name
        return KD_METHODS.register(name, aliases=aliases)(cls)
    return decorator


def list_methods() -> list[str]:
    return KD_METHODS.names()


def get_method(name: str) -> type[Distiller]:
    return KD_METHODS.get(name)


def model_inputs(model: BeamModel, batch: Batch) -> tuple[Tensor, ...]:
    """The positional inputs of ``model`` taken from a batch dict, in its ``input_modalities`` order."""
    return tuple(batch[m] for m in model.input_modalities)


def freeze(model: M) -> M:
    """Teacher mode: eval, no parameter takes gradients."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class TeacherCache:
    """Teacher features of a set of windows, looked up by window index (``[N, ...]`` per feature)."""

    def __init__(self, indices: Tensor, features: Mapping[str, Tensor]):
        size = int(indices.max()) + 1 if indices.numel() else 0
        self.row = torch.full((size,), -1, dtype=torch.long, device=indices.device)
        self.row[indices] = torch.arange(indices.numel(), device=indices.device)
        self.features = dict(features)

    def lookup(self, index: Tensor) -> dict[str, Tensor]:
        index = index.to(self.row.device)
        if bool((index >= self.row.numel()).any()):
            raise KeyError("window index outside the teacher cache")
        rows = self.row[index]
        if bool((rows < 0).any()):
            raise KeyError("window index outside the teacher cache")
        return {name: feats[rows] for name, feats in self.features.items()}


class Distiller(nn.Module):
    """Base: the supervised term, the frozen teacher, the deploy model and the step hook."""

    method: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {}
    # Per-horizon weights scale a per-(window, horizon) distillation term; relation/hint terms have none.
    supports_horizon_weights: ClassVar[bool] = False

    def __init__(self, student: BeamModel, teacher: BeamModel | None, cfg: TrainConfig):
        super().__init__()
        if self.needs_teacher and teacher is None:
            raise ValueError(f"KD method '{self.method}' needs a teacher")
        self.cfg = resolve_config(cfg, self.defaults)
        self._check_horizon_weights(student)
        self.student: BeamModel = student
        self.teacher: BeamModel | None = freeze(teacher) if teacher is not None and self.needs_teacher else None
        self.supervised = L.SupervisedLoss(self.cfg.supervised_loss, self.cfg.focal_gamma)
        # Teacher features precomputed per training window (see ``set_teacher_cache``); a plain
        # attribute, not a buffer: it is derived data and stays out of checkpoints.
        self._teacher_cache: TeacherCache | None = None

    def _check_horizon_weights(self, student: BeamModel) -> None:
        weights = self.cfg.horizon_weights
        if weights is None:
            return
        if not self.supports_horizon_weights:
            usable = ", ".join(n for n in KD_METHODS.names() if KD_METHODS.get(n).supports_horizon_weights)
            raise ValueError(f"horizon_weights do not apply to method '{self.method}' (use them with {usable})")
        horizons = getattr(student, "horizons", len(weights))
        if len(weights) != horizons:
            raise ValueError(f"horizon_weights has {len(weights)} values, the model predicts {horizons} horizons")

    # -- the interface the trainer uses ---------------------------------------------------------
    def forward(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        return self.forward_train(batch)

    def forward_train(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def deploy_model(self) -> BeamModel:
        return self.student

    def after_step(self) -> None:
        """Called after every optimiser step (EMA updates)."""

    def trainable_state(self) -> dict[str, Tensor]:
        """Everything needed to resume (the frozen teacher is left out: it comes from its checkpoint)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("teacher.")}

    def load_trainable_state(self, state: Mapping[str, Tensor]) -> None:
        missing, unexpected = self.load_state_dict(dict(state), strict=False)
        missing = [k for k in missing if not k.startswith("teacher.")]
        if missing or unexpected:
            raise RuntimeError(f"resume state does not fit: missing {missing[:3]}, unexpected {list(unexpected)[:3]}")

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()   # dropout/BN of the teacher stay frozen
        return self

    # -- the frozen teacher's features, live or cached ---------------------------------------------
    def teacher_feature_names(self) -> tuple[str, ...]:
        """The teacher features ``forward_train`` reads; () = nothing to cache (no frozen teacher)."""
        return ()

    @property
    def has_teacher_cache(self) -> bool:
        return self._teacher_cache is not None

    def set_teacher_cache(self, cache: TeacherCache | None) -> None:
        """Serve ``teacher_features`` of batches that carry ``index`` from ``cache``.

        The teacher is frozen in eval mode (no dropout, BatchNorm on running statistics) and the
        inputs are not augmented, so its features for a training window never change: computing
        them once instead of every epoch gives the same targets at a fraction of the cost (the
        teachers are 10-20x the students' MACs).
        """
        if cache is not None:
            missing = sorted(set(self.teacher_feature_names()) - set(cache.features))
            if missing:
                raise KeyError(f"teacher cache lacks features {missing}")
        self._teacher_cache = cache

    def teacher_features(self, batch: Batch) -> dict[str, Tensor]:
        if self._teacher_cache is not None and "index" in batch:
            return self._teacher_cache.lookup(batch["index"])
        if self.teacher is None:
            raise ValueError(f"KD method '{self.method}' has no frozen teacher to read features from")
        with torch.no_grad():
            return self.teacher.forward_features(*model_inputs(self.teacher, batch))

    # -- helpers for subclasses -----------------------------------------------------------------

    def student_features(self, batch: Batch) -> dict[str, Tensor]:
        return self.student.forward_features(*model_inputs(self.student, batch))

    def supervised_terms(self, logits: Tensor, batch: Batch) -> dict[str, Tensor]:
        return self.supervised(logits, batch["beams"])


@register_method("none", aliases=("supervised",))
class Supervised(Distiller):
    """No teacher: focal (or CE) on the labels only."""

    needs_teacher = False

    def forward_train(self, batch):
        logits = self.student(*model_inputs(self.student, batch))
        return logits, L.combine(self.supervised_terms(logits, batch), {"loss_ce": 1.0})


@register_method("kd", aliases=("response",))
class ResponseKD(Distiller):
    """Hinton KD: (1 - alpha) * focal + alpha * KL(T) * T^2 (image student defaults, paper 1)."""

    supports_horizon_weights = True

    defaults = {"alpha": 0.3, "temperature": 4.0}

    def teacher_feature_names(self):
        return ("logits",)

    def forward_train(self, batch):
        teacher = self.teacher_features(batch)["logits"]
        logits = self.student(*model_inputs(self.student, batch))
        terms = {**self.supervised_terms(logits, batch),
                 "loss_kd": L.kl_div_loss(logits, teacher, self.cfg.temperature, self.cfg.horizon_weights)}
        return logits, L.combine(terms, L.alpha_weights(self.cfg.alpha, {"loss_kd": 1.0}))


@register_method("mse", aliases=("logit-mse",))
class LogitMSE(Distiller):
    """Regress the teacher's raw logits (no temperature)."""

    supports_horizon_weights = True

    defaults = {"alpha": 0.3}

    def teacher_feature_names(self):
        return ("logits",)

    def forward_train(self, batch):
        teacher = self.teacher_features(batch)["logits"]
        logits = self.student(*model_inputs(self.student, batch))
        terms = {**self.supervised_terms(logits, batch),
                 "loss_mse": L.logit_mse_loss(logits, teacher, self.cfg.horizon_weights)}
        return logits, L.combine(terms, L.alpha_weights(self.cfg.alpha, {"loss_mse": 1.0}))


class _RelationBase(Distiller):
    """Shared body of the two relation methods: distance + angle over one named feature."""

    def __init__(self, student, teacher, cfg):
        super().__init__(student, teacher, cfg)
        # A feature name typo fails here, before training, rather than as a KeyError at the first batch.
        _feature_shape(student, self.cfg.rkd_feature)
        _feature_shape(teacher, self.cfg.rkd_feature)

    def relation_terms(self, student: Tensor, teacher: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def teacher_feature_names(self):
        return (self.cfg.rkd_feature,)

    def forward_train(self, batch):
        name = self.cfg.rkd_feature
        teacher = self.teacher_features(batch)[name]
        feats = self.student_features(batch)
        logits = feats["logits"]
        terms = {**self.supervised_terms(logits, batch), **self.relation_terms(feats[name], teacher)}
        weights = L.alpha_weights(self.cfg.alpha, {"loss_rkd_distance": self.cfg.rkd_distance_weight,
                                                   "loss_rkd_angle": self.cfg.rkd_angle_weight})
        return logits, L.combine(terms, weights)


@register_method("rkd", aliases=("relation",))
class RelationKD(_RelationBase):
    """Paper-1 relation KD: each window vs 4 random partners (image student defaults)."""

    defaults = {"alpha": 0.1, "rkd_distance_weight": 100.0, "rkd_angle_weight": 100.0}

    def __init__(self, student, teacher, cfg):
        super().__init__(student, teacher, cfg)
        self.relation = L.RelationLoss(self.cfg.rkd_partners, seed=self.cfg.seed)

    def relation_terms(self, student, teacher):
        return self.relation(student, teacher)


@register_method("rkd-park", aliases=("rkd_park",))
class ParkRKD(_RelationBase):
    """Park et al. RKD over all pairs and triplets (their weights 25 / 50)."""

    defaults = {"alpha": 0.1, "rkd_distance_weight": 25.0, "rkd_angle_weight": 50.0}

    def relation_terms(self, student, teacher):
        return L.rkd_park_loss(student, teacher)


def _feature_shape(model: BeamModel, name: str) -> tuple[int, ...]:
    """Shape of one named feature for a batch of 2 (a dry run on the model's example inputs)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(*model.example_inputs(batch=2))
    model.train(was_training)
    if name not in feats:
        raise KeyError(f"model has no feature '{name}' (has {sorted(feats)})")
    return tuple(feats[name].shape)


@register_method("fitnet", aliases=("hint",))
class FitNet(Distiller):
    """FitNets hint: MSE(connector(student feature), teacher feature); the connector trains too."""

    defaults = {"alpha": 0.5, "hint_weight": 1.0}

    def __init__(self, student, teacher, cfg):
        super().__init__(student, teacher, cfg)
        name = self.cfg.hint_feature
        self.hint = L.HintLoss(_feature_shape(student, name), _feature_shape(teacher, name))

    def teacher_feature_names(self):
        return (self.cfg.hint_feature,)

    def forward_train(self, batch):
        name = self.cfg.hint_feature
        teacher = self.teacher_features(batch)[name]
        feats = self.student_features(batch)
        logits = feats["logits"]
        terms = {**self.supervised_terms(logits, batch), **self.hint(feats[name], teacher)}
        return logits, L.combine(terms, L.alpha_weights(self.cfg.alpha, {"loss_hint": self.cfg.hint_weight}))


def ema_multi_avg_fn(decay: float, warmup: bool):
    """EMA for ``AveragedModel``: ``w_ema <- d * w_ema + (1 - d) * w``.

    With ``warmup`` the decay is ``min(decay, (1 + n) / (10 + n))`` after ``n``
    updates (TensorFlow's ``ExponentialMovingAverage(num_updates=...)``), so that
    a run of a few hundred steps does not keep mostly the random initial weights.
    """
    @torch.no_grad()
    def update(ema_params: list[Tensor], model_params: list[Tensor], num_averaged: Tensor) -> None:
        d = min(decay, (1.0 + float(num_averaged)) / (10.0 + float(num_averaged))) if warmup else decay
        torch._foreach_lerp_(ema_params, model_params, 1.0 - d)
    return update


@register_method("self", aliases=("self-kd",))
class SelfKD(ResponseKD):
    """Self-KD: a fresh copy of the teacher learns from the trained teacher; the EMA copy is deployed."""

    defaults = {"alpha": 0.5, "temperature": 3.0}

    def __init__(self, student, teacher, cfg):
        super().__init__(student, teacher, cfg)
        if getattr(student, "registry_name", None) != getattr(teacher, "registry_name", None):
            raise ValueError("self-KD needs the student to be the teacher's architecture")
        self.ema = AveragedModel(student, multi_avg_fn=ema_multi_avg_fn(self.cfg.ema_decay, self.cfg.ema_warmup),
                                 use_buffers=False)
        for p in self.ema.parameters():
            p.requires_grad_(False)

    def after_step(self) -> None:
        self.ema.update_parameters(self.student)

    def deploy_model(self) -> BeamModel:
        return cast("BeamModel", self.ema.module)


def _fresh_like(model: BeamModel, seed: int) -> BeamModel:
    """A new, independently initialised network of the same architecture."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        name = getattr(model, "registry_name", None)
        if name is not None:
            from edgekd.host.models import create_model

            return create_model(name, **dict(getattr(model, "registry_kwargs", {})))
        clone = copy.deepcopy(model)
        for module in clone.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
        return clone


@register_method("dml", aliases=("mutual",))
class MutualLearning(Distiller):
    """Deep mutual learning: peers train together; each peer's KL target is the others' detached prediction.

    Peer 0 is the student (deployed). With a teacher checkpoint, peer 1 starts
    from the teacher's weights and keeps learning (online distillation);
    other peers are fresh copies of the student architecture.
    """

    needs_teacher = False
    supports_horizon_weights = True
    defaults = {"alpha": 0.5, "temperature": 1.0}

    def __init__(self, student, teacher, cfg):
        super().__init__(student, None, cfg)
        others = []
        if teacher is not None:
            others.append(teacher)
            for p in teacher.parameters():
                p.requires_grad_(True)
            teacher.train()
        while len(others) < self.cfg.dml_peers - 1:
            others.append(_fresh_like(student, self.cfg.seed + 1000 + len(others)))
        self.peers = nn.ModuleList([student, *others])

    def forward_train(self, batch):
        logits = [peer(*model_inputs(cast("BeamModel", peer), batch)) for peer in self.peers]
        sup, kl, terms = [], [], {}
        for i, own in enumerate(logits):
            targets = [other.detach() for j, other in enumerate(logits) if j != i]
            sup.append(self.supervised(own, batch["beams"])["loss_ce"])
            kl.append(torch.stack([L.kl_div_loss(own, t, self.cfg.temperature, self.cfg.horizon_weights)
                                   for t in targets]).mean())
            terms[f"loss_ce_peer{i}"], terms[f"loss_kd_peer{i}"] = sup[-1].detach(), kl[-1].detach()
        # Mean over peers: each peer's own terms are the only ones that reach its weights.
        terms = {"loss_ce": torch.stack(sup).mean(), "loss_kd": torch.stack(kl).mean(), **terms}
        return logits[0], L.combine(terms, L.alpha_weights(self.cfg.alpha, {"loss_kd": 1.0}))


@register_method("datafree", aliases=("data-free", "dfkd"))
class DataFreeKD(Distiller):
    """Paper-2 student phase: match the frozen teacher on generated inputs only (no labels, no CE term).

    ``cfg.datafree.student_loss``: ``kl`` (KL at ``temperature``, x T^2; T=2 as the
    reference) or ``mse`` (raw logits). A batch may carry precomputed
    ``teacher_logits`` (the synthetic set is fixed, so the teacher runs once).
    A batch with ``beams`` is real labelled data and is refused: the whole
    data-free run (generator, synthesis, this phase) is
    :func:`edgekd.host.distill.datafree.distill_datafree`.
    """

    supports_horizon_weights = True
    defaults = {"temperature": 2.0}

    def forward_train(self, batch):
        if "beams" in batch:
            raise ValueError("data-free KD trains on generated inputs only, got a labelled batch; "
                             "run edgekd.host.distill.datafree.distill_datafree (edgekd distill --method datafree)")
        teacher = batch.get("teacher_logits")
        if teacher is None:
            teacher = self.teacher_features(batch)["logits"]
        logits = self.student(*model_inputs(self.student, batch))
        if self.cfg.datafree.student_loss == "mse":
            terms = {"loss_mse": L.logit_mse_loss(logits, teacher, self.cfg.horizon_weights)}
        else:
            terms = {"loss_kd": L.kl_div_loss(logits, teacher, self.cfg.temperature, self.cfg.horizon_weights)}
        return logits, L.combine(terms, {name: 1.0 for name in terms})


def build_distiller(method: str, student: BeamModel, teacher: BeamModel | None, cfg: TrainConfig) -> Distiller:
    """Create the registered distiller ``method`` for ``student`` (and ``teacher``)."""
    return get_method(method)(student, teacher, cfg)
