"""The federated-learning anchors: FedAvg of the student, and federated distillation (Jeong et al. 2018,
arXiv 1811.11479: per-label average logits exchanged each round instead of weights)."""

from __future__ import annotations

import numpy as np

from edgekd.host.fleet import learn
from edgekd.host.fleet.ledger import TRAIN_MACS_FACTOR, Payload
from edgekd.host.fleet.scenario import derive_seed
from edgekd.host.fleet.topology_base import (
    INIT,
    SERVER_AP,
    TRAIN,
    ApContext,
    ApResult,
    Topology,
    evaluate,
    final,
    load_model,
    merge,
    model_payload,
    register,
)


@register
class FedAvg(Topology):
    name = "fedavg"
    description = "FedAvg of the student (weights averaged by sample count, sorted AP order)"

    def rounds(self) -> int:
        return self.cfg.rounds + 1   # the last round ships the final model for evaluation

    def setup(self) -> int:
        self._global = learn.model_vectors(learn.seeded_model(self.cfg.student, derive_seed(self.cfg.seed,
                                                                                             SERVER_AP, INIT, 21)))
        return 0

    def down(self, rnd: int, aps: list[int]) -> dict[int, Payload]:
        model = learn.seeded_model(self.cfg.student, 0)
        learn.load_vectors(model, self._global["params"], self._global["buffers"])
        msg = model_payload("student", model, self.cfg.student)
        return {ap: merge(msg, final=int(rnd == self.rounds())) for ap in aps}

    def expected_macs(self, ap: int, rnd: int) -> int:
        return 0 if rnd == self.rounds() else self._student_train_macs(self._train_count(ap), self.cfg.round_epochs)

    def up(self, rnd: int, replies: dict[int, Payload]) -> int:
        if rnd == self.rounds() or not replies:
            return 0
        total = 0.0
        acc = {k: np.zeros_like(v, dtype=np.float64) for k, v in self._global.items()}
        for ap in sorted(replies):
            w = float(replies[ap].arrays["num_samples"][0])
            total += w
            acc["params"] += w * replies[ap].arrays["student_params"]
            acc["buffers"] += w * replies[ap].arrays["student_buffers"]
        self._global = {k: (v / total).astype(np.float32) for k, v in acc.items()}
        return 0

    @classmethod
    def ap_step(cls, ctx: ApContext, payload: Payload, state: dict[str, np.ndarray]) -> ApResult:
        cfg = ctx.cfg
        model = load_model(cfg.student, payload, "student")
        if final(payload):
            return ApResult(Payload(config=evaluate(ctx, model, server_test=cls.server_test)), state)
        data = ctx.data()
        passes = learn.fit(model, data, "train", epochs=cfg.round_epochs,
                           seed=derive_seed(cfg.seed, ctx.ap, TRAIN, ctx.round), lr=cfg.lr, batch_size=cfg.batch_size)
        reply = model_payload("student", model, cfg.student)
        reply.arrays["num_samples"] = np.array([data.count("train")], dtype=np.float32)
        reply.closed["num_samples"] = reply.closed_int8["num_samples"] = 4
        return ApResult(reply, state, train_macs=TRAIN_MACS_FACTOR * learn.model_cost(cfg.student)["macs"] * passes)


@register
class FederatedDistillation(Topology):
    name = "fd"
    description = ("federated distillation (Jeong et al. 2018): per-label average logits exchanged each round; "
                   "each AP keeps its own student")

    def rounds(self) -> int:
        return self.cfg.rounds

    def setup(self) -> int:
        self._sums: dict[int, np.ndarray] = {}
        self._counts: dict[int, np.ndarray] = {}
        return 0

    def down(self, rnd: int, aps: list[int]) -> dict[int, Payload]:
        out = {}
        if self._sums:
            total_s = np.sum([self._sums[a] for a in sorted(self._sums)], axis=0)
            total_c = np.sum([self._counts[a] for a in sorted(self._counts)], axis=0)
        for ap in aps:
            msg = Payload(config={"final": int(rnd == self.rounds())})
            if self._sums:
                # the global per-label average without this AP's own contribution (Jeong et al.)
                s = total_s - self._sums.get(ap, 0.0)
                c = total_c - self._counts.get(ap, 0.0)
                avg = np.where(c[:, None] > 0, s / np.maximum(c, 1.0)[:, None], 0.0)
                msg.arrays = {"label_stats": label_stats(avg, c)}
                msg.closed = {"label_logits": 4 * avg.size, "label_counts": 4 * c.size}
                msg.closed_int8 = dict(msg.closed)
            out[ap] = msg
        return out

    def expected_macs(self, ap: int, rnd: int) -> int:
        n = self._train_count(ap)
        return self._student_train_macs(n, self.cfg.round_epochs) + learn.model_cost(self.cfg.student)["macs"] * n

    def up(self, rnd: int, replies: dict[int, Payload]) -> int:
        for ap in sorted(replies):
            avg, c = split_label_stats(replies[ap].arrays["label_stats"])
            self._counts[ap] = c
            self._sums[ap] = avg * c[:, None]
        return 0

    @classmethod
    def ap_step(cls, ctx: ApContext, payload: Payload, state: dict[str, np.ndarray]) -> ApResult:
        cfg = ctx.cfg
        model = learn.seeded_model(cfg.student, derive_seed(cfg.seed, ctx.ap, INIT))
        if state:
            learn.load_vectors(model, state["params"], state["buffers"])
        data = ctx.data()
        label_logits = None
        if "label_stats" in payload.arrays:
            # labels nobody else has seen: no FD target, fall back to the AP's own average (zero KL)
            avg, counts = split_label_stats(payload.arrays["label_stats"])
            label_logits = avg.astype(np.float32)
            if "own_logits" in state:
                label_logits[counts == 0] = state["own_logits"][counts == 0]
        passes = learn.fit(model, data, "train", epochs=cfg.round_epochs,
                           seed=derive_seed(cfg.seed, ctx.ap, TRAIN, ctx.round), lr=cfg.lr, batch_size=cfg.batch_size,
                           label_logits=label_logits, beta=cfg.fd_beta, temperature=cfg.kd_temperature)
        logits = learn.predict(model, data, "train")
        _, beams = data.batch("train")
        sums, counts = learn.label_logit_sums(logits, beams)
        avg = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1.0)[:, None], 0.0).astype(np.float32)
        new_state = dict(learn.model_vectors(model), own_logits=avg)
        reply = Payload(arrays={"label_stats": label_stats(avg, counts)},
                        closed={"label_logits": 4 * avg.size, "label_counts": 4 * counts.size})
        reply.closed_int8 = dict(reply.closed)
        if final(payload):
            reply.config = evaluate(ctx, model, server_test=cls.server_test)
        macs = learn.model_cost(cfg.student)["macs"]
        return ApResult(reply, new_state, train_macs=TRAIN_MACS_FACTOR * macs * passes + macs * data.count("train"))


def label_stats(avg: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per-label average logits and the label counts as one ``[labels, beams + 1]`` float32 array (one header)."""
    return np.concatenate([avg, counts[:, None]], axis=1).astype(np.float32)


def split_label_stats(stats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return stats[:, :-1].astype(np.float64), stats[:, -1].astype(np.float64)
