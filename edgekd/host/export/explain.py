"""``edgekd export --explain``: where an int8 file loses precision, tensor by tensor, named by student layer.

Every activation tensor the full-int8 TFLite file stores is read from the real interpreter
(``experimental_preserve_all_tensors``, no delegate), dequantised, and compared with the float tensor it
stands for: the same windows through ONNX Runtime on the float ONNX graph the file was converted from,
every intermediate output exposed. Tensors are paired by value (same element count; TFLite's NHWC
tensors also tried as NCHW): the ONNX tensor the dequantised one is closest to, so no name matching
across onnx2tf's renaming is needed and each pair carries the ONNX node, whose name is the student's
module path (``/model/model/encoder/cnn/0/0/Conv`` -> ``encoder.cnn.0.0``).

Per tensor (over the windows): RMS and max |int8 - float| as a share of the float tensor's range (the
issue's measure; plain rounding gives RMS/range ~ 1/(255 sqrt 12) = 0.0011), the same RMS against the
tensor's own spread per channel (``nsr``: noise-to-signal, mean over channels of RMS / std, so one wide
channel cannot hide what the others lost), and ``added`` = this tensor's nsr minus the
largest nsr among the int8 tensors its op reads: the precision lost AT this op rather than inherited.
Ranked by ``added``, the top offenders are where precision is lost. The error of each tensor is the
accumulated one (the int8 graph runs end to end, as on the board); the difference to TFLite's
``QuantizationDebugger`` (which compares each op against a float op fed the same dequantised inputs)
is measured in BENCHMARKS.md.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MATCH_WINDOWS = 8          # windows used to pair tensors (all windows are used for the statistics)
MATCH_CORRELATION = 0.6    # a float tensor correlating less with an int8 tensor is not its pair
MATCH_LIMIT = 0.25         # nor one whose RMS difference exceeds this share of its range
ROUNDING_RMS_SHARE = 1.0 / (255.0 * np.sqrt(12.0))


def onnx_intermediates(onnx_path: str | os.PathLike, windows: Sequence[dict[str, np.ndarray]]
                       ) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, str]]]:
    """Every float tensor of the ONNX graph over ``windows`` (name -> [N, ...]) and its producer (node, op)."""
    import onnx
    import onnxruntime as ort

    proto = onnx.shape_inference.infer_shapes(onnx.load(str(onnx_path)))
    known = {o.name for o in proto.graph.output}
    producers: dict[str, tuple[str, str]] = {}
    feeds: dict[str, list[str]] = {}
    for node in proto.graph.node:
        for out in node.output:
            producers[out] = (node.name, node.op_type)
            feeds[node.name] = list(node.input)
            if out and out not in known:
                proto.graph.output.append(onnx.ValueInfoProto(name=out))
                known.add(out)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(proto.SerializeToString(), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    rows: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for window in windows:
        outs = session.run(names, {k: np.asarray(v, np.float32) for k, v in window.items()})
        for name, value in zip(names, outs):
            rows[name].append(np.asarray(value))
    tensors = {n: np.stack(v).astype(np.float32) for n, v in rows.items()
               if v and np.issubdtype(v[0].dtype, np.floating) and v[0].size > 1}
    return tensors, {out: (_module_node(node, producers, feeds), op) for out, (node, op) in producers.items()}


def _module_node(node: str, producers: dict[str, tuple[str, str]], feeds: dict[str, list[str]]) -> str:
    """A functional op at the model's top level (``F.relu(self.embed(x))`` -> ``/model/Relu``) is named after
    the module whose output it reads (up to 3 ops back): that is where the stored tensor comes from."""
    current = node
    for _ in range(3):
        if "/" in layer_of(current).strip("(").strip(")") or "." in layer_of(current) or \
                len([p for p in current.strip("/").split("/") if p != "model"]) > 1:
            return current
        inputs = [producers[i][0] for i in feeds.get(current, []) if i in producers]
        if not inputs:
            break
        current = inputs[0]
    return node


def tflite_intermediates(tflite_path: str | os.PathLike, windows: Sequence[dict[str, np.ndarray]],
                         input_names: Sequence[str]) -> tuple[dict[int, np.ndarray], dict[int, dict]]:
    """Every quantised activation of the int8 file, dequantised (tensor index -> [N, ...]), and its producer."""
    from edgekd.device.runtime.backends import TFLiteBackend, _op_resolver_without_delegates, tflite_interpreter_class

    backend = TFLiteBackend(tflite_path, input_names=input_names, use_xnnpack=False)
    cls = tflite_interpreter_class()
    kwargs: dict = {"model_path": str(tflite_path), "experimental_preserve_all_tensors": True}
    resolver = _op_resolver_without_delegates(cls)
    if resolver is not None:
        kwargs["experimental_op_resolver_type"] = resolver
    interpreter = cls(**kwargs)
    interpreter.allocate_tensors()
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    producers: dict[int, dict] = {}
    for op in interpreter._get_ops_details():
        for out in op["outputs"]:
            producers[int(out)] = {"op": op["op_name"], "index": int(op["index"]),
                                   "inputs": [int(i) for i in op["inputs"] if i >= 0]}
    wanted = [i for i in producers if np.dtype(details[i]["dtype"]) in (np.int8, np.int16)
              and details[i]["quantization"][0] > 0]
    rows: dict[int, list[np.ndarray]] = {i: [] for i in wanted}
    inputs, _ = backend.io_details()
    for window in windows:
        for raw, d in zip(backend.quantize_inputs(window), inputs):
            interpreter.set_tensor(d["index"], raw)
        interpreter.invoke()
        for i in wanted:
            scale, zero = details[i]["quantization"]
            rows[i].append((interpreter.get_tensor(i).astype(np.float32) - zero) * scale)
    for i in wanted:
        producers[i]["scale"] = float(details[i]["quantization"][0])
        producers[i]["shape"] = [int(s) for s in details[i]["shape"]]
    return {i: np.stack(v) for i, v in rows.items()}, producers


def _layouts(x: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """[N, ...] flattened per window as stored, and NHWC read as NCHW for 4-D (batch-1) tensors."""
    n = len(x)
    out = [("as stored", x.reshape(n, -1))]
    if x.ndim == 5:   # [N, 1, H, W, C] -> [N, 1, C, H, W]
        out.append(("NHWC->NCHW", np.moveaxis(x, -1, 2).reshape(n, -1)))
    return out


def pair_tensors(quantised: dict[int, np.ndarray], reference: dict[str, np.ndarray]
                 ) -> dict[int, tuple[str, str, float]]:
    """Each int8 tensor -> (ONNX tensor, layout, RMS difference / range) of its closest float tensor among those
    of the same size that correlate with it (>= ``MATCH_CORRELATION`` over windows and elements) and lie within
    ``MATCH_LIMIT`` of its range. Unpaired tensors are counted, not guessed."""
    by_size: dict[int, list[str]] = {}
    flat_ref = {}
    for name, x in reference.items():
        flat = x[:MATCH_WINDOWS].reshape(-1).astype(np.float64)
        flat = flat - flat.mean()
        norm = float(np.linalg.norm(flat))
        if norm <= 0:
            continue
        flat_ref[name] = flat / norm
        by_size.setdefault(int(x[0].size), []).append(name)
    pairs: dict[int, tuple[str, str, float]] = {}
    for index, x in quantised.items():
        best: tuple[str, str, float] | None = None
        for layout, flat in _layouts(x[:MATCH_WINDOWS]):
            v = flat.reshape(-1).astype(np.float64)
            v = v - v.mean()
            norm = float(np.linalg.norm(v))
            if norm <= 0:
                continue
            v /= norm
            raw = flat.reshape(-1)
            for name in by_size.get(int(x[0].size), []):
                corr = float(v @ flat_ref[name])
                if corr < MATCH_CORRELATION:
                    continue
                ref = reference[name][:MATCH_WINDOWS].reshape(-1)
                spread = float(ref.max() - ref.min())
                share = float(np.sqrt(np.mean((raw - ref) ** 2))) / spread if spread > 0 else np.inf
                if share <= MATCH_LIMIT and (best is None or share < best[2]):
                    best = (name, layout, share)
        if best is not None:
            pairs[index] = best
    return pairs


def channel_nsr(reference: np.ndarray, err: np.ndarray, scale: float) -> float:
    """Mean over channels of RMS error / the channel's own spread (``reference``, ``err``: [N, ...] in ONNX
    layout; channels on axis 2 of [N, 1, C, H, W], else the last axis). Per channel, so that one wide channel
    sharing the tensor's scale does not hide the precision the others lost; a channel's spread counts as at
    least ``scale`` (one int8 step), so nearly constant channels (a saturated gate) do not divide by ~0."""
    axis = 2 if reference.ndim == 5 else reference.ndim - 1
    ref = np.moveaxis(reference, axis, 0).reshape(reference.shape[axis], -1)
    noise = np.moveaxis(err, axis, 0).reshape(reference.shape[axis], -1)
    spread = np.maximum(ref.std(axis=1), scale)
    return float(np.mean(np.sqrt(np.mean(noise ** 2, axis=1)) / spread))


def layer_of(node_name: str) -> str:
    """``/model/model/encoder/cnn/0/0/Conv`` -> ``encoder.cnn.0.0`` (the student's module path)."""
    parts = [p for p in node_name.strip("/").split("/") if p]
    while parts and parts[0] == "model":
        parts = parts[1:]
    # torch's ONNX scopes repeat the qualified name inside a Sequential: cnn / cnn.3 / cnn.3.0 -> cnn.3.0
    path: list[str] = []
    for part in (parts[:-1] if len(parts) > 1 else parts):
        if path and part.startswith(path[-1].split(".")[0] + ".") and "." in part:
            path[-1] = part
        else:
            path.append(part)
    return ".".join(path) or "(model)"


def explain_int8(tflite_path: str | os.PathLike, onnx_path: str | os.PathLike,
                 windows: Sequence[dict[str, np.ndarray]], input_names: Sequence[str], *, top: int = 10) -> dict:
    """The per-tensor error report of ``tflite_path`` against ``onnx_path`` on ``windows`` (see module doc)."""
    reference, onnx_producers = onnx_intermediates(onnx_path, windows)
    quantised, producers = tflite_intermediates(tflite_path, windows, input_names)
    pairs = pair_tensors(quantised, reference)
    rows: dict[int, dict] = {}
    for index, (name, layout, _) in pairs.items():
        q = dict(_layouts(quantised[index]))[layout]
        ref = reference[name].reshape(len(reference[name]), -1)
        err = q - ref
        nsr = channel_nsr(reference[name], err.reshape(reference[name].shape), producers[index]["scale"])
        spread = float(ref.max() - ref.min())
        rms = float(np.sqrt(np.mean(err ** 2)))
        node, op_type = onnx_producers.get(name, (name, "?"))
        rows[index] = {"tensor": index, "tflite_op": producers[index]["op"], "onnx_tensor": name, "onnx_op": op_type,
                       "layer": layer_of(node), "range": round(spread, 5), "scale": producers[index]["scale"],
                       "rms_share_of_range": rms / spread, "max_share_of_range": float(np.max(np.abs(err))) / spread,
                       "nsr": nsr}
    for index, row in rows.items():
        inherited = [rows[i]["nsr"] for i in producers[index]["inputs"] if i in rows]
        row["added_nsr"] = row["nsr"] - (max(inherited) if inherited else 0.0)
    # the export's own tail (DeployedLogits: row max, shift, floor; ONNX nodes outside /model/) is not a layer of
    # the student: a row max of noisy logits always looks noisier than its input; it is reported as the output
    ranked = sorted((r for r in rows.values() if r["onnx_tensor"].startswith("/model/")),
                    key=lambda r: -r["added_nsr"])
    for row in ranked:
        for key in ("rms_share_of_range", "max_share_of_range", "nsr", "added_nsr"):
            row[key] = round(row[key], 5)
    layers: dict[str, float] = {}
    for row in ranked:
        layers[row["layer"]] = round(layers.get(row["layer"], 0.0) + max(row["added_nsr"], 0.0), 5)
    return {"windows": len(windows), "int8_tensors": len(quantised), "paired": len(rows),
            "rounding_rms_share": round(ROUNDING_RMS_SHARE, 5),
            "top": ranked[:top], "layers": dict(sorted(layers.items(), key=lambda kv: -kv[1])[:top]),
            "output": _output_row(rows, producers, quantised)}


def _output_row(rows: dict[int, dict], producers: dict[int, dict], quantised: dict[int, np.ndarray]) -> dict | None:
    # the file's output is the last tensor written (largest op index)
    if not rows:
        return None
    last = max(rows, key=lambda i: producers[i]["index"])
    return {k: rows[last][k] for k in ("layer", "tflite_op", "rms_share_of_range", "nsr")}


def format_explain(name: str, report: dict) -> str:
    """The ranked table ``edgekd export --explain`` prints for one student."""
    lines = [f"[{name}] int8 vs float per tensor, {report['windows']} calibration windows, "
             f"{report['paired']}/{report['int8_tensors']} int8 tensors paired with a float tensor; ranked by "
             "precision lost at the op (added noise/signal); rounding alone gives RMS/range "
             f"{report['rounding_rms_share']:.4f}",
             f"  {'#':>2} {'student layer':<34} {'op':<18} {'RMS/range':>9} {'max/range':>9} {'noise/sig':>9} "
             f"{'added':>7}"]
    for i, row in enumerate(report["top"], start=1):
        lines.append(f"  {i:>2} {row['layer'][:34]:<34} {row['tflite_op'][:18]:<18} {row['rms_share_of_range']:>9.4f} "
                     f"{row['max_share_of_range']:>9.4f} {row['nsr']:>9.4f} {row['added_nsr']:>+7.4f}")
    if report.get("output"):
        out = report["output"]
        lines.append(f"  output ({out['layer']}, {out['tflite_op']}): RMS/range {out['rms_share_of_range']:.4f}, "
                     f"noise/signal {out['nsr']:.4f}")
    return "\n".join(lines)


def explain_path(path: Path) -> Path:
    return path
