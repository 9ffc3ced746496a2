"""Image-only models of paper 1 (grayscale frames [B, T, 1, S, S] -> beams).

Input: the T grayscale camera frames themselves, as the synthetic camera and the
DeepSense importer store them (``edgekd.host.data.camera.preprocess_image``). Paper 1
feeds binary motion masks instead (blurred frame differences thresholded at 10%
of their max, 7 masks from 8 frames); edgekd has no mask front end, so its image
models see the frames and learn the motion themselves.

Time-distributed CNNs fold T into the batch ([B*T, 1, S, S]) with one reshape.
At paper scale (S = 224) the teacher has 1.762M parameters (the paper's 1.787M
is this plus one more GRU layer, 24,960); the student 0.0944M with its default
int8-friendly front end, 0.0956M in the paper's layout (``stem="conv"``,
``channels=(18, 36, 72, 144)``, ``norm="layer"``; paper 0.095M).

The teacher pools only in as many blocks as it takes to bring the map to about
``final_grid`` x ``final_grid`` (224 -> 7x7 with 5 pools as in the paper, 64 -> 8x8
with 3), so its flatten -> 512 FC keeps its paper size at every image size and the
student stays >= 15x smaller at the default 64x64 profile too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from edgekd.device.errors import EdgekdError
from edgekd.host.models.base import (
    BeamModel,
    check_choice,
    check_int,
    check_multiple,
    check_optional_int,
    check_width,
    register_model,
)
from edgekd.host.models.blocks import (
    NORMS,
    ChannelAttention,
    RecurrentHead,
    SpatialAttention,
    conv_bn_relu,
    depthwise_separable,
    embedding_norm,
    mlp,
    patch_stem,
    scaled,
)

EMBED = 64   # per-frame feature size = GRU input (paper 1)
HIDDEN = 64  # GRU hidden size (paper 1)


STEMS = ("patch", "conv")
PAPER_STUDENT_CHANNELS = (18, 36, 72, 144)
STUDENT_CHANNELS = (16, 32, 64, 144)  # multiples of 16: XNNPACK's int8 depthwise tiles


def pooling_stages(size: int, final_grid: int | None, stages: int) -> int:
    """How many of ``stages`` halvings bring ``size`` closest to ``final_grid`` (all of them when None).

    Ties go to more pooling (less compute). 224 -> 5 (7x7), 64 -> 3 (8x8), 32 -> 2 (8x8).
    """
    if final_grid is None:
        return stages
    return min(range(stages + 1), key=lambda p: (abs(math.log2(size / 2 ** p / final_grid)), -p))


class TeacherImageEncoder(nn.Module):
    """5 x [3x3 conv + BN + ReLU (+ maxpool 2)] (1-4-8-16-32-64), optional channel + 7x7 spatial
    attention, flatten, FC (C*s*s)-512-128-64-64 with dropout.

    The first ``pooling_stages(image_size, final_grid, 5)`` blocks pool (early pooling keeps the
    MACs low), the rest keep their map: the final map is about ``final_grid`` square.
    """

    def __init__(self, image_size: int, width: float = 1.0, attention: bool = True, final_grid: int | None = 7):
        super().__init__()
        channels = scaled([4, 8, 16, 32, 64], width)
        pools = pooling_stages(image_size, final_grid, len(channels))
        layers: list[nn.Module] = []
        prev = 1
        for i, ch in enumerate(channels):
            layers += [conv_bn_relu(prev, ch)] + ([nn.MaxPool2d(2)] if i < pools else [])
            prev = ch
        self.cnn = nn.Sequential(*layers)
        self.channels, self.map_size = prev, image_size // 2 ** pools
        self.attention = (nn.Sequential(ChannelAttention(prev, reduction=2), SpatialAttention(prev, 7))
                          if attention else nn.Identity())
        self.fc = mlp([prev * self.map_size ** 2, 512, 128, 64, EMBED], (0.5, 0.3, 0.2))

    def forward(self, frames: Tensor) -> dict[str, Tensor]:
        fmap = self.attention(self.cnn(frames))
        flat = fmap.reshape(-1, self.channels * self.map_size ** 2)
        return {"pooled": fmap.mean(dim=(2, 3)), "vector": self.fc(flat)}


class StudentImageEncoder(nn.Module):
    """Stem, 3 depthwise-separable blocks c0-c1-c2-c3, channel + 5x5 spatial attention, global max
    pool, FC c3-64-64. Both stems give the same maps (S/4, then S/8, S/16, S/32):

    - ``stem="conv"`` (paper): 3x3 stride-2 conv (1->c0) + maxpool, every block followed by a maxpool;
    - ``stem="patch"`` (default): an 8x8 patch embedding (space-to-depth + 1x1 conv 64->c0) at S/8,
      the first block at stride 1, the next two downsampling with a stride-2 depthwise conv.
      In full int8 on XNNPACK x86 this is ~7x faster than the paper stem and faster than float32
      (the paper stem's 1-channel 3x3 conv at S/2 dominates int8 latency); same final grid.
    """

    def __init__(self, width: float = 1.0, *, stem: str = "patch", channels: Sequence[int] = STUDENT_CHANNELS,
                 image_size: int = 64):
        super().__init__()
        c = scaled(channels, width)
        if stem == "conv":
            layers: list[nn.Module] = [conv_bn_relu(1, c[0], stride=2), nn.MaxPool2d(2)]
            for a, b in zip(c[:-1], c[1:]):
                layers += [depthwise_separable(a, b), nn.MaxPool2d(2)]
        else:
            layers = [patch_stem(1, c[0], patch=8, size=(image_size, image_size))]
            for i, (a, b) in enumerate(zip(c[:-1], c[1:])):
                layers.append(depthwise_separable(a, b, stride=1 if i == 0 else 2))
        self.cnn = nn.Sequential(*layers)
        self.channels = c[-1]
        # Reduction 2 and a 5x5 map conv: at 224x224 this lands on the paper's 0.095M.
        self.attention = nn.Sequential(ChannelAttention(c[-1], reduction=2), SpatialAttention(c[-1], 5))
        self.fc = mlp([c[-1], 64, EMBED], (0.3,))

    def forward(self, frames: Tensor) -> dict[str, Tensor]:
        pooled = self.attention(self.cnn(frames)).amax(dim=(2, 3))
        return {"pooled": pooled, "vector": self.fc(pooled)}


def check_channels(value: object, count: int) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != count:
        raise EdgekdError(f"'channels' must be a list of {count} integers, got {value!r}", field="channels",
                          fix=f"pass channels={list(STUDENT_CHANNELS)}")
    return tuple(check_int(f"channels[{i}]", v) for i, v in enumerate(value))


class _ImageModel(BeamModel):
    input_modalities = ("image",)
    # set by the subclasses (declared here for the type checker: nn.Module attributes are untyped)
    encoder: TeacherImageEncoder | StudentImageEncoder
    head: RecurrentHead

    def __init__(self, *, num_beams: int, window: int, horizons: int, image_size: int, width: float,
                 norm: str):
        super().__init__(num_beams=num_beams, window=window, horizons=horizons)
        self.image_size = check_multiple("image_size", image_size, 32, why="5 stride-2 stages")
        self.width = check_width(width)
        self.norm = embedding_norm(check_choice("norm", norm, NORMS), EMBED)

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
    -> classifier 64-64-64-beams. ``final_grid``: side of the CNN's final map (None: always 5 pools)."""

    def __init__(self, *, num_beams: int = 64, window: int = 8, horizons: int = 4, image_size: int = 64,
                 width: float = 1.0, final_grid: int | None = 7, norm: str = "layer"):
        super().__init__(num_beams=num_beams, window=window, horizons=horizons, image_size=image_size,
                         width=width, norm=norm)
        self.final_grid = check_optional_int("final_grid", final_grid)
        self.encoder = TeacherImageEncoder(self.image_size, self.width, attention=True, final_grid=self.final_grid)
        self.head = RecurrentHead(input_size=EMBED, hidden_size=HIDDEN, num_beams=self.num_beams,
                                  horizons=self.horizons, classifier=(64, 64), classifier_dropout=(0.5, 0.3),
                                  attention="temporal")


@register_model("image_student")
class ImageStudent(_ImageModel):
    """Paper-1 image student: depthwise-separable CNN + attention -> 144-64-64 -> norm ->
    GRU(64, 64) -> temporal attention -> classifier 64-64-beams.

    Defaults are the int8-friendly layout (patch stem, channels 16-32-64-144, BatchNorm before the
    GRU); ``stem="conv", channels=[18, 36, 72, 144], norm="layer"`` is the paper's exact layout.
    """

    def __init__(self, *, num_beams: int = 64, window: int = 8, horizons: int = 4, image_size: int = 64,
                 width: float = 1.0, stem: str = "patch", channels: Sequence[int] = STUDENT_CHANNELS,
                 norm: str = "batch"):
        super().__init__(num_beams=num_beams, window=window, horizons=horizons, image_size=image_size,
                         width=width, norm=norm)
        self.stem = check_choice("stem", stem, STEMS)
        self.encoder = StudentImageEncoder(self.width, stem=self.stem, channels=check_channels(channels, 4),
                                           image_size=self.image_size)
        self.head = RecurrentHead(input_size=EMBED, hidden_size=HIDDEN, num_beams=self.num_beams,
                                  horizons=self.horizons, classifier=(64,), classifier_dropout=(0.5,),
                                  attention="temporal")
