"""Acceptance: the int8 TFLite files run where many boards are - numpy<2 and tflite-runtime 2.14 only -
and give the same predictions as in the main environment.

The separate virtual environment is built once and cached in the system temp
dir under a folder keyed by the requirement set and the Python version. It
needs PyPI (CI has it); offline the test is skipped unless
EDGEKD_REQUIRE_TFLITE_RUNTIME=1, which turns a failed install into a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from support.export import cache_dir, env_flag, make_dataset, train_student

pytestmark = pytest.mark.slow

REQUIREMENTS = ("numpy<2", "tflite-runtime==2.14.0")
WINDOWS = 12

# Runs inside the separate environment: nothing but numpy and tflite_runtime.
RUNNER = r"""
import json, sys
import numpy as np
from tflite_runtime.interpreter import Interpreter
job = json.load(open(sys.argv[1]))
result = {"numpy": np.__version__}
for name, spec in job.items():
    interpreter = Interpreter(model_path=spec["model"], num_threads=1)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8, (inp["dtype"], out["dtype"])
    raw = np.load(spec["inputs"])
    outputs = []
    for window in raw:
        interpreter.set_tensor(inp["index"], window[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(out["index"])[0])
    np.save(spec["outputs"], np.stack(outputs))
print(json.dumps(result))
"""


def _runtime_env() -> Path:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    env_dir = cache_dir("tflite-runtime-env", version, *REQUIREMENTS)
    python = env_dir / "bin" / "python"
    marker = env_dir / ".complete"
    if marker.is_file() and python.is_file():
        return python
    build = Path(tempfile.mkdtemp(prefix=env_dir.name + ".", dir=env_dir.parent))
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(build)], check=True, capture_output=True)
        pip = subprocess.run([str(build / "bin" / "python"), "-m", "pip", "install", "-q", *REQUIREMENTS],
                             capture_output=True, text=True, timeout=600)
        if pip.returncode != 0:
            message = f"cannot install {REQUIREMENTS}: {pip.stderr.strip()[-800:]}"
            if env_flag("EDGEKD_REQUIRE_TFLITE_RUNTIME"):
                pytest.fail(message)
            pytest.skip(message)
        # venvs are not relocatable: rebuild at the final path now that the install is known to work
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(env_dir)], check=True, capture_output=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *REQUIREMENTS], check=True,
                       capture_output=True, timeout=600)
        marker.write_text("\n".join(REQUIREMENTS))
    finally:
        subprocess.run(["rm", "-rf", str(build)], check=False)
    return python


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from edgekd.host.export import export_bundle

    root = tmp_path_factory.mktemp("tflrt")
    make_dataset(root / "data")
    train_student("lidar_student", root / "data", root / "lidar.pt", epochs=8)
    train_student("radar_student", root / "data", root / "radar.pt", epochs=3)
    export_bundle([root / "lidar.pt", root / "radar.pt"], "rpi4", root / "data", root / "bundle",
                  eval_windows=60, calibration_size=64, allow_degraded=True)
    return root / "bundle"


def test_int8_files_give_the_same_predictions_under_tflite_runtime_2_14(bundle, tmp_path):
    from edgekd.device.bundle import open_bundle
    from edgekd.device.runtime.backends import open_artifact

    python = _runtime_env()
    opened = open_bundle(bundle)
    job, expected = {}, {}
    for name in opened.students:
        backend = open_artifact(opened.path, opened.artifact(name, "tflite_int8"), threads=1)
        calibration = opened.calibration_inputs(name)
        windows = [{m: calibration[m][i:i + 1] for m in calibration} for i in range(WINDOWS)]
        raw = np.stack([backend.quantize_inputs(w)[0][0] for w in windows])
        expected[name] = np.stack([backend.invoke_raw([r[None]])[0][0] for r in raw])
        np.save(tmp_path / f"{name}_in.npy", raw)
        job[name] = {"model": str(bundle / opened.artifact(name)["path"]), "inputs": str(tmp_path / f"{name}_in.npy"),
                     "outputs": str(tmp_path / f"{name}_out.npy")}
    (tmp_path / "job.json").write_text(json.dumps(job))
    (tmp_path / "runner.py").write_text(RUNNER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.run([str(python), str(tmp_path / "runner.py"), str(tmp_path / "job.json")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["numpy"].startswith("1.")
    for name in job:
        got = np.load(tmp_path / f"{name}_out.npy")
        assert got.dtype == np.int8 and got.shape == expected[name].shape
        # The raw int8 logits may differ by a few quantisation steps (the two runtimes' XNNPACK versions
        # round differently, and 11 GRU steps accumulate it).
        steps = np.abs(got.astype(int) - expected[name].astype(int))
        assert steps.mean() <= 0.5 and steps.max() <= 4, (name, steps.mean(), steps.max())
        # Same predictions: the top-1 beam agrees wherever the reference's top-1 leads its runner-up by more
        # than the two runtimes' rounding difference; a flip is allowed only between beams tied within it.
        ref, flipped = expected[name].astype(int), got.argmax(-1) != expected[name].argmax(-1)
        ref_top = np.take_along_axis(ref, expected[name].argmax(-1)[..., None], -1)[..., 0]
        got_top = np.take_along_axis(ref, got.argmax(-1)[..., None], -1)[..., 0]
        assert (ref_top - got_top)[flipped].max(initial=0) <= 2 * steps.max(), (name, np.argwhere(flipped))
        assert flipped.mean() <= 0.05, (name, flipped.mean())
