"""Radar encoders (paper 1's image+radar models) and radar-only models built from them.

Radar input [B, T, 2, R, A]: channel 0 range-angle, channel 1 Doppler-angle map.
The radar-only teacher / student are the fusion models' radar branches with the
same recurrent head as their fusion counterpart.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edgekd.models.base import BeamModel, check_pair, check_width, register_model
from edgekd.models.blocks import RecurrentHead, conv_bn_relu, depthwise_separable, mlp, scaled

EMBED = 64
HIDDEN = 64


class TeacherRadarEncoder(nn.Module):
    """4 x [3x3 stride-2 conv + BN + ReLU] (2-4-16-32-64) -> 64 x R/16 x A/16 -> FC -512-128-64-64."""

    def __init__(self, radar_shape: tuple[int, int], width: float = 1.0):
        super().__init__()
        layers: list[nn.Module] = []
        prev = 2
        for ch in scaled([4, 16, 32, 64], width):
            layers.append(conv_bn_relu(prev, ch, stride=2))
            prev = ch
        self.cnn = nn.Sequential(*layers)
        self.channels = prev
        self.flat = prev * (radar_shape[0] // 16) * (radar_shape[1] // 16)
        self.fc = mlp([self.flat, 512, 128, 64, EMBED], (0.5, 0.3, 0.2))

    def forward(self, frames: Tensor) -> dict[str, Tensor]:
        fmap = self.cnn(frames)
        return {"pooled": fmap.mean(dim=(2, 3)), "vector": self.fc(fmap.reshape(-1, self.flat))}


class StudentRadarEncoder(nn.Module):
    """3x3 stride-2 conv (2->12), depthwise-separable stride-2 blocks 12-16-24-96 -> 96 x R/16 x A/16,
    global average + max pooling -> 192."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        c = scaled([12, 16, 24, 96], width)
        layers: list[nn.Module] = [conv_bn_relu(2, c[0], stride=2)]
        layers += [depthwise_separable(a, b, stride=2) for a, b in zip(c[:-1], c[1:])]
        self.cnn = nn.Sequential(*layers)
        self.channels = 2 * c[-1]

    def forward(self, frames: Tensor) -> dict[str, Tensor]:
        fmap = self.cnn(frames)
        pooled = torch.cat([fmap.mean(dim=(2, 3)), fmap.amax(dim=(2, 3))], dim=1)
        return {"pooled": pooled, "vector": pooled}


class _RadarModel(BeamModel):
    input_modalities = ("radar",)

    def __init__(self, *, num_beams: int, window: int, horizons: int, radar_shape, width: float):
        super().__init__(num_beams=num_beams, window=window, horizons=horizons)
        self.radar_shape = check_pair("radar_shape", radar_shape, 16, why="4 stride-2 stages")
        self.width = check_width(width)

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
    self-attention + residual -> classifier 64-64-64-beams."""

    def __init__(self, *, num_beams: int = 64, window: int = 8, horizons: int = 4,
                 radar_shape: tuple[int, int] | list[int] = (64, 32), width: float = 1.0):
        super().__init__(num_beams=num_beams, window=window, horizons=horizons, radar_shape=radar_shape,
                         width=width)
        self.encoder = TeacherRadarEncoder(self.radar_shape, self.width)
        self.project = nn.Identity()
        self.norm = nn.LayerNorm(EMBED)
        self.head = RecurrentHead(input_size=EMBED, hidden_size=HIDDEN, num_beams=self.num_beams,
                                  horizons=self.horizons, num_layers=2, attention="mhsa", heads=8,
                                  classifier=(64, 64), classifier_dropout=(0.5, 0.3))


@register_model("radar_student")
class RadarStudent(_RadarModel):
    """The image+radar student's radar branch -> 192-128-64-64 -> LayerNorm -> GRU(64, 64) ->
    classifier 64-64-beams."""

    def __init__(self, *, num_beams: int = 64, window: int = 8, horizons: int = 4,
                 radar_shape: tuple[int, int] | list[int] = (64, 32), width: float = 1.0):
        super().__init__(num_beams=num_beams, window=window, horizons=horizons, radar_shape=radar_shape,
                         width=width)
        self.encoder = StudentRadarEncoder(self.width)
        self.project = mlp([self.encoder.channels, 128, 64, EMBED], (0.3, 0.2))
        self.norm = nn.LayerNorm(EMBED)
        self.head = RecurrentHead(input_size=EMBED, hidden_size=HIDDEN, num_beams=self.num_beams,
                                  horizons=self.horizons, classifier=(64,), classifier_dropout=(0.5,))
