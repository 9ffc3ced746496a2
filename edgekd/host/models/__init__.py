"""Model zoo: one registry, one family per modality, export-friendly blocks.

``create_model(name, **kwargs)`` builds any registered model; every model is a
:class:`BeamModel` (inputs per modality -> logits [B, horizons, num_beams]) that
exposes its named features through ``forward_features``.
"""

from edgekd.host.models.base import BeamModel, create_model, list_models, model_arguments, register_model
from edgekd.host.models.blocks import (
                                  ChannelAttention,
                                  MultiHeadSelfAttention,
                                  RecurrentHead,
                                  SpatialAttention,
                                  TemporalAttention,
                                  UnrolledGRU,
)

# Importing the families registers their models.
from edgekd.host.models import fusion, gps, image, lidar, radar  # noqa: E402,F401  isort: skip

__all__ = ["BeamModel", "ChannelAttention", "MultiHeadSelfAttention", "RecurrentHead", "SpatialAttention",
           "TemporalAttention", "UnrolledGRU", "create_model", "list_models", "model_arguments",
           "register_model"]
