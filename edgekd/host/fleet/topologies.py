"""Topologies: paper 1's three distilling topologies and the baselines, as step functions.

A topology has a server side (``setup``, ``down`` = this round's messages, ``up`` = aggregate the
replies) and an AP side (``ap_step``: one AP's work on one message). They know nothing of the
engine: the in-process engine calls ``ap_step`` directly, the Flower engine calls it inside a
``ClientApp``; both drive the server side with :func:`edgekd.host.fleet.driver.run_topology`.

- ``centralized``: teacher and student trained at the server (its older data), the student shipped.
- ``decentralized``: the teacher shipped; each AP distils its own student on its local data.
  ``decentralized-adapted``: the same, but each AP first fine-tunes the shipped teacher on its local
  labels (paper 1's "local retraining or fine-tuning" in the decentralized topology, at the edge load
  the paper calls high), so the teacher it distils from has seen the AP's own site.
- ``semi-centralized``: the server's student shipped with a rehearsal set (proxy windows and the
  teacher's logits on them, computed at the server); each AP fine-tunes on local data + rehearsal
  KD. ``semi-norehearsal`` is the same without rehearsal (the forgetting ablation).
- ``local``: each AP trains its student alone (no KD). ``oracle``: every AP uploads its data; KD on
  the pooled fresh data (the ceiling). ``fedavg``: FedAvg of the student. ``fd``: federated
  distillation (Jeong et al. 2018): per-label average logits exchanged each round.
"""


from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from edgekd.host.fleet import learn
from edgekd.host.fleet.federated import FedAvg, FederatedDistillation, label_stats, split_label_stats  # noqa: F401
from edgekd.host.fleet.ledger import TRAIN_MACS_FACTOR, Payload
from edgekd.host.fleet.scenario import SPAN, UNLABELLED, SiteData, derive_seed
from edgekd.host.fleet.topology_base import (  # noqa: F401  (re-exported: the engines and the CLI import them here)
    FRAME_ITEMSIZE,
    INIT,
    SERVER_AP,
    TOPOLOGIES,
    TRAIN,
    ApContext,
    ApResult,
    ServerCache,
    Topology,
    evaluate,
    final,
    load_model,
    merge,
    model_payload,
    register,
    rehearsal_from,
)

DISTIL = "distil"   # an AP's labelled + unlabelled training windows, the ones its teacher labels


@register
class Centralized(Topology):
    name = "centralized"
    description = "teacher and student trained at the server; the student shipped to every AP"
    server_test = True

    def setup(self) -> int:
        return self.cache.teacher()[1] + self.cache.student()[1]

    def down(self, rnd: int, aps: list[int]) -> dict[int, Payload]:
        model, _ = self.cache.student()
        msg = model_payload("student", model, self.cfg.student)
        return {ap: merge(msg, final=1) for ap in aps}

    @classmethod
    def ap_step(cls, ctx: ApContext, payload: Payload, state: dict[str, np.ndarray]) -> ApResult:
        model = load_model(ctx.cfg.student, payload, "student")
        return ApResult(Payload(config=evaluate(ctx, model, server_test=cls.server_test)), state)


def distil_split(data: SiteData) -> tuple[str, np.ndarray | None]:
    """The windows an AP distils on: its labelled training windows, then its unlabelled ones if it holds any
    (a split added to ``data``); and which of them carry labels (None: all of them)."""
    unlabelled = data.starts.get(UNLABELLED)
    if unlabelled is None or len(unlabelled) == 0:
        return "train", None
    data.pool(DISTIL, ("train", UNLABELLED))
    return DISTIL, np.concatenate([np.ones(data.count("train"), bool), np.zeros(len(unlabelled), bool)])


