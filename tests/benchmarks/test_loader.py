"""Loader speed: ds.batch(32 random windows) from memory-mapped frames, the training fast path."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.data import load_dataset, write_dataset


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    """About 2,000 frames at the default sizes (64x64 images, 2x128x64 radar maps, 216 LiDAR bins)."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(40, 80, 40)
    frames_total = int(lengths.sum())
    frames = {
        "image": rng.integers(0, 256, (frames_total, 1, 64, 64), dtype=np.uint8),
        "radar": rng.random((frames_total, 2, 128, 64), dtype=np.float32).astype(np.float16),
        "lidar": rng.random((frames_total, 216), dtype=np.float32),
        "gps": rng.random((frames_total, 2), dtype=np.float32),
    }
    info = {"drive": np.repeat(np.arange(len(lengths)), lengths)}
    power = rng.random((frames_total, 64), dtype=np.float32)
    return write_dataset(tmp_path_factory.mktemp("bench") / "ds", frames=frames, power=power, frame_info=info,
                         source="synthetic", config={}, seed=0)


@pytest.mark.parametrize("modalities", [None, ("lidar",), ("image",), ("radar",)],
                         ids=["all", "lidar", "image", "radar"])
def test_batch_of_32(benchmark, small_dataset, modalities):
    ds = load_dataset(small_dataset, "train", modalities=modalities)
    rng = np.random.default_rng(1)
    batch = benchmark(lambda: ds.batch(rng.integers(0, len(ds), 32)))
    assert batch["beams"].shape == (32, 4) and batch["power"].shape == (32, 4, 64)
    for name in ds.modalities:
        assert batch[name].shape == (32, *ds.shapes[name]) and batch[name].dtype == np.float32
