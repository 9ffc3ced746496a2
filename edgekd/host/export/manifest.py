"""The bundle manifest (docs/CONTRACTS.md): artifact entries read back from the produced files.

Every field of an artifact entry (names, shapes, dtypes, scale and zero
point) is read from the file by its interpreter after writing, never copied
from what the exporter intended, so the manifest describes what is really in
the bundle.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgekd import __version__
from edgekd.device.bundle import BUNDLE_FORMAT
from edgekd.device.io import sha256_file

# Axis meaning of each modality's model input (batch first); kept by the converter on purpose.
LAYOUTS = {"image": "NTCHW", "radar": "NTCRA", "lidar": "NTF", "gps": "NTF"}
OUTPUT_LAYOUT = "NHB"  # batch, horizon, beam
TOOLS = ("torch", "onnx", "onnxruntime", "onnxslim", "tensorflow", "tf-keras", "onnx2tf", "ai-edge-litert",
         "numpy")


def tool_versions() -> dict[str, str | None]:
    versions = {}
    for tool in TOOLS:
        try:
            versions[tool] = importlib.metadata.version(tool)
        except importlib.metadata.PackageNotFoundError:
            versions[tool] = None
    return versions


def _quant(details: dict) -> dict | None:
    scale, zero_point = details["quantization"]
    if np.dtype(details["dtype"]).kind not in "iu" or not scale:
        return None
    return {"scale": float(scale), "zero_point": int(zero_point)}


def tflite_entry(bundle_dir: Path, rel_path: str, *, precision: str, input_names: Sequence[str],
                 ops: dict[str, int]) -> dict:
    from edgekd.device.runtime.backends import TFLiteBackend

    path = bundle_dir / rel_path
    backend = TFLiteBackend(path, input_names=input_names, use_xnnpack=False)
    inputs, outputs = backend.io_details()
    return {
        "path": rel_path, "sha256": sha256_file(path), "size": path.stat().st_size, "format": "tflite",
        "precision": precision,
        "inputs": [{"name": name, "tensor": d["name"], "shape": [int(s) for s in d["shape"]],
                    "dtype": np.dtype(d["dtype"]).name, "layout": LAYOUTS.get(name, "N..."), "quantization": _quant(d)}
                   for name, d in zip(input_names, inputs)],
        "outputs": [{"name": "logits", "tensor": d["name"], "shape": [int(s) for s in d["shape"]],
                     "dtype": np.dtype(d["dtype"]).name, "layout": OUTPUT_LAYOUT, "quantization": _quant(d)}
                    for d in outputs],
        "ops": ops,
    }


def onnx_entry(bundle_dir: Path, rel_path: str, *, precision: str, ops: dict[str, int]) -> dict:
    import onnx

    path = bundle_dir / rel_path
    proto = onnx.load(str(path))
    initializers = {i.name for i in proto.graph.initializer}

    def tensors(values, layout_of):
        out = []
        for v in values:
            if v.name in initializers:
                continue
            tensor_type = v.type.tensor_type
            out.append({"name": v.name, "shape": [int(d.dim_value) for d in tensor_type.shape.dim],
                        "dtype": np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).name,
                        "layout": layout_of(v.name), "quantization": None})
        return out

    return {
        "path": rel_path, "sha256": sha256_file(path), "size": path.stat().st_size, "format": "onnx",
        "precision": precision,
        "inputs": tensors(proto.graph.input, lambda n: LAYOUTS.get(n, "N...")),
        "outputs": tensors(proto.graph.output, lambda n: OUTPUT_LAYOUT),
        "ops": ops,
        "opset": int(next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)),
    }


def manifest_skeleton(target: dict) -> dict:
    return {
        "format": BUNDLE_FORMAT,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "edgekd_version": __version__,
        "versions": tool_versions(),
        "target": target,
        "students": {},
    }


def relative(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()
