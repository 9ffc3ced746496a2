"""Interpreter backends: quantisation math, real TFLite int8 / fp32 and ONNX Runtime models, import hygiene."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edgekd.device.errors import EdgekdError
from edgekd.device.io import sha256_file
from edgekd.device.runtime.backends import (
    OrtBackend,
    QuantSpec,
    TFLiteBackend,
    dequantize,
    open_artifact,
    quantize,
    tflite_float_ops,
    tflite_interpreter_class,
    tflite_op_counts,
)

WEIGHTS = np.linspace(-1, 1, 6 * 4, dtype=np.float32).reshape(6, 4)


def test_quantize_roundtrip_and_saturation():
    x = np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0], np.float32)
    q = quantize(x, 1 / 127, 0)
    assert q.dtype == np.int8 and q.tolist() == [-128, -127, 0, 64, 127, 127]
    back = dequantize(q, 1 / 127, 0)
    assert np.allclose(back[1:5], x[1:5], atol=0.5 / 127)
    # asymmetric: [0, 1] onto [-128, 127]
    q = quantize(np.array([0.0, 1.0], np.float32), 1 / 255, -128)
    assert q.tolist() == [-128, 127]


@pytest.mark.parametrize("scale, zero_point, dtype", [(1 / 127, 0, np.int8), (0.0123, -17, np.int8),
                                                      (0.05, 100, np.int8), (1 / 255, 3, np.uint8)])
def test_the_in_place_quantisation_is_bit_exact(scale, zero_point, dtype):
    # ties (k + 0.5) * scale, values one float32 step either side, far out of range, negative zero
    k = np.arange(-300, 300, dtype=np.float32)
    ties = (k + np.float32(0.5)) * np.float32(scale)
    x = np.concatenate([ties, np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf)),
                        np.float32([-1e6, 1e6, -0.0, 0.0]),
                        np.random.default_rng(0).normal(0, 200 * scale, 4000).astype(np.float32)])
    spec = QuantSpec.of(scale, zero_point, dtype)
    for bounds in (None, spec.bounds(x.shape)):
        got = spec.quantize_into(x, np.empty_like(x), np.empty(x.shape, dtype), bounds)
        assert got.dtype == dtype and np.array_equal(got, quantize(x, scale, zero_point, dtype))
    every = np.arange(np.iinfo(dtype).min, np.iinfo(dtype).max + 1).astype(dtype)
    back = spec.dequantize_into(every, np.empty(every.shape, np.float32))
    assert back.dtype == np.float32 and np.array_equal(back, dequantize(every, scale, zero_point))


def test_interpreter_class_is_litert_here():
    assert tflite_interpreter_class().__module__.startswith("ai_edge_litert")


@pytest.fixture(scope="module")
def tflite_models(tmp_path_factory):
    """A real [1, 2, 6] -> [1, 2, 4] dense model converted by TF to fp32 and full-int8 TFLite."""
    tf = pytest.importorskip("tensorflow")
    folder = tmp_path_factory.mktemp("tflite")
    weights = tf.constant(WEIGHTS)

    @tf.function(input_signature=[tf.TensorSpec([1, 2, 6], tf.float32, name="lidar")])
    def model(lidar):
        return tf.nn.relu(tf.einsum("btd,dk->btk", lidar, weights)) - 0.25

    concrete = model.get_concrete_function()
    fp32 = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model).convert()
    rng = np.random.default_rng(0)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([rng.uniform(0, 1, (1, 2, 6)).astype(np.float32)]
                                                for _ in range(64))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    int8 = converter.convert()
    (folder / "fp32.tflite").write_bytes(fp32)
    (folder / "int8.tflite").write_bytes(int8)
    return folder


def _expected(x):
    return np.maximum(np.einsum("btd,dk->btk", x, WEIGHTS), 0) - 0.25


def test_tflite_fp32_and_int8_backends_match_the_math(tflite_models):
    x = np.random.default_rng(1).uniform(0, 1, (1, 2, 6)).astype(np.float32)
    fp32 = TFLiteBackend(tflite_models / "fp32.tflite", input_names=["lidar"])
    assert fp32.precision == "fp32" and fp32.input_shapes == [(1, 2, 6)]
    assert np.allclose(fp32.run({"lidar": x}), _expected(x), atol=1e-5)
    int8 = TFLiteBackend(tflite_models / "int8.tflite", input_names=["lidar"])
    assert int8.precision == "int8" and int8.input_dtypes == [np.dtype(np.int8)]
    raw = int8.quantize_inputs({"lidar": x})
    assert raw[0].dtype == np.int8
    out_raw = int8.invoke_raw(raw)
    assert out_raw[0].dtype == np.int8
    out = int8.dequantize_outputs(out_raw)
    assert out.dtype == np.float32 and np.allclose(out, _expected(x), atol=0.05)
    # a window without its batch axis is accepted; a wrong shape is refused
    assert np.allclose(int8.run({"lidar": x[0]}), out)
    with pytest.raises(EdgekdError, match="expected"):
        int8.run({"lidar": np.zeros((1, 3, 6), np.float32)})
    with pytest.raises(EdgekdError, match="missing"):
        int8.run({"image": x})


def test_lean_runners_give_run_s_logits(tflite_models):
    windows = [np.random.default_rng(i).uniform(-0.5, 1.5, (1, 2, 6)).astype(np.float32) for i in range(20)]
    for name in ("int8.tflite", "fp32.tflite"):
        backend = TFLiteBackend(tflite_models / name, input_names=["lidar"])
        run = backend.runner()
        first = run({"lidar": windows[0]}).copy()
        for x in windows:
            assert np.array_equal(run({"lidar": x}), backend.run({"lidar": x})), name
        if backend.precision == "int8":  # one output buffer, overwritten by the next call
            assert run({"lidar": windows[0]}) is run({"lidar": windows[1]})
        assert np.array_equal(run({"lidar": windows[0]}), first)


def test_runner_phases_take_hub_windows_without_the_batch_axis(tflite_models):
    # the runtime feeds the sensor hub's [T, ...] windows and times prepare / invoke / finish apart
    windows = [np.random.default_rng(i).uniform(-0.5, 1.5, (2, 6)).astype(np.float32) for i in range(5)]
    for name in ("int8.tflite", "fp32.tflite"):
        backend = TFLiteBackend(tflite_models / name, input_names=["lidar"])
        runner = backend.runner()
        for x in windows:
            runner.prepare({"lidar": x})
            runner.invoke()
            assert np.array_equal(runner.finish(), backend.run({"lidar": x[None]})), name


def test_generic_runner_goes_through_the_phase_methods(tflite_models):
    from edgekd.device.runtime.runner import Runner

    backend = TFLiteBackend(tflite_models / "int8.tflite", input_names=["lidar"])
    x = np.random.default_rng(3).uniform(0, 1, (1, 2, 6)).astype(np.float32)
    assert np.array_equal(Runner(backend)({"lidar": x}), backend.runner()({"lidar": x}))


def test_op_counts_and_float_op_detection(tflite_models):
    ops = tflite_op_counts(tflite_models / "int8.tflite")
    assert "DELEGATE" not in ops and sum(ops.values()) >= 1
    assert tflite_float_ops(tflite_models / "int8.tflite") == []
    assert tflite_float_ops(tflite_models / "fp32.tflite")  # a float model is flagged


def test_ort_backend_on_a_real_onnx_graph(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["lidar", "w"], ["mm"]), helper.make_node("Relu", ["mm"], ["logits"])],
        "g", [helper.make_tensor_value_info("lidar", TensorProto.FLOAT, [1, 2, 6])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2, 4])],
        [numpy_helper.from_array(WEIGHTS, "w")])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    backend = OrtBackend(path, providers=["TensorrtExecutionProvider", "CPUExecutionProvider"], threads=1)
    assert backend.providers == ["CPUExecutionProvider"]
    x = np.random.default_rng(2).uniform(0, 1, (1, 2, 6)).astype(np.float32)
    assert np.allclose(backend.run({"lidar": x}), np.maximum(x @ WEIGHTS, 0), atol=1e-6)
    assert np.array_equal(backend.runner()({"lidar": x}), backend.run({"lidar": x}))

    artifact = {"path": "m.onnx", "sha256": sha256_file(path), "format": "onnx", "precision": "fp32",
                "inputs": [{"name": "lidar", "shape": [1, 2, 6], "dtype": "float32"}]}
    assert open_artifact(tmp_path, artifact).input_names == ["lidar"]
    with pytest.raises(EdgekdError, match="manifest"):
        open_artifact(tmp_path, {**artifact, "inputs": [{"name": "lidar", "shape": [1, 3, 6], "dtype": "float32"}]})
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(EdgekdError, match="modified"):
        open_artifact(tmp_path, artifact)


def test_device_side_modules_import_neither_torch_nor_tensorflow():
    code = ("import sys, edgekd.device.runtime.backends, edgekd.device.bundle, edgekd.device.targets, edgekd.cli; "
            "bad = [m for m in ('torch', 'tensorflow', 'onnx2tf') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
