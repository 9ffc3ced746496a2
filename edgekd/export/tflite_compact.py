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

The file is then written with identical sub-objects stored once and
referenced from each user: shape and index vectors, quantisation tables,
operator option tables and the empty buffer entries of activations. Only the
encoding changes (the decoded model is the same object tree): flatbuffer
offsets are plain references, as the C++ builder's shared strings and vtables.
An unrolled GRU repeats the same shapes, scales and options at every step.
Constant data (buffer bytes) is never aliased between buffers.

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


def write_model(model: Any, *, share: bool = False) -> bytes:
    """Serialise a ``ModelT``; ``share=True`` writes identical vectors, strings and tables once
    (this consumes ``model``: its quantisation and option objects are wrapped for the writer)."""
    import flatbuffers

    if not share:
        builder = flatbuffers.Builder(1 << 16)
    else:
        builder = _sharing_builder_class()(1 << 16)
        _share_tables(model)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_FILE_IDENTIFIER)
    return bytes(builder.Output())


def _sharing_builder_class():
    import flatbuffers

    class SharingBuilder(flatbuffers.Builder):
        """A builder that writes each distinct numeric vector or string once and reuses its offset."""

        def __init__(self, size: int):
            super().__init__(size)
            self.written: dict[tuple, int] = {}

        def CreateNumpyVector(self, x):  # noqa: N802 - flatbuffers' API name
            if x.dtype == np.uint8:  # buffer data and custom options: raw bytes stay unshared
                return super().CreateNumpyVector(x)
            key = ("v", x.dtype.str, x.shape, x.tobytes())
            if key not in self.written:
                self.written[key] = super().CreateNumpyVector(x)
            return self.written[key]

        def CreateString(self, s, encoding="utf-8", errors="strict"):  # noqa: N802
            key = ("s", s if isinstance(s, bytes) else s.encode(encoding, errors))
            if key not in self.written:
                self.written[key] = super().CreateString(s, encoding, errors)
            return self.written[key]

    return SharingBuilder


class _Shared:
    """Stands in for a schema object whose equal copies should be written once (same ``Pack`` API)."""

    def __init__(self, obj: Any, key: tuple, written: dict):
        self.obj, self.key, self.written = obj, key, written

    def Pack(self, builder):  # noqa: N802 - called by the generated Pack of the parent table
        if self.key not in self.written:
            self.written[self.key] = self.obj.Pack(builder)
        return self.written[self.key]


def _content_key(obj: Any) -> tuple:
    """A hashable key of a generated ``...T`` object's fields (numpy arrays by dtype, shape and bytes)."""
    def value(v):
        if isinstance(v, np.ndarray):
            return ("nd", v.dtype.str, v.shape, v.tobytes())
        if isinstance(v, float):  # by bits: -0.0 == 0.0 would otherwise merge two different tables
            return ("f", np.float64(v).tobytes())
        if isinstance(v, (list, tuple)):
            return tuple(value(x) for x in v)
        if hasattr(v, "__dict__"):
            return (type(v).__name__, _content_key(v))
        return v

    return (type(obj).__name__,) + tuple((k, value(v)) for k, v in sorted(vars(obj).items()))


def _share_tables(model: Any) -> None:
    written: dict[tuple, int] = {}
    empty = ("empty buffer",)
    model.buffers = [_Shared(b, empty, written) if b.data is None or len(b.data) == 0 else b
                     for b in model.buffers]
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            if tensor.quantization is not None:
                tensor.quantization = _Shared(tensor.quantization, _content_key(tensor.quantization), written)
        for op in subgraph.operators:
            if op.builtinOptions is not None:
                op.builtinOptions = _Shared(op.builtinOptions, _content_key(op.builtinOptions), written)


def compact_tflite(blob: bytes) -> bytes:
    """Rewrite a ``.tflite`` without what no interpreter reads; same graph, same outputs."""
    model = read_model(blob)
    _drop_internal_tensor_names(model)
    _drop_empty_quantization(model)
    _drop_unused_buffers(model)
    model.description = None  # "MLIR Converted."
    return write_model(model, share=True)


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
