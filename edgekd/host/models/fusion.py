"""Image+radar models of paper 1 (inputs in the order image, radar).

At paper scale (224x224 images, radar 128x64) the teacher has 2.948M parameters
(paper 2.931M) and the student 0.106M (paper 0.106M). The teacher's branches keep
their paper-size FCs at any input size (``final_grid``, ``radar_grid``: see image.py
and radar.py); the student's default stems are int8-friendly patch embeddings.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edgekd.host.models.base import (
    BeamModel,
    check_choice,
    check_multiple,
    check_optional_int,
    check_pair,
    check_width,
    register_model,
)
from edgekd.host.models.blocks import NORMS, PooledDepthwiseEncoder, RecurrentHead, embedding_norm, mlp, scaled
from edgekd.host.models.image import TeacherImageEncoder
from edgekd.host.models.radar import PAPER_GRID, STEMS, StudentRadarEncoder, TeacherRadarEncoder, check_grid

EMBED = 64
HIDDEN = 64


class StudentFusionImageEncoder(PooledDepthwiseEncoder):
    """Stem (1->12), depthwise-separable blocks 12-16-24-40-96 -> 96 x S/32 x S/32, global average + max
    pooling -> 192. ``stem="conv"`` (paper): 3x3 stride-2 conv, every block stride 2; ``stem="patch"``:
    8x8 patch embedding (space-to-depth + 1x1 conv 64->12), the first two blocks at stride 1."""

    def __init__(self, width: float = 1.0, *, stem: str = "patch", image_size: int = 64):
        super().__init__(1, scaled([12, 16, 24, 40, 96], width), stem=stem, size=(image_size, image_size))


class _FusionModel(BeamModel):
    input_modalities = ("image", "radar")
    # set by the subclasses (declared here for the type checker: nn.Module attributes are untyped)
    image_encoder: TeacherImageEncoder | StudentFusionImageEncoder
    radar_encoder: TeacherRadarEncoder | StudentRadarEncoder
    fuse: nn.Module
    head: RecurrentHead

    def __init__(self, *, num_beams: int, window: int, horizons: int, image_size: int, radar_shape,
                 width: float, norm: str):
        super().__init__(num_beams=num_beams, window=window, horizons=horizons)
        self.image_size = check_multiple("image_size", image_size, 32, why="5 stride-2 stages")
        self.radar_shape = check_pair("radar_shape", radar_shape, 16, why="4 stride-2 stages")
        self.width = check_width(width)
        self.norm = embedding_norm(check_choice("norm", norm, NORMS), EMBED)

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"image": (self.window, 1, self.image_size, self.image_size),
                "radar": (self.window, 2, *self.radar_shape)}

    def forward_features(self, image: Tensor, radar: Tensor) -> dict[str, Tensor]:
        self.check_inputs((image, radar))
        img = self.image_encoder(image.reshape(-1, 1, self.image_size, self.image_size))
        rad = self.radar_encoder(radar.reshape(-1, 2, *self.radar_shape))
        joint = self.fuse(torch.cat([img["vector"], rad["vector"]], dim=1))
        embedding = self.norm(joint.reshape(-1, self.window, EMBED))
        t = self.window
        return {"image_backbone": img["pooled"].reshape(-1, t, self.image_encoder.channels),
                "radar_backbone": rad["pooled"].reshape(-1, t, self.radar_encoder.channels),
                "backbone": torch.cat([img["pooled"], rad["pooled"]], dim=1).reshape(-1, t, self.backbone_size),
                "embedding": embedding, **self.head(embedding)}

    @property
    def backbone_size(self) -> int:
        return self.image_encoder.channels + self.radar_encoder.channels


@register_model("fusion_teacher")
class FusionTeacher(_FusionModel):
    """Image extractor (image teacher without attention) + radar extractor -> concat 128 -> 64 ->
    LayerNorm -> 2-layer GRU(64) -> 8-head self-attention + residual -> classifier 64-64-64-beams."""

    def __init__(self, *, num_beams: int = 64, window: int = 8, horizons: int = 4, image_size: int = 64,
                 radar_shape: tuple[int, int] | list[int] = (64, 32), width: float = 1.0,
                 final_grid: int | None = 7, radar_grid: tuple[int, int] | list[int] | None = PAPER_GRID,
                 norm: str = "layer"):
        super().__init__(num_beams=num_beams, window=window, horizons=horizons, image_size=image_size,
                         radar_shape=radar_shape, width=width, norm=norm)
        self.image_encoder = TeacherImageEncoder(self.image_size, self.width, attention=False,
                                                 final_grid=check_optional_int("final_grid", final_grid))
        self.radar_encoder = TeacherRadarEncoder(self.radar_shape, self.width, check_grid(radar_grid))
        self.fuse = nn.Linear(2 * EMBED, EMBED)
        self.head = RecurrentHead(input_size=EMBED, hidden_size=HIDDEN, num_beams=self.num_beams,
                                  horizons=self.horizons, num_layers=2, attention="mhsa", heads=8,
                                  classifier=(64, 64), classifier_dropout=(0.5, 0.3))


@register_model("fusion_student")
class FusionStudent(_FusionModel):
    """Depthwise-separable image and radar CNNs, avg+max pooling -> 384-128-64-64 -> norm ->
    GRU(64, 64) -> classifier 64-64-beams. Defaults are int8-friendly (patch stems, BatchNorm);
    ``stem="conv", norm="layer"`` is the paper's layout."""

    def __init__(self, *, num_beams: int = 64, window: int = 8, horizons: int = 4, image_size: int = 64,
                 radar_shape: tuple[int, int] | list[int] = (64, 32), width: float = 1.0, stem: str = "patch",
                 norm: str = "batch"):
        super().__init__(num_beams=num_beams, window=window, horizons=horizons, image_size=image_size,
                         radar_shape=radar_shape, width=width, norm=norm)
        self.stem = check_choice("stem", stem, STEMS)
        self.image_encoder = StudentFusionImageEncoder(self.width, stem=self.stem, image_size=self.image_size)
        self.radar_encoder = StudentRadarEncoder(self.width, stem=self.stem, radar_shape=self.radar_shape)
        self.fuse = mlp([self.backbone_size, 128, 64, EMBED], (0.3, 0.2))
        self.head = RecurrentHead(input_size=EMBED, hidden_size=HIDDEN, num_beams=self.num_beams,
                                  horizons=self.horizons, classifier=(64,), classifier_dropout=(0.5,))
