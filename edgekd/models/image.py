"""Image-only models of paper 1 (motion masks [B, T, 1, S, S] -> beams).

Time-distributed CNNs fold T into the batch ([B*T, 1, S, S]) with one reshape.
At paper scale (S = 224) the teacher has 1.762M parameters (the paper's 1.787M
is this plus one more GRU layer, 24,960) and the student 0.0956M (paper 0.095M).
"""

from __future__ import annotations

from torch import Tensor, nn

from edgekd.models.base import BeamModel, check_multiple, check_width, register_model
from edgekd.models.blocks import (ChannelAttention, RecurrentHead, SpatialAttention, conv_bn_relu,
                                  depthwise_separable, mlp, scaled)

EMBED = 64   # per-frame feature size = GRU input (paper 1)
HIDDEN = 64  # GRU hidden size (paper 1)


class TeacherImageEncoder(nn.Module):
    """5 x [3x3 conv + BN + ReLU + maxpool 2] (1-4-8-16-32-64), optional channel + 7x7 spatial
    attention, flatten, FC (C*s*s)-512-128-64-64 with dropout."""

    def __init__(self, image_size: int, width: float = 1.0, attention: bool = True):
        super().__init__()
        channels = scaled([4, 8, 16, 32, 64], width)
        layers: list[nn.Module] = []
        prev = 1
        for ch in channels:
            layers += [conv_bn_relu(prev, ch), nn.MaxPool2d(2)]
            prev = ch
        self.cnn = nn.Sequential(*layers)
        self.channels, self.map_size = prev, image_size // 32
        self.attention = (nn.Sequential(ChannelAttention(prev, reduction=2), SpatialAttention(prev, 7))
                          if attention else nn.Identity())
        self.fc = mlp([prev * self.map_size ** 2, 512, 128, 64, EMBED], (0.5, 0.3, 0.2))

    def forward(self, frames: Tensor) -> dict[str, Tensor]:
        fmap = self.attention(self.cnn(frames))
        flat = fmap.reshape(-1, self.channels * self.map_size ** 2)
        return {"pooled": fmap.mean(dim=(2, 3)), "vector": self.fc(flat)}


class StudentImageEncoder(nn.Module):
    """3x3 stride-2 conv (1->18) + maxpool, 3 depthwise-separable blocks 18-36-72-144 each with
    maxpool, channel + 5x5 spatial attention, global max pool, FC 144-64-64."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        c = scaled([18, 36, 72, 144], width)
        layers: list[nn.Module] = [conv_bn_relu(1, c[0], stride=2), nn.MaxPool2d(2)]
        for a, b in zip(c[:-1], c[1:]):
            layers += [depthwise_separable(a, b), nn.MaxPool2d(2)]
        self.cnn = nn.Sequential(*layers)
        self.channels = c[-1]
        # Reduction 2 and a 5x5 map conv: at 224x224 this lands on the paper's 0.095M.
        self.attention = nn.Sequential(ChannelAttention(c[-1], reduction=2), SpatialAttention(c[-1], 5))
        self.fc = mlp([c[-1], 64, EMBED], (0.3,))

    def forward(self, frames: Tensor) -> dict[str, Tensor]:
        pooled = self.attention(self.cnn(frames)).amax(dim=(2, 3))
        return {"pooled": pooled, "vector": self.fc(pooled)}


class _ImageModel(BeamModel):
    input_modalities = ("image",)

    def __init__(self, *, num_beams: int, window: int, horizons: int, image_size: int, width: float):
        super().__init__(num_beams=num_beams, window=window, horizons=horizons)
        self.image_size = check_multiple("image_size", image_size, 32, why="5 stride-2 stages")
        self.width = check_width(width)

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"image": (self.window, 1, self.image_size, self.image_size)}

    def forward_features(self, image: Tensor) -> dict[str, Tensor]:
        self.check_inputs((image,))
        frames = image.reshape(-1, 1, self.image_size, self.image_size)  # fold T into the batch
        enc = self.encoder(frames)
        backbone = enc["pooled"].reshape(-1, self.window, self.encoder.channels)
        embedding = self.norm(enc["vector"].reshape(-1, self.window, EMBED))
        return {"backbone": backbone, "embedding": embedding, **self.head(embedding)}


@register_model("image_teacher")
class ImageTeacher(_ImageModel):
    """Paper-1 image teacher: CNN + attention + FC -> LayerNorm -> GRU(64, 64) -> temporal attention
    -> classifier 64-64-64-beams."""

    def __init__(self, *, num_beams: int = 64, window: int = 8, horizons: int = 4, image_size: int = 64,
                 width: float = 1.0):
        super().__init__(num_beams=num_beams, window=window, horizons=horizons, image_size=image_size,
                         width=width)
        self.encoder = TeacherImageEncoder(self.image_size, self.width, attention=True)
        self.norm = nn.LayerNorm(EMBED)
        self.head = RecurrentHead(input_size=EMBED, hidden_size=HIDDEN, num_beams=self.num_beams,
                                  horizons=self.horizons, classifier=(64, 64), classifier_dropout=(0.5, 0.3),
                                  attention="temporal")


@register_model("image_student")
class ImageStudent(_ImageModel):
    """Paper-1 image student: depthwise-separable CNN + attention -> 144-64-64 -> LayerNorm ->
    GRU(64, 64) -> temporal attention -> classifier 64-64-beams."""

    def __init__(self, *, num_beams: int = 64, window: int = 8, horizons: int = 4, image_size: int = 64,
                 width: float = 1.0):
        super().__init__(num_beams=num_beams, window=window, horizons=horizons, image_size=image_size,
                         width=width)
        self.encoder = StudentImageEncoder(self.width)
        self.norm = nn.LayerNorm(EMBED)
        self.head = RecurrentHead(input_size=EMBED, hidden_size=HIDDEN, num_beams=self.num_beams,
                                  horizons=self.horizons, classifier=(64,), classifier_dropout=(0.5,),
                                  attention="temporal")
