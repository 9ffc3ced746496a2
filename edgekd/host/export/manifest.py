"""The writing side of the bundle manifest (the schema: :class:`edgekd.device.manifest.Manifest`).

Every field of an artifact entry (names, shapes, dtypes, scale and zero
point) is read from the file by its interpreter after writing, never copied
from what the exporter intended, so the manifest describes what is really in
the bundle. Tensor entries are built as :class:`~edgekd.device.manifest.TensorSpec`;
:func:`checked_manifest` passes the finished manifest through the dataclass that
the reader uses, so the writer cannot ship a manifest the board would refuse.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgekd import __version__
from edgekd.device.errors import EdgekdError
from edgekd.device.io import sha256_file
from edgekd.device.manifest import BUNDLE_FORMAT, Manifest, Quantization, TensorSpec, manifest_problems

# Axis meaning of each modality's model input (batch first); kept by the converter on purpose.
LAYOUTS = {"image": "NTCHW", "radar": "NTCRA", "lidar": "NTF", "gps": "NTF"}
OUTPUT_LAYOUT = "NHB"  # batch, horizon, beam
TOOLS = ("torch", "onnx", "onnxruntime", "onnxslim", "tensorflow", "tf-keras", "onnx2tf", "ai-edge-litert",
         "numpy")


def tool_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for tool in TOOLS:
        try:
            versions[tool] = importlib.metadata.version(tool)
        except importlib.metadata.PackageNotFoundError:
            versions[tool] = None
    return versions


def _quant(details: dict) -> Quantization | None:
    scale, zero_point = details["quantization"]
    if np.dtype(details["dtype"]).kind not in "iu" or not scale:
        return None
    return Quantization(scale=float(scale), zero_point=int(zero_point))


def _tflite_tensor(name: str, details: dict, layout: str) -> dict:
    return TensorSpec(name=name, tensor=details["name"], shape=[int(s) for s in details["shape"]],
                      dtype=np.dtype(details["dtype"]).name, layout=layout, quantization=_quant(details)).to_dict()


def tflite_entry(bundle_dir: Path, rel_path: str, *, precision: str, input_names: Sequence[str],
                 ops: dict[str, int]) -> dict:
    from edgekd.device.runtime.backends import TFLiteBackend

    path = bundle_dir / rel_path
    backend = TFLiteBackend(path, input_names=input_names, use_xnnpack=False)
    inputs, outputs = backend.io_details()
    return {
        "path": rel_path, "sha256": sha256_file(path), "size": path.stat().st_size, "format": "tflite",
        "precision": precision,
        "inputs": [_tflite_tensor(name, d, LAYOUTS.get(name, "N...")) for name, d in zip(input_names, inputs)],
        "outputs": [_tflite_tensor("logits", d, OUTPUT_LAYOUT) for d in outputs],
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
            out.append(TensorSpec(
                name=v.name, shape=[int(d.dim_value) for d in tensor_type.shape.dim],
                dtype=np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).name,
                layout=layout_of(v.name), quantization=None).to_dict())
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


def checked_manifest(manifest: dict) -> Manifest:
    """``manifest`` as the typed :class:`Manifest` the reader checks; our own schema break is an internal error."""
    problems = manifest_problems(manifest)
    if problems:  # our own writer broke the contract: never ship that
        raise EdgekdError("internal error: the manifest breaks the bundle schema: " + "; ".join(problems),
                          fix="report this to the edgekd maintainers")
    return Manifest.from_dict(manifest, source="<exporter>")


def relative(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()
