"""The byte/MAC ledger: every message the engine sends, measured, beside its closed-form size.

Measured bytes are what the engine's record reports: Flower's ``ArrayRecord.count_bytes()`` (the
serialised ``.npy`` bytes of each array plus its key) in the Flower engine, and the same
serialisation done here (:func:`payload_bytes`) in the in-process engine; a test checks both agree.
The closed form is computed independently from counts: parameters x 4 bytes (x 1 for int8, plus
a scale per tensor), logits x 4, frames x frame size, window starts x 4.

Compute: edge MACs per AP (student training = 3 x forward MACs per sample pass, the usual
forward + backward convention; teacher = forward MACs per window it labels), server MACs, and a
simulated round time per AP (bytes over the link rates + MACs over the board's rate).
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterable
from typing import Any

import numpy as np

TRAIN_MACS_FACTOR = 3   # forward + backward ~ 3 forward passes


def array_bytes(array: np.ndarray) -> int:
    """Bytes of one array serialised as Flower serialises it (``np.save``, no pickle)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getbuffer().nbytes


def payload_bytes(arrays: dict[str, np.ndarray]) -> int:
    """What ``flwr.app.ArrayRecord(arrays).count_bytes()`` reports: serialised arrays plus their keys."""
    return sum(array_bytes(a) + len(k) for k, a in arrays.items())


@dataclasses.dataclass
class Payload:
    """One message's content: named arrays (the ledger counts these) and small config values."""

    arrays: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    closed: dict[str, int] = dataclasses.field(default_factory=dict)        # kind -> closed-form bytes (fp32)
    closed_int8: dict[str, int] = dataclasses.field(default_factory=dict)   # the same with int8 weights

    @property
    def empty(self) -> bool:
        return not self.arrays


def model_closed_form(prefix: str, cost: dict[str, int], tensors: int) -> tuple[dict[str, int], dict[str, int]]:
    """Closed-form bytes of a model on the wire: fp32 params and buffers; int8 params + a scale per tensor."""
    fp32 = {f"{prefix}_params": 4 * cost["params"], f"{prefix}_buffers": 4 * cost["buffers"]}
    int8 = {f"{prefix}_params": cost["params"] + 4 * tensors, f"{prefix}_buffers": 4 * cost["buffers"]}
    return fp32, int8


@dataclasses.dataclass
class Entry:
    topology: str
    round: int
    ap: int
    direction: str          # down | up | ap2ap
    kinds: str              # the closed-form kinds in the message, comma separated
    measured: int           # bytes, from the engine's record
    closed: int             # bytes, closed form (fp32 weights)
    closed_int8: int        # bytes, closed form with int8 weights


@dataclasses.dataclass
class Compute:
    topology: str
    round: int
    ap: int
    train_macs: int
    teacher_macs: int
    seconds: float          # simulated: link + compute time of this AP in this round


class Ledger:
    """Messages, edge compute, server compute and round times of one or more topologies."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.compute: list[Compute] = []
        self.server_macs: dict[str, int] = {}
        self.round_times: list[dict[str, Any]] = []

    def message(self, topology: str, rnd: int, ap: int, direction: str, payload: Payload, measured: int) -> None:
        if payload.empty:
            return
        self.entries.append(Entry(topology, rnd, ap, direction, ",".join(sorted(payload.closed)), int(measured),
                                  int(sum(payload.closed.values())), int(sum(payload.closed_int8.values()))))

    def add_server_macs(self, topology: str, macs: int) -> None:
        self.server_macs[topology] = self.server_macs.get(topology, 0) + int(macs)

    def add_compute(self, item: Compute) -> None:
        self.compute.append(item)

    def add_round(self, topology: str, rnd: int, times: dict[int, float], deadline: float | None,
                  dropped: Iterable[int]) -> None:
        order = sorted(times, key=lambda ap: (-times[ap], ap))
        self.round_times.append({
            "topology": topology, "round": rnd,
            "seconds": round(max(times.values()), 4) if times else 0.0,
            "median_s": round(float(np.median(list(times.values()))), 4) if times else 0.0,
            "stragglers": [{"ap": ap, "seconds": round(times[ap], 4)} for ap in order[:3]],
            "deadline_s": deadline, "dropped": sorted(dropped)})

    # ---------------------------------------------------------------- summaries

    def totals(self, topology: str, aps: int) -> dict[str, Any]:
        rows = [e for e in self.entries if e.topology == topology]
        comp = [c for c in self.compute if c.topology == topology]
        out: dict[str, Any] = {"rounds": max((r["round"] for r in self.round_times if r["topology"] == topology),
                                             default=0)}
        for d in ("down", "up", "ap2ap"):
            measured = sum(e.measured for e in rows if e.direction == d)
            closed = sum(e.closed for e in rows if e.direction == d)
            out[f"{d}_bytes"] = measured
            out[f"{d}_closed_bytes"] = closed
            out[f"{d}_int8_bytes"] = sum(e.closed_int8 for e in rows if e.direction == d)
            out[f"{d}_closed_rel_err"] = abs(measured - closed) / closed if closed else 0.0
        out["edge_train_macs_per_ap"] = sum(c.train_macs for c in comp) / max(aps, 1)
        out["edge_teacher_macs_per_ap"] = sum(c.teacher_macs for c in comp) / max(aps, 1)
        out["server_macs"] = self.server_macs.get(topology, 0)
        times = [r for r in self.round_times if r["topology"] == topology]
        out["sim_seconds"] = round(sum(r["seconds"] for r in times), 4)
        out["max_round_bytes"] = max((sum(e.measured for e in rows if e.round == r["round"]) for r in times),
                                     default=0)
        per_round = [sum(e.measured for e in rows if e.round == r["round"]) for r in times]
        out["mean_round_bytes"] = float(np.mean(per_round)) if per_round else 0.0
        return out

    def to_json(self) -> dict[str, Any]:
        return {"entries": [dataclasses.asdict(e) for e in self.entries],
                "compute": [dataclasses.asdict(c) for c in self.compute],
                "server_macs": self.server_macs, "round_times": self.round_times}


def round_seconds(down_bytes: int, up_bytes: int, macs: int, gmac_per_s: float, downlink_mbps: float,
                  uplink_mbps: float) -> float:
    """Simulated time of one AP in one round: download, compute, upload (deterministic)."""
    return (8 * down_bytes / (downlink_mbps * 1e6) + macs / (gmac_per_s * 1e9) + 8 * up_bytes / (uplink_mbps * 1e6))
