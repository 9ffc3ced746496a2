"""Export-friendly building blocks shared by every model family.

Everything here traces to a static ONNX graph that onnx2tf turns into full-int8
TFLite: no data-dependent Python control flow, no in-place ops, attention
written with plain matmul / softmax / reductions, and a GRU unrolled over a
fixed number of steps (a looped GRU crashes the TFLite int8 calibrator).
Shapes passed to ``reshape`` are Python ints from the constructor (or ``-1``
for the batch) so the exported graph has constant shapes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# --------------------------------------------------------------------------- GRU

class UnrolledGRU(nn.Module):
    """A batch-first GRU unrolled over a fixed number of steps, numerically equal to ``nn.GRU``.

    Parameters carry ``nn.GRU``'s names (``weight_ih_l0``, ``bias_hh_l1``, ...), so
    ``load_from_gru(gru)`` or ``load_state_dict(gru.state_dict())`` moves weights
    across. The graph it traces to is plain Gemm / Split / Sigmoid / Tanh / Mul / Add, kept
    small because every op and tensor of the 11-step unroll costs flatbuffer bytes and an
    interpreter dispatch (it is most of a small student's int8 file besides its weights):

    - the input projections of all observed steps are one matmul ([B*T, D] @ W_ih), laid out
      [B, T*3H] and cut by one Split into each step's r/z and n gates (no per-step Squeeze);
    - the r/z hidden biases are folded into that projection's bias (exact: r and z only see
      b_i + b_h), so the per-step r/z matmul has no bias, which in int8 saves a 2H int32 bias
      tensor per step (each step's has its own scale); b_hn stays, inside r * (W_hn h + b_hn);
    - the ``future_steps`` padded steps have a constant input (zeros, or
      ``future_input``), so their projection is a constant vector and costs no matmul;
    - the first step starts from h0 = 0, so its recurrent projection is just ``b_hn``;
    - the kept outputs are concatenated once ([B, K*H]) and reshaped, not stacked per step.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0):
        super().__init__()
        if num_layers < 1:
            raise ValueError("num_layers must be >= 1")
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.dropout = float(dropout)  # between layers, training only (as nn.GRU)
        gates = 3 * self.hidden_size
        for layer in range(self.num_layers):
            in_size = self.input_size if layer == 0 else self.hidden_size
            self.register_parameter(f"weight_ih_l{layer}", nn.Parameter(torch.empty(gates, in_size)))
            self.register_parameter(f"weight_hh_l{layer}", nn.Parameter(torch.empty(gates, self.hidden_size)))
            self.register_parameter(f"bias_ih_l{layer}", nn.Parameter(torch.empty(gates)))
            self.register_parameter(f"bias_hh_l{layer}", nn.Parameter(torch.empty(gates)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same init as nn.GRU: U(-1/sqrt(H), 1/sqrt(H)) for every tensor.
        bound = 1.0 / math.sqrt(self.hidden_size)
        for param in self.parameters():
            nn.init.uniform_(param, -bound, bound)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"

    def _params(self, layer: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return (getattr(self, f"weight_ih_l{layer}"), getattr(self, f"weight_hh_l{layer}"),
                getattr(self, f"bias_ih_l{layer}"), getattr(self, f"bias_hh_l{layer}"))

    @torch.no_grad()
    def load_from_gru(self, gru: nn.GRU) -> UnrolledGRU:
        """Copy the weights of a (unidirectional) ``nn.GRU`` of the same sizes."""
        if gru.bidirectional or not gru.bias or gru.proj_size:
            raise ValueError("only unidirectional nn.GRU with biases can be loaded")
        if (gru.input_size, gru.hidden_size, gru.num_layers) != (self.input_size, self.hidden_size, self.num_layers):
            raise ValueError(f"nn.GRU({gru.input_size}, {gru.hidden_size}, num_layers={gru.num_layers}) does not fit "
                             f"UnrolledGRU({self.input_size}, {self.hidden_size}, num_layers={self.num_layers})")
        for name, param in self.named_parameters():
            param.copy_(getattr(gru, name))
        return self

    def to_gru(self) -> nn.GRU:
        """An equivalent batch-first ``nn.GRU`` (for comparison and cuDNN training)."""
        gru = nn.GRU(self.input_size, self.hidden_size, self.num_layers, batch_first=True, dropout=self.dropout)
        gru.load_state_dict(self.state_dict())
        return gru

    def forward(self, x: Tensor, *, future_steps: int = 0, future_input: Tensor | None = None,
                keep_last: int | None = None) -> tuple[Tensor, Tensor]:
        """Run over the T steps of ``x`` [B, T, D] then ``future_steps`` constant-input steps.

        ``future_input`` ([D]) is the input of the padded steps (zeros when None).
        Returns (outputs of the last ``keep_last`` steps, or all, [B, K, H]; final hidden state [B, H]).
        """
        w_ih, w_hh, b_ih, b_hh = self._params(0)
        bias = self._folded_bias(b_ih, b_hh)
        inputs = self._input_gates(x.reshape(-1, self.input_size), x.shape[1], w_ih, bias)
        if future_steps:
            # A padded step's input projection is constant: the bias (or W_ih @ pad + bias).
            pad = bias if future_input is None else F.linear(future_input, w_ih, bias)
            inputs += [tuple(pad.reshape(1, -1).split([2 * self.hidden_size, self.hidden_size], dim=-1))] \
                * future_steps
        outputs = self._run_layer(inputs, w_hh, b_hh)
        for layer in range(1, self.num_layers):
            seq = torch.cat(outputs, dim=1)  # [B, S*H]: step s at columns s*H..(s+1)*H
            if self.dropout and self.training:
                seq = F.dropout(seq, self.dropout, training=True)
            w_ih, w_hh, b_ih, b_hh = self._params(layer)
            inputs = self._input_gates(seq.reshape(-1, self.hidden_size), len(outputs), w_ih,
                                       self._folded_bias(b_ih, b_hh))
            outputs = self._run_layer(inputs, w_hh, b_hh)
        kept = outputs if keep_last is None else outputs[-keep_last:]
        # One Concat + Reshape (not a Reshape per step + Concat, as torch.stack exports).
        return torch.cat(kept, dim=1).reshape(-1, len(kept), self.hidden_size), outputs[-1]

    def _folded_bias(self, b_ih: Tensor, b_hh: Tensor) -> Tensor:
        """b_ih + (b_hr, b_hz, 0): the r/z gates only ever see b_i + b_h, so their hidden bias moves into
        the input projection (exact), and no recurrent step needs an r/z bias. b_hn cannot move: nn.GRU
        scales it by r (n = tanh(W_in x + b_in + r * (W_hn h + b_hn)))."""
        return b_ih + torch.cat([b_hh[: 2 * self.hidden_size], b_hh.new_zeros(self.hidden_size)])

    def _input_gates(self, flat: Tensor, steps: int, w_ih: Tensor, bias: Tensor) -> list[tuple[Tensor, Tensor]]:
        """[B*S, D] -> per step (r/z input gates [B, 2H], n input gate [B, H]), from one matmul and one Split.

        The projection is laid out [B, S*3H] so every step's pieces are column ranges of one 2-D
        tensor: a single Split, with no per-step Squeeze/Reshape (``unbind`` of [B, S, 3H] costs a
        Slice and a Reshape per step in TFLite)."""
        hidden = self.hidden_size
        gi = F.linear(flat, w_ih, bias).reshape(-1, steps * 3 * hidden)
        pieces = gi.split([2 * hidden, hidden] * steps, dim=1)
        return list(zip(pieces[0::2], pieces[1::2]))

    def _run_layer(self, inputs: list[tuple[Tensor, Tensor]], w_hh: Tensor, b_hh: Tensor) -> list[Tensor]:
        hidden = self.hidden_size
        # Slicing parameters is constant-folded on export: no Split inside the loop for gh. The r/z hidden
        # bias is already in the inputs (``_folded_bias``): the r/z matmul has none.
        w_hh_rz, w_hh_n, b_hh_n = w_hh[: 2 * hidden], w_hh[2 * hidden:], b_hh[2 * hidden:]
        outputs: list[Tensor] = []
        h: Tensor | None = None
        for gi_rz, gi_n in inputs:
            if h is None:  # h0 = 0: the recurrent projection is only the (n) bias
                pre_rz, gh_n = gi_rz, b_hh_n
            else:
                pre_rz, gh_n = gi_rz + F.linear(h, w_hh_rz), F.linear(h, w_hh_n, b_hh_n)
            r, z = torch.sigmoid(pre_rz).split([hidden, hidden], dim=-1)
            n = torch.tanh(gi_n + r * gh_n)
            h = n - z * n if h is None else n + z * (h - n)  # (1 - z) * n + z * h
            outputs.append(h)
        return outputs


# --------------------------------------------------------------------- attention

class ChannelAttention(nn.Module):
    """Squeeze-excitation style gate: global average pool -> C -> C/r -> C -> sigmoid -> scale."""

    def __init__(self, channels: int, reduction: int = 2):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: Tensor) -> Tensor:
        pooled = x.mean(dim=(2, 3))
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(pooled))))
        return x * gate.unsqueeze(-1).unsqueeze(-1)


