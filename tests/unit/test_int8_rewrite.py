"""int8_rewrite: the exported logits layer is rewritten to quantise well without changing what is deployed."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgekd.device.errors import EdgekdError
from edgekd.host.export.int8_rewrite import (
    MARGIN,
    PointwiseLogits,
    check_same_deployed,
    classifier_inputs,
    final_linear,
    fit_row_max,
    int8_friendly_logits,
)
from edgekd.host.export.onnx_export import DeployedLogits
from edgekd.host.models import create_model

torch.set_num_threads(1)
FLOOR = 8.0


def student(name: str = "image_student"):
    """A small student whose logits span a trained student's kind of range: [-40, 10] (hopeless beams far down)."""
    torch.manual_seed(0)
    kwargs = {"image_student": {"image_size": 32}, "radar_student": {"radar_shape": [32, 16]}}[name]
    model = create_model(name, **kwargs).eval()
    layer = final_linear(model)
    with torch.no_grad():
        layer.weight.mul_(10.0)
        layer.bias.copy_(torch.linspace(-40.0, 0.0, layer.out_features)[torch.randperm(layer.out_features)])
    return model


def windows(model, count: int = 48, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {m: rng.random((count, *x.shape[1:]), dtype=np.float32)
            for m, x in zip(model.input_modalities, model.example_inputs(1))}


@pytest.mark.parametrize("name", ["image_student", "radar_student"])
def test_deployed_logits_are_unchanged_on_the_calibration_windows(name):
    model = student(name)
    cal = windows(model)
    mods = list(model.input_modalities)
    rewritten, record = int8_friendly_logits(model, cal, mods, floor=FLOOR)
    assert isinstance(rewritten.head.classifier[-1], PointwiseLogits)
    assert isinstance(model.head.classifier[-1], torch.nn.Linear)   # the checkpoint's model is left alone
    worst = check_same_deployed(DeployedLogits(model, floor=FLOOR), DeployedLogits(rewritten, floor=FLOOR), cal, mods,
                                tolerance=1e-4)
    assert worst <= 1e-4
    assert record["calibration_rows"] == len(cal[mods[0]]) * model.horizons
    assert record["relu_floor"] < record["row_max_residual"][0] - FLOOR


def test_the_quantised_tensor_range_shrinks_to_about_the_floor():
    model = student()
    cal = windows(model)
    mods = list(model.input_modalities)
    rewritten, record = int8_friendly_logits(model, cal, mods, floor=FLOOR)
    raw = _layer_outputs(model, cal, mods)
    new = _layer_outputs(rewritten, cal, mods)
    spread = record["row_max_residual"][1] - record["row_max_residual"][0]
    assert new.min() >= 0   # the ReLU floor, fused into the op by the converters
    assert new.max() - new.min() <= FLOOR + MARGIN + spread + 1e-3
    assert raw.max() - raw.min() > 2 * (new.max() - new.min())   # what int8 had to cover before


def _layer_outputs(model, cal, mods) -> np.ndarray:
    seen = []
    hook = model.head.classifier[-1].register_forward_hook(lambda m, a, out: seen.append(out.detach()))
    with torch.no_grad():
        model(*[torch.from_numpy(cal[m]) for m in mods])
    hook.remove()
    return torch.cat(seen).numpy()


def test_row_max_fit_is_exact_when_the_max_is_affine():
    torch.manual_seed(0)
    h = torch.rand(200, 8, dtype=torch.float64)
    weight = torch.randn(5, 8, dtype=torch.float64) * 0.1
    weight[2] += 3.0   # beam 2 always wins by far: the row max is exactly affine in h
    bias = torch.zeros(5, dtype=torch.float64)
    bias[2] = 10.0
    a, c, residual = fit_row_max(h, weight, bias)
    torch.testing.assert_close(a, weight[2])
    assert abs(float(c) - 10.0) < 1e-8 and float(residual.abs().max()) < 1e-8


def test_a_rewrite_that_moves_the_logits_is_refused():
    model = student()
    cal = windows(model)
    mods = list(model.input_modalities)
    rewritten, _ = int8_friendly_logits(model, cal, mods, floor=FLOOR)
    conv = rewritten.head.classifier[-1].conv
    with torch.no_grad():
        conv.bias[conv.bias.argmax()] += 1.0   # the usual best beam's logit moves by 1
    with pytest.raises(EdgekdError, match="changes the deployed logits"):
        check_same_deployed(DeployedLogits(model, floor=FLOOR), DeployedLogits(rewritten, floor=FLOOR), cal, mods)


def test_models_without_a_linear_logits_layer_are_left_as_they_are():
    class NoHead(torch.nn.Module):
        input_modalities = ("gps",)

        def forward(self, gps):
            return gps

    model = NoHead()
    same, record = int8_friendly_logits(model, {"gps": np.zeros((2, 3), np.float32)}, ["gps"])
    assert same is model and record is None


def test_exported_graph_ends_in_a_conv_with_relu_and_matches_torch():
    model = student()
    cal = windows(model, count=16)
    mods = list(model.input_modalities)
    rewritten, _ = int8_friendly_logits(model, cal, mods, floor=FLOOR)
    deployed = DeployedLogits(rewritten, floor=FLOOR).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(deployed, model.example_inputs(1), buf, opset_version=17, dynamo=False,
                          input_names=mods, output_names=["logits"])
    graph = onnx.load_from_string(buf.getvalue())
    ops = [n.op_type for n in graph.graph.node]
    last_conv = len(ops) - 1 - ops[::-1].index("Conv")
    assert ops[last_conv + 1] == "Relu"   # fused into the conv by TFLite / removed by QDQ: the floor sets the range
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    x = {m: cal[m][:1] for m in mods}
    with torch.no_grad():
        expected = deployed(*[torch.from_numpy(x[m]) for m in mods]).numpy()
    np.testing.assert_allclose(session.run(None, x)[0], expected, atol=1e-4)


def test_classifier_inputs_cover_every_window_and_horizon():
    model = student()
    cal = windows(model, count=10)
    h = classifier_inputs(model, final_linear(model), cal, list(model.input_modalities))
    assert h.shape == (10 * model.horizons, final_linear(model).in_features)

