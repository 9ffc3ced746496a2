"""The latency CDF plot of a comparison report (PNG bytes)."""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np

from edgekd.host.compare.formats import FORMATS

log = logging.getLogger(__name__)

def plot_latency_cdf(report: dict[str, Any]) -> bytes:
    """PNG bytes: one panel per student, the empirical latency CDF of each format (log time axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    students = list(report["latencies_ms"]) or ["(none)"]
    fig, axes = plt.subplots(1, len(students), figsize=(5.5 * len(students), 4.2), squeeze=False)
    for ax, name in zip(axes[0], students):
        for key, values in report["latencies_ms"].get(name, {}).items():
            ms = np.sort(np.asarray(values))
            ax.step(ms, np.arange(1, ms.size + 1) / ms.size, where="post", label=FORMATS[key])
        ax.set_xscale("log")
        ax.set_xlabel("latency per inference (ms, log scale)")
        ax.set_ylabel("fraction of runs")
        ax.set_title(f"{name} student")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{report['bundle']} on {report['host'].get('board') or report['host']['machine']}, "
                 f"{report['threads']} thread(s)", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


