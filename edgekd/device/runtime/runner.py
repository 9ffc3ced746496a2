"""The one per-call path of a loaded artifact: quantise into preallocated buffers, invoke, dequantise.

TORCH-FREE. The multi-student runtime (``engine.StudentRunner``), firmware_bench's
timed loop and ``edgekd bench --compare`` all call a model through a
:class:`Runner` from ``Backend.runner()``, so what the benchmarks time is what
the runtime runs. A runner resolves tensor indices, quantisation parameters and
names once and allocates its buffers once; per call it only quantises into them.

Three phases, so that a caller can time them apart (the runtime's
preprocess / invoke / postprocess split, firmware_bench's quantize / invoke /
dequantize statistics)::

    runner.prepare(inputs)   # float32 windows -> the model's input buffers (int8: quantised in place)
    runner.invoke()          # set_tensor + interpreter invoke + get_tensor (the interpreter's share)
    logits = runner.finish() # output -> float32 logits (int8: dequantised into a reused buffer)

``runner(inputs)`` runs all three. The logits buffer is overwritten by the
next call: copy it to keep it. Inputs are float32 windows of the manifest's
shapes, with or without the batch axis (a window of the sensor hub has none);
nothing is checked per call (``Backend.run`` checks, and returns fresh arrays).
An input already of the model's integer type is taken as quantised with
:meth:`Runner.input_quantization`'s parameters (the sensor hub's integer ring).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: Any = np.int8) -> np.ndarray:
    """Affine quantisation q = clip(round(x / scale) + zero_point) (round half to even, like TFLite's reference)."""
    info = np.iinfo(dtype)
    q = np.rint(np.asarray(x, np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return ((q.astype(np.int32) - zero_point) * np.float32(scale)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class QuantSpec:
    """One int8/uint8 tensor's affine parameters, resolved once at load (not per call).

    ``quantize_into`` / ``dequantize_into`` give exactly :func:`quantize` /
    :func:`dequantize`'s values (the clip bounds are moved before the integer
    zero-point add, which is exact in float32) with four/two in-place ufunc
    calls and no temporaries: the per-call cost of a batch-1 window is then a
    few microseconds instead of the interpreter's invoke time again.
    """

    scale: np.float32
    zero_point: np.float32
    low: np.float32       # dtype min - zero point
    high: np.float32      # dtype max - zero point
    dtype: np.dtype

    @classmethod
    def of(cls, scale: float, zero_point: int, dtype: Any) -> QuantSpec:
        info = np.iinfo(dtype)
        return cls(np.float32(scale), np.float32(zero_point), np.float32(info.min - zero_point),
                   np.float32(info.max - zero_point), np.dtype(dtype))

    def bounds(self, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """The clip bounds as full arrays: numpy's max/min against a same-shape array are SIMD, against a
        broadcast scalar ~2x slower (1.3 vs 0.6 us for a LiDAR window)."""
        return np.full(shape, self.low, np.float32), np.full(shape, self.high, np.float32)

    def quantize_into(self, x: np.ndarray, scratch: np.ndarray, out: np.ndarray,
                      bounds: tuple[Any, Any] | None = None) -> np.ndarray:
        low, high = bounds or (self.low, self.high)
        # dtype= pins the float32 loops under numpy 1.x value-based casting too (boards run numpy<2)
        np.divide(x, self.scale, out=scratch, dtype=np.float32)
        np.rint(scratch, out=scratch)
        np.maximum(scratch, low, out=scratch)
        np.minimum(scratch, high, out=scratch)
        return np.add(scratch, self.zero_point, out=out, casting="unsafe", dtype=np.float32)

    def dequantize_into(self, q: np.ndarray, out: np.ndarray) -> np.ndarray:
        np.subtract(q, self.zero_point, out=out, dtype=np.float32)  # small integers: exact in float32
        return np.multiply(out, self.scale, out=out)


class Runner:
    """Any backend through its phase methods (``quantize_inputs`` / ``invoke_raw`` / ``dequantize_outputs``).

    The interpreters' own runners (:class:`TFLiteRunner`, :class:`OrtRunner`)
    override the three phases with allocation-free ones of the same values.
    """

    def __init__(self, backend: Any):
        self.backend = backend
        self._raw: Any = None
        self._out: Any = None

    def input_quantization(self) -> dict[str, QuantSpec]:
        """Per input name, the quantisation of an integer input this runner takes as is (none here)."""
        return {}

    def prepare(self, inputs: dict[str, np.ndarray]) -> None:
        self._raw = self.backend.quantize_inputs(inputs)

    def invoke(self) -> None:
        self._out = self.backend.invoke_raw(self._raw)

    def finish(self) -> np.ndarray:
        return self.backend.dequantize_outputs(self._out)

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        self.prepare(inputs)
        self.invoke()
        return self.finish()


class TFLiteRunner(Runner):
    """Quantise into preallocated buffers, ``set_tensor``, ``invoke``, dequantise into one output buffer.

    ``set_tensor``/``get_tensor`` copy (1.7 KB in, 256 B out for a LiDAR
    window, well under a microsecond); the interpreter refuses to invoke
    while a numpy view of its own buffers is alive, so views are no option.
    """

    def __init__(self, backend: Any, inputs: Sequence[dict], output: dict, in_specs: Sequence[QuantSpec | None],
                 out_spec: QuantSpec | None):
        super().__init__(backend)
        interpreter = backend.interpreter
        self._invoke, self._set, self._get = interpreter.invoke, interpreter.set_tensor, interpreter.get_tensor
        self._feeds = []
        for name, shape, detail, spec in zip(backend.input_names, backend.input_shapes, inputs, in_specs):
            buffers = None if spec is None else (np.empty(shape, np.float32), np.empty(shape, spec.dtype),
                                                 spec.bounds(shape))
            dtype = np.dtype(detail["dtype"])
            self._feeds.append((name, detail["index"], tuple(shape), spec, buffers, dtype))
        self._indices = [feed[1] for feed in self._feeds]
        self._arrays: list[np.ndarray] = [np.empty(0)] * len(self._feeds)
        self._out_index, self._out_spec = output["index"], out_spec
        self._out_float32 = np.dtype(output["dtype"]) == np.float32
        self._logits = np.empty(tuple(int(s) for s in output["shape"]), np.float32)

    def input_quantization(self) -> dict[str, QuantSpec]:
        return {name: spec for name, _, _, spec, _, _ in self._feeds if spec is not None}

    def prepare(self, inputs: dict[str, np.ndarray]) -> None:
        arrays = self._arrays
        for i, (name, _, shape, spec, buffers, dtype) in enumerate(self._feeds):
            x = inputs[name]
            if x.dtype == dtype:  # float model, or a window the hub already quantised: a view, set_tensor copies
                arrays[i] = x.reshape(shape)
            elif spec is not None:  # broadcasting fills a batch-1 buffer from a window without its batch axis
                scratch, out, bounds = buffers  # type: ignore[misc]  # set whenever spec is
                arrays[i] = spec.quantize_into(x, scratch, out, bounds)
            else:
                arrays[i] = x.reshape(shape).astype(dtype)

    def invoke(self) -> None:
        for index, x in zip(self._indices, self._arrays):
            self._set(index, x)
        self._invoke()
        self._out = self._get(self._out_index)

    def finish(self) -> np.ndarray:
        raw = self._out
        if self._out_spec is not None:
            return self._out_spec.dequantize_into(raw, self._logits)
        return raw if self._out_float32 else raw.astype(np.float32)


class OrtRunner(Runner):
    """``session.run`` with the output list and feed dict built once (float I/O, QDQ inside the graph)."""

    def __init__(self, backend: Any):
        super().__init__(backend)
        self._session_run, self._outputs = backend.session.run, [backend.output_name]
        self._shapes = list(zip(backend.input_names, (tuple(s) for s in backend.input_shapes)))
        self._feed: dict[str, np.ndarray] = {}

    def prepare(self, inputs: dict[str, np.ndarray]) -> None:
        for name, shape in self._shapes:
            self._feed[name] = inputs[name].reshape(shape)

    def invoke(self) -> None:
        self._out = self._session_run(self._outputs, self._feed)[0]

    def finish(self) -> np.ndarray:
        return self._out
