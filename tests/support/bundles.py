"""A small real bundle for device-side tests: a full-int8 TFLite model made with TensorFlow, an ONNX
model of the same network, a calibration set and a schema-valid manifest."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np

from edgekd.device.bundle import read_manifest
from edgekd.device.io import atomic_write_json, sha256_file
from edgekd.device.runtime.backends import tflite_op_counts

REPO = Path(__file__).resolve().parents[2]
T, D, HORIZONS, BEAMS, HIDDEN, N_CALIB = 8, 216, 4, 64, 32, 24
NOT_MEASURED = {"top1": [0.0] * 4, "top2": [0.0] * 4, "top5": [0.0] * 4, "top2_mean": 0.0, "dba": 0.0, "n": 0}


def _weights():
    rng = np.random.default_rng(0)
    return (rng.normal(0, 0.05, (T * D, HIDDEN)).astype(np.float32), rng.normal(0, 0.1, HIDDEN).astype(np.float32),
            rng.normal(0, 0.2, (HIDDEN, HORIZONS * BEAMS)).astype(np.float32),
            rng.normal(0, 0.1, HORIZONS * BEAMS).astype(np.float32))


def _tflite_int8(path: Path, calib: np.ndarray) -> None:
    """A LiDAR-shaped MLP converted to full-int8 TFLite (int8 input and output) with TensorFlow."""
    import tensorflow as tf

    w1, b1, w2, b2 = (tf.constant(w) for w in _weights())

    class Student(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, T, D], tf.float32, name="lidar")])
        def __call__(self, lidar):
            hidden = tf.nn.relu(tf.matmul(tf.reshape(lidar, [1, T * D]), w1) + b1)
            return tf.reshape(tf.matmul(hidden, w2) + b2, [1, HORIZONS, BEAMS])

    module = Student()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.__call__.get_concrete_function()], module)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([calib[i:i + 1]] for i in range(len(calib)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    path.write_bytes(converter.convert())


def _onnx_fp32(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w1, b1, w2, b2 = _weights()
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))]
    inits += [numpy_helper.from_array(np.array([1, T * D], np.int64), "flat"),
              numpy_helper.from_array(np.array([1, HORIZONS, BEAMS], np.int64), "out_shape")]
    nodes = [helper.make_node("Reshape", ["lidar", "flat"], ["x"]),
             helper.make_node("MatMul", ["x", "w1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["h"]),
             helper.make_node("MatMul", ["h", "w2"], ["y0"]), helper.make_node("Add", ["y0", "b2"], ["y1"]),
             helper.make_node("Reshape", ["y1", "out_shape"], ["logits"])]
    graph = helper.make_graph(nodes, "student", [helper.make_tensor_value_info("lidar", TensorProto.FLOAT, [1, T, D])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, HORIZONS, BEAMS])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _tensor(detail: dict, name: str | None = None) -> dict:
    scale, zero_point = detail["quantization"]
    return {"name": name or detail["name"], "shape": [int(s) for s in detail["shape"]],
            "dtype": np.dtype(detail["dtype"]).name,
            "quantization": {"scale": float(scale), "zero_point": int(zero_point)} if scale else None}


def _artifact(bundle: Path, rel: str, fmt: str, precision: str, inputs: list, outputs: list, ops: dict) -> dict:
    path = bundle / rel
    return {"path": rel, "sha256": sha256_file(path), "size": path.stat().st_size, "format": fmt,
            "precision": precision, "inputs": inputs, "outputs": outputs, "ops": ops, "accuracy": NOT_MEASURED}


DEFAULT_POWER_MODEL = MappingProxyType({"idle_w": 3.0, "active_w": 8.0})


def build_bundle(bundle: Path, *, power_model: Mapping | None = DEFAULT_POWER_MODEL) -> Path:
    (bundle / "lidar").mkdir(parents=True)
    calib = np.random.default_rng(1).uniform(0, 1, (N_CALIB, T, D)).astype(np.float32)
    np.savez(bundle / "lidar/calibration.npz", lidar=calib, indices=np.arange(N_CALIB))
    _tflite_int8(bundle / "lidar/model_int8.tflite", calib)
    _onnx_fp32(bundle / "lidar/model.onnx")

    from ai_edge_litert.interpreter import Interpreter
    interp = Interpreter(model_path=str(bundle / "lidar/model_int8.tflite"))
    tfl_in = [_tensor(interp.get_input_details()[0], "lidar")]
    tfl_out = [_tensor(interp.get_output_details()[0], "logits")]
    float_io = ([{"name": "lidar", "shape": [1, T, D], "dtype": "float32", "quantization": None}],
                [{"name": "logits", "shape": [1, HORIZONS, BEAMS], "dtype": "float32", "quantization": None}])
    target = {"name": "test-board", "backend": "tflite", "threads": 1, "power_meter": "estimate"}
    if power_model:
        target["power_model"] = dict(power_model)
    manifest = {
        "format": "edgekd-bundle/1", "created": "2025-01-01T00:00:00+00:00", "edgekd_version": "0.1.0",
        "versions": {}, "target": target,
        "students": {"lidar": {
            "model": "test-mlp", "modalities": ["lidar"], "window": T, "horizons": HORIZONS, "num_beams": BEAMS,
            "input_shapes": {"lidar": [T, D]}, "preprocessing": {}, "checkpoint": {"sha256": "", "metrics": {}},
            "calibration": {"recipe": "test", "split": "train", "indices_sha256": "", "count": N_CALIB,
                            "file": "lidar/calibration.npz",
                            "sha256": sha256_file(bundle / "lidar/calibration.npz")},
            "artifacts": {
                "tflite_int8": _artifact(bundle, "lidar/model_int8.tflite", "tflite", "int8", tfl_in, tfl_out,
                                         tflite_op_counts(bundle / "lidar/model_int8.tflite")),
                "onnx_fp32": _artifact(bundle, "lidar/model.onnx", "onnx", "fp32", *float_io,
                                       {"MatMul": 2, "Add": 2, "Relu": 1, "Reshape": 2}),
            }}},
    }
    atomic_write_json(bundle / "manifest.json", manifest)
    read_manifest(bundle)  # the fixture must pass the real schema check
    return bundle
