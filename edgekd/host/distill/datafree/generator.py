"""The data-free generator (paper 2, steps 2 and 3): trained against the frozen teacher, then a fixed set.

Input mapping: see :mod:`edgekd.host.distill.datafree`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from edgekd.host.distill.config import DataFreeConfig
from edgekd.host.distill.datafree.losses import (
    TeacherMetadata,
    competition_loss,
    entropy_loss,
    generator_loss_terms,
    needs_metadata,
)
from edgekd.host.distill.datafree.teacher import MODALITY, teacher_layer_features
from edgekd.host.distill.methods import freeze
from edgekd.host.distill.optim import build_optimizer, check_finite, optimizer_step

if TYPE_CHECKING:
    from edgekd.host.models.base import BeamModel


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
# step 2: train the generator


def train_generator(teacher: BeamModel, metadata: TeacherMetadata | tuple[Tensor, Tensor] | None,
                    cfg: DataFreeConfig, *, seed: int, progress: bool = True,
                    log_every: int = 50) -> tuple[LidarGenerator, list[dict]]:
    """Fit a generator against the frozen ``teacher``; returns it (eval mode) and a loss history.

    Every step draws a fresh noise batch; only the generator's weights move
    (the teacher is frozen and in eval mode, its gradients reach the inputs only).
    With per-layer metadata the teacher runs through :func:`teacher_layer_features`.
    The steps themselves are :func:`fit_generator`'s, which also refines the generator
    against a student during a data-free run (``DataFreeConfig.adversarial_steps``).

    A loop of its own rather than the trainer's: it counts steps, not epochs over a
    set of windows; every batch is fresh noise; there is no deployed model to
    validate, keep best-on-val or checkpoint per epoch (the generator is stored with
    the student). It shares the trainer's optimiser step and finite-loss check
    (:mod:`edgekd.host.distill.optim`).
    """
    if needs_metadata(cfg) and metadata is None:
        raise ValueError("the generator loss uses the metadata term but no metadata was given")
    if metadata is not None and not isinstance(metadata, TeacherMetadata):
        metadata = TeacherMetadata(*metadata)
    freeze(teacher)
    window, bins = teacher.input_shapes()[MODALITY]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = LidarGenerator.from_config(cfg, window=window, bins=bins)
    history = fit_generator(generator, teacher, metadata, cfg, steps=cfg.generator_steps, seed=seed,
                            progress=progress, log_every=log_every)
    return generator.eval(), history


def fit_generator(generator: LidarGenerator, teacher: BeamModel, metadata: TeacherMetadata | None,
                  cfg: DataFreeConfig, *, steps: int, seed: int, student: BeamModel | None = None,
                  progress: bool = False, log_every: int = 50) -> list[dict]:
    """``steps`` optimiser steps of ``generator`` on its loss against the frozen teacher; returns the history.

    With a ``student``, each step also pays ``cfg.adversarial_weight`` x :func:`competition_loss`
    (the generator seeks inputs where student and teacher disagree); the student is held in eval
    mode with its weights frozen for these steps and handed back as it came.
    """
    features_of = (functools.partial(teacher_layer_features, teacher) if metadata is not None and metadata.layers
                   else teacher.forward_features)
    params = list(generator.parameters())
    optimizer = build_optimizer(params, "adam", cfg.generator_lr)
    noise = torch.Generator().manual_seed(seed)
    history: list[dict] = []
    sums: dict[str, float] = {}
    generator.train()
    bar = tqdm(range(1, steps + 1), desc=f"generator ({cfg.generator_loss})", unit="step", leave=False,
               disable=not progress)
    with _held(student):
        for step in bar:
            inputs = generator(generator.noise(cfg.generator_batch_size, noise))
            features = features_of(inputs)
            terms = generator_loss_terms(features, metadata, cfg, inputs=inputs,
                                         smoothness_weight=cfg.smoothness_weight)
            if student is not None:
                terms["loss_competition"] = competition_loss(features["logits"], student(inputs))
                terms["loss"] = terms["loss"] + cfg.adversarial_weight * terms["loss_competition"]
            check_finite(terms["loss"], "generator loss", f"at step {step}", field="datafree.generator_lr",
                         fix="lower datafree.generator_lr or the loss weights")
            optimizer_step(terms["loss"], optimizer, params)
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            if step % log_every == 0 or step == steps:
                count = step - (history[-1]["step"] if history else 0)
                history.append({"step": step, **{k: v / count for k, v in sums.items()}})
                bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
                sums = {}
    generator.eval()
    return history


@contextlib.contextmanager
def _held(model: BeamModel | None) -> Iterator[None]:
    """``model`` in eval mode with no trainable weight for the block; its modes and flags restored after."""
    if model is None:
        yield
        return
    was_training = model.training
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in trainable:
            p.requires_grad_(True)
        model.train(was_training)


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
def synthesize_set(generator: LidarGenerator, teacher: BeamModel, n: int, *, seed: int,
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
