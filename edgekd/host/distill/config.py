"""Typed training/distillation config, loaded from YAML (unknown keys rejected), overridden by CLI flags.

Loss knobs left as ``None`` take the chosen KD method's defaults (the paper's
values, e.g. self-KD uses T=3 and alpha=0.5) and then the global fallbacks
below; :func:`resolve_config` fills them in and the checkpoint records the
resolved values, so a run is always described by concrete numbers.
"""

from __future__ import annotations

import dataclasses
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from edgekd.device.config import load_config
from edgekd.device.errors import EdgekdError

# Values used when neither the config nor the method sets a loss knob.
LOSS_FALLBACKS: dict[str, Any] = {
    "alpha": 0.5,
    "temperature": 4.0,
    "rkd_distance_weight": 100.0,
    "rkd_angle_weight": 100.0,
    "hint_weight": 1.0,
}


# Arithmetic of a training forward pass (TrainConfig.precision; the demo's image_teacher_precision)
Precision = Literal["fp32", "bf16", "auto"]


@dataclasses.dataclass
class DataFreeConfig:
    """Data-free KD (paper 2, ``--method datafree``): the generator, its loss and the synthetic set.

    The student phase uses the enclosing :class:`TrainConfig`'s ``epochs``, ``lr``,
    ``batch_size`` and ``temperature``; nothing here touches real training data.
    """

    generator_loss: Literal["weighted", "metadata", "activation", "entropy"] = "weighted"
    student_loss: Literal["kl", "mse"] = "kl"
    # weights of the ``weighted`` generator loss: alpha * metadata + beta * activation + gamma * entropy
    metadata_weight: float = 1.0
    activation_weight: float = 0.1
    entropy_weight: float = 0.1
    activation_feature: str = "embedding"   # teacher feature whose norm the activation loss maximises
    activation_norm: Literal["l1", "l2"] = "l2"
    # generator: z (noise_dim) -> Linear hidden -> ReLU -> Linear window*bins -> output activation
    noise_dim: int = 500
    generator_hidden: int = 64
    generator_output: Literal["tanh", "sigmoid"] = "tanh"
    input_range: tuple[float, float] = (0.0, 4.0)   # the output activation is mapped onto this (metres / 10)
    # affine: the whole activation range spans input_range; no_return: tanh y < 0 is a missing return
    # (exactly low, like the 0 of a real scan) and y in [0, 1] spans input_range
    output_mapping: Literal["affine", "no_return"] = "no_return"
    generator_steps: int = 2000                      # optimiser steps, each on a fresh noise batch
    generator_batch_size: int = 32
    generator_lr: float = 1e-3
    synthetic_samples: int = 5000                    # synthetic set the student trains on
    # False: one fixed set, as the reference; True: a fresh set of synthetic_samples windows every epoch
    resample_each_epoch: bool = False
    # beyond the paper (BENCHMARKS.md): the student's first layer starts as a frozen copy of the teacher's
    # (weight transfer, no data; "scratch" is the paper's from-scratch student), and an optional
    # frame-to-frame smoothness prior on generated scans (0 = off)
    student_init: Literal["scratch", "teacher_embedding"] = "teacher_embedding"
    smoothness_weight: float = 0.0
    # beyond the paper: before each epoch's fresh set (resample_each_epoch), the generator takes this many
    # more steps that also reward teacher-student disagreement on what it makes (the competition term of
    # Yin et al.'s Adaptive DeepInversion, CVPR 2020), weighted by adversarial_weight; 0 steps: off
    adversarial_steps: int = 0
    adversarial_weight: float = 1.0
    # beyond the paper: every synthetic batch the student sees gets Gaussian noise of this std (metres / 10,
    # per value) and the frozen teacher labels the noisy windows afresh: the student then also learns the
    # teacher's answers off the generator's low-dimensional output manifold (0 = off)
    input_noise: float = 0.0
    # the noise's correlation along the azimuth bins: std (in bins) of a Gaussian kernel it is smoothed
    # with, then rescaled to input_noise; 0 = white. Real scans deviate in smooth runs (a wall, a car)
    input_noise_width: float = 0.0

    def __post_init__(self) -> None:
        for name in ("noise_dim", "generator_hidden", "generator_steps", "generator_batch_size",
                     "generator_lr", "synthetic_samples"):
            if getattr(self, name) <= 0:
                raise ValueError(f"datafree.{name} must be positive, got {getattr(self, name)!r}")
        if self.generator_batch_size < 2:
            raise ValueError("datafree.generator_batch_size must be >= 2 (the metadata loss needs a batch variance)")
        if self.student_init not in ("scratch", "teacher_embedding"):   # YAML checks the Literal; code may not
            raise ValueError("datafree.student_init must be 'scratch' or 'teacher_embedding', "
                             f"got {self.student_init!r}")
        if self.adversarial_steps < 0:
            raise ValueError(f"datafree.adversarial_steps must be >= 0, got {self.adversarial_steps!r}")
        if self.adversarial_steps and not self.resample_each_epoch:
            raise ValueError("datafree.adversarial_steps refines the generator between epochs' fresh sets: "
                             "it needs resample_each_epoch: true")
        for name in ("metadata_weight", "activation_weight", "entropy_weight", "smoothness_weight",
                     "adversarial_weight", "input_noise", "input_noise_width"):
            if getattr(self, name) < 0:
                raise ValueError(f"datafree.{name} must be >= 0, got {getattr(self, name)!r}")
        low, high = self.input_range
        if not low < high:
            raise ValueError(f"datafree.input_range must be (low, high) with low < high, got {self.input_range}")


