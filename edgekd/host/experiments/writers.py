"""CSV and PNG writing (and the over-seeds std) shared by the experiment reports (paper 1, paper 2, the demo)."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.device.io import atomic_write_bytes


def csv_text(rows: Sequence[Mapping[str, Any]] | Sequence[Sequence[Any]], header: Sequence[str] | None = None, *,
             lineterminator: str = "\n") -> str:
    """CSV of dict rows (the header is the first row's keys) or of plain rows under ``header``."""
    buffer = io.StringIO()
    if header is not None:
        writer = csv.writer(buffer, lineterminator=lineterminator)
        writer.writerow(header)
        writer.writerows(rows)
    elif rows:
        first = rows[0]
        assert isinstance(first, Mapping)
        dict_writer = csv.DictWriter(buffer, fieldnames=list(first), lineterminator=lineterminator)
        dict_writer.writeheader()
        dict_writer.writerows(rows)   # type: ignore[arg-type]
    return buffer.getvalue()


def std_over_seeds(values: np.ndarray) -> np.ndarray:
    """Sample standard deviation over axis 0 (the seeds) of ``[seeds, ...]``; 0 for a single seed."""
    return values.std(axis=0, ddof=1) if values.shape[0] > 1 else np.zeros(values.shape[1:])


def plus_minus(std: float, seeds: int, fmt: str = ".2f") -> str:
    """``" ± std"`` over two or more seeds; nothing for one: a single run has no spread to show (its 0 is not one)."""
    return f" ± {std:{fmt}}" if seeds > 1 else ""


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | Path, dpi: int) -> Path:
    """Write ``fig`` as a PNG atomically and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    pyplot().close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def grouped_bars(ax: Any, bars: Sequence[tuple[str, Sequence[float], Sequence[float] | None, str | None]], *,
                 scale: float = 1.0) -> int:
    """One group of bars per horizon on ``ax``: ``bars`` is (label, values, std or None, colour or None) per
    series; returns the number of horizons."""
    width = 0.8 / len(bars)
    horizons = 0
    for i, (label, values, std, color) in enumerate(bars):
        mean = np.asarray(values, dtype=np.float64)
        horizons = len(mean)
        x = np.arange(horizons) + (i - (len(bars) - 1) / 2) * width
        err = None if std is None else scale * np.asarray(std, dtype=np.float64)
        ax.bar(x, scale * mean, width=width, yerr=err, capsize=2 if err is not None else 0, label=label,
               color=color)
    ax.set_xticks(range(horizons), [f"$t_{h}$" for h in range(horizons)])
    return horizons
