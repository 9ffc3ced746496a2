"""How much of an int8 top-2 "drop" a test set can resolve: the flips behind the parity gate's number.

For every student of a bundle, runs its int8 artifacts and their float references (the real interpreters,
the bundle's own files) on the dataset's test split and counts, over windows x horizons, the predictions
whose top-2 hit the float model scores and int8 misses (lost) and the reverse (gained). The gate's drop
is (lost - gained) / N. If int8 were exactly as good as float and only reshuffled which near-tied
predictions land in the top 2, lost and gained would be two halves of the same flips: the drop's standard
deviation would be sqrt(lost + gained) / N. A drop inside about two of those is indistinguishable from
zero on this test set; a budget below it is decided by the draw, not by the model.

    python tests/benchmarks/parity_noise.py BUNDLE --data DATASET [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from edgekd.device.metrics import ranked_beams
from edgekd.host.data import load_dataset
from edgekd.host.export.pipeline import _evaluate_artifacts

PAIRS = {"tflite_int8": "tflite_fp32", "onnx_int8_qdq": "onnx_fp32"}


def top2_hits(logits: np.ndarray, beams: np.ndarray) -> np.ndarray:
    """[N, H] bool: the true beam is among the two best, ranked (ties included) as the gate ranks them."""
    return (ranked_beams(logits, 2) == beams[..., None]).any(-1)


def flips(float_logits: np.ndarray, int8_logits: np.ndarray, beams: np.ndarray) -> dict:
    f, q = top2_hits(float_logits, beams), top2_hits(int8_logits, beams)
    n = f.size
    lost, gained = int((f & ~q).sum()), int((~f & q).sum())
    sd = 100 * math.sqrt(lost + gained) / n
    return {"predictions": n, "lost": lost, "gained": gained, "drop_points": round(100 * (lost - gained) / n, 3),
            "noise_sd_points": round(sd, 3), "top1_agreement": round(float(
                (float_logits.argmax(-1) == int8_logits.argmax(-1)).mean()), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--data", required=True, type=Path, help="the dataset the bundle's gate scored")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    args = parser.parse_args()
    manifest = json.loads((args.bundle / "manifest.json").read_text())
    rows = {}
    for name, student in manifest["students"].items():
        modalities = tuple(student["modalities"])
        test = load_dataset(args.data, "test", modalities=modalities)
        batch = test.batch(np.arange(len(test)))
        files = {kind: args.bundle / a["path"] for kind, a in student["artifacts"].items()}
        logits = _evaluate_artifacts(files, {m: batch[m] for m in modalities}, modalities, threads=1)
        rows[name] = {kind: flips(logits[ref], logits[kind], batch["beams"])
                      for kind, ref in PAIRS.items() if kind in logits and ref in logits}
        for kind, r in rows[name].items():
            print(f"{name:6s} {kind:14s} drop {r['drop_points']:+.2f} pts = ({r['lost']} lost - {r['gained']} "
                  f"gained) / {r['predictions']}; noise sd {r['noise_sd_points']:.2f} pts; top-1 agreement "
                  f"{100 * r['top1_agreement']:.1f} %")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
