"""Post-conversion compaction of ``.tflite`` flatbuffers, and where their bytes go.

The TF Lite converter keeps every intermediate tensor's TF name (long
``model_9/tf.__operators__.add_22/AddV2;...`` strings: 8-13 KiB per student,
as much as the LiDAR student's int8 weights) and writes an empty
quantisation table on every float tensor. Neither is read by an interpreter:
kernels and signature defs refer to tensors by index. ``compact_tflite``
rewrites the flatbuffer without them (and without buffers no tensor uses),
keeping the graph's input and output tensor names, the signature defs and the
metadata; the arithmetic is untouched, so outputs stay bit-exact (checked at
export time and by the tests).

``tflite_size_breakdown`` splits a file's size into constant data, tensor
names, quantisation tables, metadata and the rest of the flatbuffer
structure (tensor/operator tables, shapes), for the export log and the
benchmark table.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

TFLITE_FILE_IDENTIFIER = b"TFL3"


def _schema():
    # The flatbuffer schema as generated Python: shipped with ai-edge-litert; TF has the same module.
    for module in ("ai_edge_litert.schema_py_generated", "tensorflow.lite.python.schema_py_generated"):
        try:
            return importlib.import_module(module)
        except ImportError:
            continue
    raise ImportError("no TFLite flatbuffer schema module (pip install ai-edge-litert)")


def read_model(blob: bytes) -> Any:
    """A ``.tflite`` file's bytes -> the schema's mutable ``ModelT`` object tree."""
    schema = _schema()
    if not schema.Model.ModelBufferHasIdentifier(blob, 0):
        raise ValueError("not a TFLite flatbuffer (file identifier is not TFL3)")
    model = schema.ModelT.InitFromPackedBuf(bytearray(blob), 0)
    if any(getattr(b, "offset", 0) for b in model.buffers or []):
        raise ValueError("TFLite files with external buffer offsets (> 2 GiB models) are not supported")
    return model


def write_model(model: Any) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1 << 16)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_FILE_IDENTIFIER)
    return bytes(builder.Output())


def compact_tflite(blob: bytes) -> bytes:
    """Rewrite a ``.tflite`` without what no interpreter reads; same graph, same outputs."""
    model = read_model(blob)
    _drop_internal_tensor_names(model)
    _drop_empty_quantization(model)
    _drop_unused_buffers(model)
    model.description = None  # "MLIR Converted."
    return write_model(model)


def _drop_internal_tensor_names(model: Any) -> None:
    # Graph inputs/outputs keep their names: backends match a model without signature defs by name.
    for subgraph in model.subgraphs:
        keep = {int(i) for i in list(subgraph.inputs) + list(subgraph.outputs)}
        for index, tensor in enumerate(subgraph.tensors):
            if index not in keep:
                tensor.name = None


def _drop_empty_quantization(model: Any) -> None:
    def empty(values) -> bool:
        return values is None or len(values) == 0

    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            q = tensor.quantization
            if q is not None and all(empty(getattr(q, f)) for f in ("scale", "zeroPoint", "min", "max")) \
                    and q.details is None:
                tensor.quantization = None


def _drop_unused_buffers(model: Any) -> None:
    """Remove buffers that no tensor or metadata entry points at (buffer 0, the empty sentinel, stays)."""
    used = {0}
    for subgraph in model.subgraphs:
        used |= {int(t.buffer) for t in subgraph.tensors}
    used |= {int(m.buffer) for m in model.metadata or []}
    if len(used) == len(model.buffers):
        return
    new_index = {old: new for new, old in enumerate(sorted(used))}
    model.buffers = [model.buffers[old] for old in sorted(used)]
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            tensor.buffer = new_index[int(tensor.buffer)]
    for entry in model.metadata or []:
        entry.buffer = new_index[int(entry.buffer)]
    if model.metadataBuffer is not None:
        model.metadataBuffer = [new_index[int(b)] for b in model.metadataBuffer if int(b) in new_index]


def tflite_size_breakdown(blob: bytes) -> dict[str, int]:
    """Bytes of a ``.tflite`` by kind: constant data, tensor names, quantisation tables, metadata, rest."""
    model = read_model(blob)
    metadata_buffers = {int(m.buffer) for m in model.metadata or []}
    data = metadata = 0
    for index, buffer in enumerate(model.buffers):
        size = 0 if buffer.data is None else len(buffer.data)
        if index in metadata_buffers:
            metadata += size
        else:
            data += size
    names = quantization = 0
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            names += len(tensor.name or b"")
            q = tensor.quantization
            if q is not None:
                quantization += sum(np.asarray(getattr(q, f)).nbytes for f in ("scale", "zeroPoint", "min", "max")
                                    if getattr(q, f) is not None)
    total = len(blob)
    return {"total": total, "constant_data": data, "tensor_names": names, "quantization": quantization,
            "metadata": metadata, "structure": total - data - names - quantization - metadata}