@register
class Decentralized(Topology):
    name = "decentralized"
    description = "the teacher shipped to every AP; each AP distils its own student on its local data"

    def setup(self) -> int:
        return self.cache.teacher()[1]

    def down(self, rnd: int, aps: list[int]) -> dict[int, Payload]:
        model, _ = self.cache.teacher()
        msg = model_payload("teacher", model, self.cfg.teacher)
        return {ap: merge(msg, final=1) for ap in aps}

    def expected_macs(self, ap: int, rnd: int) -> int:
        n = self._train_count(ap) + self.cfg.unlabelled_windows
        return self._student_train_macs(n, self.cfg.local_epochs) + learn.model_cost(self.cfg.teacher)["macs"] * n

    @classmethod
    def adapt_teacher(cls, ctx: ApContext, teacher: Any, data: Any) -> int:
        """Hook before the teacher labels the AP's data; returns the MACs it spent (none here)."""
        return 0

    @classmethod
    def ap_step(cls, ctx: ApContext, payload: Payload, state: dict[str, np.ndarray]) -> ApResult:
        cfg = ctx.cfg
        teacher = load_model(cfg.teacher, payload, "teacher")
        data = ctx.data()
        adapt_macs = cls.adapt_teacher(ctx, teacher, data)
        split, labelled = distil_split(data)
        t_logits = learn.predict(teacher, data, split)
        student = learn.seeded_model(cfg.student, derive_seed(cfg.seed, ctx.ap, INIT))
        passes = learn.fit(student, data, split, epochs=cfg.local_epochs, seed=derive_seed(cfg.seed, ctx.ap, TRAIN),
                           lr=cfg.lr, batch_size=cfg.batch_size, teacher_logits=t_logits, alpha=cfg.kd_alpha,
                           temperature=cfg.kd_temperature, labelled=labelled)
        result = cls.trained(ctx, student, state, passes,
                             teacher_macs=adapt_macs + learn.model_cost(cfg.teacher)["macs"] * data.count(split))
        # The shipped teacher's own score on the AP's test windows: how much it knows this site, the bound on
        # what KD can add over the AP's labels. A measurement for the report, not part of the protocol: its
        # MACs are not charged to the AP.
        result.reply.config["teacher_top2"] = evaluate(ctx, teacher, server_test=False)["top2"]
        return result


@register
class DecentralizedAdapted(Decentralized):
    name = "decentralized-adapted"
    description = ("decentralized, each AP first fine-tuning the shipped teacher on its local labels "
                   "(teacher_adapt_epochs), then distilling its student from it")
    # not in `fleet compare`: it did not beat local-only (BENCHMARKS, 10 APs x 3 seeds: +0.11 pts) and would
    # add ~10 min to the 100-AP comparison (one radar-teacher epoch ~1.6x a whole student training)
    in_compare = False

    def expected_macs(self, ap: int, rnd: int) -> int:
        adapt = (TRAIN_MACS_FACTOR * learn.model_cost(self.cfg.teacher)["macs"] * self._train_count(ap)
                 * self.cfg.teacher_adapt_epochs)
        return super().expected_macs(ap, rnd) + adapt

    @classmethod
    def adapt_teacher(cls, ctx: ApContext, teacher: Any, data: Any) -> int:
        cfg = ctx.cfg
        passes = learn.fit(teacher, data, "train", epochs=cfg.teacher_adapt_epochs,
                           seed=derive_seed(cfg.seed, ctx.ap, TRAIN, 1), lr=cfg.teacher_adapt_lr,
                           batch_size=cfg.batch_size)
        return TRAIN_MACS_FACTOR * learn.model_cost(cfg.teacher)["macs"] * passes


