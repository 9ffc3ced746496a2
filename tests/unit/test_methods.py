"""KD methods on a tiny BeamModel: the teacher stays frozen, DML peers stay separate, EMA, registry."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from edgekd.device.errors import EdgekdError
from edgekd.host.distill import (
    KD_METHODS,
    TrainConfig,
    build_distiller,
    register_method,
)
from edgekd.host.distill.losses import kl_div_loss
from edgekd.host.distill.methods import Distiller, ema_multi_avg_fn
from edgekd.host.models.base import BeamModel

torch.set_num_threads(1)

BEAMS, WINDOW, HORIZONS, DIM = 8, 5, 4, 6


class TinyGRU(BeamModel):
    """Just enough of a beam model: linear embedding, GRU over T + 3 padded steps, head on the last 4."""

    input_modalities = ("lidar",)

    def __init__(self, hidden: int = 8):
        super().__init__(num_beams=BEAMS, window=WINDOW, horizons=HORIZONS)
        self.embed = nn.Linear(DIM, 6)
        self.gru = nn.GRU(6, hidden, batch_first=True)
        self.head = nn.Linear(hidden, BEAMS)

    def input_shapes(self):
        return {"lidar": (WINDOW, DIM)}

    def forward_features(self, lidar):
        emb = torch.relu(self.embed(lidar))
        padded = torch.cat([emb, emb.new_zeros(emb.shape[0], HORIZONS - 1, emb.shape[2])], dim=1)
        out, h = self.gru(padded)
        temporal = out[:, -HORIZONS:]
        return {"logits": self.head(temporal), "embedding": emb, "temporal": temporal, "last_hidden": h[-1]}


def make_batch(n: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"lidar": torch.rand(n, WINDOW, DIM, generator=gen),
            "beams": torch.randint(0, BEAMS, (n, HORIZONS), generator=gen)}


def models(seed: int = 0, student_hidden: int = 4):
    torch.manual_seed(seed)
    return TinyGRU(student_hidden), TinyGRU(12)


def test_registry_lists_every_method_and_rejects_unknown():
    for name in ("none", "kd", "mse", "rkd", "rkd-park", "fitnet", "self", "dml"):
        assert name in KD_METHODS
    with pytest.raises(EdgekdError, match="unknown KD method 'kdd'"):
        KD_METHODS.get("kdd")


def test_registry_is_open_for_new_methods():
    @register_method("test-constant")
    class Constant(Distiller):
        needs_teacher = False

        def forward_train(self, batch):
            logits = self.student(batch["lidar"])
            return logits, {"loss": logits.sum() * 0.0}

    try:
        distiller = build_distiller("test-constant", TinyGRU(), None, TrainConfig())
        assert distiller.method == "test-constant"
    finally:
        KD_METHODS._items.pop("test-constant")


@pytest.mark.parametrize("method", ["kd", "mse", "rkd", "rkd-park", "fitnet"])
def test_teacher_frozen_and_student_learns(method):
    student, teacher = models()
    before = copy.deepcopy(teacher.state_dict())
    distiller = build_distiller(method, student, teacher, TrainConfig(seed=1))
    distiller.train()
    assert not distiller.teacher.training
    assert all(not p.requires_grad for p in distiller.teacher.parameters())
    logits, terms = distiller.forward_train(make_batch())
    assert logits.shape == (6, HORIZONS, BEAMS)
    assert {"loss", "loss_ce"} <= set(terms) and len(terms) >= 3
    terms["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key])


def test_alpha_blend_matches_named_terms():
    student, teacher = models()
    cfg = TrainConfig(alpha=0.25, temperature=2.0)
    distiller = build_distiller("kd", student, teacher, cfg)
    _, terms = distiller.forward_train(make_batch())
    expected = 0.75 * terms["loss_ce"] + 0.25 * terms["loss_kd"]
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_method_defaults_fill_unset_knobs_only():
    student, teacher = models()
    assert build_distiller("kd", student, teacher, TrainConfig()).cfg.alpha == 0.3
    assert build_distiller("kd", student, teacher, TrainConfig(alpha=0.9)).cfg.alpha == 0.9
    selfkd = build_distiller("self", TinyGRU(12), teacher, TrainConfig())
    assert (selfkd.cfg.alpha, selfkd.cfg.temperature) == (0.5, 3.0)
    rkd = build_distiller("rkd", student, teacher, TrainConfig())
    assert (rkd.cfg.alpha, rkd.cfg.rkd_distance_weight) == (0.1, 100.0)


def test_supervised_needs_no_teacher_and_kd_does():
    student, _ = models()
    distiller = build_distiller("none", student, None, TrainConfig())
    _, terms = distiller.forward_train(make_batch())
    assert terms["loss"].item() == pytest.approx(terms["loss_ce"].item())
    with pytest.raises(ValueError, match="needs a teacher"):
        build_distiller("kd", student, None, TrainConfig())


def test_rkd_partner_sampling_reproducible():
    a = build_distiller("rkd", *models(), TrainConfig(seed=5))
    b = build_distiller("rkd", *models(), TrainConfig(seed=5))
    batch = make_batch()
    assert a.forward_train(batch)[1]["loss"].item() == pytest.approx(b.forward_train(batch)[1]["loss"].item())


@pytest.mark.parametrize("method", ["rkd", "rkd-park"])
def test_relation_on_embedding_reaches_the_encoder_only(method):
    """``rkd_feature`` picks the layer: on the per-frame embedding the relation terms train the encoder,
    and nothing downstream of it (the GRU and head get no gradient when alpha = 1 drops the label term)."""
    student, teacher = models()
    distiller = build_distiller(method, student, teacher, TrainConfig(alpha=1.0, rkd_feature="embedding"))
    _, terms = distiller.forward_train(make_batch())
    assert terms["loss_rkd_distance"].item() > 0 and terms["loss_rkd_angle"].item() > 0
    terms["loss"].backward()
    assert student.embed.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in (*student.gru.parameters(), *student.head.parameters()))
    assert all(p.grad is None for p in teacher.parameters())


def test_relation_feature_typo_fails_before_training():
    from edgekd.host.distill.api import _build

    student, teacher = models()
    with pytest.raises(KeyError, match="no feature 'embeding'"):
        build_distiller("rkd", student, teacher, TrainConfig(rkd_feature="embeding"))
    with pytest.raises(EdgekdError, match="no feature 'embeding'"):
        _build("rkd-park", student, teacher, TrainConfig(rkd_feature="embeding"))


def test_fitnet_connector_trains_with_student():
    student, teacher = models()
    distiller = build_distiller("fitnet", student, teacher, TrainConfig())
    trainable = {id(p) for p in distiller.parameters() if p.requires_grad}
    assert all(id(p) in trainable for p in distiller.hint.connector.parameters())
    _, terms = distiller.forward_train(make_batch())
    terms["loss"].backward()
    assert distiller.hint.connector.proj.weight.grad.abs().sum() > 0


def test_self_kd_ema_is_deployed_and_tracks_student():
    _, teacher = models()
    torch.manual_seed(3)
    fresh = TinyGRU(12)
    distiller = build_distiller("self", fresh, teacher, TrainConfig(ema_decay=0.5, ema_warmup=False))
    optimizer = torch.optim.SGD([p for p in distiller.parameters() if p.requires_grad], lr=0.5)
    snapshots = []
    for step in range(3):
        _, terms = distiller.forward_train(make_batch(seed=step))
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        distiller.after_step()
        snapshots.append(fresh.head.weight.detach().clone())
    deployed = distiller.deploy_model()
    assert deployed is not fresh and not any(p.requires_grad for p in deployed.parameters())
    # EMA with decay 0.5: first update copies, then e = 0.5 e + 0.5 w
    expected = 0.5 * (0.5 * snapshots[0] + 0.5 * snapshots[1]) + 0.5 * snapshots[2]
    torch.testing.assert_close(deployed.head.weight, expected)


def test_ema_warmup_decay():
    ema, model = [torch.zeros(3)], [torch.ones(3)]
    ema_multi_avg_fn(0.999, warmup=True)(ema, model, torch.tensor(1))
    d = min(0.999, 2 / 11)
    torch.testing.assert_close(ema[0], torch.full((3,), 1 - d))


def test_dml_peers_do_not_leak_gradients():
    student, _ = models()
    distiller = build_distiller("dml", student, None, TrainConfig(dml_peers=3))
    assert len(distiller.peers) == 3
    peer0, peer1, peer2 = distiller.peers
    assert not torch.equal(peer0.head.weight, peer1.head.weight)  # independent initialisations
    logits, terms = distiller.forward_train(make_batch())
    assert {"loss_kd_peer0", "loss_kd_peer2"} <= set(terms)
    # The gradient of peer 0's KL towards peer 1 must not reach peer 1.
    logits_all = [p(make_batch()["lidar"]) for p in distiller.peers]
    peer0_objective = kl_div_loss(logits_all[0], logits_all[1].detach(), 1.0)
    grads = torch.autograd.grad(peer0_objective, list(peer1.parameters()) + list(peer0.parameters()),
                                allow_unused=True)
    assert all(g is None for g in grads[:len(list(peer1.parameters()))])
    # And the combined loss: each peer's gradient equals the gradient of its own terms only.
    distiller.zero_grad()
    terms["loss"].backward()
    batch = make_batch()
    for i, peer in enumerate(distiller.peers):
        others = [distiller.peers[j](batch["lidar"]).detach() for j in range(3) if j != i]
        own = peer(batch["lidar"])
        sup = distiller.supervised(own, batch["beams"])["loss_ce"]
        kl = torch.stack([kl_div_loss(own, o, distiller.cfg.temperature) for o in others]).mean()
        alpha = distiller.cfg.alpha
        objective = ((1 - alpha) * sup + alpha * kl) / 3
        expected = torch.autograd.grad(objective, list(peer.parameters()))
        for p, g in zip(peer.parameters(), expected):
            torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)


def test_dml_with_teacher_makes_it_a_learning_peer():
    student, teacher = models()
    distiller = build_distiller("dml", student, teacher, TrainConfig())
    assert distiller.peers[1] is teacher and distiller.teacher is None
    assert all(p.requires_grad for p in teacher.parameters())
    assert distiller.deploy_model() is student


def test_trainable_state_excludes_teacher_and_round_trips():
    student, teacher = models()
    distiller = build_distiller("fitnet", student, teacher, TrainConfig())
    state = distiller.trainable_state()
    assert state and not any(k.startswith("teacher.") for k in state)
    other = build_distiller("fitnet", *models(seed=9), TrainConfig())
    other.load_trainable_state(state)
    for key, value in state.items():
        assert torch.equal(other.state_dict()[key], value)


def test_horizon_weights_only_where_they_mean_something():
    student, teacher = models()
    weights = (0.7, 0.9, 1.1, 1.3)
    kd = build_distiller("kd", student, teacher, TrainConfig(horizon_weights=weights, alpha=1.0, temperature=2.0))
    batch = make_batch()
    _, terms = kd.forward_train(batch)
    with torch.no_grad():
        s, t = student(batch["lidar"]), teacher(batch["lidar"])
    per_row = (torch.softmax(t / 2, -1) * (torch.log_softmax(t / 2, -1) - torch.log_softmax(s / 2, -1))).sum(-1)
    w = torch.tensor(weights) / torch.tensor(weights).mean()
    assert terms["loss_kd"].item() == pytest.approx(((per_row * w).mean() * 4).item(), rel=1e-5)
    with pytest.raises(ValueError, match="do not apply to method 'rkd'"):
        build_distiller("rkd", student, teacher, TrainConfig(horizon_weights=weights))
    with pytest.raises(ValueError, match="3 values"):
        build_distiller("kd", student, teacher, TrainConfig(horizon_weights=(1.0, 1.0, 2.0)))


@pytest.mark.parametrize("method", ["kd", "mse", "rkd", "rkd-park", "fitnet", "self"])
def test_cached_teacher_features_give_the_same_loss(method):
    """A batch with ``index`` reads the precomputed teacher features: same loss and gradients as live."""
    from edgekd.host.distill.sources import teacher_cache

    student, teacher = models()
    if method == "self":
        student = TinyGRU(12)
    distiller = build_distiller(method, student, teacher, TrainConfig(seed=3))
    names = distiller.teacher_feature_names()
    assert names
    windows = make_batch(n=10, seed=5)

    class Windows:   # the slice of WindowDataset that teacher_cache reads
        def batch(self, idx):
            return {k: v[torch.as_tensor(idx)].numpy() for k, v in windows.items()}

    import numpy as np

    distiller.set_teacher_cache(teacher_cache(distiller.teacher, names, Windows(), np.arange(10), 4,
                                              torch.device("cpu")))
    pick = torch.tensor([7, 2, 9, 0, 4])
    batch = {k: v[pick] for k, v in windows.items()}
    state = copy.deepcopy(distiller.state_dict())
    _, live = distiller(batch)
    distiller.load_state_dict(state)   # the RKD partner sampler draws the same pairs again
    _, cached = distiller({**batch, "index": pick})
    for name in live:
        assert torch.allclose(live[name], cached[name], atol=1e-6), name
    with pytest.raises(KeyError, match="outside the teacher cache"):
        distiller({**batch, "index": torch.tensor([7, 2, 9, 0, 10])})


def test_teacher_cache_must_hold_the_features_the_method_reads():
    from edgekd.host.distill.methods import TeacherCache

    student, teacher = models()
    distiller = build_distiller("rkd", student, teacher, TrainConfig())
    with pytest.raises(KeyError, match="temporal"):
        distiller.set_teacher_cache(TeacherCache(torch.arange(3), {"logits": torch.zeros(3, HORIZONS, BEAMS)}))
    assert build_distiller("none", student, None, TrainConfig()).teacher_feature_names() == ()
    assert build_distiller("dml", student, None, TrainConfig()).teacher_feature_names() == ()


def test_monitor_score_is_lower_is_better():
    """The best epoch is the lowest score: the loss itself, or the negated top-k mean."""
    from edgekd.host.distill.config import load_train_config
    from edgekd.host.distill.trainer import monitor_score

    val = {"loss": 3.9, "top2_mean": 0.09, "top1_mean": 0.05}
    assert monitor_score(val, "loss") == pytest.approx(3.9)
    assert monitor_score(val, "top2") == pytest.approx(-0.09)
    better = {"loss": 4.2, "top2_mean": 0.12, "top1_mean": 0.06}   # higher loss, higher accuracy
    assert monitor_score(better, "top2") < monitor_score(val, "top2")
    assert monitor_score(better, "loss") > monitor_score(val, "loss")
    assert load_train_config(monitor="top5").monitor == "top5"
    with pytest.raises(EdgekdError, match="monitor"):
        load_train_config(monitor="accuracy")
