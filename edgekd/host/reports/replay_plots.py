"""The replay timeline plot of ``edgekd run --report`` (host side: needs matplotlib).

``edgekd.device.runtime.replay.write_report`` finds this module by name and calls
:func:`plot_timeline` when it is importable; on a device-only install the report is
written without ``timeline.png`` and says why.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import numpy as np

from edgekd.device.io import atomic_write_bytes
from edgekd.device.runtime.replay import Drive, ReplayResult, hits, rolling_hit_rate, scored_frames

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)


def plot_timeline(path: Path, result: ReplayResult, drive: Drive, window: int | None = None,
                  span_s: float = 20.0) -> Path:
    """Conditions, availability, the active student per frame and the rolling top-5 (t0) over time.

    ``window``: the runtime's window (frames), so a track's warm-up is left out of the rolling accuracy;
    None scores every frame with a beam at t0.
    """
    t = drive.time_s
    fig, axes = plt.subplots(4, 1, figsize=(12, 7), sharex=True, height_ratios=[1, 1.2, 1.2, 1.0])
    ax = axes[0]
    ax.step(t, drive.lighting, where="post", label="lighting (0 day, 1 dusk, 2 night)")
    ax.step(t, drive.weather + 0.05, where="post", label="weather (0 clear, 1 rain, 2 fog)", alpha=0.7)
    ax.set_yticks([0, 1, 2])
    ax.set_ylim(-0.2, 2.9)
    ax.legend(loc="lower right", fontsize=7)
    ax.set_title(f"{drive.path.name}: conditions, sensors, active student, top-5 hit rate (t0)")
    ax = axes[1]
    for row, up in enumerate(drive.available.values()):
        ax.fill_between(t, row, row + 0.8, where=~up, step="post", color="tab:red", alpha=0.8)
        ax.fill_between(t, row, row + 0.8, where=up, step="post", color="tab:green", alpha=0.25)
    ax.set_yticks(np.arange(len(drive.available)) + 0.4, list(drive.available))
    ax.set_ylabel("sensor up")
    ax = axes[2]
    # one dot per frame with a prediction: a track's warm-up (no prediction) shows as a gap, not a drop
    names = sorted({s for s in result.student if s is not None})
    codes = np.array([names.index(s) if s is not None else -1 for s in result.student])
    for code in range(len(names)):
        sel = codes == code
        ax.scatter(t[sel], np.full(sel.sum(), code), s=1.5, marker="|", color=f"C{code}")
    for sw in result.switches:   # forced switches and their recoveries are in switches.csv
        if sw["kind"] in ("preference", "fallback"):
            ax.axvline(sw["t"], color="tab:orange", alpha=0.8, lw=1.0)
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_ylabel("active")
    ax = axes[3]
    scored = scored_frames(window, drive) if window is not None else drive.beams[:, 0] >= 0
    rate = rolling_hit_rate(hits(result, drive, 5), scored, t, span_s)
    ax.plot(t, 100 * rate, color="k", lw=0.9)
    ax.set_ylim(0, 105)
    ax.set_ylabel(f"top-5 %\n(last {span_s:g} s)")
    ax.set_xlabel("time (s)")
    starts = np.concatenate([[0], np.flatnonzero(np.diff(drive.segment)) + 1])
    for n, i in enumerate(starts):
        for a in axes:
            a.axvline(float(t[i]), color="grey", lw=0.5, ls=":")
        # staggered, so short segments' names do not overlap
        axes[0].text(float(t[i]), 2.3 + 0.3 * (n % 2), drive.segment_names[int(drive.segment[i])], fontsize=6)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
