"""Reference baselines on the synthetic scenario (for BENCHMARKS.md): top-1/top-5 per horizon t0..t3.

Windows of T=8 observed frames are labelled at t0 (the last observed frame) and the
next three frames; windows are split by drive in order, 70/15/15 (train/val/test),
and scored on the test drives. Baselines: random guessing, the most frequent beam of
the training set, k-nearest neighbours on the last two GPS fixes, and a multinomial
logistic regression (softmax, L2) on the last LiDAR scan. numpy + scipy only.

    .venv/bin/python tests/benchmarks/synth_baselines.py --windows 10000 --seed 0
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax

from edgekd.host.data.synth import SceneConfig, synthesize

WINDOW, HORIZONS, BEAMS = 8, 4, 64


def windows_by_drive(rec):
    """Start frames of every window and the drive each belongs to."""
    starts, drives = [], []
    for d, sl in enumerate(rec.drive_slices()):
        for s in range(sl.start, sl.stop - WINDOW - HORIZONS + 2):
            starts.append(s)
            drives.append(d)
    return np.array(starts), np.array(drives)


def topk(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    best = np.argsort(-scores, axis=1)[:, :k]
    return float(np.mean(np.any(best == labels[:, None], axis=1)))


def knn_scores(train_x, train_y, test_x, k=15):
    scores = np.zeros((len(test_x), BEAMS))
    for a in range(0, len(test_x), 512):
        d = ((test_x[a:a + 512, None, :] - train_x[None]) ** 2).sum(-1)
        idx = np.argpartition(d, k, axis=1)[:, :k]
        for j in range(k):
            np.add.at(scores, (np.arange(a, a + len(idx)), train_y[idx[:, j]]), 1.0 / (j + 1e-3) ** 0)
    return scores


def softmax_regression(x, y, l2=1e-3):
    n, d = x.shape
    onehot = np.eye(BEAMS)[y]

    def loss(w):
        w = w.reshape(d + 1, BEAMS)
        z = x @ w[:-1] + w[-1]
        lp = log_softmax(z, axis=1)
        grad_z = (np.exp(lp) - onehot) / n
        g = np.vstack([x.T @ grad_z + l2 * w[:-1], grad_z.sum(0)])
        return -np.sum(lp * onehot) / n + 0.5 * l2 * np.sum(w[:-1] ** 2), g.ravel()

    res = minimize(loss, np.zeros((d + 1) * BEAMS), jac=True, method="L-BFGS-B", options={"maxiter": 300})
    w = res.x.reshape(d + 1, BEAMS)
    return lambda q: q @ w[:-1] + w[-1]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--windows", type=int, default=10_000, help="windows to synthesise")
    ap.add_argument("--seed", type=int, default=0, help="dataset seed")
    args = ap.parse_args()
    t = time.perf_counter()
    rec = synthesize(SceneConfig(), windows=args.windows, seed=args.seed, progress=True)
    synth_s = time.perf_counter() - t
    starts, drives = windows_by_drive(rec)
    ids = np.unique(drives)
    cut_train, cut_val = ids[int(0.7 * len(ids))], ids[int(0.85 * len(ids))]
    train, test = drives < cut_train, drives >= cut_val
    t0 = starts + WINDOW - 1
    labels = np.stack([rec.beams[t0 + h] for h in range(HORIZONS)], axis=1)  # [W, 4]
    gps = rec.frames["gps"] * 100.0  # metres
    gps_feat = np.concatenate([gps[t0], 10 * (gps[t0] - gps[t0 - 1])], axis=1)  # position + velocity
    lidar_feat = rec.frames["lidar"][t0].astype(np.float64)
    rng = np.random.default_rng(0)
    table = {}
    for name in ("random", "most_frequent", "knn_gps", "logreg_lidar"):
        table[name] = {"top1": [], "top5": []}
    for h in range(HORIZONS):
        y_tr, y_te = labels[train, h], labels[test, h]
        counts = np.bincount(y_tr, minlength=BEAMS).astype(float)
        scores = {
            "random": rng.random((test.sum(), BEAMS)),
            "most_frequent": np.broadcast_to(counts, (test.sum(), BEAMS)),
            "knn_gps": knn_scores(gps_feat[train], y_tr, gps_feat[test]),
            "logreg_lidar": softmax_regression(lidar_feat[train], y_tr)(lidar_feat[test]),
        }
        for name, s in scores.items():
            table[name]["top1"].append(round(topk(s, y_te, 1), 3))
            table[name]["top5"].append(round(topk(s, y_te, 5), 3))
    out = {"windows": int(len(starts)), "frames": rec.num_frames, "drives": int(len(ids)),
           "train_windows": int(train.sum()), "test_windows": int(test.sum()),
           "synth_seconds": round(synth_s, 1),
           "los_blocked_fraction": round(float(rec.frame_info["los_blocked"].mean()), 3),
           "baselines": table}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
