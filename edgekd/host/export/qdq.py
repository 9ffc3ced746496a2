"""ONNX QDQ int8 through ``onnxruntime.quantization.quantize_static`` (for targets on ONNX Runtime).

Calibrated on the same windows as the TFLite int8 file; QDQ format (what
TensorRT and the ORT CPU/XNNPACK kernels fuse), int8 activations and weights,
per-tensor weights: measured on the LiDAR student (x86, 120-180 held-out windows), per-channel
QDQ lost 2.2 / 0.3 top-2 points against fp32 where per-tensor lost 0.1 / -0.6 (the unrolled GRU's
many small Gemms suffer from the extra per-channel requantisation error on ORT's CPU kernels).
Convolution weights are per output channel all the same (``conv_per_channel``), as in the TFLite
file: the depthwise kernels and the students' 1x1-conv logits layer (``int8_rewrite``) need it; with
per-tensor conv weights the trained image student's QDQ lost 2.0 top-2 points, per channel -0.25
(603 held-out windows).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgekd.device.errors import EdgekdError

log = logging.getLogger(__name__)


def quantize_onnx_qdq(onnx_path: str | os.PathLike, out_path: str | os.PathLike,
                      calibration: Sequence[dict[str, np.ndarray]], *, symmetric_activations: bool = False) -> Path:
    """Write a QDQ int8 copy of ``onnx_path`` calibrated on ``calibration`` (batch-1 input dicts).

    ``symmetric_activations`` forces zero-point-0 activations, which TensorRT's explicit-quantisation
    path requires; asymmetric activations keep more resolution for CPU execution providers. Weights are
    per tensor except Conv weights (per output channel, see the module docstring); ORT's global
    ``per_channel=True`` is not offered: on the radar student it fails inside ORT 1.31's quantiser
    (``ValueError: The truth value of an array ... is ambiguous``).
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter(calibration)

        def get_next(self):
            return next(self._items, None)

    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="edgekd-qdq-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            with contextlib.redirect_stdout(io.StringIO()), _quiet_root_warnings():
                quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
                quantize_static(str(prepared), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                                per_channel=False, calibrate_method=CalibrationMethod.MinMax,
                                extra_options={"ActivationSymmetric": symmetric_activations,
                                               "WeightSymmetric": True,
                                               "TensorQuantOverrides": conv_per_channel(prepared)})
        except Exception as exc:  # ORT quantisation raises many types
            raise EdgekdError(f"ONNX QDQ quantisation failed: {type(exc).__name__}: {exc}", file=onnx_path,
                              fix="export without onnx_int8_qdq (a target profile without it) or fix the op") from None
    if not out_path.is_file():
        raise EdgekdError("ONNX QDQ quantisation wrote no file", file=out_path)
    return out_path


def conv_per_channel(onnx_path: str | os.PathLike) -> dict[str, list[dict]]:
    """ORT ``TensorQuantOverrides`` that quantise every Conv weight per output channel (axis 0) while
    ``per_channel=False`` keeps the Gemm/MatMul weights per tensor."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    return {node.input[1]: [{"axis": 0}] for node in graph.node
            if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in initializers}


@contextlib.contextmanager
def _quiet_root_warnings():
    """ORT's quantiser logs on the root logger every bias copy (info) and once per fused GRU Gemm a warning
    ("Bias ... is not constant"): dozens of lines of advice for hand-written graphs, not problems of this
    export."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)
