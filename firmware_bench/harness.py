"""The benchmark of one bundle on this machine: load, first inference, warm-up, timed runs, energy.

``run_benchmark(bundle, ...)`` is the library entry point (the ``edgekd bench``
host command and ``python -m firmware_bench`` both call it). For each student
it:

1. reads the manifest and checks the artifact's and calibration set's sha256
   (before any timing, so hashing never counts as load time);
2. picks the power meter (``auto`` records why others were skipped) and, for
   a measured meter, the idle power over ``idle_seconds`` before loading;
3. times the model load (init), the first inference, the warm-up runs, then
   the timed runs (``latency.timed_loop``) with the meter running;
4. records RSS before/after loading and the peak during the runs;
5. adds an op profile (a separate pass, never inside the timed runs).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgekd import __version__
from edgekd.device.bundle import read_manifest, verify_artifact_file
from edgekd.device.errors import EdgekdError
from edgekd.device.runtime.backends import open_artifact, tflite_interpreter_class
from firmware_bench import inputs as inputs_mod
from firmware_bench import latency, memory, opprofile
from firmware_bench.power import ESTIMATED, MeterOptions, PowerModel, PowerReader, choose_reader, loop_energy
from firmware_bench.settings import (  # noqa: F401  (BACKEND_ARTIFACTS, BenchSettings: re-exported)
    BACKEND_ARTIFACTS,
    BACKEND_FORMAT,
    BenchSettings,
    resolve_settings,
)

log = logging.getLogger(__name__)

REPORT_SCHEMA = "edgekd-bench/1"
UNAVAILABLE = "unavailable"

def run_benchmark(bundle: str | os.PathLike, student: str | None = None, *,
                  settings: BenchSettings | None = None, out: str | os.PathLike | None = None,
                  meter_options: MeterOptions | None = None, **overrides: Any) -> dict[str, Any]:
    """Benchmark ``student`` (or every student) of ``bundle``; write JSON + CSV to ``out`` if given.

    ``overrides`` are :class:`BenchSettings` fields (``runs=200, power_meter="estimate"``).
    Returns the report: ``{"schema", "created", "host", "bundle", "results": [...]}``.
    """
    settings = dataclasses.replace(settings or BenchSettings(), **overrides)
    bundle = Path(bundle)
    manifest = read_manifest(bundle, trusted_key=settings.trusted_key)
    names = [student] if student else list(manifest["students"])
    for name in names:
        if name not in manifest["students"]:
            raise EdgekdError(f"bundle has no student '{name}'", file=bundle / "manifest.json",
                              field="students", fix=f"students: {', '.join(manifest['students'])}")
    results = [benchmark_student(bundle, manifest, name, settings, meter_options) for name in names]
    report = {
        "schema": REPORT_SCHEMA,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "edgekd_version": __version__,
        "host": host_info(),
        "bundle": str(bundle),
        "target": (manifest.get("target") or {}).get("name"),
        "results": results,
    }
    if out is not None:
        from firmware_bench.report import write_report
        write_report(report, out)
    return report


def choose_artifact(student: dict, backend: str, artifact: str | None, *, where: Path) -> str:
    artifacts = student["artifacts"]
    if artifact is not None:
        if artifact not in artifacts:
            raise EdgekdError(f"no artifact '{artifact}'", file=where, field="--artifact",
                              fix=f"artifacts of this student: {', '.join(artifacts)}")
        if artifacts[artifact]["format"] != BACKEND_FORMAT[backend]:
            raise EdgekdError(f"artifact '{artifact}' is {artifacts[artifact]['format']}, backend '{backend}' "
                              f"runs {BACKEND_FORMAT[backend]}", field="--artifact",
                              fix="pick a matching --backend/--artifact pair")
        return artifact
    for kind in BACKEND_ARTIFACTS[backend]:
        if kind in artifacts:
            return kind
    raise EdgekdError(f"no {BACKEND_FORMAT[backend]} artifact for backend '{backend}'", file=where,
                      field="--backend", fix=f"artifacts of this student: {', '.join(artifacts)}")


def benchmark_student(bundle: Path, manifest: dict, name: str, settings: BenchSettings,
                      meter_options: MeterOptions | None = None) -> dict[str, Any]:
    student = manifest["students"][name]
    s = resolve_settings(settings, manifest.get("target") or {})
    assert s.backend is not None and s.power_meter is not None  # resolved: the flag, the target, or the default
    kind = choose_artifact(student, s.backend, s.artifact, where=bundle / "manifest.json")
    artifact = student["artifacts"][kind]
    model_path = bundle / artifact["path"]
    calib_path = inputs_mod.calibration_file(bundle, name, student)
    if s.verify:
        verify_artifact_file(bundle, artifact)
        if "sha256" in (student.get("calibration") or {}):
            verify_artifact_file(bundle, {"path": student["calibration"]["file"],
                                          "sha256": student["calibration"]["sha256"]})
    input_names = [t["name"] for t in artifact["inputs"]]
    windows = inputs_mod.load_windows(calib_path, input_names, max_windows=s.max_windows)

    options = dataclasses.replace(meter_options or MeterOptions(), power_model=s.power_model)
    reader, skipped = choose_reader(s.power_meter, options)
    idle = measure_idle(reader, s.idle_seconds, options.power_model)
    run = measure(bundle, artifact, windows, s, reader)
    timings = run["timings"]
    result: dict[str, Any] = {
        "student": name, "artifact": kind, "backend": s.backend, "format": artifact["format"],
        "precision": artifact["precision"], "threads": s.threads,
        "interpreter": interpreter_info(run["backend"]),
        "model": {"path": artifact["path"], "sha256": artifact["sha256"], "verified": s.verify},
        "inputs": {"source": str(calib_path.relative_to(bundle)), "windows": len(windows),
                   "names": input_names, "shapes": {n: list(windows[0][n].shape) for n in input_names}},
        "output": output_check(timings.last_output),
        "latency": {"interpreter_import_ms": run["import_ms"], "init_ms": run["init_ms"],
                    "first_inference": run["first"], "warmup": run["warmup"], **timings.summary()},
        "memory": {**memory_report(run["memory"], {"model": model_path, "calibration": calib_path}),
                   # the timed loop's own storage is part of the runs' RSS: say how much
                   "timing_buffer_bytes": timings.buffer_bytes},
        "energy": {"requested": s.power_meter,
                   **energy_report(reader, skipped, run["energy"], idle, timings.runs)},
        "accuracy": artifact.get("accuracy"),
    }
    if s.op_profile:
        result["op_profile"] = op_profile(run["backend"], artifact, model_path, windows, s)
    result["flags"] = flags_of(result)
    return result


def measure(bundle: Path, artifact: dict, windows: list, s: BenchSettings,
            reader: PowerReader | None) -> dict[str, Any]:
    """Load (timed), first inference, warm-up and the timed runs with the meter running, RSS around them."""
    import_ms = import_interpreter(artifact["format"])
    mem_before = memory.snapshot()
    t0 = time.perf_counter_ns()
    backend = open_artifact(bundle, artifact, threads=s.threads, providers=s.providers, verify_hash=False)
    init_ms = (time.perf_counter_ns() - t0) / 1e6
    mem_loaded = memory.snapshot()

    runner = backend.runner()  # the per-call path the runtime runs: buffers allocated once, quantised into
    first = latency.time_once(runner, windows[0])
    warm = latency.warm_up(runner, windows, s.warmup)
    peak_reset = memory.reset_peak()
    timings, energy = timed_with_energy(runner, windows, latency.StopRule(s.runs, s.seconds), reader)
    mem_after = memory.snapshot()
    return {"backend": backend, "import_ms": import_ms, "init_ms": init_ms, "first": first, "warmup": warm,
            "timings": timings, "energy": energy, "memory": (mem_before, mem_loaded, mem_after, peak_reset)}


def import_interpreter(fmt: str) -> float:
    """Import the interpreter package before timing the load: init time is the model's, not Python's."""
    t0 = time.perf_counter_ns()
    if fmt == "tflite":
        tflite_interpreter_class()
    else:
        importlib.import_module("onnxruntime")
    return (time.perf_counter_ns() - t0) / 1e6


def measure_idle(reader: PowerReader | None, seconds: float, model: PowerModel | None) -> dict[str, Any]:
    """Idle power before the model is loaded: measured with the meter, or the power model's idle_w."""
    if reader is None:
        return {"power_w": None, "method": UNAVAILABLE}
    if reader.method == ESTIMATED:
        assert model is not None
        return {"power_w": model.idle_w, "method": ESTIMATED, "seconds": 0.0}
    if seconds <= 0:
        return {"power_w": None, "method": "not measured (--idle-seconds 0)"}
    try:
        reader.start()
        time.sleep(seconds)
        joules = reader.stop()
    except (OSError, RuntimeError, ValueError, EdgekdError) as exc:
        return {"power_w": None, "method": UNAVAILABLE, "error": str(exc)}
    window = reader.window_s or seconds
    return {"power_w": joules / window, "method": reader.method, "seconds": window}


