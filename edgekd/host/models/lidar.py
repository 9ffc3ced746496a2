"""LiDAR GRU models of paper 2 (Jiang et al.'s LiDAR beam tracker), input [B, T, 216].

Linear 216->64, ReLU, dropout, GRU(64, H), Linear H->beams: H = 128 (teacher,
exactly 96,640 parameters) or H = 32 (student, exactly 25,408 parameters).
As in the reference loader the padded future frames are zero LiDAR scans, so
their embedding is relu(bias) of the first layer: a constant, folded on export.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from edgekd.host.models.base import BeamModel, check_int, register_model
from edgekd.host.models.blocks import RecurrentHead, seq_apply

EMBED = 64


class _LidarGRU(BeamModel):
    input_modalities = ("lidar",)

    def __init__(self, *, num_beams: int, window: int, horizons: int, lidar_bins: int, hidden_size: int,
                 dropout: float):
        super().__init__(num_beams=num_beams, window=window, horizons=horizons)
        self.lidar_bins = check_int("lidar_bins", lidar_bins)
        self.hidden_size = check_int("hidden_size", hidden_size)
        self.embed = nn.Linear(self.lidar_bins, EMBED)
        self.dropout = nn.Dropout(dropout)
        self.head = RecurrentHead(input_size=EMBED, hidden_size=self.hidden_size, num_beams=self.num_beams,
                                  horizons=self.horizons, classifier=())

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"lidar": (self.window, self.lidar_bins)}

    def forward_features(self, lidar: Tensor) -> dict[str, Tensor]:
        self.check_inputs((lidar,))
        embedding = F.relu(seq_apply(self.embed, lidar, self.lidar_bins, EMBED))
        # A zero scan embeds to relu(bias); no dropout on it: "no observation" is not noisy.
        out = self.head(self.dropout(embedding), future_input=F.relu(self.embed.bias))
        return {"embedding": embedding, **out}


@register_model("lidar_teacher")
class LidarTeacher(_LidarGRU):
    """Paper-2 teacher: Linear 216->64, dropout, GRU(64, 128), Linear 128->64 (96,640 parameters)."""

    def __init__(self, *, num_beams: int = 64, window: int = 8, horizons: int = 4, lidar_bins: int = 216,
                 hidden_size: int = 128, dropout: float = 0.2):
        super().__init__(num_beams=num_beams, window=window, horizons=horizons, lidar_bins=lidar_bins,
                         hidden_size=hidden_size, dropout=dropout)


@register_model("lidar_student")
class LidarStudent(_LidarGRU):
    """Paper-2 student: the teacher with hidden size 32 (25,408 parameters)."""

    def __init__(self, *, num_beams: int = 64, window: int = 8, horizons: int = 4, lidar_bins: int = 216,
                 hidden_size: int = 32, dropout: float = 0.2):
        super().__init__(num_beams=num_beams, window=window, horizons=horizons, lidar_bins=lidar_bins,
                         hidden_size=hidden_size, dropout=dropout)
