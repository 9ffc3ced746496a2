"""The server loop every engine runs: rounds of ``down`` -> AP steps -> ``up``, with the ledger kept.

An engine supplies a :class:`Transport` (how messages reach the APs and come back, and how many
bytes its records say they hold); everything else, including the straggler deadline and the
order of aggregation (sorted AP ids), is here, once.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from edgekd.device.errors import EdgekdError
from edgekd.host.fleet.config import FleetConfig
from edgekd.host.fleet.ledger import Compute, Ledger, Payload, round_seconds
from edgekd.host.fleet.scenario import SiteSpec, World, eligible, plan_sites
from edgekd.host.fleet.topologies import TOPOLOGIES, ServerCache, Topology

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Exchange:
    """One AP's side of a round, as the engine saw it."""

    reply: Payload
    down_bytes: int          # measured by the engine's record of the message sent
    up_bytes: int            # measured by the engine's record of the reply
    train_macs: int
    teacher_macs: int


class Transport(Protocol):
    def exchange(self, topology: str, rnd: int, messages: dict[int, Payload]) -> dict[int, Exchange]: ...


def resolve_topologies(names: Sequence[str]) -> list[str]:
    """Canonical topology names; an unknown one is an EdgekdError listing the known ones."""
    if not names:
        raise EdgekdError("no topology given", field="--topology", fix=f"one of: {', '.join(TOPOLOGIES.names())}")
    return [TOPOLOGIES.resolve(n) for n in names]


def _rate(site: SiteSpec, cfg: FleetConfig) -> float:
    return cfg.board_gmac_per_s[site.board]


def check_deadline(cfg: FleetConfig, names: Sequence[str]) -> None:
    """Before any work: a deadline that no AP can meet on compute alone (round 1) is an error."""
    if cfg.deadline_s is None:
        return
    sites = eligible(plan_sites(cfg)[0], cfg)
    for name in names:
        topo = TOPOLOGIES.get(name)(cfg, None, [s.site for s in sites], None)  # type: ignore[arg-type]
        for rnd in range(1, topo.rounds() + 1):
            best = min(topo.expected_macs(s.site, rnd) / (_rate(s, cfg) * 1e9) for s in sites)
            if best > cfg.deadline_s:
                fastest = min(sites, key=lambda s: topo.expected_macs(s.site, rnd) / _rate(s, cfg))
                raise EdgekdError(
                    f"no access point can meet the {cfg.deadline_s:g} s deadline in round {rnd} of '{name}': the "
                    f"fastest (AP {fastest.site}, {fastest.board}) needs {best:.3g} s of compute alone",
                    field="deadline_s", fix=f"raise --deadline-s above {best:.3g} s, or drop the deadline")


def run_topology(name: str, cfg: FleetConfig, world: World, cache: ServerCache, transport: Transport,
                 ledger: Ledger, progress: Callable[[str], Any] | None = None) -> dict[int, dict[str, float]]:
    """Run one topology to the end; returns each AP's final metrics (APs dropped by the deadline absent)."""
    topo: Topology = TOPOLOGIES.get(name)(cfg, world, world.ap_ids, cache)
    ledger.add_server_macs(name, topo.setup())
    sites = {s.site: s for s in world.aps}
    metrics: dict[int, dict[str, float]] = {}
    for rnd in range(1, topo.rounds() + 1):
        if progress:
            progress(f"{name} round {rnd}/{topo.rounds()}")
        messages = topo.down(rnd, topo.aps)
        dropped: list[int] = []
        if cfg.deadline_s is not None:
            predicted = {ap: round_seconds(sum(m.closed.values()), 0, topo.expected_macs(ap, rnd),
                                           _rate(sites[ap], cfg), cfg.downlink_mbps, cfg.uplink_mbps)
                         for ap, m in messages.items()}
            dropped = sorted(ap for ap, t in predicted.items() if t > cfg.deadline_s)
            if len(dropped) == len(messages):
                best = min(predicted.values())
                raise EdgekdError(f"no access point can meet the {cfg.deadline_s:g} s deadline in round {rnd} of "
                                  f"'{name}' (the fastest needs {best:.3g} s)", field="deadline_s",
                                  fix=f"raise --deadline-s above {best:.3g} s, or drop the deadline")
            messages = {ap: m for ap, m in messages.items() if ap not in dropped}
        got = transport.exchange(name, rnd, messages)
        times = {}
        for ap in sorted(got):
            ex = got[ap]
            ledger.message(name, rnd, ap, "down", messages[ap], ex.down_bytes)
            ledger.message(name, rnd, ap, "up", ex.reply, ex.up_bytes)
            seconds = round_seconds(ex.down_bytes, ex.up_bytes, ex.train_macs + ex.teacher_macs,
                                    _rate(sites[ap], cfg), cfg.downlink_mbps, cfg.uplink_mbps)
            times[ap] = seconds
            ledger.add_compute(Compute(name, rnd, ap, ex.train_macs, ex.teacher_macs, round(seconds, 6)))
            if "top2" in ex.reply.config:
                metrics[ap] = {k: float(v) for k, v in ex.reply.config.items()
                               if k in ("top1", "top2", "top2_server", "teacher_top2")}
        ledger.add_round(name, rnd, times, cfg.deadline_s, dropped)
        ledger.add_server_macs(name, topo.up(rnd, {ap: got[ap].reply for ap in sorted(got)}))
    return metrics


def run_topologies(names: Sequence[str], cfg: FleetConfig, world: World, cache: ServerCache,
                   transport_for: Callable[[Callable[[int], Any]], Transport], ledger: Ledger, *, desc: str,
                   progress: bool) -> dict[str, dict[int, dict[str, float]]]:
    """Every topology in ``names`` in turn, one progress bar over all AP steps (either engine's loop).

    ``transport_for(update)``: the engine's transport, calling ``update(n)`` as AP steps finish.
    """
    from tqdm.auto import tqdm

    bar = tqdm(total=0, desc=desc, unit="ap-step", disable=not progress)
    transport = transport_for(bar.update)

    def note(text: str) -> None:   # a topology starts: its AP steps join the bar's total
        bar.total = (bar.total or 0) + len(world.ap_ids)
        bar.set_postfix_str(text)
        bar.refresh()

    results = {name: run_topology(name, cfg, world, cache, transport, ledger, progress=note) for name in names}
    bar.close()
    return results