def timed_with_energy(backend: Any, windows: list, rule: latency.StopRule,
                      reader: PowerReader | None) -> tuple[latency.Timings, dict[str, Any]]:
    """The timed loop with the meter running around it; a meter failure loses energy, not latency."""
    energy: dict[str, Any] = {"joules": None, "seconds": None, "error": None}
    started = False
    if reader is not None:
        try:
            reader.start()
            started = True
        except (OSError, RuntimeError, ValueError, EdgekdError) as exc:
            energy["error"] = f"meter failed to start: {exc}"
    wall0, epoch0 = time.perf_counter(), time.time()
    timings = latency.timed_loop(backend, windows, rule)
    wall1, epoch1 = time.perf_counter(), time.time()
    if started and reader is not None:
        try:
            energy["joules"] = reader.stop()
        except (OSError, RuntimeError, ValueError, EdgekdError) as exc:
            energy["error"] = f"meter failed: {exc}"
    energy["seconds"] = wall1 - wall0
    energy["window_epoch"] = [epoch0, epoch1]
    return timings, energy


def energy_report(reader: PowerReader | None, skipped: list[dict], energy: dict, idle: dict,
                  runs: int) -> dict[str, Any]:
    """Energy per inference with its method; ``unavailable`` (never 0) when nothing could be read."""
    joules = energy.get("joules")
    report: dict[str, Any] = {
        "method": reader.method if (reader is not None and joules is not None) else UNAVAILABLE,
        "meter": reader.meter if reader is not None else None,
        "scope": reader.scope if reader is not None else None,
        "joules": joules,
        "seconds": energy["seconds"],
        "window_epoch": energy.get("window_epoch"),
        "runs": runs,
        "per_inference_mj": None,
        "mean_power_w": None,
        "idle_power_w": idle.get("power_w"),
        "idle_method": idle.get("method"),
        "above_idle_per_inference_mj": None,
        "skipped": skipped,
        "notes": list(reader.notes) if reader is not None else [],
        "samples": reader.samples if reader is not None else 0,
    }
    if energy.get("error"):
        report["error"] = energy["error"]
    if reader is None:
        report["notes"].append("no power meter readable and no power model: energy not reported")
    if reader is not None and joules is not None and runs > 0 and energy["seconds"]:
        loop = loop_energy(joules, reader.window_s, energy["seconds"], runs)
        report.update(meter_window_s=loop.meter_window_s, mean_power_w=loop.mean_power_w,
                      per_inference_mj=loop.per_inference_mj)
        if idle.get("power_w") is not None:
            # Energy the inferences add over an idle board: what a duty-cycled deployment pays per frame.
            above = loop.loop_joules - idle["power_w"] * energy["seconds"]
            report["above_idle_per_inference_mj"] = above / runs * 1e3
    return report


