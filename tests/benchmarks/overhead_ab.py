"""Runtime overhead per frame (all but invoke) of two source trees, measured interleaved in one run.

    git worktree add /tmp/before <commit>; git worktree add /tmp/after HEAD
    .venv/bin/python tests/benchmarks/overhead_ab.py --tree before=/tmp/before --tree after=/tmp/after \\
        --bundle B --drive drive.npz --rounds 6 --frames 6000

Each round runs ``tests/benchmarks/runtime_soak.py`` of every tree once, in a
rotating order (a fresh process per run, its own tree first on the path), so
that drift and a neighbour's load hit every tree alike. Prints JSON: per tree
the overhead p50 of every round and their median, and the 1-minute load
average before and after (``os.getloadavg``, what ``uptime`` shows).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path


def run_tree(tree: Path, bundle: str, drive: str, frames: int, python: str) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{tree / 'tests'}"}
    cmd = [python, str(tree / "tests" / "benchmarks" / "runtime_soak.py"), "--bundle", bundle, "--drive", drive,
           "--frames", str(frames), "--threads", "1"]
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=PATH of a source tree (repeat)")
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--drive", required=True)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--frames", type=int, default=6000, help="frames per run (the first third is warm-up)")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    trees = [(name, Path(path).resolve()) for name, path in (t.split("=", 1) for t in args.tree)]
    p50: dict[str, list[float]] = {name: [] for name, _ in trees}
    p99: dict[str, list[float]] = {name: [] for name, _ in trees}
    load_before = os.getloadavg()
    for r in range(args.rounds):
        for k in range(len(trees)):
            name, tree = trees[(r + k) % len(trees)]
            result = run_tree(tree, args.bundle, args.drive, args.frames, args.python)
            p50[name].append(result["overhead_ms"]["p50"])
            p99[name].append(result["overhead_ms"]["p99"])
    print(json.dumps({
        "rounds": args.rounds, "frames_per_run": args.frames,
        "load_average_1m_5m_15m": {"before": [round(x, 2) for x in load_before],
                                   "after": [round(x, 2) for x in os.getloadavg()]},
        "overhead_ms": {name: {"p50_median": round(statistics.median(p50[name]), 4), "p50_rounds": p50[name],
                               "p99_median": round(statistics.median(p99[name]), 4)} for name, _ in trees},
    }, indent=2))


if __name__ == "__main__":
    main()
