"""ONNX -> TFLite (float32, float16, full-integer int8) through onnx2tf and the TF Lite converter.

The conversion runs in a child process (``python -m edgekd.host.export.tflite``):
TensorFlow stays out of the exporting process (which holds torch), its
C++ logging goes to a log file instead of the terminal, and a crash or hang
of a converter is an error with its log, never a reported success.

Route: onnx2tf -> SavedModel (+ its float32/float16 .tflite); then
``tf.lite.TFLiteConverter.from_saved_model`` with the calibration windows as
representative dataset, ``TFLITE_BUILTINS_INT8`` only and int8 input AND
output. Every input keeps the model's layout (``keep_shape_absolutely_input_names``),
so no silent NCHW -> NHWC change happens. Every produced file is then
compacted (``tflite_compact``: no internal tensor names, no empty
quantisation tables; outputs checked bit-exact against the converter's file)
and read back (``verify_int8_tflite``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgekd.device.errors import EdgekdError

log = logging.getLogger(__name__)
CONVERTER_NAME = "edgekd-convert"   # the converter child's process name once its death signal is armed

PRECISIONS = ("fp32", "fp16", "int8")
CONVERT_TIMEOUT_S = 900
# Per-tensor (not per-channel) int8 weights for FULLY_CONNECTED. Why: the unrolled GRU gives every step
# its own int32 bias tensor (its scale follows that step's input scale); per-channel, each carries one
# scale and one int64 zero point per output channel: 17-44 KiB of quantisation tables per student, a
# fifth of the int8 file. Per-tensor makes the int8 file 2.1 -> 2.7x smaller than float32 (conv
# students), XNNPACK latency is unchanged, and the top-2 drop against float32 stayed within the
# 1-point budget on the trained test students (measured by H5b, see BENCHMARKS.md). Convolutions stay
# per-channel (depthwise kernels need it).
DENSE_PER_TENSOR = True
# The converter has no public switch for that: this private attribute (TF 2.21) is it. Setting a name that a
# TF upgrade dropped would silently go back to per-channel, so it is checked first (_disable_dense_per_channel).
DENSE_PER_TENSOR_ATTRIBUTE = "_experimental_disable_per_channel_quantization_for_dense_layers"


def convert_onnx_to_tflite(onnx_path: str | os.PathLike, work_dir: str | os.PathLike, *,
                           input_names: Sequence[str], calibration_npz: str | os.PathLike | None,
                           precisions: Sequence[str] = PRECISIONS, timeout_s: int = CONVERT_TIMEOUT_S
                           ) -> dict[str, Path]:
    """Convert in a child process; returns precision -> .tflite path. Failures raise with the log's tail."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    log_path = work_dir / "convert.log"
    result_path = work_dir / "result.json"
    if "int8" in precisions and calibration_npz is None:
        raise ValueError("int8 conversion needs a calibration set")
    cmd = [sys.executable, "-m", "edgekd.host.export.tflite", "--onnx", str(onnx_path), "--work", str(work_dir),
           "--inputs", ",".join(input_names), "--precisions", ",".join(precisions), "--result", str(result_path),
           "--parent-pid", str(os.getpid())]  # the child dies with this process, even when it is SIGKILLed
    if calibration_npz is not None:
        cmd += ["--calibration", str(calibration_npz)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "-1",
           "TF_ENABLE_ONEDNN_OPTS": "0"}
    start = time.perf_counter()
    with open(log_path, "wb") as log_file:
        try:
            proc = subprocess.run(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise EdgekdError(f"TFLite conversion did not finish in {timeout_s} s", file=keep_log(log_path),
                              fix="see the converter log; simplify the model or raise the timeout") from None
    log.info("tflite conversion of %s took %.1f s", Path(onnx_path).name, time.perf_counter() - start)
    if proc.returncode != 0 or not result_path.is_file():
        raise EdgekdError(f"TFLite conversion failed (exit {proc.returncode}): {_log_tail(log_path)}",
                          file=keep_log(log_path), fix="the full converter log is kept at this path")
    result = json.loads(result_path.read_text())
    files = {p: Path(f) for p, f in result["files"].items()}
    for precision in precisions:
        if precision not in files or not files[precision].is_file() or files[precision].stat().st_size == 0:
            raise EdgekdError(f"the converter reported no {precision} .tflite file", file=keep_log(log_path),
                              fix="the full converter log is kept at this path")
    return files


def keep_log(log_path: Path) -> Path:
    """Copy a converter log out of the scratch folder (deleted on failure) and return the kept path."""
    import shutil
    import tempfile

    kept_dir = Path(tempfile.gettempdir()) / "edgekd-export-logs"
    kept_dir.mkdir(parents=True, exist_ok=True)
    kept = kept_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{log_path.parent.parent.name}.log"
    try:
        shutil.copyfile(log_path, kept)
    except OSError:
        return log_path
    return kept


def _log_tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    interesting = [ln for ln in text if "Error" in ln or "error" in ln or "Exception" in ln]
    tail = (interesting[-3:] if interesting else []) + text[-lines:]
    return "\n    " + "\n    ".join(dict.fromkeys(tail))


def verify_int8_tflite(path: str | os.PathLike) -> dict:
    """Read a produced int8 file back: int8 input/output and no float op, else an error naming the offender."""
    from edgekd.device.runtime.backends import TFLiteBackend, tflite_float_ops

    backend = TFLiteBackend(path, use_xnnpack=False)
    inputs, outputs = backend.io_details()
    for side, details in (("input", inputs), ("output", outputs)):
        for d in details:
            if np.dtype(d["dtype"]) != np.int8:
                raise EdgekdError(f"'int8' model has {np.dtype(d['dtype']).name} {side} '{d['name']}' "
                                  "(that is dynamic-range or float, not full-integer)", file=path,
                                  fix="convert with TFLITE_BUILTINS_INT8 and int8 inference input/output types")
            scale, _ = d["quantization"]
            if not scale > 0:
                raise EdgekdError(f"int8 {side} '{d['name']}' has no quantisation scale", file=path)
    floats = tflite_float_ops(path)
    if floats:
        raise EdgekdError(f"'int8' model still computes in float: {', '.join(floats[:10])}", file=path,
                          fix="an op has no int8 kernel; replace it in the model")
    return {"inputs": inputs, "outputs": outputs}


# ----------------------------------------------------------------------------- child process


def _run_onnx2tf(onnx_path: Path, saved_model: Path, input_names: list[str]) -> None:
    import onnx2tf

    onnx2tf.convert(
        input_onnx_file_path=str(onnx_path),
        output_folder_path=str(saved_model),
        keep_shape_absolutely_input_names=input_names,   # the manifest's layout = the model's layout
        copy_onnx_input_output_names_to_tflite=True,
        output_signaturedefs=True,
        non_verbose=True,
    )


def _int8_convert(saved_model: Path, calibration: dict[str, np.ndarray], input_names: list[str]) -> bytes:
    import tensorflow as tf

    count = len(next(iter(calibration.values())))

    def representative():
        for i in range(count):
            yield {name: calibration[name][i:i + 1].astype(np.float32) for name in input_names}

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    _disable_dense_per_channel(converter, tf.__version__)
    return converter.convert()


def _disable_dense_per_channel(converter, tf_version: str) -> None:
    """Set the private per-tensor switch for dense layers, failing loudly where this TF no longer has it."""
    if not hasattr(converter, DENSE_PER_TENSOR_ATTRIBUTE):
        raise EdgekdError(f"TensorFlow {tf_version}'s TFLiteConverter has no attribute "
                          f"'{DENSE_PER_TENSOR_ATTRIBUTE}': int8 dense layers would silently become per-channel "
                          "(larger files, other accuracy)", field="tensorflow",
                          fix="install the TensorFlow version pinned in pyproject.toml (host extra), or find this "
                              "TF version's switch and update edgekd.host.export.tflite")
    setattr(converter, DENSE_PER_TENSOR_ATTRIBUTE, DENSE_PER_TENSOR)


def _child_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="edgekd internal: convert one ONNX file to TFLite")
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--precisions", required=True)
    parser.add_argument("--calibration")
    parser.add_argument("--result", required=True)
    parser.add_argument("--parent-pid", type=int, default=None)
    args = parser.parse_args(argv)
    if args.parent_pid is not None:
        from edgekd.host.data.workers import die_with_parent

        die_with_parent(args.parent_pid, CONVERTER_NAME)
    onnx_path, work = Path(args.onnx), Path(args.work)
    input_names = args.inputs.split(",")
    precisions = args.precisions.split(",")
    saved_model = work / "saved_model"
    timings = {}
    start = time.perf_counter()
    _run_onnx2tf(onnx_path, saved_model, input_names)
    timings["onnx2tf_s"] = time.perf_counter() - start
    files = {}
    for precision, suffix in (("fp32", "float32"), ("fp16", "float16")):
        produced = saved_model / f"{onnx_path.stem}_{suffix}.tflite"
        if precision in precisions:
            if not produced.is_file():
                raise SystemExit(f"onnx2tf produced no {produced.name}")
            files[precision] = str(produced)
    if "int8" in precisions:
        with np.load(args.calibration) as data:
            calibration = {name: data[name] for name in input_names}
        start = time.perf_counter()
        blob = _int8_convert(saved_model, calibration, input_names)
        timings["int8_s"] = time.perf_counter() - start
        target = work / f"{onnx_path.stem}_int8.tflite"
        target.write_bytes(blob)
        files["int8"] = str(target)
    # Load and invoke every file here: a file the interpreter aborts on must fail this child process
    # (reported with its log), never the exporting process.
    sizes = {}
    for precision, file in files.items():
        print(f"edgekd: smoke-testing {precision} {file}", flush=True)
        _smoke_test(Path(file), args.calibration, input_names)
        print(f"edgekd: {precision} runs; compacting", flush=True)
        files[precision], sizes[precision] = _compact(Path(file), args.calibration, input_names)
        print(f"edgekd: {precision} {sizes[precision]['converter']} -> {sizes[precision]['total']} bytes "
              f"{sizes[precision]}", flush=True)
    Path(args.result).write_text(json.dumps({"files": files, "timings": timings, "sizes": sizes}))
    return 0


