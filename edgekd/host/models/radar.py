"""Radar encoders (paper 1's image+radar models) and radar-only models built from them.

Radar input [B, T, 2, R, A]: channel 0 range-angle, channel 1 Doppler-angle map.
The radar-only teacher / student are the fusion models' radar branches with the
same recurrent head as their fusion counterpart.

The teacher strides only in as many of its 4 convs as bring the map closest to
``radar_grid`` (8x4, the paper's map of a 128x64 input), so its flatten -> 512 FC
keeps its paper size at the default 64x32 too. The student's default stem is a
8x8 patch embedding (int8-friendly; ``stem="conv"`` is the paper's 3x3 stride-2 conv).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from edgekd.device.errors import EdgekdError
from edgekd.host.models.base import BeamModel, check_choice, check_int, check_pair, check_width, register_model
from edgekd.host.models.blocks import (
    NORMS,
    PooledDepthwiseEncoder,
    RecurrentHead,
    conv_bn_relu,
    embedding_norm,
    mlp,
    scaled,
)

EMBED = 64
HIDDEN = 64


STEMS = ("patch", "conv")
PAPER_GRID = (8, 4)
RADAR_STUDENT_CHANNELS = (12, 16, 24, 96)  # paper


def strided_stages(shape: Sequence[int], grid: Sequence[int] | None, stages: int) -> int:
    """How many of ``stages`` halvings bring ``shape`` closest to ``grid`` (all of them when None)."""
    if grid is None:
        return stages
    def distance(s: int) -> float:
        return sum(abs(math.log2(n / 2 ** s / g)) for n, g in zip(shape, grid))
    return min(range(stages + 1), key=lambda s: (distance(s), -s))


def check_grid(value: object) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise EdgekdError(f"'radar_grid' must be a pair [rows, cols] or null, got {value!r}", field="radar_grid",
                          fix="pass radar_grid=[8, 4] (the paper's final map)")
    return check_int("radar_grid[0]", value[0]), check_int("radar_grid[1]", value[1])


class TeacherRadarEncoder(nn.Module):
    """4 x [3x3 conv (stride 2 in the first ``strided_stages``) + BN + ReLU] (2-4-16-32-64) -> 64 x grid
    -> FC -512-128-64-64. At 128x64 (paper) and 64x32 (default) the grid is 8x4."""

    def __init__(self, radar_shape: tuple[int, int], width: float = 1.0,
                 radar_grid: tuple[int, int] | None = PAPER_GRID):
        super().__init__()
        channels = scaled([4, 16, 32, 64], width)
        strided = strided_stages(radar_shape, radar_grid, len(channels))
        layers: list[nn.Module] = []
        prev = 2
        for i, ch in enumerate(channels):
            layers.append(conv_bn_relu(prev, ch, stride=2 if i < strided else 1))
            prev = ch
        self.cnn = nn.Sequential(*layers)
        self.channels = prev
        self.flat = prev * (radar_shape[0] // 2 ** strided) * (radar_shape[1] // 2 ** strided)
        self.fc = mlp([self.flat, 512, 128, 64, EMBED], (0.5, 0.3, 0.2))

    def forward(self, frames: Tensor) -> dict[str, Tensor]:
        fmap = self.cnn(frames)
        return {"pooled": fmap.mean(dim=(2, 3)), "vector": self.fc(fmap.reshape(-1, self.flat))}


class StudentRadarEncoder(PooledDepthwiseEncoder):
    """Stem (2->12), depthwise-separable blocks 12-16-24-96 -> 96 x R/16 x A/16, global average + max
    pooling -> 192. ``stem="conv"`` (paper): 3x3 stride-2 conv, every block stride 2;
    ``stem="patch"``: 8x8 patch embedding (space-to-depth + 1x1 conv 128->12), first two blocks stride 1
    (a 2-channel 3x3 conv is XNNPACK int8's slowest case on x86)."""

    def __init__(self, width: float = 1.0, *, stem: str = "patch", radar_shape: tuple[int, int] = (64, 32)):
        super().__init__(2, scaled(RADAR_STUDENT_CHANNELS, width), stem=stem, size=(radar_shape[0], radar_shape[1]))


class _RadarModel(BeamModel):
    input_modalities = ("radar",)
    # set by the subclasses (declared here for the type checker: nn.Module attributes are untyped)
    encoder: TeacherRadarEncoder | StudentRadarEncoder
    project: nn.Module
    head: RecurrentHead

    def __init__(self, *, num_beams: int, window: int, horizons: int, radar_shape, width: float, norm: str):
        super().__init__(num_beams=num_beams, window=window, horizons=horizons)
        self.radar_shape = check_pair("radar_shape", radar_shape, 16, why="4 stride-2 stages")
        self.width = check_width(width)
        self.norm = embedding_norm(check_choice("norm", norm, NORMS), EMBED)

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"radar": (self.window, 2, *self.radar_shape)}

    def forward_features(self, radar: Tensor) -> dict[str, Tensor]:
        self.check_inputs((radar,))
        enc = self.encoder(radar.reshape(-1, 2, *self.radar_shape))
        backbone = enc["pooled"].reshape(-1, self.window, self.encoder.channels)
        embedding = self.norm(self.project(enc["vector"]).reshape(-1, self.window, EMBED))
        return {"backbone": backbone, "embedding": embedding, **self.head(embedding)}


