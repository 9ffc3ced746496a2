"""What every topology shares: the AP context and result, payload helpers, the server cache, the
:class:`Topology` base class and its registry (the concrete topologies: ``topologies.py``, ``federated.py``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from edgekd.device.registry import Registry
from edgekd.host.fleet import learn
from edgekd.host.fleet.config import FleetConfig
from edgekd.host.fleet.ledger import TRAIN_MACS_FACTOR, Payload, model_closed_form
from edgekd.host.fleet.scenario import WINDOW, SiteData, World, derive_seed

TOPOLOGIES: Registry[type[Topology]] = Registry("topology")
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
                               seed=derive_seed(cfg.seed, SERVER_AP, TRAIN, 1), lr=cfg.lr,
                               batch_size=cfg.server_batch_size)
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
                               seed=derive_seed(cfg.seed, SERVER_AP, TRAIN, 2), lr=cfg.lr,
                               batch_size=cfg.server_batch_size,
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
    in_compare: ClassVar[bool] = True     # part of `fleet compare` (variants that cost a lot run by name only)

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

    @classmethod
    def trained(cls, ctx: ApContext, student: Any, state: dict[str, np.ndarray], passes: int,
                teacher_macs: int = 0) -> ApResult:
        """An AP's answer after training its student for ``passes`` sample passes: its scores and the MACs."""
        return ApResult(Payload(config=evaluate(ctx, student, server_test=cls.server_test)), state,
                        train_macs=TRAIN_MACS_FACTOR * learn.model_cost(ctx.cfg.student)["macs"] * passes,
                        teacher_macs=teacher_macs)

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