@dataclasses.dataclass
class QatConfig:
    """Quantisation-aware fine-tuning after the float run (``edgekd distill --qat``; edgekd.host.distill.qat).

    The best float student is fine-tuned for ``epochs`` more epochs with torch.ao fake quantisation that
    models the exported int8 graph, at ``lr_scale`` x the run's learning rate (cosine to 0), with the same
    KD method and loss; the saved checkpoint is the float student with the fine-tuned weights."""

    enabled: bool = False
    epochs: int | None = None       # None: 8% of the float run's epochs (at least 1): a QAT epoch costs ~3x a float one
    lr_scale: float = 0.1

    def __post_init__(self) -> None:
        if self.epochs is not None and self.epochs <= 0:
            raise ValueError(f"qat.epochs must be positive or null, got {self.epochs}")
        if not self.lr_scale > 0:
            raise ValueError(f"qat.lr_scale must be positive, got {self.lr_scale}")

    def epochs_after(self, float_epochs: int) -> int:
        return self.epochs if self.epochs is not None else max(1, round(0.08 * float_epochs))


@dataclasses.dataclass
class TrainConfig:
    """Everything that decides a training run (teacher, no-KD baseline or distillation)."""

    # optimisation
    epochs: int = 30
    batch_size: int = 32
    eval_batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: Literal["adam", "adamw"] = "adam"
    scheduler: Literal["cosine", "none"] = "cosine"
    grad_clip: float | None = 10.0
    patience: int = 20
    # What picks the best epoch (its weights are kept) and drives early stopping: the validation
    # supervised loss (paper 1's reference) or a validation top-k accuracy, mean over horizons.
    monitor: Literal["loss", "top1", "top2", "top3", "top5"] = "loss"
    seed: int = 42
    # data
    num_workers: int = 0            # background threads that assemble the next batches (0 = inline)
    max_train_windows: int | None = None   # keep only the first N training windows (a node's local data)
    # supervised term
    supervised_loss: Literal["focal", "ce"] = "focal"
    focal_gamma: float = 2.0
    # distillation terms (None = the method's default, see LOSS_FALLBACKS)
    alpha: float | None = None      # total = (1 - alpha) * supervised + alpha * distill
    temperature: float | None = None
    horizon_weights: tuple[float, ...] | None = None   # per-horizon weights on the distill term, mean-normalised
    rkd_distance_weight: float | None = None
    rkd_angle_weight: float | None = None
    rkd_partners: int = 4
    # the model feature the relation is taken on: "temporal" (recurrent outputs + attention, the paper's),
    # "recurrent", "embedding" (per-frame GRU inputs), ... (each model's forward_features names)
    rkd_feature: str = "temporal"
    hint_feature: str = "temporal"
    hint_weight: float | None = None
    ema_decay: float = 0.999
    ema_warmup: bool = True         # decay min(ema_decay, (1+n)/(10+n)) so short runs are not stuck at init
    dml_peers: int = 2
    # Run the frozen teacher once over the training windows and reuse its features every epoch
    # (same targets: eval mode, no augmentation); False = a teacher forward pass per batch.
    cache_teacher: bool = True
    datafree: DataFreeConfig = dataclasses.field(default_factory=DataFreeConfig)
    qat: QatConfig = dataclasses.field(default_factory=QatConfig)
    # execution
    device: str = "cpu"
    threads: int | None = None
    # Arithmetic of the training forward pass (evaluation, the teacher cache and the saved weights stay
    # fp32): "bf16" runs it under torch.autocast in bfloat16; "auto" does so only on a CPU with native
    # bf16 (AVX512-BF16 or AMX), where a wide conv net trains ~2x faster; small students get slower.
    precision: Precision = "fp32"
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size", "lr", "patience", "rkd_partners", "dml_peers"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("weight_decay", "num_workers", "focal_gamma"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.max_train_windows is not None and self.max_train_windows < 2:
            raise ValueError(f"max_train_windows must be >= 2, got {self.max_train_windows}")
        if self.alpha is not None and not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.temperature is not None and self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be positive or null, got {self.grad_clip}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.horizon_weights is not None:
            if any(w < 0 for w in self.horizon_weights) or sum(self.horizon_weights) <= 0:
                raise ValueError("horizon_weights must be non-negative with a positive sum")
        if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", self.device):
            raise ValueError(f"device must be cpu, cuda, cuda:N or mps, got {self.device!r}")
        if self.threads is not None and self.threads <= 0:
            raise ValueError(f"threads must be positive, got {self.threads}")


