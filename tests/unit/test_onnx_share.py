"""share_identical_initializers: duplicate constants stored once, outputs unchanged."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgekd.host.export.onnx_export import share_identical_initializers


def two_matmuls_with_copied_weights() -> onnx.ModelProto:
    w = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    other = np.ones((4, 4), dtype=np.float32)
    inits = [numpy_helper.from_array(w, "w_a"), numpy_helper.from_array(w.copy(), "w_b"),
             numpy_helper.from_array(other, "w_c")]
    nodes = [helper.make_node("MatMul", ["x", "w_a"], ["y1"]), helper.make_node("MatMul", ["x", "w_b"], ["y2"]),
             helper.make_node("Add", ["y1", "y2"], ["y3"]), helper.make_node("MatMul", ["y3", "w_c"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]


def test_duplicates_are_stored_once_and_outputs_unchanged():
    x = np.array([[1.0, -2.0, 0.5]], dtype=np.float32)
    before = run(two_matmuls_with_copied_weights(), x)
    shared = share_identical_initializers(two_matmuls_with_copied_weights())
    onnx.checker.check_model(shared, full_check=True)
    assert sorted(t.name for t in shared.graph.initializer) == ["w_a", "w_c"]
    assert [n.input[1] for n in shared.graph.node if n.op_type == "MatMul"][:2] == ["w_a", "w_a"]
    np.testing.assert_array_equal(run(shared, x), before)


def test_a_graph_without_duplicates_is_left_alone():
    model = two_matmuls_with_copied_weights()
    model.graph.initializer[1].CopyFrom(numpy_helper.from_array(np.zeros((3, 4), np.float32), "w_b"))
    assert len(share_identical_initializers(model).graph.initializer) == 3