class SpatialAttention(nn.Module):
    """A k x k conv over all channels -> one sigmoid map that scales every position."""

    def __init__(self, channels: int, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.conv(x))


class TemporalAttention(nn.Module):
    """Score each step (H -> a -> 1), softmax over steps, add the context vector to every step.

    The scores are reshaped to [B, S] so the softmax runs on the last axis (no transpose in TFLite).
    """

    def __init__(self, hidden_size: int, attn_size: int = 128):
        super().__init__()
        self.proj = nn.Linear(hidden_size, attn_size)
        self.score = nn.Linear(attn_size, 1)
        self.hidden_size = hidden_size

    def forward(self, seq: Tensor) -> Tensor:
        steps = seq.shape[1]
        flat = seq.reshape(-1, self.hidden_size)
        scores = self.score(torch.tanh(self.proj(flat))).reshape(-1, steps)
        weights = torch.softmax(scores, dim=-1).unsqueeze(-1)
        context = (seq * weights).sum(dim=1, keepdim=True)
        return seq + context


class MultiHeadSelfAttention(nn.Module):
    """Scaled dot-product self-attention with ``heads`` heads, written with matmul + softmax."""

    def __init__(self, embed_dim: int, heads: int = 8, dropout: float = 0.1):
        super().__init__()
        if embed_dim % heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by heads {heads}")
        self.embed_dim, self.heads, self.head_dim = embed_dim, heads, embed_dim // heads
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.out = nn.Linear(embed_dim, embed_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, seq: Tensor) -> Tensor:
        steps = seq.shape[1]
        q, k, v = self.qkv(seq.reshape(-1, self.embed_dim)).split(self.embed_dim, dim=-1)
        shape = (-1, steps, self.heads, self.head_dim)
        q = q.reshape(shape).transpose(1, 2) * (self.head_dim ** -0.5)  # [B, heads, S, d]
        k = k.reshape(shape).permute(0, 2, 3, 1)                         # [B, heads, d, S]
        v = v.reshape(shape).transpose(1, 2)
        scores = torch.matmul(q, k)
        attn = self.dropout(torch.softmax(scores, dim=-1))
        mixed = torch.matmul(attn, v).transpose(1, 2).reshape(-1, self.embed_dim)
        return self.out(mixed).reshape(-1, steps, self.embed_dim)


