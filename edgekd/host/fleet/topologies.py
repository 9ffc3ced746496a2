"""Topologies: paper 1's three distilling topologies and the baselines, as step functions.

A topology has a server side (``setup``, ``down`` = this round's messages, ``up`` = aggregate the
replies) and an AP side (``ap_step``: one AP's work on one message). They know nothing of the
engine: the in-process engine calls ``ap_step`` directly, the Flower engine calls it inside a
``ClientApp``; both drive the server side with :func:`edgekd.host.fleet.driver.run_topology`.

- ``centralized``: teacher and student trained at the server (its older data), the student shipped.
- ``decentralized``: the teacher shipped; each AP distils its own student on its local data.
- ``semi-centralized``: the server's student shipped with a rehearsal set (proxy windows and the
  teacher's logits on them, computed at the server); each AP fine-tunes on local data + rehearsal
  KD. ``semi-norehearsal`` is the same without rehearsal (the forgetting ablation).
- ``local``: each AP trains its student alone (no KD). ``oracle``: every AP uploads its data; KD on
  the pooled fresh data (the ceiling). ``fedavg``: FedAvg of the student. ``fd``: federated
  distillation (Jeong et al. 2018): per-label average logits exchanged each round.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from edgekd.device.registry import Registry
from edgekd.host.fleet import learn
from edgekd.host.fleet.config import FleetConfig
from edgekd.host.fleet.ledger import TRAIN_MACS_FACTOR, Payload, model_closed_form
from edgekd.host.fleet.scenario import SPAN, WINDOW, SiteData, World, derive_seed

TOPOLOGIES: Registry[type[Topology]] = Registry("topology")
# bytes per stored frame value (the dataset contract: image uint8, radar float16, LiDAR float32)
FRAME_ITEMSIZE = {"image": 1, "radar": 2, "lidar": 4, "gps": 4}
# stream ids for derive_seed
INIT, TRAIN, SERVER_AP = 1, 2, -1


@dataclasses.dataclass
class ApContext:
    """What an AP step may see: the config, its own id and data, the round."""

    cfg: FleetConfig
    world: World
    ap: int
    round: int

    def data(self) -> SiteData:
        return self.world.site(self.ap)


@dataclasses.dataclass
class ApResult:
    reply: Payload
    state: dict[str, np.ndarray]
    train_macs: int = 0
    teacher_macs: int = 0


def _tensors_in(model_name: str) -> int:
    return sum(1 for _ in learn.seeded_model(model_name, 0).parameters())


def model_payload(prefix: str, model: Any, name: str) -> Payload:
    """A model on the wire: its parameter and buffer vectors, with the closed form from the model zoo."""
    vec = learn.model_vectors(model)
    fp32, int8 = model_closed_form(prefix, learn.model_cost(name), _tensors_in(name))
    return Payload(arrays={f"{prefix}_params": vec["params"], f"{prefix}_buffers": vec["buffers"]},
                   closed=fp32, closed_int8=int8)


def load_model(name: str, payload: Payload, prefix: str, seed: int = 0) -> Any:
    model = learn.seeded_model(name, seed)
    learn.load_vectors(model, payload.arrays[f"{prefix}_params"], payload.arrays[f"{prefix}_buffers"])
    return model


def merge(*parts: Payload, **config: Any) -> Payload:
    out = Payload(config=dict(config))
    for p in parts:
        out.arrays.update(p.arrays)
        out.closed.update(p.closed)
        out.closed_int8.update(p.closed_int8)
        out.config.update(p.config)
    return out


def evaluate(ctx: ApContext, model: Any, *, server_test: bool) -> dict[str, float]:
    """The AP's metrics: top-1/top-2 on its fresh local test windows (and the server's test set)."""
    data = ctx.data()
    logits = learn.predict(model, data, "test")
    _, beams = data.batch("test")
    out = {"top1": learn.topk_accuracy(logits, beams, 1), "top2": learn.topk_accuracy(logits, beams, 2)}
    if server_test:
        server = ctx.world.server()
        s_logits = learn.predict(model, server, "test")
        _, s_beams = server.batch("test")
        out["top2_server"] = learn.topk_accuracy(s_logits, s_beams, 2)
    return out


class ServerCache:
    """Server-side models shared by the topologies of one run (trained once, charged to each user)."""

    def __init__(self, cfg: FleetConfig, world: World):
        self.cfg = cfg
        self.world = world
        self._items: dict[str, tuple[Any, int]] = {}

    def get(self, key: str, make: Callable[[], tuple[Any, int]]) -> tuple[Any, int]:
        if key not in self._items:
            self._items[key] = make()
        return self._items[key]

    def teacher(self) -> tuple[Any, int]:
        """The teacher, trained on the server's (older) labelled data; (model, server MACs)."""
        def make() -> tuple[Any, int]:
            cfg = self.cfg
            model = learn.seeded_model(cfg.teacher, derive_seed(cfg.seed, SERVER_AP, INIT, 1))
            passes = learn.fit(model, self.world.server(), "train", epochs=cfg.server_epochs,
                               seed=derive_seed(cfg.seed, SERVER_AP, TRAIN, 1), lr=cfg.lr, batch_size=cfg.batch_size)
            return model, TRAIN_MACS_FACTOR * learn.model_cost(cfg.teacher)["macs"] * passes
        return self.get("teacher", make)

    def student(self) -> tuple[Any, int]:
        """The student distilled at the server from the teacher on the server's data (MACs beyond the teacher's)."""
        def make() -> tuple[Any, int]:
            cfg = self.cfg
            teacher, _ = self.teacher()
            server = self.world.server()
            t_logits = learn.predict(teacher, server, "train")
            model = learn.seeded_model(cfg.student, derive_seed(cfg.seed, SERVER_AP, INIT, 2))
            passes = learn.fit(model, server, "train", epochs=cfg.server_epochs,
                               seed=derive_seed(cfg.seed, SERVER_AP, TRAIN, 2), lr=cfg.lr, batch_size=cfg.batch_size,
                               teacher_logits=t_logits, alpha=cfg.kd_alpha, temperature=cfg.kd_temperature)
            macs = (learn.model_cost(cfg.teacher)["macs"] * server.count("train")
                    + TRAIN_MACS_FACTOR * learn.model_cost(cfg.student)["macs"] * passes)
            return model, macs
        return self.get("student", make)

    def rehearsal(self) -> tuple[Payload, int]:
        """Rehearsal windows from the proxy set (frames stored once) + the teacher's logits on them."""
        def make() -> tuple[Any, int]:
            cfg = self.cfg
            teacher, _ = self.teacher()
            server = self.world.server()
            starts = np.sort(server.starts["proxy"])[:cfg.rehearsal_windows]
            rows = np.unique((starts[:, None] + np.arange(WINDOW)).ravel())
            remap = np.searchsorted(rows, starts).astype(np.int32)
            frames = {m: np.ascontiguousarray(server.frames[m][rows]) for m in server.inputs}
            xs = [np.concatenate([frames[m][remap[i]:remap[i] + WINDOW][None] for i in range(len(remap))])
                  .astype(np.float32) * (np.float32(1 / 255) if frames[m].dtype == np.uint8 else np.float32(1))
                  for m in server.inputs]
            logits = learn.predict_windows(teacher, xs).astype(np.float32)
            arrays = {f"rehearsal_{m}": frames[m] for m in server.inputs}
            arrays["rehearsal_starts"] = remap
            arrays["rehearsal_logits"] = logits
            shapes = learn.seeded_model(cfg.teacher, 0).input_shapes()
            closed = {f"rehearsal_{m}": len(rows) * int(np.prod(shapes[m][1:])) * FRAME_ITEMSIZE[m]
                      for m in server.inputs}
            closed["rehearsal_starts"] = 4 * len(starts)
            closed["rehearsal_logits"] = 4 * len(starts) * learn.HORIZONS * learn.NUM_BEAMS
            payload = Payload(arrays=arrays, closed=closed, closed_int8=dict(closed))
            return payload, learn.model_cost(cfg.teacher)["macs"] * len(starts)
        return self.get("rehearsal", make)


