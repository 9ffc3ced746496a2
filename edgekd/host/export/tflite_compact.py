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

It also undoes what onnx2tf adds around a Split and writes what the schema
lets it leave out: STRIDED_SLICEs that cut one tensor into consecutive pieces
become one SPLIT / SPLIT_V (onnx2tf emits a slice per Split output: 3 per
unrolled GRU step), tensors without data use buffer 0 (the empty sentinel)
instead of an empty buffer each, and ``has_rank`` is dropped where the shape
already gives the rank.

The file is then written with identical sub-objects stored once and
referenced from each user: shape and index vectors, quantisation tables,
operator option tables and equal tensor tables. Only the
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
        if isinstance(v, _Shared):
            return v.key
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
        # Equal tensor tables (same shape, type, quantisation, no name, no data: e.g. every step's sigmoid
        # output) are one table listed at several indices; the interpreter still makes a tensor per index.
        subgraph.tensors = [_Shared(t, _content_key(t), written) for t in subgraph.tensors]


def compact_tflite(blob: bytes) -> bytes:
    """Rewrite a ``.tflite`` without what no interpreter reads; same graph, same outputs."""
    model = read_model(blob)
    _drop_internal_tensor_names(model)
    _drop_empty_quantization(model)
    _merge_partitioning_slices(model)
    _drop_unused_tensors(model)
    _point_activations_at_buffer_zero(model)
    _drop_unused_buffers(model)
    _drop_redundant_ranks(model)
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


# ------------------------------------------------------------ graph rewrites (same arithmetic)

def _merge_partitioning_slices(model: Any) -> None:
    """STRIDED_SLICEs that together cut one tensor into consecutive pieces along one axis -> one SPLIT
    (equal pieces) or SPLIT_V. onnx2tf lowers every ONNX Split to one STRIDED_SLICE per output (an
    unrolled GRU: its input gates, each step's r/z pair); a split is one operator instead of n, same
    bytes out (int8 slices and splits copy, they never requantise)."""
    schema = _schema()
    for subgraph in model.subgraphs:
        groups: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
        for position, op in enumerate(subgraph.operators):
            cut = _slice_cut(model, subgraph, op, schema)
            if cut is not None:
                axis, start, stop = cut
                groups.setdefault((int(op.inputs[0]), axis), []).append((start, stop, position))
        replaced: dict[int, Any] = {}
        for (source, axis), candidates in groups.items():
            cuts = _partition(sorted(candidates), 0, int(subgraph.tensors[source].shape[axis]))
            if cuts is not None and len(cuts) >= 2:
                first = min(position for _, _, position in cuts)
                outputs = [int(subgraph.operators[p].outputs[0]) for _, _, p in cuts]
                sizes = [stop - start for start, stop, _ in cuts]
                replaced[first] = _split_operator(model, subgraph, source, axis, sizes, outputs, schema)
                replaced.update({p: None for _, _, p in cuts if p != first})
        if replaced:
            subgraph.operators = [replaced.get(i, op) for i, op in enumerate(subgraph.operators)
                                  if replaced.get(i, op) is not None]


def _builtin_code(model: Any, op: Any) -> int:
    code = model.operatorCodes[op.opcodeIndex]
    return max(int(code.builtinCode), int(code.deprecatedBuiltinCode))


def _const_ints(model: Any, subgraph: Any, index: int) -> np.ndarray | None:
    tensor = subgraph.tensors[index]
    data = model.buffers[tensor.buffer].data
    if data is None or len(data) == 0 or tensor.type != _schema().TensorType.INT32:
        return None
    return np.frombuffer(np.asarray(data, dtype=np.uint8).tobytes(), dtype="<i4")


