"""Per-horizon top-k tables and grouped bar plots (the paper's Fig. 4 layout)."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

from edgekd.device.io import atomic_write_bytes

TOPK = (1, 2, 3, 5)


def _per_horizon(metrics: Mapping[str, Any], key: str) -> list[float] | None:
    value = metrics.get(key)
    return [float(v) for v in value] if isinstance(value, Sequence) and not isinstance(value, str) else None


def format_topk_table(metrics: Mapping[str, Any]) -> str:
    """A plain-text table: one row per horizon t0..t3 (plus the mean), one column per top-k (and DBA)."""
    found = [(f"top-{k}", _per_horizon(metrics, f"top{k}")) for k in TOPK]
    columns: list[tuple[str, list[float]]] = [(name, values) for name, values in found if values is not None]
    dba = _per_horizon(metrics, "dba_per_horizon")
    if dba is not None:
        columns.append(("DBA", dba))
    horizons = len(columns[0][1]) if columns else 0
    head = (f"{metrics.get('model', 'model')}"
            + (f" ({metrics['method']})" if metrics.get("method") else "")
            + f" on {metrics.get('split', '?')}, n={metrics.get('n', '?')}")
    lines = [head, "horizon " + "".join(f"{name:>8}" for name, _ in columns)]
    for h in range(horizons):
        lines.append(f"t{h:<6} " + "".join(f"{values[h]:8.3f}" for _, values in columns))
    if horizons:
        lines.append("mean    " + "".join(f"{sum(values) / len(values):8.3f}" for _, values in columns))
    return "\n".join(lines)


def plot_topk(runs: Mapping[str, Mapping[str, Any]], path: str | os.PathLike, *, ks: Sequence[int] = (1, 2, 5),
              title: str | None = None) -> None:
    """Grouped bars: one panel per top-k, horizons t0..t3 on the x axis, one bar per run. Written atomically."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    ks = [k for k in ks if any(_per_horizon(m, f"top{k}") for m in runs.values())]
    if not ks:
        raise ValueError("no top-k metrics to plot")
    fig, axes = plt.subplots(1, len(ks), figsize=(4.2 * len(ks), 3.6), squeeze=False, sharey=True)
    names = list(runs)
    width = 0.8 / max(len(names), 1)
    for ax, k in zip(axes[0], ks):
        for i, name in enumerate(names):
            values = _per_horizon(runs[name], f"top{k}") or []
            x = np.arange(len(values)) + (i - (len(names) - 1) / 2) * width
            ax.bar(x, values, width=width, label=name)
        horizons = max(len(_per_horizon(m, f"top{k}") or []) for m in runs.values())
        ax.set_xticks(range(horizons), [f"$t_{h}$" for h in range(horizons)])
        ax.set_title(f"top-{k}")
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    axes[0][-1].legend(fontsize="small", loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
