"""Runs bundle artifacts on recorded raw inputs and saves their raw outputs: the board half of the check.

A standalone script, executed as the board would run it: with the board's python3.11 under qemu-user
(``edgekd bundle check``), and the same script with the host's Python for the reference outputs, so both
sides invoke the interpreter the same way. It imports ONLY the standard library, numpy and the TFLite
interpreter (what ``edgekd[device]`` installs on a board); it never imports edgekd.

    python runner.py JOB.json [SITE_DIR]

``JOB.json``: ``{"threads": int, "artifacts": [{"key", "model", "sha256", "inputs", "input_indices", "out"}]}``.
``inputs`` is an ``.npz`` of raw input tensors ``in0, in1, ...`` (``[N, ...]``, already quantised: the check
compares kernels, not the quantiser), ``out`` the ``.npz`` written with ``out0, ...`` (``[N, ...]``). Each
model file is re-hashed first: a board refuses an artifact that is not the one the manifest names.

``EDGEKD_BOARDCHECK_PERTURB=<key>`` (tests only) changes the first output value of that artifact (one LSB,
or +1.0 for a float output): a board-side change the check must report as a mismatch.
"""

import hashlib
import json
import os
import platform
import sys
import time

PERTURB_ENV = "EDGEKD_BOARDCHECK_PERTURB"


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tflite_runtime.interpreter import Interpreter
    return Interpreter


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_artifact(interpreter_cls, job, threads, np):
    """Invoke one artifact on every recorded window; returns the seconds spent invoking."""
    if _sha256(job["model"]) != job["sha256"]:
        raise SystemExit(f"{job['model']}: sha256 differs from the manifest; refusing to run it")
    interpreter = interpreter_cls(model_path=job["model"], num_threads=threads)
    interpreter.allocate_tensors()
    outputs = [d["index"] for d in interpreter.get_output_details()]
    with np.load(job["inputs"]) as data:
        inputs = [data[f"in{i}"] for i in range(len(job["input_indices"]))]
    count = len(inputs[0])
    results = [[] for _ in outputs]
    start = time.perf_counter()
    for n in range(count):
        for index, x in zip(job["input_indices"], inputs):
            interpreter.set_tensor(index, x[n])
        interpreter.invoke()
        for store, index in zip(results, outputs):
            store.append(interpreter.get_tensor(index).copy())
    seconds = time.perf_counter() - start
    arrays = {f"out{i}": np.stack(store) for i, store in enumerate(results)}
    if os.environ.get(PERTURB_ENV) == job["key"]:
        first = arrays["out0"].reshape(-1)  # a view: the change lands in arrays["out0"]
        if first.dtype.kind in "iu":
            first[0] ^= 1   # one LSB
        else:
            first[0] += 1
    np.savez(job["out"], **arrays)
    return seconds


def main(argv):
    if len(argv) > 2:
        sys.path.insert(0, argv[2])  # the board's site-packages (python runs with -s -E: nothing else)
    import numpy as np

    interpreter_cls = _interpreter_class()
    with open(argv[1]) as handle:
        job = json.load(handle)
    timings = {}
    for artifact in job["artifacts"]:
        timings[artifact["key"]] = run_artifact(interpreter_cls, artifact, job["threads"], np)
    info = {"machine": platform.machine(), "python": platform.python_version(), "numpy": np.__version__,
            "interpreter": interpreter_cls.__module__, "invoke_s": timings}
    print(json.dumps(info))


if __name__ == "__main__":
    main(sys.argv)
