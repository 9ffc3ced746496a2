"""Beam-tracking metrics: top-k per horizon, DBA score, parameters, a Table-II report. DEVICE SIDE.

The accuracy functions are pure numpy (the on-board runtime and ``firmware_bench``
use them); they also accept torch tensors without importing torch. ``count_params``
is duck-typed (anything with ``.parameters()``); ``count_macs`` needs torch and lives
on the host side, in :mod:`edgekd.host.reports.model_cost`.

Conventions (shared by both papers):
- scores / logits are ``[N, H, B]`` (samples, horizons t0..t3, beams); labels ``[N, H]``;
- top-k accuracy per horizon: the label is among the k highest scores;
- DBA score per horizon on the top-3: ``1 - mean_n min_{k<=3} min(|b_hat_k - b_n| / delta, 1)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from edgekd.device.errors import EdgekdError

DEFAULT_KS = (1, 2, 3, 5)


def _as_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):  # a torch tensor; no torch import needed
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def _check(scores: Any, beams: Any) -> tuple[np.ndarray, np.ndarray]:
    scores, beams = _as_numpy(scores), _as_numpy(beams)
    if scores.ndim != 3:
        raise EdgekdError(f"scores must be [N, horizons, beams], got shape {list(scores.shape)}", field="scores")
    if beams.shape != scores.shape[:2]:
        raise EdgekdError(f"beams must be [N, horizons] = {list(scores.shape[:2])}, got {list(beams.shape)}",
                          field="beams")
    if not np.issubdtype(beams.dtype, np.integer):
        raise EdgekdError(f"beams must be integer beam indices, got dtype {beams.dtype}", field="beams")
    if beams.size and (beams.min() < 0 or beams.max() >= scores.shape[2]):
        raise EdgekdError(f"beam labels must be in [0, {scores.shape[2]}), got [{beams.min()}, {beams.max()}]",
                          field="beams")
    return scores, beams.astype(np.int64)


def ranked_beams(scores: Any, top: int) -> np.ndarray:
    """Indices of the ``top`` highest scores along the last axis, best first ([N, H, top]).

    Ties rank the lower beam index first (stable sort), so results are reproducible.
    """
    scores = _as_numpy(scores)
    return np.argsort(-scores, axis=-1, kind="stable")[..., :top]


def topk_accuracy(scores: Any, beams: Any, ks: Iterable[int] = DEFAULT_KS) -> dict[int, np.ndarray]:
    """Top-k accuracy per horizon: ``{k: array[H]}``."""
    scores, beams = _check(scores, beams)
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise EdgekdError(f"ks must be positive integers, got {ks}", field="ks")
    top = min(max(ks), scores.shape[2])
    hits = ranked_beams(scores, top) == beams[..., None]  # [N, H, top]; at most one True per row
    cumulative = np.cumsum(hits, axis=-1)
    if scores.shape[0] == 0:
        return {k: np.full(scores.shape[1], np.nan) for k in ks}
    return {k: cumulative[..., min(k, top) - 1].mean(axis=0) for k in ks}


def dba_score(scores: Any, beams: Any, top: int = 3, delta: float = 5.0) -> np.ndarray:
    """Distance-based accuracy per horizon (array[H]): 1 - mean over samples of the smallest
    normalised beam distance ``min(|b_hat - b| / delta, 1)`` among the ``top`` best predictions."""
    scores, beams = _check(scores, beams)
    if delta <= 0:
        raise EdgekdError(f"delta must be > 0, got {delta}", field="delta")
    if scores.shape[0] == 0:
        return np.full(scores.shape[1], np.nan)
    ranked = ranked_beams(scores, min(top, scores.shape[2]))
    distance = np.minimum(np.abs(ranked - beams[..., None]) / delta, 1.0).min(axis=-1)  # [N, H]
    return 1.0 - distance.mean(axis=0)


def evaluate_predictions(scores: Any, beams: Any, ks: Iterable[int] = DEFAULT_KS, *, dba_top: int = 3,
                         dba_delta: float = 5.0) -> dict[str, Any]:
    """All accuracy figures of a prediction set, JSON-able.

    Keys: ``n``; ``top{k}`` (list per horizon) and ``top{k}_mean`` for each k; ``dba``
    (mean over horizons, the bundle manifest's field) and ``dba_per_horizon``.
    """
    scores, beams = _check(scores, beams)
    result: dict[str, Any] = {"n": int(scores.shape[0])}
    for k, acc in topk_accuracy(scores, beams, ks).items():
        result[f"top{k}"] = [float(a) for a in acc]
        result[f"top{k}_mean"] = float(np.mean(acc))
    dba = dba_score(scores, beams, top=dba_top, delta=dba_delta)
    result["dba_per_horizon"] = [float(d) for d in dba]
    result["dba"] = float(np.mean(dba))
    return result


# ------------------------------------------------------------------ model size / cost

def count_params(model: Any, *, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors once), as the papers report them (buffers excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# --------------------------------------------------------------------- Table II

@dataclasses.dataclass
class Table2Row:
    """One model in a Table-II style report.

    ``metrics`` is an ``evaluate_predictions`` dict (or a mean over seeds with the same
    keys; ``metrics_std`` the matching standard deviations). ``teacher`` names the row
    the size ratios are taken against (None for teachers); ``baseline`` names the row
    the top-k gain is taken against (e.g. the no-KD student).
    """

    name: str
    params: int
    macs: int
    metrics: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    metrics_std: Mapping[str, Any] | None = None
    teacher: str | None = None
    baseline: str | None = None


def _pct(values: Sequence[float]) -> list[str]:
    return [f"{100 * v:.1f}" for v in values]


def format_table2(rows: Sequence[Table2Row | Mapping[str, Any]], ks: Sequence[int] = (1, 2, 5)) -> str:
    """Markdown table: per model params (M), MACs (M), ratios to its teacher, top-k per horizon
    (% with ± std when given), and the gain in points over its baseline row when given."""
    table = [r if isinstance(r, Table2Row) else Table2Row(**r) for r in rows]
    by_name = {r.name: r for r in table}
    for r in table:
        for ref in (r.teacher, r.baseline):
            if ref is not None and ref not in by_name:
                raise EdgekdError(f"row '{r.name}' refers to unknown row '{ref}'", field="teacher/baseline",
                                  fix=f"known rows: {', '.join(by_name)}")
    horizons = next((len(r.metrics[f"top{ks[0]}"]) for r in table if f"top{ks[0]}" in r.metrics), 4)
    head = ["Model", "Params (M)", "x fewer", "MACs (M)", "MAC reduction"]
    for k in ks:
        head += [f"top-{k} t{h} (%)" for h in range(horizons)] + [f"top-{k} mean (%)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table:
        teacher = by_name.get(r.teacher) if r.teacher else None
        cells = [r.name, f"{r.params / 1e6:.3f}",
                 f"{teacher.params / r.params:.1f}x" if teacher and r.params else "",
                 f"{r.macs / 1e6:.2f}",
                 f"{100 * (1 - r.macs / teacher.macs):.1f}%" if teacher and teacher.macs else ""]
        base = by_name.get(r.baseline) if r.baseline else None
        for k in ks:
            key = f"top{k}"
            if key not in r.metrics:
                cells += [""] * (horizons + 1)
                continue
            values = list(r.metrics[key]) + [float(np.mean(r.metrics[key]))]
            text = _pct(values)
            if r.metrics_std and key in r.metrics_std:
                stds = list(r.metrics_std[key]) + [float(np.mean(r.metrics_std[key]))]
                text = [f"{t} ± {100 * s:.1f}" for t, s in zip(text, stds)]
            if base is not None and key in base.metrics:
                base_values = list(base.metrics[key]) + [float(np.mean(base.metrics[key]))]
                text = [f"{t} ({100 * (v - b):+.1f})" for t, v, b in zip(text, values, base_values)]
            cells += text
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
