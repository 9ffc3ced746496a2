"""The in-process engine: the topologies' AP steps called directly, one after another (tests, CI).

It runs the very same step functions as the Flower engine and measures each message's arrays
with the same serialisation Flower's ``ArrayRecord.count_bytes()`` uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgekd.host.fleet.config import FleetConfig
from edgekd.host.fleet.driver import Exchange, run_topologies
from edgekd.host.fleet.ledger import Ledger, Payload, payload_bytes
from edgekd.host.fleet.scenario import World
from edgekd.host.fleet.topologies import ApContext, ServerCache, ap_step


class InProcessTransport:
    def __init__(self, cfg: FleetConfig, world: World, progress: Callable[[int], Any] | None = None):
        self.cfg = cfg
        self.world = world
        self.states: dict[tuple[str, int], dict[str, np.ndarray]] = {}
        self.progress = progress

    def exchange(self, topology: str, rnd: int, messages: dict[int, Payload]) -> dict[int, Exchange]:
        out = {}
        for ap in sorted(messages):
            msg = messages[ap]
            ctx = ApContext(self.cfg, self.world, ap, rnd)
            res = ap_step(topology, ctx, msg, self.states.get((topology, ap), {}))
            self.states[(topology, ap)] = res.state
            out[ap] = Exchange(res.reply, payload_bytes(msg.arrays), payload_bytes(res.reply.arrays),
                               res.train_macs, res.teacher_macs)
            if self.progress:
                self.progress(1)
        return out


def run_inproc(cfg: FleetConfig, world: World, names: Sequence[str], ledger: Ledger, *,
               progress: bool = True) -> dict[str, dict[int, dict[str, float]]]:
    """Every topology in ``names`` in turn on ``world``; server-side models shared between them."""
    return run_topologies(names, cfg, world, ServerCache(cfg, world),
                          lambda update: InProcessTransport(cfg, world, progress=update), ledger,
                          desc="fleet (inproc)", progress=progress)