@register_model("radar_teacher")
class RadarTeacher(_RadarModel):
    """The image+radar teacher's radar branch -> LayerNorm -> 2-layer GRU(64) -> 8-head
    self-attention + residual -> classifier 64-64-64-beams. ``radar_grid``: the CNN's final map
    (None: always 4 stride-2 convs)."""

    def __init__(self, *, num_beams: int = 64, window: int = 8, horizons: int = 4,
                 radar_shape: tuple[int, int] | list[int] = (64, 32), width: float = 1.0,
                 radar_grid: tuple[int, int] | list[int] | None = PAPER_GRID, norm: str = "layer"):
        super().__init__(num_beams=num_beams, window=window, horizons=horizons, radar_shape=radar_shape,
                         width=width, norm=norm)
        self.encoder = TeacherRadarEncoder(self.radar_shape, self.width, check_grid(radar_grid))
        self.project = nn.Identity()
        self.head = RecurrentHead(input_size=EMBED, hidden_size=HIDDEN, num_beams=self.num_beams,
                                  horizons=self.horizons, num_layers=2, attention="mhsa", heads=8,
                                  classifier=(64, 64), classifier_dropout=(0.5, 0.3))


@register_model("radar_student")
class RadarStudent(_RadarModel):
    """The image+radar student's radar branch -> 192-128-64-64 -> norm -> GRU(64, 64) ->
    classifier 64-64-beams. Defaults are int8-friendly (patch stem, BatchNorm);
    ``stem="conv", norm="layer"`` is the paper's layout."""

    def __init__(self, *, num_beams: int = 64, window: int = 8, horizons: int = 4,
                 radar_shape: tuple[int, int] | list[int] = (64, 32), width: float = 1.0, stem: str = "patch",
                 norm: str = "batch"):
        super().__init__(num_beams=num_beams, window=window, horizons=horizons, radar_shape=radar_shape,
                         width=width, norm=norm)
        self.stem = check_choice("stem", stem, STEMS)
        self.encoder = StudentRadarEncoder(self.width, stem=self.stem, radar_shape=self.radar_shape)
        self.project = mlp([self.encoder.channels, 128, 64, EMBED], (0.3, 0.2))
        self.head = RecurrentHead(input_size=EMBED, hidden_size=HIDDEN, num_beams=self.num_beams,
                                  horizons=self.horizons, classifier=(64,), classifier_dropout=(0.5,))
