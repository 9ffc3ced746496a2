"""Every registered model exports to ONNX (opset 17, TorchScript exporter) at batch 1 with static
shapes, and onnxruntime reproduces torch within 1e-4."""

from __future__ import annotations

import io
import warnings
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgekd.host.models import create_model, list_models, model_arguments

torch.set_num_threads(1)
SMALL = {"image_size": 32, "radar_shape": [32, 16]}


def export(model) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, model.example_inputs(1), buf, opset_version=17, dynamo=False,
                          input_names=list(model.input_modalities), output_names=["logits"])
    return buf.getvalue()


@pytest.mark.parametrize("name", list_models())
def test_onnx_export_matches_torch(name: str) -> None:
    accepted = model_arguments(name)
    model = create_model(name, **{k: v for k, v in SMALL.items() if k in accepted}).eval()
    graph = onnx.load_from_string(export(model))
    onnx.checker.check_model(graph)
    ops = Counter(node.op_type for node in graph.graph.node)
    # Unrolled and static: no recurrent op, no loops, no runtime shape computations.
    assert not {"GRU", "LSTM", "Loop", "Scan", "If", "Shape"} & set(ops), ops
    for value in graph.graph.input:
        assert all(d.dim_value > 0 for d in value.type.tensor_type.shape.dim)  # static shapes
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    inputs = model.example_inputs(1, seed=7)
    got = session.run(["logits"], {m: x.numpy() for m, x in zip(model.input_modalities, inputs)})[0]
    with torch.no_grad():
        want = model(*inputs).numpy()
    assert got.shape == (1, 4, 64)
    assert np.max(np.abs(got - want)) <= 1e-4


def test_unrolled_gru_exports_one_input_matmul_and_one_split_per_sequence() -> None:
    model = create_model("lidar_student").eval()
    graph = onnx.load_from_string(export(model)).graph
    ops = Counter(n.op_type for n in graph.node)
    steps = model.steps
    # 1 input projection (embed) + 1 GRU input projection + (steps - 1) n-gate matmuls (with b_hn) + 1
    # classifier = Gemm count; the first step and the padded steps need no input matmul.
    assert ops["Gemm"] == 1 + 1 + (steps - 1) + 1
    # The r/z recurrent matmuls carry no bias (b_hr, b_hz are folded into the input projection); the
    # one more bias-free MatMul is the padded frame's projection (a constant, folded on export).
    assert ops["MatMul"] == (steps - 1) + 1
    # One Split hands every observed step its r/z and n input gates (no per-step Squeeze), one splits
    # the padded frame's projection, one per step splits r from z.
    splits = [n for n in graph.node if n.op_type == "Split"]
    assert len(splits) == 1 + 1 + steps
    assert max(len(n.output) for n in splits) == 2 * model.window
    assert "Squeeze" not in ops


@pytest.mark.parametrize("name", ["image_student", "radar_student", "fusion_student"])
def test_default_students_have_no_thin_dense_convolutions(name: str) -> None:
    # XNNPACK's int8 convs on x86 pad each kernel tap's input channels to 8: a dense conv reading
    # 1-4 channels (the paper stems) runs 5x slower than float32. Only depthwise convs may be thin.
    accepted = model_arguments(name)
    model = create_model(name, **{k: v for k, v in SMALL.items() if k in accepted}).eval()
    graph = onnx.load_from_string(export(model))
    weights = {init.name: tuple(init.dims) for init in graph.graph.initializer}
    for node in graph.graph.node:
        if node.op_type != "Conv":
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        out_ch, in_per_group = weights[node.input[1]][:2]
        if group == 1:
            assert in_per_group >= 8, (node.name, weights[node.input[1]])
        else:
            assert group == out_ch and in_per_group == 1  # depthwise