# ----------------------------------------------------------------------- convs

def conv_bn_relu(in_ch: int, out_ch: int, *, kernel: int = 3, stride: int = 1, bias: bool = True,
                 groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=bias,
                                   groups=groups),
                         nn.BatchNorm2d(out_ch), nn.ReLU())


def depthwise_separable(in_ch: int, out_ch: int, *, stride: int = 1) -> nn.Sequential:
    """3x3 depthwise (+BN+ReLU) then 1x1 pointwise (+BN+ReLU); BN folds into the convs at export."""
    return nn.Sequential(conv_bn_relu(in_ch, in_ch, stride=stride, bias=False, groups=in_ch),
                         conv_bn_relu(in_ch, out_ch, kernel=1, bias=False))


class SpaceToDepth(nn.Module):
    """[N, C, H, W] -> [N, C*k*k, H/k, W/k], channel c*k*k + i*k + j = pixel (i, j) of each k x k patch
    (the order of ``F.pixel_unshuffle``).

    Written as reshape + one 6-D transpose straight to channels-last patches ([N, h, w, C, k, k]),
    then a reshape and a permute back to NCHW for the ONNX conv, with constructor-time sizes. onnx2tf
    adds its own NCHW -> NHWC transpose before the conv, which cancels that permute: the TFLite graph
    is RESHAPE / TRANSPOSE / RESHAPE, one transpose, which XNNPACK runs in int8 (ONNX SpaceToDepth does
    not convert here). Patches in NCHW order ([N*C, k, k, h, w]) cost a second int8 TRANSPOSE, which
    made the radar and fusion students' int8 slower than float32 (2-channel stem: 35 -> 16 us int8), and
    onnx2tf mis-converted that form for trained 1-channel (image) stems (float32 TFLite off by ~13,
    caught by the export's float check). For C = 1 the 6-D transpose is ~7 us slower in int8 than the
    old two (image student int8 ~63 vs ~56 us, float32 ~135 us).
    Why at all: XNNPACK's int8 convolutions pad every kernel tap's input channels to 8 on x86, so a
    3x3 conv on a 1- or 2-channel map costs 4-8x its MACs (5x slower than float32, measured); a
    k x k patch as k*k channels feeds one 1x1 conv with a long, dense reduction.
    """

    def __init__(self, block: int, channels: int, height: int, width: int):
        super().__init__()
        if height % block or width % block:
            raise ValueError(f"{height}x{width} is not divisible by the patch size {block}")
        self.block, self.channels, self.height, self.width = block, channels, height, width

    def extra_repr(self) -> str:
        return f"block={self.block}, channels={self.channels}, size={self.height}x{self.width}"

    def forward(self, x: Tensor) -> Tensor:
        k, h, w = self.block, self.height // self.block, self.width // self.block
        # Keep the channel axis even when C = 1: both 5-D forms (this one without it, and NCHW patches of
        # [N*C, ...]) came out of onnx2tf wrong for trained image students (float32 TFLite off by ~13).
        patches = x.reshape(-1, self.channels, h, k, w, k).permute(0, 2, 4, 1, 3, 5)  # [N, h, w, C, k, k]
        return patches.reshape(-1, h, w, self.channels * k * k).permute(0, 3, 1, 2)


