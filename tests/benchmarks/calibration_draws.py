"""int8 parity over several calibration draws: how much of a top-2 drop is the draw, how much the model.

Each draw exports the same checkpoints with the calibration recipes of ``calibration/`` reseeded
(``seed: k``, everything else unchanged: same size, strata and allocation), through the real export path
(``EDGEKD_CALIBRATION_DIR``), with ``allow_degraded`` so a failing draw is recorded instead of refused, and
reads the parity gate's drops (top-2 points, int8 vs its float reference, every test window) from the
manifest. Writes ``OUT/draws.json`` and ``OUT/draws.md`` (one row per student and draw, then worst/mean).

    python tests/benchmarks/calibration_draws.py DEMO/students/image_student.pt DEMO/students/radar_student.pt \\
        DEMO/students/lidar_student_kd.pt --data DEMO/data/dataset --target x86-ap --draws 5 --out /tmp/draws
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from edgekd.host.export.calibration import ENV_CALIBRATION_DIR
from edgekd.host.export.pipeline import export_bundle

RECIPES = Path(__file__).resolve().parents[2] / "calibration"


def reseeded_recipes(folder: Path, seed: int) -> None:
    """Copy every recipe of ``calibration/`` into ``folder`` with ``seed`` replaced."""
    for path in sorted(RECIPES.glob("*.yaml")):
        recipe = yaml.safe_load(path.read_text())
        recipe["seed"] = seed
        (folder / path.name).write_text(yaml.safe_dump(recipe, sort_keys=False))


def one_draw(checkpoints: list[str], data: str, target: str, seed: int, work: Path) -> dict:
    recipes = work / f"recipes-{seed}"
    recipes.mkdir()
    reseeded_recipes(recipes, seed)
    os.environ[ENV_CALIBRATION_DIR] = str(recipes)
    try:
        start = time.perf_counter()
        manifest = export_bundle(checkpoints, target, data, work / f"bundle-{seed}", allow_degraded=True,
                                 progress=False)
        seconds = time.perf_counter() - start
    finally:
        os.environ.pop(ENV_CALIBRATION_DIR, None)
    rows = {}
    for name, student in manifest["students"].items():
        parity = student["parity"]
        rows[name] = {"drops": {fmt: d["points"] for fmt, d in parity["drops"].items()},
                      "passed": parity["passed"], "eval_windows": parity["eval_windows"],
                      "calibration_indices_sha256": student["calibration"]["indices_sha256"]}
    return {"seed": seed, "seconds": round(seconds, 1), "students": rows}


def summary_table(draws: list[dict]) -> str:
    students = list(draws[0]["students"])
    formats = list(draws[0]["students"][students[0]]["drops"])
    lines = ["| student | draw | " + " | ".join(formats) + " |", "|---|---|" + "---|" * len(formats)]
    for name in students:
        for d in draws:
            drops = d["students"][name]["drops"]
            lines.append(f"| {name} | {d['seed']} | " + " | ".join(f"{drops[f]:+.2f}" for f in formats) + " |")
        cells = []
        for f in formats:
            values = [d["students"][name]["drops"][f] for d in draws]
            cells.append(f"**{max(values):+.2f}** / {sum(values) / len(values):+.2f}")
        lines.append(f"| {name} | worst / mean | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="student checkpoints (one per student)")
    parser.add_argument("--data", required=True, help="the dataset the students were trained on")
    parser.add_argument("--target", default="x86-ap", help="target profile name or YAML path")
    parser.add_argument("--draws", type=int, default=5, help="calibration seeds 0..N-1")
    parser.add_argument("--out", required=True, type=Path, help="folder for draws.json and draws.md")
    parser.add_argument("--keep-bundles", action="store_true", help="keep every draw's bundle under OUT")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="draws-", dir=args.out))
    draws = []
    try:
        for seed in range(args.draws):
            draws.append(one_draw(args.checkpoints, args.data, args.target, seed, work))
            print(f"draw {seed}: " + json.dumps({n: s["drops"] for n, s in draws[-1]["students"].items()}),
                  flush=True)
    finally:
        if not args.keep_bundles:
            shutil.rmtree(work, ignore_errors=True)
    record = {"checkpoints": args.checkpoints, "data": args.data, "target": args.target, "draws": draws}
    (args.out / "draws.json").write_text(json.dumps(record, indent=2))
    (args.out / "draws.md").write_text(summary_table(draws))
    print(summary_table(draws))


if __name__ == "__main__":
    main()
