"""The names every stage shares, defined once (torch-free, so the board imports them too).

Host code (data synthesis, the importer, models, export, experiments) and device
code (bundle reader, target profiles, runtime, firmware_bench) both import from
here; a second copy of any of these tuples elsewhere is a bug. The manifest's
typed schema lives beside them in :mod:`edgekd.device.manifest`.
"""

from __future__ import annotations

from typing import Literal, get_args

# Lighting conditions, in the order their integer codes are stored (0 = day).
LIGHTING: tuple[str, ...] = ("day", "dusk", "night")
# Weather conditions, in the order their integer codes are stored.
WEATHER: tuple[str, ...] = ("clear", "rain", "fog")
# Every sensor modality a dataset may store, in storage order.
MODALITIES: tuple[str, ...] = ("image", "radar", "lidar", "gps")
# The sensors the runtime switches between (one deployed student each).
RUNTIME_MODALITIES: tuple[str, ...] = ("image", "radar", "lidar")

ArtifactKind = Literal["onnx_fp32", "onnx_int8_qdq", "tflite_fp32", "tflite_fp16", "tflite_int8"]
# Every artifact kind a bundle may hold; the int8 ones are judged by the parity gate.
ARTIFACT_KINDS: tuple[str, ...] = get_args(ArtifactKind)
INT8_KINDS: tuple[str, ...] = ("tflite_int8", "onnx_int8_qdq")
