"""Quantisation-aware fine-tuning (``edgekd distill --qat``) with torch.ao's fake quantisation.

The student is fine-tuned with ``torch.ao.quantization`` fake-quant modules placed where the exported
full-int8 TFLite graph (``edgekd.host.export``) rounds, with that graph's granularity:

- weights: ``torch.ao.nn.qat.Conv2d`` per output channel, ``torch.ao.nn.qat.Linear`` per tensor
  (``tflite.DENSE_PER_TENSOR``), symmetric on [-127, 127] as TFLite's int8 kernels; the logits layer
  per output channel (the exporter turns it into a 1x1 convolution, ``int8_rewrite``); the unrolled
  GRU's three matmuls (``W_ih``, ``W_hh`` r/z rows, ``W_hh`` n rows: three Dense ops once exported)
  per tensor;
- activations: one per-tensor affine 8-bit grid per tensor the int8 graph stores (an unsigned grid
  here: TFLite's int8 asymmetric grid is the same grid shifted by 128): the model inputs, every
  conv/linear output after the BN/ReLU the converter fuses into it, every attention block's output,
  and in the GRU every step's gate pre-activations and products; sigmoid and tanh outputs on their
  fixed grids (1/256 on [0, 1], 1/128 on [-1, 1]) as TFLite's int8 kernels;
- the logits as exported (``onnx_export.DeployedLogits``): shifted to max 0 per horizon, floored at
  ``-LOGIT_FLOOR`` and rounded on the fixed [-LOGIT_FLOOR, 0] grid of the int8 output.

Activation ranges are set once, in eval mode, from the calibration windows the exporter will draw
(``calibrate``) and then frozen, as are the BN statistics; weight ranges follow the weights. The
converter later re-calibrates its own min/max on the same windows. What is
saved is the float student (same architecture and parameter names, the fake-quant buffers dropped),
so export, evaluation and every other command see an ordinary checkpoint.
"""

from __future__ import annotations

import copy
import logging
import types
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
import torch.ao.nn.qat as nnqat
from torch import Tensor, nn
from torch.ao.quantization import (
    FakeQuantizeBase,
    FixedQParamsFakeQuantize,
    FixedQParamsObserver,
    FusedMovingAvgObsFakeQuantize,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    QConfig,
)
from torch.nn import functional as F

from edgekd.host.models.blocks import ChannelAttention, SpatialAttention, TemporalAttention, UnrolledGRU

if TYPE_CHECKING:
    from edgekd.host.models.base import BeamModel

log = logging.getLogger(__name__)

# TFLite int8 activations: asymmetric per tensor; the same grid as torch's quint8 [0, 255] (zero point + 128).
# torch.ao's fused observer + fake-quant kernel (its default QAT fake quant): one op per tensor instead of ~10.
ACTIVATION = FusedMovingAvgObsFakeQuantize.with_args(
    observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255, dtype=torch.quint8,
    qscheme=torch.per_tensor_affine, reduce_range=False)
# TFLite int8 weights: symmetric on [-127, 127]; the observer follows the current weights (constant 1).
WEIGHT_PER_TENSOR = FusedMovingAvgObsFakeQuantize.with_args(
    observer=MovingAverageMinMaxObserver, averaging_constant=1.0, quant_min=-127, quant_max=127, dtype=torch.qint8,
    qscheme=torch.per_tensor_symmetric)
WEIGHT_PER_CHANNEL = FusedMovingAvgObsFakeQuantize.with_args(
    observer=MovingAveragePerChannelMinMaxObserver, averaging_constant=1.0, quant_min=-127, quant_max=127,
    dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0)
SIGMOID = FixedQParamsFakeQuantize.with_args(observer=FixedQParamsObserver.with_args(
    scale=1.0 / 256.0, zero_point=0, dtype=torch.quint8, quant_min=0, quant_max=255))
TANH = FixedQParamsFakeQuantize.with_args(observer=FixedQParamsObserver.with_args(
    scale=2.0 / 256.0, zero_point=128, dtype=torch.quint8, quant_min=0, quant_max=255))

# Leaf modules after which the converter stores no tensor of their own (a view, a shared scale, train only).
PASS_THROUGH = (nn.Dropout, nn.Identity, nn.MaxPool2d, nn.Flatten)
FUSED_INTO_PREVIOUS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU)


def weight_qconfig(per_channel: bool) -> QConfig:
    return QConfig(activation=ACTIVATION, weight=WEIGHT_PER_CHANNEL if per_channel else WEIGHT_PER_TENSOR)


def deployed_logits_fake_quant(floor: float) -> FixedQParamsFakeQuantize:
    """The int8 output grid of the exported logits: [-floor, 0] in 255 steps."""
    return FixedQParamsFakeQuantize(observer=FixedQParamsObserver.with_args(
        scale=floor / 255.0, zero_point=255, dtype=torch.quint8, quant_min=0, quant_max=255))


