"""firmware_bench: the on-device benchmark harness (latency, memory, energy) for edgekd bundles.

Runs on a board with only ``edgekd[device]`` installed: the standard library,
numpy, one interpreter (ai-edge-litert, tflite-runtime or onnxruntime) and,
optionally, psutil. NEVER import torch or tensorflow here, not even
indirectly (a test checks ``sys.modules``).

Library use::

    from firmware_bench import run_benchmark
    report = run_benchmark("bundles/rpi5", "image", runs=2000, power_meter="auto", out="bench/")

Command line: ``python -m firmware_bench --bundle B [--student image] ...``.
"""

from firmware_bench.harness import BenchSettings, run_benchmark
from firmware_bench.latency import latency_stats, mlperf_single_stream
from firmware_bench.power import METERS, MeterOptions, PowerModel, choose_reader

__all__ = ["BenchSettings", "METERS", "MeterOptions", "PowerModel", "choose_reader", "latency_stats",
           "mlperf_single_stream", "run_benchmark"]
