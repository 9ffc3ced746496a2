"""pytest-benchmark microbenchmarks of the runtime's per-frame hot paths.

On a real full-int8 TFLite model made with TensorFlow in a fixture (firmware_bench's end-to-end bundle: a
LiDAR-shaped [1, 8, 216] -> [1, 4, 64] network): input quantisation (fresh arrays, and the shared runner's
preallocated path the runtime runs), the interpreter invoke, output dequantisation, the whole call, and the
modality policy's per-frame decision. Each benchmark also checks
its result, so a fast wrong answer fails.

Run:  .venv/bin/python -m pytest tests/benchmarks/test_runtime_hotpaths.py --benchmark-enable
(pyproject's addopts keep each benchmark under ~0.5 s, so CI runs them as plain tests).
"""

from __future__ import annotations

import numpy as np
import pytest
from support.bundles import build_bundle

from edgekd.device.bundle import open_bundle
from edgekd.device.runtime.backends import dequantize, open_artifact, quantize


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return open_bundle(build_bundle(tmp_path_factory.mktemp("hotpaths") / "bundle"))


@pytest.fixture(scope="module")
def int8(bundle):
    return open_artifact(bundle.path, bundle.artifact("lidar", "tflite_int8"), threads=1)


@pytest.fixture(scope="module")
def window(bundle):
    return {"lidar": bundle.calibration_inputs("lidar")["lidar"][:1]}


def test_quantize_input(benchmark, int8, window):
    raw = benchmark(int8.quantize_inputs, window)
    (details, _) = int8.io_details()
    scale, zero_point = details[0]["quantization"]
    assert raw[0].dtype == np.int8 and raw[0].shape == (1, 8, 216)
    assert np.array_equal(raw[0], quantize(window["lidar"], scale, zero_point))
    # dequantising gives the input back to within half a quantisation step (inside the calibrated range)
    assert np.max(np.abs(dequantize(raw[0], scale, zero_point) - window["lidar"])) <= scale / 2 + 1e-6


def test_runner_prepare(benchmark, int8, window):
    # the runtime's preprocess: the shared runner quantises a hub window (no batch axis) into its buffer
    runner = int8.runner()
    hub_window = {"lidar": window["lidar"][0]}
    benchmark(runner.prepare, hub_window)
    runner.invoke()
    assert np.array_equal(runner.finish(), int8.run(window))


def test_runner_call(benchmark, int8, window):
    # what the runtime, firmware_bench and `bench --compare` all run per call
    logits = benchmark(int8.runner(), window)
    assert np.array_equal(logits, int8.run(window))


def test_invoke(benchmark, int8, window):
    raw = int8.quantize_inputs(window)
    out = benchmark(int8.invoke_raw, raw)
    assert out[0].dtype == np.int8 and out[0].shape == (1, 4, 64)
    assert len(np.unique(out[0])) > 8  # the int8 model really computes something


def test_dequantize_output(benchmark, int8, window):
    raw_out = int8.invoke_raw(int8.quantize_inputs(window))
    logits = benchmark(int8.dequantize_outputs, raw_out)
    assert logits.dtype == np.float32 and logits.shape == (1, 4, 64) and np.isfinite(logits).all()


def test_end_to_end_int8_matches_onnx_fp32(benchmark, bundle, int8, window):
    logits = benchmark(int8.run, window)
    reference = open_artifact(bundle.path, bundle.artifact("lidar", "onnx_fp32"), threads=1).run(window)
    # the same network in fp32: int8 error stays a small fraction of the logits' range
    assert np.max(np.abs(logits - reference)) < 0.1 * np.ptp(reference)


def test_policy_step(benchmark):
    from edgekd.device.runtime.hub import Health
    from edgekd.device.runtime.policy import ModalityPolicy, PolicySettings
    from edgekd.device.targets import load_target

    settings = PolicySettings.from_profile(load_target("x86-ap").policy)
    policy = ModalityPolicy(settings, {"image": ("image",), "radar": ("radar",), "lidar": ("lidar",)})

    def health(luminance: float, camera: bool) -> dict[str, Health]:
        return {"image": Health(camera, 0.9 if camera else 0.0, luminance, 0.03 if camera else float("inf"),
                                "" if camera else "no frame"),
                "radar": Health(True, 0.8, 18.0, 0.02, ""), "lidar": Health(True, 0.7, 0.8, 0.02, "")}

    # a drive into the night with camera dropouts: day frames, dusk, night, camera lost
    frames = [health(0.5, True)] * 30 + [health(0.26, True)] * 30 + [health(0.07, True)] * 30 + \
        [health(0.07, False)] * 10
    state = {"i": 0}

    def step():
        decision = policy.decide(frames[state["i"] % len(frames)])
        state["i"] += 1
        return decision

    benchmark(step)
    policy.reset()
    chosen = [policy.decide(h).student for h in frames]
    assert chosen[0] == "image" and chosen[-1] in ("radar", "lidar")
    assert all(s is not None for s in chosen)