def _slice_cut(model: Any, subgraph: Any, op: Any, schema) -> tuple[int, int, int] | None:
    """(axis, start, stop) of a unit-stride STRIDED_SLICE that keeps every other axis whole, else None."""
    if _builtin_code(model, op) != schema.BuiltinOperator.STRIDED_SLICE or len(op.inputs) != 4:
        return None
    options = op.builtinOptions
    if options is None or options.ellipsisMask or options.newAxisMask or options.shrinkAxisMask or \
            getattr(options, "offset", False):
        return None
    source, output = subgraph.tensors[op.inputs[0]], subgraph.tensors[op.outputs[0]]
    if source.type != output.type or not _same_quantization(source.quantization, output.quantization):
        return None  # a slice that requantised could not become a split's output
    begin, end, strides = (_const_ints(model, subgraph, int(i)) for i in op.inputs[1:])
    shape = [int(d) for d in source.shape] if source.shape is not None else []
    if begin is None or end is None or strides is None or not shape or min(shape) < 1 or \
            not len(begin) == len(end) == len(strides) == len(shape) or np.any(strides != 1):
        return None
    cut = [(axis, start, stop) for axis, (start, stop) in enumerate(_slice_bounds(options, begin, end, shape))
           if (start, stop) != (0, shape[axis])]
    if len(cut) != 1 or cut[0][1] >= cut[0][2]:
        return None
    axis, start, stop = cut[0]
    dynamic = source.shapeSignature is not None and len(source.shapeSignature) == len(shape) and \
        source.shapeSignature[axis] < 0
    expected = shape[:axis] + [stop - start] + shape[axis + 1:]
    return None if dynamic or list(output.shape) != expected else cut[0]


def _slice_bounds(options: Any, begin: np.ndarray, end: np.ndarray, shape: list[int]) -> list[tuple[int, int]]:
    """[start, stop) per axis of a unit-stride slice (masks, negative and out-of-range bounds resolved)."""
    def resolve(value: int, dim: int) -> int:
        return min(max(value + dim if value < 0 else value, 0), dim)

    return [(0 if options.beginMask >> axis & 1 else resolve(int(begin[axis]), dim),
             dim if options.endMask >> axis & 1 else resolve(int(end[axis]), dim))
            for axis, dim in enumerate(shape)]


