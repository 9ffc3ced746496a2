"""What QAT adds to a student's training time: float KD epochs and QAT epochs of one student, in one process.

Runs, ``--reps`` times in a row, a short float run of the student (its checkpoint's own method and config,
``--epochs`` epochs, the teacher cached as `edgekd distill` does) and a ``qat_finetune`` of the checkpoint
for as many epochs, and prints the seconds per epoch (from the JSONL logs) and the wall time of each.
The cost of a default QAT budget is then (QAT fixed part + QAT epochs) / (float run of the full schedule).

    python tests/benchmarks/qat_cost.py DEMO/students/image_student.pt --teacher DEMO/teachers/image_teacher.pt \\
        --data DEMO/data/dataset --out /tmp/qatcost
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from edgekd.device.config import config_from_dict
from edgekd.host.checkpoint import load_checkpoint
from edgekd.host.distill.api import distill_model, qat_finetune
from edgekd.host.distill.config import TrainConfig


def epoch_seconds(log: Path) -> list[float]:
    return [json.loads(line)["seconds"] for line in log.read_text().splitlines() if '"epoch"' in line]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a trained student (its method and config are reused)")
    parser.add_argument("--teacher", required=True, type=Path, help="the teacher it was distilled from")
    parser.add_argument("--data", required=True, type=Path, help="the dataset it was trained on")
    parser.add_argument("--out", required=True, type=Path, help="scratch folder for checkpoints, logs, result.json")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each float and QAT run")
    parser.add_argument("--reps", type=int, default=2, help="float + QAT pairs, one after another")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    ck = load_checkpoint(args.checkpoint)
    cfg = dataclasses.replace(config_from_dict(TrainConfig, dict(ck.config["train"])), epochs=args.epochs,
                              progress=False, threads=args.threads)
    rows = []
    for rep in range(args.reps):
        start = time.perf_counter()
        distill_model(args.teacher, ck.model_name, ck.config["method"], args.data, cfg,
                      out=args.out / f"float{rep}.pt", log_path=args.out / f"float{rep}.jsonl")
        float_wall = time.perf_counter() - start
        start = time.perf_counter()
        qat_finetune(args.checkpoint, args.data, args.out / f"qat{rep}.pt", teacher_ckpt=args.teacher,
                     epochs=args.epochs, threads=args.threads, progress=False, log_path=args.out / f"qat{rep}.jsonl")
        qat_wall = time.perf_counter() - start
        rows.append({"float_wall_s": round(float_wall, 1),
                     "float_epochs_s": epoch_seconds(args.out / f"float{rep}.jsonl"),
                     "qat_wall_s": round(qat_wall, 1),
                     "qat_epochs_s": epoch_seconds(args.out / f"qat{rep}.qat.jsonl")})
        print(json.dumps(rows[-1]), flush=True)
    (args.out / "result.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
