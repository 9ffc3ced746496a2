"""The compute floor of each int8 student: its MACs at this CPU's measured peak int8 MAC rate.

The peak comes from a large full-int8 matmul (``FULLY_CONNECTED`` [M, K] x [K, N], int8 in and out) run by the
same TFLite interpreter, threads and delegate (XNNPACK) as the students; the file is made once per
TensorFlow version in a child process (TensorFlow stays out of the comparing process) and cached in the
temp folder. ``share of floor`` = floor / measured p50 of the student's int8 call: 100% would be a call that
only multiplies; the rest is per-op overhead of a small graph, quantisation of the input and the output.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

M, K, N = 256, 1024, 1024     # 268M MACs per call: large enough that per-op overhead is < 1%


def matmul_model(path: Path | None = None) -> Path:
    """The cached int8 matmul .tflite (made by ``python -m edgekd.host.compare.floor OUT``)."""
    import importlib.metadata as md

    try:
        tf_version = md.version("tensorflow")
    except md.PackageNotFoundError:
        tf_version = "none"
    path = path or Path(tempfile.gettempdir()) / f"edgekd-int8-matmul-{M}x{K}x{N}-tf{tf_version}.tflite"
    if not path.is_file():
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "-1"}
        subprocess.run([sys.executable, "-m", "edgekd.host.compare.floor", str(path)], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    return path


def peak_int8_macs_per_second(threads: int = 1, *, seconds: float = 1.0) -> dict:
    """Best-of measured MAC rate of the int8 matmul on the TFLite interpreter (XNNPACK, ``threads``)."""
    from edgekd.device.runtime.backends import TFLiteBackend

    backend = TFLiteBackend(matmul_model(), threads=threads)
    raw = [np.random.default_rng(0).integers(-128, 128, size=s, dtype=np.int8) for s in backend.input_shapes]
    for _ in range(3):
        backend.invoke_raw(raw)
    times: list[int] = []
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop or len(times) < 5:
        t0 = time.perf_counter_ns()
        backend.invoke_raw(raw)
        times.append(time.perf_counter_ns() - t0)
    best = min(times) / 1e9
    return {"macs_per_call": M * K * N, "best_call_s": best, "macs_per_s": M * K * N / best, "calls": len(times),
            "threads": threads, "shape": [M, K, N]}


def student_floor(macs: int, peak: dict, p50_ms: float | None) -> dict:
    floor_us = 1e6 * macs / peak["macs_per_s"]
    share = None if not p50_ms else floor_us / (1e3 * p50_ms)
    return {"macs": int(macs), "floor_us": round(floor_us, 3), "share_of_floor": None if share is None
            else round(share, 4)}


def _build(out: str) -> None:   # child process: TensorFlow
    import tensorflow as tf

    rng = np.random.default_rng(0)
    weight = tf.constant(rng.normal(0, 0.05, (K, N)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([M, K], tf.float32)])
    def matmul(x):
        return tf.matmul(x, weight)

    def representative():
        for _ in range(8):
            yield [rng.normal(0, 1, (M, K)).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_concrete_functions([matmul.get_concrete_function()], matmul)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    blob = converter.convert()
    tmp = Path(out + ".partial")
    tmp.write_bytes(blob)
    tmp.replace(out)


if __name__ == "__main__":  # pragma: no cover - child process
    _build(sys.argv[1])
