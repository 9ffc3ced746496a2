"""Post-conversion TFLite compaction: smaller file, same graph I/O and signature, bit-exact outputs."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.export.tflite_compact import compact_tflite, read_model, tflite_size_breakdown
from edgekd.runtime.backends import TFLiteBackend, tflite_op_counts

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A small real conv + dense graph with long TF names, converted to fp32 and full-int8 TFLite."""
    folder = tmp_path_factory.mktemp("compact")
    rng = np.random.default_rng(0)
    kernel = tf.constant(rng.normal(0, 0.3, (3, 3, 2, 8)).astype(np.float32))
    dense = tf.constant(rng.normal(0, 0.3, (8, 16)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 2], tf.float32, name="radar")])
    def model(radar):
        x = tf.nn.relu(tf.nn.conv2d(radar, kernel, 1, "SAME", name="a_rather_long_tf_scope/conv"))
        x = tf.reduce_mean(x, axis=[1, 2], name="another_long_tf_scope/global_mean")
        parts = tf.split(tf.matmul(x, dense), 4, axis=1)  # strided slices, like the unrolled GRU
        return tf.tanh(tf.concat([parts[1] - parts[0], parts[3] * parts[2]], axis=1))

    concrete = model.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    files = {"fp32": converter.convert()}
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([rng.uniform(0, 1, (1, 8, 8, 2)).astype(np.float32)]
                                                for _ in range(32))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    files["int8"] = converter.convert()
    paths = {}
    for precision, blob in files.items():
        paths[precision] = folder / f"{precision}.tflite"
        paths[precision].write_bytes(blob)
        paths[f"{precision}_compact"] = folder / f"{precision}_compact.tflite"
        paths[f"{precision}_compact"].write_bytes(compact_tflite(blob))
    return paths


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_compacted_file_is_smaller_and_bit_exact(converted, precision):
    original, compact = converted[precision], converted[f"{precision}_compact"]
    before = tflite_size_breakdown(original.read_bytes())
    after = tflite_size_breakdown(compact.read_bytes())
    assert after["total"] < before["total"]
    assert after["constant_data"] == before["constant_data"]      # weights untouched
    assert after["tensor_names"] < before["tensor_names"] / 2
    assert sum(v for k, v in after.items() if k != "total") == after["total"]
    assert tflite_op_counts(compact) == tflite_op_counts(original)

    rng = np.random.default_rng(1)
    windows = [{"radar": rng.uniform(0, 1, (1, 8, 8, 2)).astype(np.float32)} for _ in range(5)]
    for use_xnnpack in (False, True):
        a = TFLiteBackend(original, input_names=["radar"], use_xnnpack=use_xnnpack)
        b = TFLiteBackend(compact, input_names=["radar"], use_xnnpack=use_xnnpack)
        assert a.io_details()[0][0]["quantization"] == b.io_details()[0][0]["quantization"]
        for w in windows:
            raw_a = a.invoke_raw(a.quantize_inputs(w))[0]
            raw_b = b.invoke_raw(b.quantize_inputs(w))[0]
            assert raw_a.dtype == raw_b.dtype and np.array_equal(raw_a, raw_b)


def test_io_names_signatures_and_metadata_survive(converted):
    original, compact = read_model(converted["int8"].read_bytes()), read_model(converted["int8_compact"].read_bytes())
    for sg_a, sg_b in zip(original.subgraphs, compact.subgraphs):
        for index in list(sg_a.inputs) + list(sg_a.outputs):
            assert sg_b.tensors[index].name == sg_a.tensors[index].name
        internal = set(range(len(sg_b.tensors))) - set(sg_b.inputs) - set(sg_b.outputs)
        assert all(not sg_b.tensors[i].name for i in internal)
    assert [m.name for m in compact.metadata] == [m.name for m in original.metadata]
    assert len(compact.signatureDefs or []) == len(original.signatureDefs or [])
    backend = TFLiteBackend(converted["int8_compact"], input_names=["radar"])
    assert backend.input_dtypes == [np.dtype(np.int8)] and backend.output_dtype == np.int8


def test_unused_buffers_are_dropped_and_indices_stay_valid(converted):
    model = read_model(converted["fp32"].read_bytes())
    model.buffers.append(type(model.buffers[0])())          # an orphan buffer
    model.buffers[-1].data = np.arange(64, dtype=np.uint8)
    from edgekd.export.tflite_compact import write_model

    blob = write_model(model)
    compact = read_model(compact_tflite(blob))
    assert len(compact.buffers) == len(model.buffers) - 1
    used = {t.buffer for sg in compact.subgraphs for t in sg.tensors} | {m.buffer for m in compact.metadata}
    assert max(used) < len(compact.buffers)


def test_not_a_tflite_file_is_refused():
    with pytest.raises(ValueError, match="TFL3"):
        compact_tflite(b"\x00" * 64)
