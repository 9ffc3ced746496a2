"""Soak and overhead benchmark of the multi-student runtime (a script; pytest wraps it in test_runtime_soak.py).

    .venv/bin/python tests/benchmarks/runtime_soak.py --bundle B --drive drive.npz --frames 100000

Replays the drive in a loop (timestamps keep increasing, so the policy keeps
switching as conditions cycle) and reports, as JSON: resident memory after a
warm-up and at the end (growth must stay under 5 MB), and the per-frame
runtime overhead (everything but the interpreter's invoke: push, policy,
preprocess, postprocess) p50/p99. Frame outcomes go into preallocated arrays,
so the harness itself does not grow.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def soak(bundle: str, drive_path: str, frames: int, *, target: str = "x86-ap", threads: int = 1,
         warmup: int = 2000, policy: str = "auto") -> dict:
    from edgekd.device.runtime.engine import Runtime
    from edgekd.device.runtime.replay import load_drive

    drive = load_drive(drive_path)
    runtime = Runtime.from_bundle(bundle, target, threads=threads, policy=policy)
    modalities = [m for m in runtime.hub.modalities if m in drive.frames]
    n = drive.num_frames
    period = float(drive.time_s[-1] - drive.time_s[0]) + 0.1
    overhead = np.zeros(frames)
    invoke = np.zeros(frames)
    phases = {key: np.zeros(frames) for key in ("push", "policy", "preprocess", "postprocess")}
    students = {name: 0 for name in runtime.students}
    none = 0
    rss_after_warmup = None
    start = time.perf_counter()
    for i in range(frames):
        j = i % n
        t = float(drive.time_s[j]) + (i // n) * period
        if i and (j == 0 or drive.track[j] != drive.track[j - 1]):
            runtime.new_track()  # as the replay does: a new pass (or the drive's next loop) starts empty
        for m in modalities:
            if drive.available[m][j]:
                runtime.push(m, drive.frames[m][j], t)
        pred = runtime.predict(t)
        latency = pred.latency_ms
        overhead[i] = latency["total"] - latency["invoke"]
        invoke[i] = latency["invoke"]
        for key, values in phases.items():
            values[i] = latency[key]
        if pred.student is None:
            none += 1
        else:
            students[pred.student] += 1
        if i + 1 == warmup:
            rss_after_warmup = rss_mb()
    end_rss = rss_mb()
    measured = overhead[min(warmup, frames // 2):]
    return {
        "frames": frames, "wall_s": round(time.perf_counter() - start, 1), "policy": policy,
        "rss_after_warmup_mb": round(rss_after_warmup or end_rss, 2), "rss_end_mb": round(end_rss, 2),
        "rss_growth_mb": round(end_rss - (rss_after_warmup or end_rss), 3),
        "overhead_ms": {"p50": round(float(np.median(measured)), 4),
                        "p90": round(float(np.percentile(measured, 90)), 4),
                        "p99": round(float(np.percentile(measured, 99)), 4)},
        "invoke_ms_p50": round(float(np.median(invoke)), 4),
        # the phases' own medians (over the frames after warm-up; they need not add up to the overhead's)
        "phases_ms_p50": {key: round(float(np.median(values[min(warmup, frames // 2):])), 4)
                          for key, values in phases.items()},
        "students": students, "no_prediction": none, "switches": runtime.policy.switches,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, help="bundle directory (edgekd export)")
    parser.add_argument("--drive", required=True, help="drive .npz (edgekd data drive)")
    parser.add_argument("--frames", type=int, default=100_000, help="frames to run")
    parser.add_argument("--target", default="x86-ap", help="target profile")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads")
    parser.add_argument("--policy", default="auto", help="auto or fixed:<student>")
    args = parser.parse_args()
    result = soak(args.bundle, args.drive, args.frames, target=args.target, threads=args.threads,
                  policy=args.policy)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