@register
class SemiCentralized(Topology):
    name = "semi-centralized"
    description = ("the server's student shipped with rehearsal windows and the teacher's logits on them; "
                   "each AP fine-tunes on local data + rehearsal KD")
    server_test = True
    rehearse: ClassVar[bool] = True

    def setup(self) -> int:
        macs = self.cache.teacher()[1] + self.cache.student()[1]
        if self.rehearse and self.cfg.rehearsal_windows:
            macs += self.cache.rehearsal()[1]
        return macs

    def down(self, rnd: int, aps: list[int]) -> dict[int, Payload]:
        model, _ = self.cache.student()
        parts = [model_payload("student", model, self.cfg.student)]
        if self.rehearse and self.cfg.rehearsal_windows:
            parts.append(self.cache.rehearsal()[0])
        msg = merge(*parts, final=1)
        return {ap: msg for ap in aps}

    def expected_macs(self, ap: int, rnd: int) -> int:
        n = self._train_count(ap)
        if self.rehearse and self.cfg.rehearsal_windows:
            n += -(-n // self.cfg.batch_size) * min(self.cfg.batch_size, self.cfg.rehearsal_windows)
        return self._student_train_macs(n, self.cfg.finetune_epochs)

    @classmethod
    def ap_step(cls, ctx: ApContext, payload: Payload, state: dict[str, np.ndarray]) -> ApResult:
        cfg = ctx.cfg
        student = load_model(cfg.student, payload, "student")
        rehearsal = rehearsal_from(payload, ctx.world.inputs) if "rehearsal_logits" in payload.arrays else None
        passes = learn.fit(student, ctx.data(), "train", epochs=cfg.finetune_epochs,
                           seed=derive_seed(cfg.seed, ctx.ap, TRAIN), lr=cfg.lr, batch_size=cfg.batch_size,
                           rehearsal=rehearsal, alpha=cfg.kd_alpha, temperature=cfg.kd_temperature)
        return cls.trained(ctx, student, state, passes)


@register
class SemiNoRehearsal(SemiCentralized):
    name = "semi-norehearsal"
    description = "semi-centralized without the rehearsal set (the forgetting ablation)"
    rehearse = False


@register
class LocalOnly(Topology):
    name = "local"
    description = "each AP trains its student alone on its local data (no KD, no messages)"

    def down(self, rnd: int, aps: list[int]) -> dict[int, Payload]:
        return {ap: Payload(config={"final": 1}) for ap in aps}

    def expected_macs(self, ap: int, rnd: int) -> int:
        return self._student_train_macs(self._train_count(ap), self.cfg.local_epochs)

    @classmethod
    def ap_step(cls, ctx: ApContext, payload: Payload, state: dict[str, np.ndarray]) -> ApResult:
        cfg = ctx.cfg
        student = learn.seeded_model(cfg.student, derive_seed(cfg.seed, ctx.ap, INIT))
        passes = learn.fit(student, ctx.data(), "train", epochs=cfg.local_epochs,
                           seed=derive_seed(cfg.seed, ctx.ap, TRAIN), lr=cfg.lr, batch_size=cfg.batch_size)
        return cls.trained(ctx, student, state, passes)


@register
class Oracle(Topology):
    name = "oracle"
    description = "every AP uploads its fresh data; teacher and student trained on the pool (the ceiling)"

    def rounds(self) -> int:
        return 2

    def setup(self) -> int:
        self._pool: list[SiteData] = []
        return 0

    def down(self, rnd: int, aps: list[int]) -> dict[int, Payload]:
        if rnd == 1:
            return {ap: Payload(config={"upload": 1}) for ap in aps}
        msg = model_payload("student", self._student, self.cfg.student)
        return {ap: merge(msg, final=1) for ap in aps}

    def up(self, rnd: int, replies: dict[int, Payload]) -> int:
        if rnd != 1:
            return 0
        cfg = self.cfg
        parts = [SiteData({"frames_" + m: replies[ap].arrays[f"data_{m}"] for m in self.world.inputs}
                          | {"beams": replies[ap].arrays["data_beams"],
                             "starts_train": replies[ap].arrays["data_starts"]}, self.world.inputs)
                 for ap in sorted(replies)]
        pool = SiteData.merge(parts, ("train",))
        teacher = learn.seeded_model(cfg.teacher, derive_seed(cfg.seed, SERVER_AP, INIT, 11))
        t_passes = learn.fit(teacher, pool, "train", epochs=cfg.server_epochs,
                             seed=derive_seed(cfg.seed, SERVER_AP, TRAIN, 11), lr=cfg.lr,
                             batch_size=cfg.server_batch_size)
        t_logits = learn.predict(teacher, pool, "train")
        student = learn.seeded_model(cfg.student, derive_seed(cfg.seed, SERVER_AP, INIT, 12))
        s_passes = learn.fit(student, pool, "train", epochs=cfg.server_epochs,
                             seed=derive_seed(cfg.seed, SERVER_AP, TRAIN, 12), lr=cfg.lr,
                             batch_size=cfg.server_batch_size,
                             teacher_logits=t_logits, alpha=cfg.kd_alpha, temperature=cfg.kd_temperature)
        self._student = student
        tm, sm = learn.model_cost(cfg.teacher)["macs"], learn.model_cost(cfg.student)["macs"]
        return TRAIN_MACS_FACTOR * (tm * t_passes + sm * s_passes) + tm * pool.count("train")

    @classmethod
    def ap_step(cls, ctx: ApContext, payload: Payload, state: dict[str, np.ndarray]) -> ApResult:
        cfg = ctx.cfg
        if payload.config.get("upload"):
            data = ctx.data()
            starts = data.starts["train"]
            end = int(starts.max()) + SPAN
            arrays = {f"data_{m}": np.ascontiguousarray(data.frames[m][:end]) for m in data.inputs}
            arrays["data_beams"] = data.beams[:end].astype(np.int16)
            arrays["data_starts"] = starts.astype(np.int32)
            shapes = learn.seeded_model(cfg.student, 0).input_shapes()
            closed = {f"data_{m}": end * int(np.prod(shapes[m][1:])) * FRAME_ITEMSIZE[m] for m in data.inputs}
            closed["data_beams"] = 2 * end
            closed["data_starts"] = 4 * len(starts)
            return ApResult(Payload(arrays=arrays, closed=closed, closed_int8=dict(closed)), state)
        model = load_model(cfg.student, payload, "student")
        return ApResult(Payload(config=evaluate(ctx, model, server_test=cls.server_test)), state)


def list_topologies() -> list[str]:
    return TOPOLOGIES.names()


def ap_step(name: str, ctx: ApContext, payload: Payload, state: dict[str, np.ndarray]) -> ApResult:
    """The AP side of topology ``name`` (what either engine calls on a node)."""
    return TOPOLOGIES.get(name).ap_step(ctx, payload, state)


def compared() -> list[str]:
    """The topologies `fleet compare` runs (every registered one but those marked ``in_compare = False``)."""
    return [name for name in TOPOLOGIES.names() if TOPOLOGIES.get(name).in_compare]