def memory_report(snapshots: tuple[dict, dict, dict, bool], files: dict[str, Path]) -> dict[str, Any]:
    """RSS before/after loading and after the runs, the runs' peak (``snapshots``: before, loaded, after,
    whether the peak could be reset before the runs) and the files' sizes."""
    before, loaded, after, peak_reset = snapshots

    def delta(a: dict, b: dict) -> int | None:
        return None if a.get("rss_bytes") is None or b.get("rss_bytes") is None else b["rss_bytes"] - a["rss_bytes"]

    return {
        "rss_before_load_bytes": before.get("rss_bytes"),
        "rss_after_load_bytes": loaded.get("rss_bytes"),
        "rss_after_runs_bytes": after.get("rss_bytes"),
        "load_delta_bytes": delta(before, loaded),
        "peak_rss_bytes": max(v for v in (before.get("peak_rss_bytes"), loaded.get("peak_rss_bytes"),
                                          after.get("peak_rss_bytes"), after.get("ru_maxrss_bytes"))
                              if v is not None),
        # After resetting VmHWM at the start of the runs, VmHWM at the end is the runs' own peak.
        "peak_rss_during_runs_bytes": after.get("peak_rss_bytes") if peak_reset else None,
        "peak_during_runs_note": None if peak_reset else "VmHWM could not be reset: only the lifetime peak is known",
        "source": {"rss": after.get("rss_source"), "peak": after.get("peak_source")},
        "file_bytes": memory.file_sizes({k: str(v) for k, v in files.items()}),
    }