class QatUnrolledGRU(UnrolledGRU):
    """``UnrolledGRU`` (same parameters) with the fake quantisation of its exported int8 graph."""

    def __init__(self, gru: UnrolledGRU):
        super().__init__(gru.input_size, gru.hidden_size, gru.num_layers, gru.dropout)
        self.load_state_dict(gru.state_dict())
        self.weight_fq = nn.ModuleDict()
        self.act_fq = nn.ModuleDict()
        self._layer = 0

    def _fq(self, name: str, x: Tensor, kind=ACTIVATION) -> Tensor:
        key = f"l{self._layer}_{name}"
        store = self.weight_fq if kind in (WEIGHT_PER_TENSOR, WEIGHT_PER_CHANNEL) else self.act_fq
        if key not in store:   # created on first use (buffers only: no parameter joins the optimiser late)
            store[key] = kind().to(x.device)
        return store[key](x)

    def _params(self, layer: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        self._layer = layer
        w_ih, w_hh, b_ih, b_hh = super()._params(layer)
        return self._fq("w_ih", w_ih, WEIGHT_PER_TENSOR), w_hh, b_ih, b_hh

    def forward(self, x: Tensor, *, future_steps: int = 0, future_input: Tensor | None = None,
                keep_last: int | None = None) -> tuple[Tensor, Tensor]:
        if future_steps and future_input is not None:
            future_input = self._fq("pad_in", future_input)
        return super().forward(x, future_steps=future_steps, future_input=future_input, keep_last=keep_last)

    def _input_gates(self, flat: Tensor, steps: int, w_ih: Tensor, bias: Tensor) -> list[tuple[Tensor, Tensor]]:
        hidden = self.hidden_size
        gi = self._fq("gi", F.linear(flat, w_ih, bias)).reshape(-1, steps * 3 * hidden)
        pieces = gi.split([2 * hidden, hidden] * steps, dim=1)
        return list(zip(pieces[0::2], pieces[1::2]))

    def _run_layer(self, inputs: list[tuple[Tensor, Tensor]], w_hh: Tensor, b_hh: Tensor) -> list[Tensor]:
        hidden = self.hidden_size
        w_hh_rz = self._fq("w_hh_rz", w_hh[: 2 * hidden], WEIGHT_PER_TENSOR)
        w_hh_n = self._fq("w_hh_n", w_hh[2 * hidden:], WEIGHT_PER_TENSOR)
        b_hh_n = b_hh[2 * hidden:]
        outputs: list[Tensor] = []
        h: Tensor | None = None
        for step, (gi_rz, gi_n) in enumerate(inputs):
            q = f"s{step}_"
            if h is None:
                pre_rz, gh_n = gi_rz, b_hh_n
            else:
                pre_rz = self._fq(q + "rz", gi_rz + self._fq(q + "gh_rz", F.linear(h, w_hh_rz)))
                gh_n = self._fq(q + "gh_n", F.linear(h, w_hh_n, b_hh_n))
            r, z = self._fq(q + "sigmoid", torch.sigmoid(pre_rz), SIGMOID).split([hidden, hidden], dim=-1)
            pre_n = self._fq(q + "n_in", gi_n + self._fq(q + "r_gh", r * gh_n))
            n = self._fq(q + "tanh", torch.tanh(pre_n), TANH)
            if h is None:
                h = self._fq(q + "h", n - self._fq(q + "zn", z * n))
            else:
                h = self._fq(q + "h", n + self._fq(q + "z_hn", z * self._fq(q + "h_n", h - n)))
            outputs.append(h)
        return outputs


def _activation_hook(module: nn.Module, args: Any, output: Tensor) -> Tensor:
    fake_quant: nn.Module = module.activation_post_process  # type: ignore[assignment]  # set by us, a module
    return fake_quant(output)


def _add_output_fake_quant(module: nn.Module, fq: nn.Module | None = None) -> None:
    module.activation_post_process = fq if fq is not None else ACTIVATION()   # torch.ao's eager-mode name
    module.register_forward_hook(_activation_hook)


def _fused_into_next(children: list[nn.Module], i: int) -> bool:
    """The converter fuses BN and ReLU into the conv/linear before them: that one stores no tensor."""
    nxt = children[i + 1] if i + 1 < len(children) else None
    return isinstance(nxt, FUSED_INTO_PREVIOUS)


def prepare_qat(student: BeamModel, *, dense_per_tensor: bool = True, floor: float | None = None) -> BeamModel:
    """A fake-quantised copy of ``student`` (``student`` is untouched); see the module docstring."""
    from edgekd.host.export.int8_rewrite import final_linear
    from edgekd.host.export.onnx_export import LOGIT_FLOOR

    floor = LOGIT_FLOOR if floor is None else floor
    model = copy.deepcopy(student)
    logits_layer: nn.Module | None = final_linear(model)
    fused: set[int] = set()
    for parent in model.modules():
        children = list(parent.children())
        if isinstance(parent, nn.Sequential):
            fused |= {id(c) for i, c in enumerate(children) if _fused_into_next(children, i)}
    # 1. weights: torch.ao's QAT modules in place of Conv2d / Linear; the GRU's functional matmuls
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Conv2d:
                child.qconfig = weight_qconfig(True)  # type: ignore[assignment]  # torch.ao's attribute
                swapped: nn.Module = nnqat.Conv2d.from_float(child)
            elif type(child) is nn.Linear:
                child.qconfig = weight_qconfig(  # type: ignore[assignment]  # torch.ao's attribute
                    child is logits_layer or not dense_per_tensor)
                swapped = nnqat.Linear.from_float(child)
            elif isinstance(child, UnrolledGRU):
                swapped = QatUnrolledGRU(child)
            else:
                continue
            if child is logits_layer:
                logits_layer = swapped
            if id(child) in fused:
                fused.add(id(swapped))
            setattr(parent, name, swapped)
    # 2. activations: the tensor every remaining op stores
    for module in list(model.modules()):
        if module is logits_layer:
            _add_output_fake_quant(module, _DeployedLogitsFakeQuant(floor))
        elif isinstance(module, (ChannelAttention, SpatialAttention, TemporalAttention)):
            _add_output_fake_quant(module)
        elif (not list(module.children()) and not isinstance(module, (*PASS_THROUGH, QatUnrolledGRU))
              and id(module) not in fused and not isinstance(module, FakeQuantizeBase)
              and (isinstance(module, (nnqat.Conv2d, nnqat.Linear, *FUSED_INTO_PREVIOUS, nn.LayerNorm,
                                       nn.Sigmoid, nn.Tanh, nn.GELU, nn.Softmax)))):
            _add_output_fake_quant(module)
    # 3. the int8 inputs
    model.input_fq = nn.ModuleList([ACTIVATION() for _ in model.input_modalities])
    model.forward_features = types.MethodType(_quantised_forward_features, model)  # type: ignore[method-assign]
    return model


class _DeployedLogitsFakeQuant(nn.Module):
    """Logits -> shifted to max 0, floored, on the int8 output grid (what the exported file outputs)."""

    def __init__(self, floor: float):
        super().__init__()
        self.floor = float(floor)
        self.fq = deployed_logits_fake_quant(self.floor)

    def forward(self, logits: Tensor) -> Tensor:
        shifted = logits - logits.amax(dim=-1, keepdim=True).detach()
        deployed = self.fq(shifted.clamp(min=-self.floor))
        if not self.training:
            return deployed
        # Training: the file's value wherever the file can represent it, the plain logit below the floor.
        # A floored student cannot follow a KD target at temperature T (its softmax over [-floor, 0] is far
        # flatter than the teacher's): on the demo's image student the KD term went 1.3 -> 6.3 and QAT lost
        # 15 top-2 points. Below the floor only the ranking of losing beams changes, which no metric reads.
        return torch.where(shifted > -self.floor, deployed, shifted)


def fake_quant_modules(model: nn.Module) -> Iterable[FakeQuantizeBase]:
    return (m for m in model.modules() if isinstance(m, FakeQuantizeBase))


def _quantised_forward_features(self, *inputs: Tensor, **kwargs: Any) -> dict[str, Tensor]:
    # Weight observers follow the weights while training; activation observers only run in calibrate()
    # (eval mode, the calibration windows: the converter's ranges), then stay frozen, and so do the BN
    # statistics: a range seen with dropout and batch statistics is not the deployed model's.
    calibrating = getattr(self, "_qat_calibrating", False)
    for name, fq in self.named_modules():
        if isinstance(fq, FakeQuantizeBase):
            weight = "weight" in name
            fq.observer_enabled.fill_(1 if calibrating or (weight and self.training) else 0)
    for module in self.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.train(False)
    inputs = tuple(fq(x) for fq, x in zip(self.input_fq, inputs))
    return type(self).forward_features(self, *inputs, **kwargs)


def calibrate(prepared: nn.Module, inputs: Iterable[Tensor]) -> None:
    """Set every activation range from ``inputs`` (the calibration windows, one batch per modality) in eval
    mode, in one pass: the first batch an observer sees sets its min/max, as the converter's over the set."""
    was_training = prepared.training
    prepared.eval()
    prepared.__dict__["_qat_calibrating"] = True   # a plain flag (not a buffer or module)
    try:
        with torch.no_grad():
            prepared(*inputs)
    finally:
        prepared.__dict__["_qat_calibrating"] = False
        prepared.train(was_training)


def fake_quant_count(model: nn.Module) -> dict[str, int]:
    """How many weight / activation fake-quant modules a prepared model holds (reported in the checkpoint)."""
    counts = {"weight": 0, "activation": 0}
    for name, module in model.named_modules():
        if isinstance(module, FakeQuantizeBase):
            counts["weight" if "weight" in name else "activation"] += 1
    return counts


def strip_qat(prepared: nn.Module, float_model: BeamModel) -> BeamModel:
    """Load the fine-tuned float parameters of ``prepared`` into ``float_model`` (fake-quant state dropped)."""
    keys = float_model.state_dict().keys()
    state = prepared.state_dict()
    missing = [k for k in keys if k not in state]
    if missing:
        raise RuntimeError(f"QAT model lost parameters {missing[:5]}")
    float_model.load_state_dict({k: state[k] for k in keys})
    return float_model
