"""Post-conversion TFLite compaction: smaller file, same graph I/O and signature, bit-exact outputs."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.device.runtime.backends import TFLiteBackend, tflite_op_counts
from edgekd.host.export.tflite_compact import (
    compact_tflite,
    read_model,
    tflite_size_breakdown,
)

tf = pytest.importorskip("tensorflow")


def _radar_graph(kernel, dense, head):
    """conv -> mean -> dense [1, 16] -> ``head`` -> tanh, with long TF names."""
    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 2], tf.float32, name="radar")])
    def model(radar):
        x = tf.nn.relu(tf.nn.conv2d(radar, kernel, 1, "SAME", name="a_rather_long_tf_scope/conv"))
        x = tf.reduce_mean(x, axis=[1, 2], name="another_long_tf_scope/global_mean")
        return tf.tanh(head(tf.matmul(x, dense)))

    return model


def _split_head(y):
    parts = tf.split(y, 4, axis=1)
    return tf.concat([parts[1] - parts[0], parts[3] * parts[2]], axis=1)


# Explicit slices, as onnx2tf writes an ONNX Split: four equal pieces (-> SPLIT) or [0:4] [4:8] [8:16]
# (-> SPLIT_V); in "unequal" the extra [2:10] overlaps them and must stay a STRIDED_SLICE.
SLICED = {
    "equal": lambda y: tf.concat([y[:, 4:8] - y[:, 0:4], y[:, 12:16] * y[:, 8:12]], axis=1),
    "unequal": lambda y: tf.concat([y[:, 4:8] - y[:, 0:4], y[:, 8:16] * y[:, 2:10]], axis=1),
}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A small real conv + dense graph with long TF names, converted to fp32 and full-int8 TFLite."""
    folder = tmp_path_factory.mktemp("compact")
    rng = np.random.default_rng(0)
    kernel = tf.constant(rng.normal(0, 0.3, (3, 3, 2, 8)).astype(np.float32))
    dense = tf.constant(rng.normal(0, 0.3, (8, 16)).astype(np.float32))
    paths = _convert(_radar_graph(kernel, dense, _split_head), folder, "", rng)
    for name, pieces in SLICED.items():
        paths.update(_convert(_radar_graph(kernel, dense, pieces), folder, f"{name}_", rng))
    return paths


def _convert(model, folder, prefix, rng):
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
        paths[f"{prefix}{precision}"] = folder / f"{prefix}{precision}.tflite"
        paths[f"{prefix}{precision}"].write_bytes(blob)
        paths[f"{prefix}{precision}_compact"] = folder / f"{prefix}{precision}_compact.tflite"
        paths[f"{prefix}{precision}_compact"].write_bytes(compact_tflite(blob))
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
    assert tflite_op_counts(compact) == tflite_op_counts(original)  # tf.split is a SPLIT already
    assert_same_outputs(original, compact)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("layout", list(SLICED))
def test_slices_that_partition_a_tensor_become_one_split(converted, layout, precision):
    original, compact = converted[f"{layout}_{precision}"], converted[f"{layout}_{precision}_compact"]
    before, after = tflite_op_counts(original), tflite_op_counts(compact)
    pieces, kept = (4, 0) if layout == "equal" else (3, 1)   # [2:10] is no piece of the partition
    merged = "SPLIT" if layout == "equal" else "SPLIT_V"
    assert before["STRIDED_SLICE"] == pieces + kept, before
    assert after.get("STRIDED_SLICE", 0) == kept and after[merged] == 1, after
    assert {k: v for k, v in after.items() if "SPLIT" not in k and k != "STRIDED_SLICE"} == \
        {k: v for k, v in before.items() if "SPLIT" not in k and k != "STRIDED_SLICE"}
    assert len(compact.read_bytes()) < len(original.read_bytes())
    assert_same_outputs(original, compact)


def assert_same_outputs(original, compact):
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
    from edgekd.host.export.tflite_compact import write_model

    blob = write_model(model)
    compact = read_model(compact_tflite(blob))
    # Buffer 0 (empty) is shared by every tensor without data; all other buffers are the used constants.
    def constants(m):
        used = {int(t.buffer) for sg in m.subgraphs for t in sg.tensors} | {int(x.buffer) for x in m.metadata}
        return sorted(bytes(m.buffers[i].data) for i in used if m.buffers[i].data is not None
                      and len(m.buffers[i].data))

    assert constants(compact) == constants(model)          # the orphan is gone, every used constant stays
    assert compact.buffers[0].data is None or len(compact.buffers[0].data) == 0
    assert all(b.data is not None and len(b.data) for b in compact.buffers[1:])
    assert len(compact.buffers) == 1 + len(constants(compact))
    for tensor in compact.subgraphs[0].tensors:
        data = compact.buffers[tensor.buffer].data
        assert (tensor.buffer == 0) == (data is None or len(data) == 0)


def test_not_a_tflite_file_is_refused():
    with pytest.raises(ValueError, match="TFL3"):
        compact_tflite(b"\x00" * 64)
