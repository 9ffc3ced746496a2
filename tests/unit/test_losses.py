"""Golden values of the distillation losses (expected values computed independently with numpy)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edgekd.host.distill import losses as L

torch.set_num_threads(1)


def np_log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x - x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


@pytest.fixture
def logits_pair():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(3, 4, 5)).astype(np.float64)
    t = rng.normal(size=(3, 4, 5)).astype(np.float64) * 2
    beams = rng.integers(0, 5, size=(3, 4))
    return s, t, beams


def test_cross_entropy_by_hand():
    # one row, two classes, logits (0, ln 3): p = (1/4, 3/4); label 1 -> -ln(3/4)
    logits = torch.tensor([[[0.0, math.log(3.0)]]])
    assert L.cross_entropy_loss(logits, torch.tensor([[1]])).item() == pytest.approx(-math.log(0.75))
    assert L.cross_entropy_loss(logits, torch.tensor([[0]])).item() == pytest.approx(-math.log(0.25))


def test_focal_by_hand():
    logits = torch.tensor([[[0.0, math.log(3.0)]]])
    # label 1: p=3/4, (1-p)^2 = 1/16 -> -(1/16) ln(3/4)
    assert L.focal_loss(logits, torch.tensor([[1]]), gamma=2.0).item() == pytest.approx(-math.log(0.75) / 16)
    # label 0: p=1/4, (3/4)^2 = 9/16
    assert L.focal_loss(logits, torch.tensor([[0]]), gamma=2.0).item() == pytest.approx(-math.log(0.25) * 9 / 16)


def test_focal_equals_ce_when_gamma_zero(logits_pair):
    s, _, beams = logits_pair
    s, beams = torch.tensor(s), torch.tensor(beams)
    assert L.focal_loss(s, beams, gamma=0.0).item() == pytest.approx(L.cross_entropy_loss(s, beams).item(), rel=1e-12)


def test_focal_and_ce_mean_over_all_rows(logits_pair):
    s, _, beams = logits_pair
    log_p = np_log_softmax(s)
    picked = np.take_along_axis(log_p, beams[..., None], -1)[..., 0]
    expected_ce = -picked.mean()
    expected_focal = (-(1 - np.exp(picked)) ** 2 * picked).mean()
    st_, bt = torch.tensor(s), torch.tensor(beams)
    assert L.cross_entropy_loss(st_, bt).item() == pytest.approx(expected_ce, rel=1e-10)
    assert L.focal_loss(st_, bt, 2.0).item() == pytest.approx(expected_focal, rel=1e-10)


def test_kl_matches_numpy_with_temperature_squared(logits_pair):
    s, t, _ = logits_pair
    T = 4.0
    log_ps, log_pt = np_log_softmax(s / T), np_log_softmax(t / T)
    expected = (np.exp(log_pt) * (log_pt - log_ps)).sum(-1).mean() * T * T
    got = L.kl_div_loss(torch.tensor(s), torch.tensor(t), temperature=T)
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_kl_by_hand_two_classes():
    # T=1: p_t = (1/2, 1/2), p_s = (1/4, 3/4): KL = 1/2 ln(2) + 1/2 ln(2/3)
    s = torch.tensor([[[0.0, math.log(3.0)]]])
    t = torch.tensor([[[0.0, 0.0]]])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert L.kl_div_loss(s, t, temperature=1.0).item() == pytest.approx(expected)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, (2, 4, 6), elements=st.floats(-30, 30, width=32)),
       arrays(np.float32, (2, 4, 6), elements=st.floats(-30, 30, width=32)),
       st.floats(0.5, 8.0))
def test_kl_never_negative(s, t, temperature):
    value = L.kl_div_loss(torch.from_numpy(s), torch.from_numpy(t), temperature).item()
    assert value >= -1e-5


def test_kl_zero_when_equal(logits_pair):
    s, _, _ = logits_pair
    assert L.kl_div_loss(torch.tensor(s), torch.tensor(s), 2.0).item() == pytest.approx(0.0, abs=1e-12)


def test_logit_mse_is_raw_mse(logits_pair):
    s, t, _ = logits_pair
    got = L.logit_mse_loss(torch.tensor(s), torch.tensor(t)).item()
    assert got == pytest.approx(((s - t) ** 2).mean(), rel=1e-12)


def test_horizon_weights_all_ones_equal_unweighted(logits_pair):
    s, t, beams = logits_pair
    s, t, beams = torch.tensor(s), torch.tensor(t), torch.tensor(beams)
    ones = (1.0, 1.0, 1.0, 1.0)
    assert L.kl_div_loss(s, t, 3.0, ones).item() == pytest.approx(L.kl_div_loss(s, t, 3.0).item(), rel=1e-12)
    assert L.logit_mse_loss(s, t, ones).item() == pytest.approx(L.logit_mse_loss(s, t).item(), rel=1e-12)
    assert L.focal_loss(s, beams, 2.0, ones).item() == pytest.approx(L.focal_loss(s, beams, 2.0).item(), rel=1e-12)
    # any constant vector normalises to ones
    assert L.kl_div_loss(s, t, 3.0, (5, 5, 5, 5)).item() == pytest.approx(L.kl_div_loss(s, t, 3.0).item(), rel=1e-12)


def test_horizon_weights_golden(logits_pair):
    s, t, _ = logits_pair
    w = np.array([0.7, 0.9, 1.1, 1.3])
    per_row = ((s - t) ** 2).mean(-1)                       # [B, 4]
    expected = (per_row * (w / w.mean())).mean()
    got = L.logit_mse_loss(torch.tensor(s), torch.tensor(t), tuple(w)).item()
    assert got == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError):
        L.logit_mse_loss(torch.tensor(s), torch.tensor(t), (1.0, 2.0))


def test_sample_partners_distinct_and_reproducible():
    a1, p1 = L.sample_partners(6, 4, torch.Generator().manual_seed(3))
    a2, p2 = L.sample_partners(6, 4, torch.Generator().manual_seed(3))
    assert torch.equal(a1, a2) and torch.equal(p1, p2)
    assert len(a1) == 24 and bool((a1 != p1).all())
    for anchor in range(6):
        partners = p1[a1 == anchor]
        assert len(set(partners.tolist())) == 4
    a3, _ = L.sample_partners(3, 4)      # only 2 others exist
    assert len(a3) == 6


def test_relation_loss_golden():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(6, 4, 3))
    t = rng.normal(size=(6, 4, 5))
    gen_seed = 11
    anchor, partner = L.sample_partners(6, 4, torch.Generator().manual_seed(gen_seed))
    a, p = anchor.numpy(), partner.numpy()
    sf, tf = s.reshape(6, -1), t.reshape(6, -1)

    def dist(f):
        d = np.linalg.norm(f[a] - f[p], axis=1)
        return d / d.mean()

    def one_minus_cos(f):
        return 1 - (f[a] * f[p]).sum(1) / (np.linalg.norm(f[a], axis=1) * np.linalg.norm(f[p], axis=1))

    got = L.relation_loss(torch.tensor(s), torch.tensor(t), 4, torch.Generator().manual_seed(gen_seed))
    assert got["loss_rkd_distance"].item() == pytest.approx(((dist(sf) - dist(tf)) ** 2).mean(), rel=1e-9)
    assert got["loss_rkd_angle"].item() == pytest.approx(((one_minus_cos(sf) - one_minus_cos(tf)) ** 2).mean(),
                                                         rel=1e-9)


def _np_huber(x, y):
    d = np.abs(x - y)
    return np.where(d < 1, 0.5 * d ** 2, d - 0.5).mean()


def test_rkd_park_golden():
    rng = np.random.default_rng(2)
    s, t = rng.normal(size=(5, 3)), rng.normal(size=(5, 7)) * 3

    def distances(f):
        # Park et al.'s reference (lenscloth/RKD metric/loss.py RkdDistance): the full n x n matrix with its
        # zero diagonal, divided by the mean of the non-zero entries; the Huber mean runs over all n^2 entries
        d = np.array([np.linalg.norm(f[i] - f[j]) for i in range(5) for j in range(5)])
        return d / d[d > 0].mean()

    def angles(f):
        out = []
        for j, i, k in itertools.product(range(5), repeat=3):
            e1, e2 = f[i] - f[j], f[k] - f[j]
            n1, n2 = np.linalg.norm(e1), np.linalg.norm(e2)
            out.append(0.0 if n1 == 0 or n2 == 0 else e1 @ e2 / (n1 * n2))
        return np.array(out)

    got = L.rkd_park_loss(torch.tensor(s), torch.tensor(t))
    assert got["loss_rkd_distance"].item() == pytest.approx(_np_huber(distances(s), distances(t)), rel=1e-6)
    # the zero diagonal counts in the mean: an off-diagonal-only mean would be n / (n - 1) = 5/4 larger
    off = ~np.eye(5, dtype=bool).ravel()
    off_only = _np_huber(distances(s)[off], distances(t)[off])
    assert got["loss_rkd_distance"].item() == pytest.approx(off_only * 4 / 5, rel=1e-6)
    assert got["loss_rkd_angle"].item() == pytest.approx(_np_huber(angles(s), angles(t)), rel=1e-6)


@pytest.mark.parametrize("scale", [0.01, 3.0, 250.0])
def test_relation_losses_invariant_to_feature_scaling(scale):
    rng = np.random.default_rng(4)
    s = torch.tensor(rng.normal(size=(8, 4, 6)))
    t = torch.tensor(rng.normal(size=(8, 4, 9)))
    base = L.relation_loss(s, t, 4, torch.Generator().manual_seed(0))
    scaled = L.relation_loss(s * scale, t / scale, 4, torch.Generator().manual_seed(0))
    park, park_scaled = L.rkd_park_loss(s, t), L.rkd_park_loss(s * scale, t * scale)
    for key in ("loss_rkd_distance", "loss_rkd_angle"):
        assert scaled[key].item() == pytest.approx(base[key].item(), rel=1e-6)
        assert park_scaled[key].item() == pytest.approx(park[key].item(), rel=1e-6)


def test_relation_losses_zero_for_identical_features_and_grad_only_to_student():
    rng = np.random.default_rng(5)
    f = torch.tensor(rng.normal(size=(6, 8)), requires_grad=True)
    t = f.detach().clone().requires_grad_(True)
    for terms in (L.relation_loss(f, t, 4), L.rkd_park_loss(f, t)):
        total = terms["loss_rkd_distance"] + terms["loss_rkd_angle"]
        assert total.item() == pytest.approx(0.0, abs=1e-10)
    s = torch.tensor(rng.normal(size=(6, 8)), requires_grad=True)
    terms = L.rkd_park_loss(s, t)
    (terms["loss_rkd_distance"] + terms["loss_rkd_angle"]).backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert t.grad is None


def test_hint_connector_linear_and_conv():
    torch.manual_seed(0)
    hint = L.HintLoss((2, 4, 3), (2, 4, 5))
    s, t = torch.randn(2, 4, 3), torch.randn(2, 4, 5)
    w, b = hint.connector.proj.weight.detach().numpy(), hint.connector.proj.bias.detach().numpy()
    expected = ((s.numpy() @ w.T + b - t.numpy()) ** 2).mean()
    assert hint(s, t)["loss_hint"].item() == pytest.approx(float(expected), rel=1e-5)
    conv = L.HintLoss((2, 3, 4, 4), (2, 6, 4, 4))
    assert isinstance(conv.connector.proj, torch.nn.Conv2d)
    x, y = torch.randn(2, 3, 4, 4), torch.randn(2, 6, 4, 4)
    k = conv.connector.proj.weight.detach().numpy()[:, :, 0, 0]          # [6, 3]
    expected = ((np.einsum("oc,bchw->bohw", k, x.numpy()) - y.numpy()) ** 2).mean()
    assert conv(x, y)["loss_hint"].item() == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(ValueError):
        L.HintConnector((2, 3, 4, 4), (2, 6, 5, 5))


def test_combine_weighted_sum_and_alpha_blend():
    terms = {"loss_ce": torch.tensor(2.0), "loss_kd": torch.tensor(10.0), "loss_extra": torch.tensor(7.0)}
    out = L.combine(terms, L.alpha_weights(0.3, {"loss_kd": 1.0}))
    assert out["loss"].item() == pytest.approx(0.7 * 2.0 + 0.3 * 10.0)
    assert out["loss_extra"].item() == 7.0          # reported, not summed
    with pytest.raises(KeyError):
        L.combine(terms, {"loss_kdd": 1.0})
    with pytest.raises(ValueError):
        L.alpha_weights(1.5, {"loss_kd": 1.0})


def test_kl_gradient_reaches_student_only():
    s = torch.randn(2, 4, 8, requires_grad=True)
    t = torch.randn(2, 4, 8, requires_grad=True)
    L.kl_div_loss(s, t, 2.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None