def patch_stem(in_ch: int, out_ch: int, *, patch: int, size: tuple[int, int]) -> nn.Sequential:
    """A patch x patch, stride-patch convolution written as space-to-depth + 1x1 conv (+BN+ReLU)."""
    return nn.Sequential(SpaceToDepth(patch, in_ch, *size), conv_bn_relu(in_ch * patch * patch, out_ch, kernel=1,
                                                                         bias=False))


class SequenceBatchNorm(nn.Module):
    """BatchNorm1d over the features of every step of [B, S, D] (statistics over B*S vectors).

    The quantisation-friendly alternative to LayerNorm: at inference it is a per-feature
    scale and shift (MUL + ADD, or folded), where an int8 LayerNorm becomes MEAN /
    SQUARED_DIFFERENCE / RSQRT ops that XNNPACK does not run in int8 (3 partition breaks).
    """

    def __init__(self, features: int):
        super().__init__()
        self.features = features
        self.bn = nn.BatchNorm1d(features)

    def forward(self, seq: Tensor) -> Tensor:
        steps = seq.shape[1]
        return self.bn(seq.reshape(-1, self.features)).reshape(-1, steps, self.features)


NORMS = ("batch", "layer")


def embedding_norm(kind: str, features: int) -> nn.Module:
    """The normalisation of per-frame embeddings before the GRU: "layer" (paper) or "batch" (int8-friendly)."""
    if kind == "layer":
        return nn.LayerNorm(features)
    if kind == "batch":
        return SequenceBatchNorm(features)
    raise ValueError(f"unknown norm '{kind}'")


def mlp(sizes: Sequence[int], dropouts: Sequence[float] = ()) -> nn.Sequential:
    """Linear layers ``sizes[0] -> ... -> sizes[-1]`` with ReLU (+ dropout) between, none after the last."""
    layers: list[nn.Module] = []
    pairs = list(zip(sizes[:-1], sizes[1:]))
    for i, (a, b) in enumerate(pairs):
        layers.append(nn.Linear(a, b))
        if i < len(pairs) - 1:
            layers.append(nn.ReLU())
            p = dropouts[i] if i < len(dropouts) else 0.0
            if p:
                layers.append(nn.Dropout(p))
    return nn.Sequential(*layers)