def output_check(output: Any) -> dict[str, Any]:
    """Shape and finiteness of the last output: a benchmark of a model that outputs NaN is no benchmark."""
    if output is None:
        return {"shape": None, "finite": None}
    arr = np.asarray(output)
    return {"shape": list(arr.shape), "dtype": str(arr.dtype), "finite": bool(np.isfinite(arr).all())}


def op_profile(backend: Any, artifact: dict, model_path: Path, windows: list,
               s: BenchSettings) -> dict[str, Any]:
    try:
        if artifact["format"] == "tflite":
            return opprofile.tflite_op_profile(model_path, threads=s.threads, tool=s.op_profile_tool)
        return opprofile.ort_op_profile(model_path, windows, threads=s.threads, runs=s.op_profile_runs,
                                        providers=getattr(backend, "providers", None))
    except Exception as exc:  # diagnostics must not sink the benchmark
        log.warning("op profile failed: %s", exc)
        return {"source": None, "error": f"{type(exc).__name__}: {exc}", "per_op_timing": None}


_DISTRIBUTIONS = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime",
                  "tensorflow": "tensorflow", "onnxruntime": "onnxruntime"}


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(_DISTRIBUTIONS.get(module, module))
    except Exception:
        mod = sys.modules.get(module)
        return getattr(mod, "__version__", None)


def interpreter_info(backend: Any) -> dict[str, Any]:
    obj = getattr(backend, "interpreter", None) or getattr(backend, "session", None)
    module = type(obj).__module__.split(".")[0] if obj is not None else None
    info: dict[str, Any] = {"module": module, "version": _version(module) if module else None}
    if hasattr(backend, "providers"):
        info["providers"] = list(backend.providers)
    return info


def host_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "psutil": memory.psutil is not None,
    }
    try:
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    governor = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    try:
        info["cpu_governor"] = governor.read_text().strip()
    except OSError:
        info["cpu_governor"] = None
    model = Path("/proc/device-tree/model")
    try:
        info["board"] = model.read_text().strip("\x00\n ")
    except OSError:
        info["board"] = None
    return info


def flags_of(result: dict[str, Any]) -> list[str]:
    """Warnings a reader of any output must see next to the numbers."""
    flags = []
    mlperf = result["latency"]["mlperf_single_stream"]
    if mlperf["flag"]:
        flags.append(mlperf["flag"])
    energy = result["energy"]
    if energy.get("requested") not in (None, "auto", "estimate", "estimated") and energy["skipped"]:
        first = energy["skipped"][0]
        flags.append(f"power meter '{energy['requested']}' unavailable: {first['reason']}")
    if energy["method"] == ESTIMATED:
        flags.append("energy estimated from a power model, not measured")
    elif energy["method"] == UNAVAILABLE:
        flags.append("energy unavailable: " + (energy.get("error") or "no meter and no power model"))
    if result["output"].get("finite") is False:
        flags.append("model output has NaN/inf")
    return flags
