"""Optimiser plumbing shared by the trainer and the data-free generator stage.

One place builds the optimiser and the schedule, refuses a non-finite loss
(naming the setting to lower) and takes a clipped step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from edgekd.device.errors import EdgekdError


def build_optimizer(params: Iterable[nn.Parameter], name: str, lr: float,
                    weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam, or AdamW when ``name == "adamw"``."""
    opt_cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    return opt_cls(params, lr=lr, weight_decay=weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, name: str | None,
                    epochs: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Cosine annealing over ``epochs`` (stepped once per epoch) when ``name == "cosine"``, else none."""
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    return None


def check_finite(loss: Tensor, name: str, where: str, *, field: str, fix: str) -> None:
    """Stop with an :class:`EdgekdError` "``name`` became nan ``where``" when ``loss`` is NaN/inf."""
    if not torch.isfinite(loss.detach()):
        raise EdgekdError(f"{name} became {loss.item()} {where}", field=field, fix=fix)


def optimizer_step(loss: Tensor, optimizer: torch.optim.Optimizer, params: Sequence[nn.Parameter],
                   grad_clip: float | None = None) -> None:
    """Zero the gradients, back-propagate ``loss``, clip the global norm to ``grad_clip`` (if set), step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively (any CUDA device; a CPU with AVX512-BF16 or AMX).

    torch exposes the CPU test only as private helpers; missing ones read as "no", so an older or
    newer torch falls back to fp32 instead of failing."""
    if device.type != "cpu":
        return device.type == "cuda"
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` -> ``"bf16"`` where the device has native bf16, else ``"fp32"``; others unchanged."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def training_autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of a training forward pass at the resolved ``precision`` (a no-op for fp32)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
