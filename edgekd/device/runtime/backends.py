"""Interpreter wrappers: one :class:`Backend` per loaded bundle artifact.

TORCH-FREE and TENSORFLOW-FREE by contract (a board has numpy and one
interpreter). Used by the export parity gate, the multi-student runtime and
``firmware_bench``. A backend takes float32 model inputs (batch 1) keyed by
modality, quantises them with the scale/zero-point the artifact itself
declares, invokes the real interpreter and returns float32 logits ``[1, 4, B]``.

Interpreters, in order of preference: ``ai_edge_litert`` (the maintained
TFLite runtime), ``tflite_runtime`` (what many boards have), then
``tensorflow.lite`` (host only); ONNX Runtime for ``.onnx`` artifacts.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.device.bundle import read_verified_bytes
from edgekd.device.errors import EdgekdError
from edgekd.device.runtime.runner import (  # noqa: F401  (quantize, dequantize: re-exported)
    OrtRunner,
    QuantSpec,
    Runner,
    TFLiteRunner,
    dequantize,
    quantize,
)

log = logging.getLogger(__name__)

_NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8, "uint8": np.uint8,
                 "int32": np.int32, "int64": np.int64}
INT8_RANGE = (-128, 127)


def tflite_interpreter_class() -> type:
    """The TFLite ``Interpreter`` class: ai_edge_litert, else tflite_runtime, else tensorflow.lite."""
    for module in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            return importlib.import_module(module).Interpreter
        except ImportError:
            continue
    try:
        return importlib.import_module("tensorflow.lite").Interpreter
    except ImportError:
        raise EdgekdError("no TFLite interpreter is installed",
                          fix="pip install ai-edge-litert (or tflite-runtime on older boards)") from None


def _op_resolver_without_delegates(interpreter_cls: type) -> Any | None:
    # XNNPACK replaces ops by DELEGATE nodes; op lists and dtype checks need the plain graph.
    module = importlib.import_module(interpreter_cls.__module__)
    resolver = getattr(module, "OpResolverType", None)
    return None if resolver is None else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES


class Backend:
    """One loaded artifact. ``run`` = quantize_inputs -> invoke_raw -> dequantize_outputs."""

    name: str
    input_names: list[str]
    input_shapes: list[tuple[int, ...]]
    input_dtypes: list[np.dtype]
    precision: str
    path: Path

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Float32 model inputs (batch 1, keyed by modality) -> float32 logits."""
        return self.dequantize_outputs(self.invoke_raw(self.quantize_inputs(inputs)))

    def quantize_inputs(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def invoke_raw(self, raw: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def dequantize_outputs(self, raw_out: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def runner(self) -> Runner:
        """The per-call path the runtime, firmware_bench and ``bench --compare`` share (see ``runner.py``).

        Same values as ``run``; buffers allocated once, nothing looked up or checked per call. The returned
        logits may be a buffer that the next call overwrites: copy them to keep them.
        """
        return Runner(self)

    def _ordered(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise EdgekdError(f"artifact {self.name} needs inputs {self.input_names}, missing {missing}",
                              fix="feed one float32 array per modality the student uses")
        arrays = []
        for name, shape in zip(self.input_names, self.input_shapes):
            x = np.asarray(inputs[name], dtype=np.float32)
            if x.shape != tuple(shape):
                if x.size == int(np.prod(shape)) and x.shape == tuple(shape[1:]):
                    x = x.reshape(shape)  # a single window without its batch axis
                else:
                    raise EdgekdError(f"input '{name}' of {self.name} has shape {x.shape}, expected {tuple(shape)}",
                                      fix="feed batch-1 windows shaped as the manifest says")
            arrays.append(x)
        return arrays

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, {self.precision}, inputs={self.input_names})"


class TFLiteBackend(Backend):
    """A ``.tflite`` file on the TFLite interpreter (XNNPACK by default)."""

    def __init__(self, path: str | os.PathLike, *, name: str | None = None, threads: int | None = None,
                 input_names: Sequence[str] | None = None, precision: str | None = None,
                 use_xnnpack: bool = True, content: bytes | None = None):
        self.path = Path(path)
        self.name = name or self.path.name
        cls = tflite_interpreter_class()
        # content: the bytes already checked against the manifest (the file is not read a second time)
        kwargs: dict[str, Any] = {"model_path": str(self.path)} if content is None else {"model_content": content}
        if threads:
            kwargs["num_threads"] = int(threads)
        if not use_xnnpack:
            resolver = _op_resolver_without_delegates(cls)
            if resolver is not None:
                kwargs["experimental_op_resolver_type"] = resolver
        try:
            self.interpreter = cls(**kwargs)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise EdgekdError(f"the TFLite interpreter cannot load this model: {exc}", file=self.path,
                              fix="re-export the bundle, or update the interpreter (ai-edge-litert)") from None
        details = self.interpreter.get_input_details()
        self._in = _match_inputs(details, input_names, self._signature_inputs())
        self._out = self.interpreter.get_output_details()
        if len(self._out) != 1:
            raise EdgekdError(f"expected one output (logits), found {len(self._out)}", file=self.path)
        self.input_names = list(input_names) if input_names else [d["name"] for d in self._in]
        self.input_shapes = [tuple(int(s) for s in d["shape"]) for d in self._in]
        self.input_dtypes = [np.dtype(d["dtype"]) for d in self._in]
        self.output_dtype = np.dtype(self._out[0]["dtype"])
        self.precision = precision or ("int8" if self.input_dtypes[0] == np.int8 else "fp32")
        # Quantisation parameters resolved once: None for a float tensor.
        self._in_q = [_quant_spec(d) for d in self._in]
        self._in_bounds = [None if q is None else q.bounds(shape) for q, shape in zip(self._in_q, self.input_shapes)]
        self._out_q = _quant_spec(self._out[0])

    def _signature_inputs(self) -> dict[str, int]:
        # Signature input name (the modality, as onnx2tf/TF keep it) -> tensor index.
        try:
            signatures = self.interpreter._get_full_signature_list()
        except AttributeError:
            return {}
        for sig in (signatures or {}).values():
            return {k: int(v) for k, v in sig.get("inputs", {}).items()}
        return {}

    def quantize_inputs(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        raw = []
        for x, d, spec, bounds in zip(self._ordered(inputs), self._in, self._in_q, self._in_bounds):
            if spec is None:
                raw.append(x.astype(d["dtype"], copy=False))
            else:  # fresh arrays: callers may keep them (parity checks stack them)
                raw.append(spec.quantize_into(x, np.empty(x.shape, np.float32), np.empty(x.shape, spec.dtype),
                                              bounds))
        return raw

    def invoke_raw(self, raw: list[np.ndarray]) -> list[np.ndarray]:
        for x, d in zip(raw, self._in):
            self.interpreter.set_tensor(d["index"], x)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(d["index"]) for d in self._out]

    def dequantize_outputs(self, raw_out: list[np.ndarray]) -> np.ndarray:
        if self._out_q is None:
            return raw_out[0].astype(np.float32, copy=False)
        return self._out_q.dequantize_into(raw_out[0], np.empty(raw_out[0].shape, np.float32))

    def runner(self) -> Runner:
        return TFLiteRunner(self, self._in, self._out[0], self._in_q, self._out_q)

    def io_details(self) -> tuple[list[dict], list[dict]]:
        return self._in, self._out


def _quant_spec(detail: dict) -> QuantSpec | None:
    if np.dtype(detail["dtype"]) not in (np.int8, np.uint8):
        return None
    scale, zero_point = detail["quantization"]
    return QuantSpec.of(scale, zero_point, detail["dtype"])


def _match_inputs(details: list[dict], names: Sequence[str] | None, signature: dict[str, int]) -> list[dict]:
    """Order interpreter inputs as ``names`` (the manifest order): signature name, tensor name, or position."""
    if not names:
        return list(details)
    by_index = {d["index"]: d for d in details}
    ordered = []
    for name in names:
        if name in signature and signature[name] in by_index:
            ordered.append(by_index[signature[name]])
            continue
        hits = [d for d in details if _plain_tensor_name(d["name"]) == name]
        if len(hits) == 1:
            ordered.append(hits[0])
        elif len(details) == len(names) == 1:
            ordered.append(details[0])
        else:
            raise EdgekdError(f"the model has no input named '{name}' "
                              f"(inputs: {[d['name'] for d in details]})",
                              fix="re-export the bundle; the manifest and the model disagree")
    return ordered


def _plain_tensor_name(name: str) -> str:
    # TF names signature inputs 'serving_default_<name>:0'
    name = name.split(":")[0]
    return name[len("serving_default_"):] if name.startswith("serving_default_") else name


class OrtBackend(Backend):
    """An ``.onnx`` file (fp32 or QDQ int8; float I/O either way) on ONNX Runtime."""

    def __init__(self, path: str | os.PathLike, *, name: str | None = None, threads: int | None = None,
                 providers: Sequence[str] | None = None, input_names: Sequence[str] | None = None,
                 precision: str = "fp32", content: bytes | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise EdgekdError("onnxruntime is not installed", fix="pip install onnxruntime "
                              "(onnxruntime-gpu on Jetson)") from None
        self.path = Path(path)
        self.name = name or self.path.name
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        available = set(ort.get_available_providers())
        wanted = [p for p in (providers or ["CPUExecutionProvider"]) if p in available]
        if not wanted:
            wanted = ["CPUExecutionProvider"]
        skipped = [p for p in (providers or []) if p not in available]
        if skipped:
            log.info("%s: execution providers not available here, skipped: %s", self.name, skipped)
        try:
            model = str(self.path) if content is None else content
            self.session = ort.InferenceSession(model, sess_options=options, providers=wanted)
        except Exception as exc:  # ORT raises its own exception types
            raise EdgekdError(f"ONNX Runtime cannot load this model: {exc}", file=self.path,
                              fix="re-export the bundle") from None
        self.providers = self.session.get_providers()
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.input_names = list(input_names) if input_names else list(inputs)
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise EdgekdError(f"the model has no inputs {missing} (inputs: {list(inputs)})", file=self.path,
                              fix="re-export the bundle; the manifest and the model disagree")
        self.input_shapes = [tuple(int(s) for s in inputs[n].shape) for n in self.input_names]
        self.input_dtypes = [np.dtype(np.float32)] * len(self.input_names)
        self.output_name = self.session.get_outputs()[0].name
        self.precision = precision

    def quantize_inputs(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._ordered(inputs)  # QDQ models quantise inside the graph

    def invoke_raw(self, raw: list[np.ndarray]) -> list[np.ndarray]:
        return self.session.run([self.output_name], dict(zip(self.input_names, raw)))

    def dequantize_outputs(self, raw_out: list[np.ndarray]) -> np.ndarray:
        return np.asarray(raw_out[0], dtype=np.float32)

    def runner(self) -> Runner:
        return OrtRunner(self)


def open_artifact(bundle_dir: str | os.PathLike, artifact: dict, *, threads: int | None = None,
                  providers: Sequence[str] | None = None, verify_hash: bool = True) -> Backend:
    """Load one manifest artifact entry; refuses a file whose sha256 differs from the manifest.

    The interpreter is given the very bytes that were hashed, so a file swapped between the check
    and the load cannot run.
    """
    path = Path(bundle_dir) / artifact["path"]
    content = read_verified_bytes(bundle_dir, artifact["path"], artifact.get("sha256")) if verify_hash else None
    names = [i["name"] for i in artifact.get("inputs", [])] or None
    label = artifact.get("path", str(path))
    if artifact.get("format") == "tflite" or path.suffix == ".tflite":
        backend: Backend = TFLiteBackend(path, name=label, threads=threads, input_names=names,
                                         precision=artifact.get("precision"), content=content)
    elif artifact.get("format") == "onnx" or path.suffix == ".onnx":
        backend = OrtBackend(path, name=label, threads=threads, providers=providers, input_names=names,
                             precision=artifact.get("precision", "fp32"), content=content)
    else:
        raise EdgekdError(f"unknown artifact format {artifact.get('format')!r}", file=path, field="format",
                          fix="format must be 'tflite' or 'onnx'")
    _check_against_manifest(backend, artifact, path)
    return backend


def _check_against_manifest(backend: Backend, artifact: dict, path: Path) -> None:
    for spec, shape, dtype in zip(artifact.get("inputs", []), backend.input_shapes, backend.input_dtypes):
        if list(spec.get("shape", shape)) != list(shape) or spec.get("dtype", dtype.name) != dtype.name:
            raise EdgekdError(f"input '{spec['name']}' is {list(shape)} {dtype.name} in the model but "
                              f"{spec.get('shape')} {spec.get('dtype')} in the manifest", file=path,
                              fix="re-export the bundle")


def tflite_op_counts(path: str | os.PathLike) -> dict[str, int]:
    """Op type -> count of a .tflite file, read without delegates (so no DELEGATE placeholders)."""
    interpreter = _plain_interpreter(path)
    counts: dict[str, int] = {}
    for op in interpreter._get_ops_details():
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return dict(sorted(counts.items()))


def tflite_float_ops(path: str | os.PathLike) -> list[str]:
    """Ops of a .tflite file that read or write a float tensor (must be empty for a full-int8 model)."""
    interpreter = _plain_interpreter(path)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    floats = []
    for op in interpreter._get_ops_details():
        indices = [i for i in list(op["inputs"]) + list(op["outputs"]) if i >= 0]
        if any(np.dtype(tensors[i]["dtype"]).kind == "f" for i in indices if i in tensors):
            floats.append(f"{op['op_name']}#{op['index']}")
    return floats


def _plain_interpreter(path: str | os.PathLike):
    cls = tflite_interpreter_class()
    resolver = _op_resolver_without_delegates(cls)
    kwargs: dict[str, Any] = {"model_path": str(path)}
    if resolver is not None:
        kwargs["experimental_op_resolver_type"] = resolver
    interpreter = cls(**kwargs)
    interpreter.allocate_tensors()
    return interpreter