def _compact(path: Path, calibration_npz: str | None, input_names: list[str]) -> tuple[str, dict]:
    """Write ``<stem>_compact.tflite`` next to ``path``; its outputs must equal the original's bit for bit."""
    from edgekd.host.export.tflite_compact import compact_tflite, tflite_size_breakdown

    blob = path.read_bytes()
    target = path.with_name(f"{path.stem}_compact.tflite")
    target.write_bytes(compact_tflite(blob))
    windows = _smoke_windows(calibration_npz, input_names, count=4)
    for use_xnnpack in (False, True):
        before = _raw_outputs(path, windows, input_names, use_xnnpack)
        after = _raw_outputs(target, windows, input_names, use_xnnpack)
        if not all(np.array_equal(a, b) for a, b in zip(before, after)):
            raise SystemExit(f"compacting {path.name} changed its outputs (xnnpack={use_xnnpack})")
    return str(target), {"converter": len(blob), **tflite_size_breakdown(target.read_bytes())}


def _smoke_windows(calibration_npz: str | None, input_names: list[str], count: int) -> list[dict] | None:
    if not calibration_npz:
        return None
    with np.load(calibration_npz) as data:
        count = min(count, len(data[input_names[0]]))
        return [{name: data[name][i:i + 1] for name in input_names} for i in range(count)]


