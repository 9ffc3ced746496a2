"""Loader speed: ds.batch(32 random windows) from memory-mapped frames, the training fast path."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.host.data import load_dataset


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    """A few hundred windows of the synthetic scenario at the default sizes (64x64 images)."""
    from edgekd.host.data.store import synthesize_dataset

    return synthesize_dataset(tmp_path_factory.mktemp("bench") / "ds", windows=300, seed=0)


@pytest.mark.parametrize("modalities", [None, ("lidar",), ("image",), ("radar",)],
                         ids=["all", "lidar", "image", "radar"])
def test_batch_of_32(benchmark, small_dataset, modalities):
    ds = load_dataset(small_dataset, "train", modalities=modalities)
    rng = np.random.default_rng(1)
    batch = benchmark(lambda: ds.batch(rng.integers(0, len(ds), 32)))
    assert batch["beams"].shape == (32, 4) and batch["power"].shape == (32, 4, 64)
    for name in ds.modalities:
        assert batch[name].shape == (32, *ds.shapes[name]) and batch[name].dtype == np.float32
