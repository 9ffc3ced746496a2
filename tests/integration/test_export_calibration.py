"""Calibration draws: stratified coverage, determinism, train split only, recipe loading."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.device.errors import EdgekdError
from edgekd.host.export.calibration import (
    draw_indices,
    indices_digest,
    load_recipe,
    stratum_keys,
)


def test_balanced_draw_covers_every_stratum_before_repeating():
    keys = np.repeat(np.arange(10), [100, 50, 20, 5, 1, 1, 1, 1, 1, 20])
    chosen = draw_indices(keys, 10, allocation="balanced", seed=0)
    assert sorted(keys[chosen].tolist()) == list(range(10))          # one window per stratum
    chosen = draw_indices(keys, 40, allocation="balanced", seed=0)
    assert len(np.unique(chosen)) == 40 and set(keys[chosen]) == set(range(10))
    assert np.array_equal(chosen, draw_indices(keys, 40, allocation="balanced", seed=0))
    assert not np.array_equal(chosen, draw_indices(keys, 40, allocation="balanced", seed=1))


def test_proportional_draw_keeps_shares_and_size_caps_at_population():
    keys = np.repeat([0, 1], [300, 100])
    chosen = draw_indices(keys, 40, allocation="proportional", seed=3)
    assert len(chosen) == 40 and np.sum(keys[chosen] == 0) == 30
    assert len(draw_indices(keys, 10_000)) == 400
    with pytest.raises(EdgekdError):
        draw_indices(np.array([], dtype=np.int64), 5)


def test_stratum_keys_combine_beam_and_conditions():
    beams = np.array([0, 0, 1, 1])
    conditions = {"lighting": np.array([0, 2, 0, 0])}
    keys = stratum_keys(beams, conditions, ("beam", "lighting", "weather"))   # weather absent: ignored
    assert len(set(keys.tolist())) == 3 and keys[2] == keys[3]


def test_recipes_load_and_override(tmp_path):
    for name in ("image", "radar", "lidar", "fusion", "gps"):
        recipe = load_recipe(name)
        assert recipe.split == "train" and recipe.size >= 128 and "beam" in recipe.stratify
    assert load_recipe("lidar", size=32).size == 32
    with pytest.raises(EdgekdError, match="known recipes"):
        load_recipe("sonar")
    bad = tmp_path / "x.yaml"
    bad.write_text("name: x\nsplit: test\n")
    with pytest.raises(EdgekdError, match="split"):
        load_recipe(str(bad))
    assert indices_digest(np.array([1, 2])) != indices_digest(np.array([2, 1]))