def _same_quantization(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return all(np.array_equal(np.asarray(getattr(a, f) if getattr(a, f) is not None else []),
                              np.asarray(getattr(b, f) if getattr(b, f) is not None else []))
               for f in ("scale", "zeroPoint")) and a.quantizedDimension == b.quantizedDimension


def _partition(cuts: list[tuple[int, int, int]], edge: int, dim: int) -> list[tuple[int, int, int]] | None:
    """(start, stop, op) cuts, sorted, that cover edge..dim back to back (other slices of the same tensor,
    e.g. an overlapping window, stay as they are); None if there is no such chain."""
    if edge == dim:
        return []
    for cut in cuts:
        if cut[0] == edge:
            rest = _partition(cuts, cut[1], dim)
            if rest is not None:
                return [cut] + rest
    return None


def _split_operator(model: Any, subgraph: Any, source: int, axis: int, sizes: list[int], outputs: list[int],
                    schema) -> Any:
    op = schema.OperatorT()
    axis_tensor = _int32_constant(model, subgraph, np.array(axis, dtype=np.int32))
    if len(set(sizes)) == 1:  # XNNPACK runs SPLIT (2-4 outputs); SPLIT_V only in the builtin kernels
        code, op.inputs = schema.BuiltinOperator.SPLIT, [axis_tensor, source]
        op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.SplitOptions, schema.SplitOptionsT()
    else:
        size_tensor = _int32_constant(model, subgraph, np.array(sizes, dtype=np.int32))
        code, op.inputs = schema.BuiltinOperator.SPLIT_V, [source, size_tensor, axis_tensor]
        op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.SplitVOptions, schema.SplitVOptionsT()
    op.builtinOptions.numSplits = len(sizes)
    op.inputs, op.outputs = np.array(op.inputs, dtype=np.int32), np.array(outputs, dtype=np.int32)
    # Kernel versions as the converter assigns them: 1 for float, 2 for int8 (SPLIT and SPLIT_V alike).
    version = 2 if subgraph.tensors[source].type == schema.TensorType.INT8 else 1
    op.opcodeIndex = _opcode_index(model, code, version, schema)
    return op


def _int32_constant(model: Any, subgraph: Any, value: np.ndarray) -> int:
    """Index of a constant int32 tensor holding ``value`` (an existing equal one, else a new one)."""
    for index, tensor in enumerate(subgraph.tensors):
        data = _const_ints(model, subgraph, index)
        if data is not None and tensor.shape is not None and list(tensor.shape) == list(value.shape) \
                and np.array_equal(data, value.reshape(-1)) and tensor.quantization is None:
            return index
    schema = _schema()
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(value.astype("<i4").tobytes(), dtype=np.uint8).copy()
    model.buffers.append(buffer)
    tensor = schema.TensorT()
    tensor.shape, tensor.type = np.array(value.shape, dtype=np.int32), schema.TensorType.INT32
    tensor.buffer, tensor.hasRank = len(model.buffers) - 1, True
    subgraph.tensors.append(tensor)
    return len(subgraph.tensors) - 1


def _opcode_index(model: Any, code: int, version: int, schema) -> int:
    for index, entry in enumerate(model.operatorCodes):
        if max(int(entry.builtinCode), int(entry.deprecatedBuiltinCode)) == code and entry.version == version:
            return index
    entry = schema.OperatorCodeT()
    # deprecated_builtin_code is an int8: codes above 127 are stored as 127 (PLACEHOLDER_FOR_GREATER_OP_CODES).
    entry.builtinCode, entry.deprecatedBuiltinCode, entry.version = code, min(code, 127), version
    model.operatorCodes.append(entry)
    return len(model.operatorCodes) - 1


def _drop_unused_tensors(model: Any) -> None:
    """Remove tensors nothing refers to (operators, graph inputs/outputs, signatures): e.g. the bounds of
    merged slices. Indices are renumbered everywhere they appear."""
    for index, subgraph in enumerate(model.subgraphs):
        signatures = [entry for s in model.signatureDefs or [] if s.subgraphIndex == index
                      for entry in list(s.inputs or []) + list(s.outputs or [])]
        used = {i for op in subgraph.operators for i in _indices(op.inputs, op.outputs, op.intermediates)}
        used |= set(_indices(subgraph.inputs, subgraph.outputs)) | {int(e.tensorIndex) for e in signatures}
        used.discard(-1)  # an omitted optional input
        if len(used) == len(subgraph.tensors):
            continue
        new_index = {old: new for new, old in enumerate(sorted(used))}
        new_index[-1] = -1
        subgraph.tensors = [subgraph.tensors[old] for old in sorted(used)]
        for op in subgraph.operators:
            op.inputs, op.outputs = _renumber(op.inputs, new_index), _renumber(op.outputs, new_index)
            op.intermediates = _renumber(op.intermediates, new_index)
        subgraph.inputs = _renumber(subgraph.inputs, new_index)
        subgraph.outputs = _renumber(subgraph.outputs, new_index)
        for entry in signatures:
            entry.tensorIndex = new_index[int(entry.tensorIndex)]


def _indices(*arrays) -> list[int]:
    return [int(i) for values in arrays if values is not None for i in values]


def _renumber(values, new_index: dict[int, int]):
    return None if values is None else np.array([new_index[int(i)] for i in values], dtype=np.int32)


def _point_activations_at_buffer_zero(model: Any) -> None:
    """Tensors without data use buffer 0, the schema's empty sentinel, instead of an empty buffer each:
    the interpreter only asks whether a tensor's buffer has data (``buffer() == 0`` means none)."""
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            data = model.buffers[tensor.buffer].data
            if data is None or len(data) == 0:
                tensor.buffer = 0


def _drop_redundant_ranks(model: Any) -> None:
    """``has_rank`` only tells a scalar from an unranked tensor when the shape is empty; no runtime reads
    it for a tensor with a shape (the interpreter never does), so it is kept for empty shapes only."""
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            if tensor.shape is not None and len(tensor.shape) > 0:
                tensor.hasRank = False


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