def _raw_outputs(path: Path, windows: list[dict] | None, input_names: list[str], use_xnnpack: bool) -> list:
    from edgekd.device.runtime.backends import TFLiteBackend

    backend = TFLiteBackend(path, input_names=input_names, use_xnnpack=use_xnnpack)
    if windows is None:
        windows = [{n: np.full(s, 0.5, np.float32) for n, s in zip(input_names, backend.input_shapes)}]
    return [backend.invoke_raw(backend.quantize_inputs(w))[0].copy() for w in windows]


def _smoke_test(path: Path, calibration_npz: str | None, input_names: list[str]) -> None:
    from edgekd.device.runtime.backends import TFLiteBackend

    for use_xnnpack in (False, True):
        backend = TFLiteBackend(path, input_names=input_names, use_xnnpack=use_xnnpack)
        if calibration_npz:
            with np.load(calibration_npz) as data:
                window = {name: data[name][:1] for name in input_names}
        else:
            window = {name: np.zeros(shape, np.float32) for name, shape in zip(input_names, backend.input_shapes)}
        out = backend.run(window)
        if not np.all(np.isfinite(out)):
            raise SystemExit(f"{path.name} produces non-finite logits")


if __name__ == "__main__":  # pragma: no cover - run as a child process
    sys.exit(_child_main())
