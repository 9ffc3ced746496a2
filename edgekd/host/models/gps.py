"""A GPS baseline: per-frame MLP 2-64-64 -> LayerNorm -> GRU(64, 64) -> classifier 64-64-beams.

GPS input [B, T, 2] is the user position relative to the base station in metres / 100.
Position alone is a strong beam cue in line of sight; the runtime falls back to
it when camera, radar and LiDAR are all unusable.
"""

from __future__ import annotations

from torch import Tensor, nn

from edgekd.host.models.base import BeamModel, register_model
from edgekd.host.models.blocks import RecurrentHead, mlp, seq_apply

EMBED = 64
HIDDEN = 64


@register_model("gps_baseline")
class GpsBaseline(BeamModel):
    input_modalities = ("gps",)

    def __init__(self, *, num_beams: int = 64, window: int = 8, horizons: int = 4):
        super().__init__(num_beams=num_beams, window=window, horizons=horizons)
        self.embed = mlp([2, 64, EMBED])
        self.norm = nn.LayerNorm(EMBED)
        self.head = RecurrentHead(input_size=EMBED, hidden_size=HIDDEN, num_beams=self.num_beams,
                                  horizons=self.horizons, classifier=(64,), classifier_dropout=(0.2,))

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"gps": (self.window, 2)}

    def forward_features(self, gps: Tensor) -> dict[str, Tensor]:
        self.check_inputs((gps,))
        embedding = self.norm(seq_apply(self.embed, gps, 2, EMBED))
        return {"embedding": embedding, **self.head(embedding)}
