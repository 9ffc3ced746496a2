"""The in-process engine: the topologies' AP steps called directly, one after another (tests, CI).

It runs the very same step functions as the Flower engine and measures each message's arrays
with the same serialisation Flower's ``ArrayRecord.count_bytes()`` uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgekd.host.fleet.config import FleetConfig
from edgekd.host.fleet.driver import Exchange, run_topology
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
    from tqdm.auto import tqdm

    cache = ServerCache(cfg, world)
    results = {}
    bar = tqdm(total=0, desc="fleet (inproc)", unit="ap-step", disable=not progress)
    transport = InProcessTransport(cfg, world, progress=bar.update)

    def note(text: str) -> None:
        bar.total = (bar.total or 0) + len(world.ap_ids)
        bar.set_postfix_str(text)
        bar.refresh()

    for name in names:
        results[name] = run_topology(name, cfg, world, cache, transport, ledger, progress=note)
    bar.close()
    return results
