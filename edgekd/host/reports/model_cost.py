"""Model cost on the host: multiply-accumulates per forward pass (needs torch), parameters.

``count_params`` is device-side (duck-typed, :mod:`edgekd.device.metrics`) and re-exported
here so that cost reports import both from one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from edgekd.device.errors import EdgekdError
from edgekd.device.metrics import count_params

__all__ = ["count_macs", "count_params"]


def count_macs(model: Any, inputs: Sequence[Any], *, convention: str = "matmul") -> int:
    """Multiply-accumulates of one forward pass on ``inputs`` (eval mode, no grad).

    ``convention="matmul"`` (default): ``torch.utils.flop_counter.FlopCounterMode`` FLOPs / 2,
    i.e. the MACs of matmuls and convolutions only; elementwise ops, normalisation,
    pooling and activations are free.
    ``convention="thop"``: the same plus 4 operations per element of every BatchNorm /
    LayerNorm output, which is what thop 0.1 (used by paper 1, which calls the result
    FLOPs) charges for an affine normalisation; it reproduces paper 1's figures to ~1%.
    """
    if convention not in ("matmul", "thop"):
        raise EdgekdError(f"unknown MAC convention '{convention}'", field="convention", fix="use 'matmul' or 'thop'")
    norm_elements = [0]

    def count_norm(_module: Any, _inputs: Any, output: Any) -> None:
        norm_elements[0] += output.numel()

    hooks = []
    if convention == "thop":
        norms = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm)
        hooks = [m.register_forward_hook(count_norm) for m in model.modules() if isinstance(m, norms)]
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(*inputs)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return int(counter.get_total_flops()) // 2 + 4 * norm_elements[0]
