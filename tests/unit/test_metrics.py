"""Golden-value tests of edgekd.device.metrics on hand-checked arrays."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekd.device.errors import EdgekdError
from edgekd.device.metrics import (
    Table2Row,
    count_params,
    dba_score,
    evaluate_predictions,
    format_table2,
    topk_accuracy,
)
from edgekd.host.reports.model_cost import count_macs

torch.set_num_threads(1)

# 2 samples x 2 horizons x 6 beams; rankings worked out by hand in the comments.
SCORES = np.array([
    [[0.1, 0.5, 0.3, 0.9, 0.0, 0.2],   # ranking 3 1 2 5 0 4; label 2 at rank 3
     [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]],  # ranking 5 0 1 2 3 4 (ties: lower index first); label 4 at rank 6
    [[1.0, 0.0, 0.0, 0.0, 0.0, 0.0],   # ranking 0 1 2 3 4 5; label 0 at rank 1
     [0.2, 0.1, 0.6, 0.4, 0.3, 0.5]],  # ranking 2 5 3 4 0 1; label 3 at rank 3
])
BEAMS = np.array([[2, 4], [0, 3]])


def test_topk_golden() -> None:
    acc = topk_accuracy(SCORES, BEAMS)
    np.testing.assert_allclose(acc[1], [0.5, 0.0])
    np.testing.assert_allclose(acc[2], [0.5, 0.0])
    np.testing.assert_allclose(acc[3], [1.0, 0.5])
    np.testing.assert_allclose(acc[5], [1.0, 0.5])


def test_dba_golden() -> None:
    # h0: both labels inside the top-3 -> 1. h1: sample 0 top-3 = 5 0 1 vs 4 -> min(1, 4, 3)/5 = 0.2;
    # sample 1 has label 3 in its top-3 -> 0. DBA = 1 - (0.2 + 0) / 2 = 0.9.
    np.testing.assert_allclose(dba_score(SCORES, BEAMS), [1.0, 0.9])
    # delta = 1 caps the distance at 1: 1 - (1 + 0) / 2 = 0.5
    np.testing.assert_allclose(dba_score(SCORES, BEAMS, delta=1), [1.0, 0.5])
    # top-1 only: sample 0 h0 predicts 3 vs 2 -> 0.2; sample 1 h0 exact; h1: 5 vs 4 -> 0.2, 2 vs 3 -> 0.2
    np.testing.assert_allclose(dba_score(SCORES, BEAMS, top=1), [0.9, 0.8])


def test_evaluate_predictions_is_json_and_consistent() -> None:
    result = evaluate_predictions(torch.tensor(SCORES), torch.tensor(BEAMS))
    json.dumps(result)
    assert result["n"] == 2
    assert result["top3"] == [1.0, 0.5] and result["top3_mean"] == 0.75
    assert result["dba_per_horizon"] == pytest.approx([1.0, 0.9]) and result["dba"] == pytest.approx(0.95)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 20), st.integers(1, 4), st.integers(5, 12), st.integers(0, 2**31 - 1))
def test_topk_matches_a_loop(n: int, horizons: int, beams: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((n, horizons, beams))  # continuous: no ties
    labels = rng.integers(0, beams, (n, horizons))
    acc = topk_accuracy(scores, labels, ks=(1, 3, 5))
    for k in (1, 3, 5):
        loop = [np.mean([labels[i, h] in np.argsort(-scores[i, h])[:k] for i in range(n)]) for h in range(horizons)]
        np.testing.assert_allclose(acc[k], loop)


@pytest.mark.parametrize("scores, beams, field", [
    (np.zeros((2, 4)), np.zeros((2, 4), int), "scores"),
    (np.zeros((2, 4, 8)), np.zeros((2, 3), int), "beams"),
    (np.zeros((2, 4, 8)), np.full((2, 4), 8), "beams"),
    (np.zeros((2, 4, 8)), np.zeros((2, 4)), "beams"),
])
def test_bad_inputs_are_named(scores, beams, field) -> None:
    with pytest.raises(EdgekdError) as err:
        topk_accuracy(scores, beams)
    assert err.value.field == field


def test_count_params_and_macs_golden() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(100, 5))
    assert count_params(model) == (2 * 4 * 9 + 4) + (100 * 5 + 5)
    model.train()
    # conv: 5*5 outputs x 4 channels x (2*3*3) MACs; linear: 100 x 5 MACs
    assert count_macs(model, (torch.rand(1, 2, 5, 5),)) == 25 * 4 * 18 + 500
    assert model.training  # mode restored


def test_format_table2_ratios_and_gains() -> None:
    teacher = Table2Row("teacher", params=1_787_000, macs=157_830_000,
                        metrics={"top2": [0.6, 0.6, 0.6, 0.6]})
    base = Table2Row("student (no KD)", params=95_000, macs=92_250_000, teacher="teacher",
                     metrics={"top2": [0.5, 0.5, 0.5, 0.5]})
    kd = {"name": "student (KD)", "params": 95_000, "macs": 92_250_000, "teacher": "teacher",
          "baseline": "student (no KD)", "metrics": {"top2": [0.55, 0.56, 0.57, 0.58]},
          "metrics_std": {"top2": [0.01, 0.01, 0.01, 0.01]}}
    table = format_table2([teacher, base, kd], ks=(2,))
    lines = table.strip().splitlines()
    assert len(lines) == 5 and lines[0].startswith("| Model | Params (M)")
    assert "18.8x" in lines[3] and "41.6%" in lines[3]   # the paper's Table II figures
    assert "55.0 ± 1.0 (+5.0)" in lines[4] and "56.5 ± 1.0 (+6.5)" in lines[4]
    with pytest.raises(EdgekdError, match="unknown row"):
        format_table2([Table2Row("x", 1, 1, teacher="nope")])


def test_count_macs_thop_convention_adds_norm_elements() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.BatchNorm2d(2))
    x = (torch.rand(1, 1, 4, 4),)
    assert count_macs(model, x) == 16 * 2 * 9
    assert count_macs(model, x, convention="thop") == 16 * 2 * 9 + 4 * 32
    with pytest.raises(EdgekdError):
        count_macs(model, x, convention="flops")