def load_train_config(path: str | os.PathLike | None = None, **overrides: Any) -> TrainConfig:
    """Load a :class:`TrainConfig` from YAML (defaults when ``path`` is None), then apply flags."""
    try:
        return load_config(TrainConfig, path, **overrides)
    except ValueError as exc:   # __post_init__ after an override
        raise EdgekdError(str(exc), file=path or "<command line>",
                          fix="see `edgekd train --help` for the allowed values") from None


def resolve_config(cfg: TrainConfig, method_defaults: dict[str, Any]) -> TrainConfig:
    """Fill every ``None`` loss knob from the method defaults, then the global fallbacks."""
    filled = {}
    for name, fallback in LOSS_FALLBACKS.items():
        if getattr(cfg, name) is None:
            filled[name] = method_defaults.get(name, fallback)
    return dataclasses.replace(cfg, **filled)


def parse_horizon_weights(text: str | None) -> tuple[float, ...] | None:
    """``"0.7,0.9,1.1,1.3"`` -> ``(0.7, 0.9, 1.1, 1.3)`` (CLI helper)."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise EdgekdError(f"not a comma-separated list of numbers: {text!r}", field="horizon_weights",
                          fix="write e.g. --horizon-weights 0.7,0.9,1.1,1.3") from None
    if not values:
        raise EdgekdError("empty horizon weights", field="horizon_weights",
                          fix="write e.g. --horizon-weights 0.7,0.9,1.1,1.3")
    return values


def example_configs() -> dict[str, Path]:
    """The example YAML configs shipped in ``edgekd/host/distill/configs`` (name -> path)."""
    folder = resources.files("edgekd.host.distill") / "configs"
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".yaml")}