def rehearsal_from(payload: Payload, inputs: tuple[str, ...]) -> learn.Rehearsal:
    return learn.Rehearsal(frames={m: payload.arrays[f"rehearsal_{m}"] for m in inputs},
                           starts=payload.arrays["rehearsal_starts"].astype(np.int64),
                           logits=payload.arrays["rehearsal_logits"])


class Topology:
    """Base: one-round topologies override ``down``/``ap_step``; multi-round ones ``rounds`` and ``up``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    server_test: ClassVar[bool] = False   # evaluate on the server's test set too (forgetting)

    def __init__(self, cfg: FleetConfig, world: World, aps: list[int], cache: ServerCache):
        self.cfg = cfg
        self.world = world
        self.aps = sorted(aps)
        self.cache = cache

    def rounds(self) -> int:
        return 1

    def setup(self) -> int:
        """Server work before round 1; returns server MACs."""
        return 0

    def down(self, rnd: int, aps: list[int]) -> dict[int, Payload]:
        raise NotImplementedError

    def up(self, rnd: int, replies: dict[int, Payload]) -> int:
        """Aggregate the replies (sorted by AP id); returns server MACs."""
        return 0

    def expected_macs(self, ap: int, rnd: int) -> int:
        """Edge MACs this AP will spend in this round, from counts (for the straggler deadline)."""
        return 0

    @classmethod
    def ap_step(cls, ctx: ApContext, payload: Payload, state: dict[str, np.ndarray]) -> ApResult:
        raise NotImplementedError

    # helpers
    def _train_count(self, ap: int) -> int:
        return self.cfg.train_windows   # every AP holds exactly this many training windows

    def _student_train_macs(self, n: int, epochs: int) -> int:
        return TRAIN_MACS_FACTOR * learn.model_cost(self.cfg.student)["macs"] * n * epochs


def register(cls: type[Topology]) -> type[Topology]:
    TOPOLOGIES.add(cls.name, cls)
    return cls


def final(payload: Payload) -> bool:
    return bool(payload.config.get("final", 0))


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
        n = self._train_count(ap)
        return self._student_train_macs(n, self.cfg.local_epochs) + learn.model_cost(self.cfg.teacher)["macs"] * n

    @classmethod
    def ap_step(cls, ctx: ApContext, payload: Payload, state: dict[str, np.ndarray]) -> ApResult:
        cfg = ctx.cfg
        teacher = load_model(cfg.teacher, payload, "teacher")
        data = ctx.data()
        t_logits = learn.predict(teacher, data, "train")
        student = learn.seeded_model(cfg.student, derive_seed(cfg.seed, ctx.ap, INIT))
        passes = learn.fit(student, data, "train", epochs=cfg.local_epochs, seed=derive_seed(cfg.seed, ctx.ap, TRAIN),
                           lr=cfg.lr, batch_size=cfg.batch_size, teacher_logits=t_logits, alpha=cfg.kd_alpha,
                           temperature=cfg.kd_temperature)
        return ApResult(Payload(config=evaluate(ctx, student, server_test=cls.server_test)), state,
                        train_macs=TRAIN_MACS_FACTOR * learn.model_cost(cfg.student)["macs"] * passes,
                        teacher_macs=learn.model_cost(cfg.teacher)["macs"] * data.count("train"))


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
        return ApResult(Payload(config=evaluate(ctx, student, server_test=cls.server_test)), state,
                        train_macs=TRAIN_MACS_FACTOR * learn.model_cost(cfg.student)["macs"] * passes)


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
        return ApResult(Payload(config=evaluate(ctx, student, server_test=cls.server_test)), state,
                        train_macs=TRAIN_MACS_FACTOR * learn.model_cost(cfg.student)["macs"] * passes)


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
                             seed=derive_seed(cfg.seed, SERVER_AP, TRAIN, 11), lr=cfg.lr, batch_size=cfg.batch_size)
        t_logits = learn.predict(teacher, pool, "train")
        student = learn.seeded_model(cfg.student, derive_seed(cfg.seed, SERVER_AP, INIT, 12))
        s_passes = learn.fit(student, pool, "train", epochs=cfg.server_epochs,
                             seed=derive_seed(cfg.seed, SERVER_AP, TRAIN, 12), lr=cfg.lr, batch_size=cfg.batch_size,
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


def list_topologies() -> list[str]:
    return TOPOLOGIES.names()


def ap_step(name: str, ctx: ApContext, payload: Payload, state: dict[str, np.ndarray]) -> ApResult:
    """The AP side of topology ``name`` (what either engine calls on a node)."""
    return TOPOLOGIES.get(name).ap_step(ctx, payload, state)
