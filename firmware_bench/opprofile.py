"""Op profiles: where the time goes inside a model, so that a slow op can be found.

- ONNX Runtime: real per-op timing from the session profiler
  (``SessionOptions.enable_profiling``), aggregated by op type.
- TFLite: the Python interpreter (ai-edge-litert, tflite-runtime) exposes no op
  profiler, so the op list (type and count) is read from the model, and per-op
  timing comes from TFLite's ``benchmark_model --enable_op_profiling=true``
  when that binary is on the board (its "Summary by node type" table is
  parsed); otherwise the report says per-op timing is unavailable.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.device.runtime.backends import tflite_op_counts

log = logging.getLogger(__name__)

NO_TFLITE_PROFILER = ("per-op timing unavailable in this interpreter: the Python TFLite interpreter has "
                      "no op profiler; put TFLite's benchmark_model on PATH (or pass --op-profile-tool) "
                      "for per-op times")


def parse_benchmark_model_node_types(text: str) -> list[dict[str, Any]]:
    """Rows of ``benchmark_model``'s "Summary by node type" table (the last one in ``text``).

    Columns: [Node type] [count] [avg ms] [avg %] [cdf %] [mem KB] [times called].
    benchmark_model prints the table for init and for inference; the inference
    table comes last.
    """
    lines = text.splitlines()
    starts = [i for i, ln in enumerate(lines) if "Summary by node type" in ln]
    if not starts:
        return []
    rows: list[dict[str, Any]] = []
    for line in lines[starts[-1] + 1:]:
        cells = [c for c in re.split(r"\t+|\s{2,}", line.strip()) if c]
        if not cells:
            if rows:
                break
            continue
        if cells[0].startswith("[") or cells[0].startswith("="):
            continue
        if len(cells) < 7:
            break
        try:
            rows.append({
                "op": cells[0],
                "count": int(cells[1]),
                "avg_ms": float(cells[2]),
                "avg_pct": float(cells[3].rstrip("%")),
                "cdf_pct": float(cells[4].rstrip("%")),
                "mem_kb": float(cells[5]),
                "times_called": int(cells[6]),
            })
        except ValueError:
            break
    return rows


def run_benchmark_model(tool: str, model_path: str | os.PathLike, *, threads: int | None,
                        runs: int = 50, timeout_s: float = 300) -> list[dict[str, Any]]:
    """Run TFLite's ``benchmark_model`` with op profiling and return its per-op-type table."""
    argv = [tool, f"--graph={model_path}", "--enable_op_profiling=true", f"--num_runs={runs}",
            "--warmup_runs=5"]
    if threads:
        argv.append(f"--num_threads={threads}")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return parse_benchmark_model_node_types(done.stdout + "\n" + done.stderr)


def tflite_op_profile(model_path: str | os.PathLike, *, threads: int | None,
                      tool: str | None = None) -> dict[str, Any]:
    """Op counts from the model, plus per-op-type times when ``benchmark_model`` is available."""
    profile: dict[str, Any] = {"source": "model op list (interpreter without delegates)"}
    try:
        profile["op_counts"] = tflite_op_counts(model_path)
    except Exception as exc:  # the profile is a diagnostic; never fail the benchmark over it
        profile["op_counts"] = None
        profile["op_counts_error"] = f"{type(exc).__name__}: {exc}"
    exe = tool or shutil.which("benchmark_model")
    if exe is None:
        profile["per_op_timing"] = None
        profile["per_op_timing_note"] = NO_TFLITE_PROFILER
        return profile
    try:
        rows = run_benchmark_model(exe, model_path, threads=threads)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        profile["per_op_timing"] = None
        profile["per_op_timing_note"] = f"benchmark_model failed: {exc}"
        return profile
    profile["per_op_timing"] = rows
    profile["per_op_timing_note"] = f"from {exe} --enable_op_profiling=true (separate process)"
    return profile


def aggregate_ort_profile(events: Sequence[dict[str, Any]], runs: int) -> list[dict[str, Any]]:
    """Per-op-type totals from an ONNX Runtime profile's kernel events, slowest first.

    Node kernel events have ``cat == "Node"``, a name ending in
    ``_kernel_time``, ``dur`` in microseconds and ``args.op_name``.
    """
    total_us: dict[str, float] = collections.defaultdict(float)
    calls: dict[str, int] = collections.defaultdict(int)
    nodes: dict[str, set] = collections.defaultdict(set)
    for event in events:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        op = event.get("args", {}).get("op_name", "?")
        total_us[op] += float(event.get("dur", 0))
        calls[op] += 1
        nodes[op].add(event["name"])
    grand = sum(total_us.values()) or 1.0
    rows: list[dict[str, Any]] = [{
        "op": op,
        "count": len(nodes[op]),
        "avg_ms": total_us[op] / max(runs, 1) / 1e3,
        "avg_pct": 100.0 * total_us[op] / grand,
        "times_called": calls[op],
    } for op in total_us]
    rows.sort(key=lambda r: -r["avg_ms"])
    cdf = 0.0
    for row in rows:
        cdf += row["avg_pct"]
        row["cdf_pct"] = cdf
    return rows


def ort_op_profile(model_path: str | os.PathLike, feeds: Sequence[dict[str, np.ndarray]], *,
                   threads: int | None, runs: int = 50,
                   providers: Sequence[str] | None = None) -> dict[str, Any]:
    """Per-op-type times from a separate profiling ONNX Runtime session (not the timed one)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    if threads:
        options.intra_op_num_threads = threads
    with tempfile.TemporaryDirectory(prefix="edgekd-ort-profile-") as tmp:
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(model_path), sess_options=options,
                                       providers=list(providers or ["CPUExecutionProvider"]))
        names = [i.name for i in session.get_inputs()]
        for i in range(runs):
            feed = feeds[i % len(feeds)]
            session.run(None, {n: feed[n] for n in names})
        profile_file = session.end_profiling()
        events = json.loads(Path(profile_file).read_text())
    rows = aggregate_ort_profile(events, runs)
    return {"source": "onnxruntime session profiler (separate session)", "runs": runs,
            "op_counts": {r["op"]: r["count"] for r in rows}, "per_op_timing": rows,
            "per_op_timing_note": (f"ONNX Runtime kernel times, mean over {runs} profiled runs; the profiler "
                                   "adds overhead per node, so compare shares (avg_pct), not absolute "
                                   "times, with the latency figures")}
