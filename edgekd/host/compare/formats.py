"""The rows of a comparison: the formats, in output order, and one :class:`Candidate` per format of a student."""

from __future__ import annotations

import array
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from edgekd.device.errors import EdgekdError

log = logging.getLogger(__name__)

SCHEMA = "edgekd-compare/1"
TEACHER = "teacher_torch_fp32"
# Row order in every output; tflite_fp16 is listed only when the bundle ships it.
FORMATS: dict[str, str] = {
    TEACHER: "PyTorch fp32 (teacher)",
    "torch_fp32": "PyTorch fp32",
    "onnx_fp32": "ONNX Runtime fp32",
    "onnx_int8_qdq": "ONNX Runtime QDQ int8",
    "tflite_fp32": "TFLite fp32",
    "tflite_fp16": "TFLite fp16",
    "tflite_int8": "TFLite int8",
}
OPTIONAL_FORMATS = ("tflite_fp16",)
ARTIFACT_FORMATS = ("onnx_fp32", "onnx_int8_qdq", "tflite_fp32", "tflite_fp16", "tflite_int8")

TIMING = ("end to end per call (float32 window in, float32 logits out; int8 quantise + invoke + dequantise), "
          "steady state: blocks of back-to-back calls per format, formats interleaved round-robin per round")

JSON_NAME, CSV_NAME, MD_NAME, PNG_NAME = "compare.json", "compare.csv", "compare.md", "compare_latency_cdf.png"

Runner = Callable[[dict[str, np.ndarray]], np.ndarray]

@dataclasses.dataclass
class Candidate:
    """One row: a format of one student, its runner while loaded, and what was measured."""

    student: str
    key: str
    status: str = "ok"
    source: str | None = None
    size_bytes: int | None = None
    size_kind: str | None = None     # "file" or "weights" (PyTorch: parameter + buffer bytes)
    run: Runner | None = None
    latencies_ns: array.array = dataclasses.field(default_factory=lambda: array.array("q"))  # steady state
    switch_ns: array.array = dataclasses.field(default_factory=lambda: array.array("q"))     # first after a switch
    outputs: list = dataclasses.field(default_factory=list)
    backend: Any = None              # artifact formats: the runtime Backend behind ``run`` (for the phase split)
    phases: dict[str, Any] | None = None
    energy: dict[str, Any] = dataclasses.field(default_factory=dict)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def label(self) -> str:
        return FORMATS[self.key]

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.run is not None

    def fail(self, exc: BaseException) -> None:
        text = exc.what if isinstance(exc, EdgekdError) else f"{type(exc).__name__}: {exc}"
        self.status = "error: " + " ".join(str(text).split())[:200]
        self.run = None

