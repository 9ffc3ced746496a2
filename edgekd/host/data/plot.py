"""The picture ``edgekd data info --plot`` draws: one window across every modality, and the beam histograms."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgekd.device.contracts import LIGHTING, WEATHER
from edgekd.device.io import atomic_write_bytes
from edgekd.host.data.store import WindowDataset, load_dataset, read_meta


def plot_dataset(path: str | os.PathLike, out: str | os.PathLike, *, split: str = "train",
                 index: int | None = None, dpi: int = 100) -> Path:
    """Write a PNG: the window ``index`` of ``split`` (default: the middle one) and the beam histograms."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta = read_meta(path)
    ds = load_dataset(path, split)
    index = len(ds) // 2 if index is None else index
    sample = ds[index]
    panels = _panels(ds)
    fig = plt.figure(figsize=(max(1.6 * ds.window, 10.0), 2.6 * len(panels) + 0.6), dpi=dpi, layout="constrained")
    rows = np.atleast_1d(np.asarray(fig.subfigures(len(panels), 1, height_ratios=[_ROW_HEIGHTS[p] for p in panels]),
                                   dtype=object))
    for row, panel in zip(rows, panels):
        panel(row, sample, ds, meta)
    cond = ds.conditions
    t0 = {k: v[index] for k, v in cond.items()}
    fig.suptitle(f"{Path(path).name}: {split} window {index} (drive {int(t0['drive'])}, "
                 f"{_name(LIGHTING, t0['lighting'])}, {_name(WEATHER, t0['weather'])}, "
                 f"LoS {'blocked' if t0['los_blocked'] else 'clear'})", fontsize=11)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return atomic_write_bytes(out, buffer.getvalue())


def _name(names: tuple[str, ...], code: int) -> str:
    return names[int(code)] if 0 <= int(code) < len(names) else "unknown"


def _panels(ds: WindowDataset) -> list:
    """The rows of the figure, each a function drawing into one matplotlib sub-figure."""
    panels = []
    if "image" in ds.modalities:
        panels.append(_image_row)
    if "radar" in ds.modalities:
        panels.append(_radar_row)
    if "lidar" in ds.modalities or "gps" in ds.modalities:
        panels.append(_lidar_gps_row)
    panels.append(_labels_row)
    return panels


def _image_row(fig, sample, ds, meta) -> None:
    for t, ax in enumerate(np.atleast_1d(fig.subplots(1, ds.window))):
        ax.imshow(sample["image"][t, 0], cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"image t{t - ds.window + 1}" if t < ds.window - 1 else "image t0", fontsize=8)
        ax.axis("off")


def _radar_row(fig, sample, ds, meta) -> None:
    frames = (0, ds.window - 1)
    axes = fig.subplots(1, 4)
    for ax, (t, ch) in zip(axes, ((t, ch) for t in frames for ch in (0, 1))):
        ax.imshow(sample["radar"][t, ch], aspect="auto", origin="lower", cmap="viridis")
        label = "range-angle" if ch == 0 else "Doppler-angle"
        ax.set_title(f"radar {label} t{t - ds.window + 1}", fontsize=8)
        ax.set_xlabel("angle bin", fontsize=7)
        ax.set_ylabel("range bin" if ch == 0 else "Doppler bin", fontsize=7)
        ax.tick_params(labelsize=6)


def _lidar_gps_row(fig, sample, ds, meta) -> None:
    axes = fig.subplots(1, 2)
    if "lidar" in ds.modalities:
        ax = axes[0]
        bins = np.arange(sample["lidar"].shape[-1])
        for t in (0, ds.window - 1):
            ax.plot(bins, sample["lidar"][t], lw=0.8, label=f"t{t - ds.window + 1}")
        ax.set_title("LiDAR scan (range / 10 m per azimuth bin)", fontsize=8)
        ax.set_xlabel("azimuth bin", fontsize=7)
        ax.legend(fontsize=7)
        ax.tick_params(labelsize=6)
    if "gps" in ds.modalities:
        ax = axes[1]
        track = sample["gps"]
        ax.plot(track[:, 0], track[:, 1], "o-", ms=3, lw=1, label="user (window)")
        ax.plot([0], [0], "k^", ms=8, label="base station")
        ax.set_title("GPS track (x100 m, relative to the base station)", fontsize=8)
        ax.set_aspect("equal", adjustable="datalim")
        ax.legend(fontsize=7)
        ax.tick_params(labelsize=6)


def _labels_row(fig, sample, ds, meta) -> None:
    axes = fig.subplots(1, 2)
    ax = axes[0]
    beams = np.arange(ds.num_beams)
    for h in range(ds.horizons):
        line, = ax.plot(beams, sample["power"][h], lw=1, label=f"t{h} (best {int(sample['beams'][h])})")
        ax.axvline(int(sample["beams"][h]), color=line.get_color(), lw=0.6, ls="--")
    ax.set_title("received power per beam (row max = 1)", fontsize=8)
    ax.set_xlabel("beam", fontsize=7)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=6)
    ax = axes[1]
    for name in meta["splits"]:
        hist = WindowDataset(ds.path, name, meta, modalities=()).beam_histogram(0)
        ax.step(beams, hist / max(hist.sum(), 1), where="mid", lw=1, label=f"{name} ({int(hist.sum())})")
    ax.set_title("best beam at t0, share of windows per split", fontsize=8)
    ax.set_xlabel("beam", fontsize=7)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=6)


# relative heights of the rows: a row of small images needs less room than plots
_ROW_HEIGHTS = {_image_row: 1.0, _radar_row: 1.4, _lidar_gps_row: 1.6, _labels_row: 1.6}
