"""Optimiser plumbing shared by the trainer and the data-free generator stage.

One place builds the optimiser and the schedule, refuses a non-finite loss
(naming the setting to lower) and takes a clipped step.
"""

from __future__ import annotations

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