def scaled(channels: Sequence[int], width: float) -> list[int]:
    """Channel counts times the width multiplier (at least 1 each)."""
    return [max(1, int(round(c * width))) for c in channels]


def seq_apply(module: nn.Module, seq: Tensor, in_dim: int, out_dim: int) -> Tensor:
    """Apply a per-vector module to [B, S, in_dim] as one 2-D Gemm batch ([B*S, in_dim])."""
    steps = seq.shape[1]
    return module(seq.reshape(-1, in_dim)).reshape(-1, steps, out_dim)


# -------------------------------------------------------------------- the head

class RecurrentHead(nn.Module):
    """Per-frame embeddings [B, T, D] -> unrolled GRU over T + horizons - 1 steps -> logits [B, 4, beams].

    Horizon handling as the reference code: ``horizons - 1`` zero (or ``future_input``)
    frames are appended after the T observed ones and the last ``horizons`` outputs
    are classified. ``attention`` is None, "temporal" (scored context added to every
    step) or "mhsa" (multi-head self-attention + residual).
    """

    def __init__(self, *, input_size: int, hidden_size: int, num_beams: int, horizons: int,
                 classifier: Sequence[int], classifier_dropout: Sequence[float] = (),
                 num_layers: int = 1, attention: str | None = None, attn_size: int = 128, heads: int = 8):
        super().__init__()
        self.hidden_size, self.num_beams, self.horizons = hidden_size, num_beams, horizons
        self.gru = UnrolledGRU(input_size, hidden_size, num_layers)
        self.attention_kind = attention
        self.attention: nn.Module
        if attention == "temporal":
            self.attention = TemporalAttention(hidden_size, attn_size)
        elif attention == "mhsa":
            self.attention = MultiHeadSelfAttention(hidden_size, heads)
        elif attention is not None:
            raise ValueError(f"unknown attention '{attention}'")
        self.classifier = mlp([hidden_size, *classifier, num_beams], classifier_dropout)

    def forward(self, embedding: Tensor, future_input: Tensor | None = None) -> dict[str, Tensor]:
        keep = None if self.attention_kind else self.horizons  # attention mixes all steps
        seq, last_hidden = self.gru(embedding, future_steps=self.horizons - 1, future_input=future_input,
                                    keep_last=keep)
        recurrent = seq[:, -self.horizons:] if keep is None else seq
        if self.attention_kind == "mhsa":
            temporal = (seq + self.attention(seq))[:, -self.horizons:]
        elif self.attention_kind == "temporal":
            temporal = self.attention(seq)[:, -self.horizons:]
        else:
            temporal = recurrent
        logits = seq_apply(self.classifier, temporal, self.hidden_size, self.num_beams)
        return {"recurrent": recurrent, "temporal": temporal, "last_hidden": last_hidden, "logits": logits}


class PooledDepthwiseEncoder(nn.Module):
    """The students' per-frame CNN: a stem, depthwise-separable blocks, global average + max pooling.

    ``stem="conv"`` (paper): 3x3 stride-2 conv, every block stride 2. ``stem="patch"``: 8x8 patch
    embedding (space-to-depth + 1x1 conv), the first two blocks at stride 1, so the final map has the
    same size; few-channel dense convs are XNNPACK int8's slowest case on x86.
    """

    def __init__(self, in_ch: int, channels: Sequence[int], *, stem: str, size: tuple[int, int]):
        super().__init__()
        c = list(channels)
        if stem == "conv":
            layers: list[nn.Module] = [conv_bn_relu(in_ch, c[0], stride=2)]
            layers += [depthwise_separable(a, b, stride=2) for a, b in zip(c[:-1], c[1:])]
        else:
            layers = [patch_stem(in_ch, c[0], patch=8, size=size)]
            layers += [depthwise_separable(a, b, stride=1 if i < 2 else 2)
                       for i, (a, b) in enumerate(zip(c[:-1], c[1:]))]
        self.cnn = nn.Sequential(*layers)
        self.channels = 2 * c[-1]

    def forward(self, frames: Tensor) -> dict[str, Tensor]:
        fmap = self.cnn(frames)
        pooled = torch.cat([fmap.mean(dim=(2, 3)), fmap.amax(dim=(2, 3))], dim=1)
        return {"pooled": pooled, "vector": pooled}
