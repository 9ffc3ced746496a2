"""int8 vs float32 TFLite latency of each student on this machine (XNNPACK), through edgekd's export path.

Each student (default profile, seed 0) goes torch -> ONNX (``edgekd.host.export.onnx_export``) -> TFLite
fp32 + full-int8 (``edgekd.host.export.tflite``: onnx2tf, TF converter with a representative set,
int8 input and output). Both files run on the TFLite interpreter with its default XNNPACK
delegate; fp32 and int8 are timed in alternation (the machine may be shared) and the median of
the per-round medians is reported. The fp32 file is also checked against torch, and the int8
file's top-1 agreement with torch is printed, with both files' sizes (as shipped: compacted) and
op counts.

Run (about 1 minute per model on 2 cores):

    .venv/bin/python tests/benchmarks/int8_vs_fp32.py
    .venv/bin/python tests/benchmarks/int8_vs_fp32.py --models image_student --paper-layout --threads 1 2

Acceptance (issue 5): int8 median <= fp32 median for every student; int8 file >= 3x smaller.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STUDENTS = ("image_student", "radar_student", "lidar_student", "fusion_student")
#: the paper's exact layouts (before the int8-friendly defaults), for comparison
PAPER_LAYOUT = {"image_student": {"stem": "conv", "channels": [18, 36, 72, 144], "norm": "layer"},
                "radar_student": {"stem": "conv", "norm": "layer"},
                "fusion_student": {"stem": "conv", "norm": "layer"}}


def convert_student(name: str, work: Path, *, calibration: int = 64, **kwargs) -> tuple[object, dict[str, Path]]:
    """Build ``name`` and convert it to fp32 and int8 .tflite through edgekd.host.export."""
    import torch

    from edgekd.host.export.onnx_export import export_onnx
    from edgekd.host.export.tflite import convert_onnx_to_tflite
    from edgekd.host.models import create_model

    torch.manual_seed(0)
    model = create_model(name, **kwargs).eval()
    names = list(model.input_modalities)
    work.mkdir(parents=True, exist_ok=True)
    onnx_path = export_onnx(model, work / f"{name}.onnx", input_names=names, example_inputs=model.example_inputs(1))
    calib = work / "calibration.npz"
    np.savez(calib, **{n: t.numpy() for n, t in zip(names, model.example_inputs(calibration, seed=3))})
    files = convert_onnx_to_tflite(onnx_path, work / "tflite", input_names=names, calibration_npz=calib,
                                   precisions=("fp32", "int8"))
    return model, files


def invoke_median_us(path: Path, threads: int, runs: int) -> float:
    from edgekd.device.runtime.backends import tflite_interpreter_class

    interpreter = tflite_interpreter_class()(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    for d in interpreter.get_input_details():
        interpreter.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    for _ in range(max(10, runs // 10)):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def agreement(model, files: dict[str, Path], windows: int = 32) -> dict[str, float]:
    """fp32: max |logit - torch|; int8: top-1 agreement with torch (random inputs, untrained weights)."""
    import torch

    from edgekd.device.runtime.backends import TFLiteBackend

    inputs = model.example_inputs(windows, seed=11)
    with torch.no_grad():
        want = model(*inputs).numpy()
    got = {}
    for precision in ("fp32", "int8"):
        backend = TFLiteBackend(files[precision], threads=1, input_names=list(model.input_modalities))
        got[precision] = np.concatenate([backend.run({m: x[i:i + 1].numpy() for m, x in
                                                      zip(model.input_modalities, inputs)}) for i in range(windows)])
    return {"fp32_max_abs_diff": float(np.abs(got["fp32"] - want).max()),
            "int8_top1_agreement": float((got["int8"].argmax(-1) == want.argmax(-1)).mean())}


def sizes_and_ops(files: dict[str, Path]) -> dict[str, object]:
    """Bytes and op counts of the compacted files, and the fp32/int8 size ratio (the issue asks >= 3)."""
    from edgekd.host.export.graph import tflite_ops

    row: dict[str, object] = {}
    for precision in ("fp32", "int8"):
        row[f"{precision}_bytes"] = files[precision].stat().st_size
        row[f"{precision}_ops"] = sum(tflite_ops(files[precision]).values())
    row["size_ratio"] = round(row["fp32_bytes"] / row["int8_bytes"], 2)
    return row


def compare(files: dict[str, Path], threads: int, *, rounds: int = 5, runs: int = 300) -> dict[str, float]:
    per_round = {"fp32": [], "int8": []}
    for _ in range(rounds):  # alternate, so that load from other processes hits both alike
        for precision in per_round:
            per_round[precision].append(invoke_median_us(files[precision], threads, runs))
    return {p: round(statistics.median(v), 1) for p, v in per_round.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(STUDENTS), help="registry names to compare")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="interpreter num_threads values")
    parser.add_argument("--rounds", type=int, default=5, help="alternating fp32/int8 rounds")
    parser.add_argument("--runs", type=int, default=300, help="invokes per round")
    parser.add_argument("--paper-layout", action="store_true", help="also measure the paper's exact layouts")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(1)
    variants = [(name, {}) for name in args.models]
    if args.paper_layout:
        variants += [(name, PAPER_LAYOUT[name]) for name in args.models if name in PAPER_LAYOUT]
    results = []
    with tempfile.TemporaryDirectory(prefix="edgekd-int8-bench-") as tmp:
        for i, (name, kwargs) in enumerate(variants):
            model, files = convert_student(name, Path(tmp) / f"{i}_{name}", **kwargs)
            row = {"model": name, "kwargs": kwargs, **agreement(model, files), **sizes_and_ops(files)}
            for threads in args.threads:
                medians = compare(files, threads, rounds=args.rounds, runs=args.runs)
                row[f"threads{threads}"] = {**medians, "int8_not_slower": medians["int8"] <= medians["fp32"]}
            results.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    ok = all(r[f"threads{t}"]["int8_not_slower"] for r in results if not r["kwargs"] for t in args.threads)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
