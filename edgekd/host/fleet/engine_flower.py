"""The Flower engine: the only module that imports ``flwr`` (a Flower API change stays in this file).

One ``ServerApp`` runs every requested topology in turn (one Ray start for a whole comparison);
one ``ClientApp`` per simulated AP (a Flower SuperNode) runs the topologies' AP steps. Messages
carry a ``RecordDict`` with an ``ArrayRecord`` ("arrays", what the ledger counts with Flower's own
``count_bytes()``) and a ``ConfigRecord`` ("config": round flags, metrics, MACs, closed forms).
Each AP's state between rounds (the FD student) lives in the node's ``Context.state``.

Simulation: ``flwr.simulation.run_simulation`` with the Ray backend, one CPU per ClientApp actor.
Multi-machine: the same ``ServerApp``/``ClientApp`` objects (:func:`make_apps`) under ``flwr run``
against a Ray cluster (README, "edgekd fleet").
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import numpy as np  # noqa: E402

from edgekd.device.errors import EdgekdError  # noqa: E402
from edgekd.host.fleet.config import FleetConfig  # noqa: E402
from edgekd.host.fleet.driver import Exchange, run_topologies  # noqa: E402
from edgekd.host.fleet.ledger import Ledger, Payload  # noqa: E402
from edgekd.host.fleet.scenario import World  # noqa: E402
from edgekd.host.fleet.topologies import ApContext, ServerCache, ap_step  # noqa: E402

log = logging.getLogger(__name__)

HELLO = "hello"


def block_tensorflow() -> None:
    """Make ``import tensorflow`` fail in this process (unless already imported).

    Flower's Ray actor module imports TensorFlow when it is installed (for an optional GPU
    setting); the fleet never uses it, and it costs seconds and hundreds of MB per process. The
    actors get the same through :func:`_tensorflow_shim` on their ``PYTHONPATH``.
    """
    import sys

    if "tensorflow" not in sys.modules:
        sys.modules["tensorflow"] = None  # type: ignore[assignment]


def _tensorflow_shim() -> str:
    """A folder whose ``tensorflow`` package raises ModuleNotFoundError (what Flower's import expects)."""
    import tempfile

    root = Path(tempfile.gettempdir()) / f"edgekd-fleet-notf-{os.getuid()}"
    pkg = root / "tensorflow"
    pkg.mkdir(parents=True, exist_ok=True)
    init = pkg / "__init__.py"
    text = 'raise ModuleNotFoundError("tensorflow is not loaded in edgekd fleet\'s Flower actors")\n'
    if not init.is_file() or init.read_text() != text:
        init.write_text(text)
    return str(root)


def _flwr() -> Any:
    block_tensorflow()
    try:
        import flwr  # noqa: F401
    except ImportError:
        raise EdgekdError("the Flower engine needs Flower", field="--engine",
                          fix='pip install "edgekd[fleet]" (flwr[simulation]), or use --engine inproc') from None
    import flwr.app
    import flwr.clientapp
    import flwr.serverapp
    import flwr.simulation

    return flwr


def to_record(payload: Payload, **extra: Any) -> Any:
    """A payload as a Flower ``RecordDict``: arrays in an ArrayRecord, scalars in a ConfigRecord."""
    flwr = _flwr()
    arrays = flwr.app.ArrayRecord({k: flwr.app.Array(np.ascontiguousarray(v)) for k, v in payload.arrays.items()})
    config = dict(payload.config)
    config.update({f"closed:{k}": int(v) for k, v in payload.closed.items()})
    config.update({f"closed8:{k}": int(v) for k, v in payload.closed_int8.items()})
    config.update(extra)
    return flwr.app.RecordDict({"arrays": arrays, "config": flwr.app.ConfigRecord(config)})


def from_record(record: Any) -> tuple[Payload, dict[str, Any]]:
    """Inverse of :func:`to_record`; returns the payload and the engine's own config keys."""
    arrays = {k: v.numpy() for k, v in record["arrays"].items()}
    config, closed, closed8, extra = {}, {}, {}, {}
    for k, v in record["config"].items():
        if k.startswith("closed:"):
            closed[k[7:]] = int(v)
        elif k.startswith("closed8:"):
            closed8[k[8:]] = int(v)
        elif k.startswith("engine:"):
            extra[k[7:]] = v
        else:
            config[k] = v
    return Payload(arrays=arrays, config=config, closed=closed, closed_int8=closed8), extra


def _state_from(context: Any, key: str) -> dict[str, np.ndarray]:
    if key not in context.state:
        return {}
    return {k: v.numpy() for k, v in context.state[key].items()}


def make_client_app(cfg: FleetConfig, world_folder: str) -> Any:
    """The ClientApp: node ``partition-id`` i is the i-th AP of the world (sorted ids)."""
    flwr = _flwr()
    app = flwr.clientapp.ClientApp()
    cfg_dict = cfg.to_dict()

    @app.train()
    def train(msg: Any, context: Any) -> Any:
        from edgekd.device.config import config_from_dict
        from edgekd.host.fleet.config import FleetConfig as _Cfg

        world = World(world_folder)
        partition = int(context.node_config["partition-id"])
        ap = world.ap_ids[partition]
        payload, extra = from_record(msg.content)
        if extra.get("op") == HELLO:
            reply = Payload(config={"engine:ap": ap})
            return flwr.app.Message(to_record(reply), reply_to=msg)
        fleet_cfg = config_from_dict(_Cfg, cfg_dict)
        topology, rnd = str(extra["topology"]), int(extra["round"])
        key = f"state:{topology}"
        res = ap_step(topology, ApContext(fleet_cfg, world, ap, rnd), payload, _state_from(context, key))
        context.state[key] = flwr.app.ArrayRecord({k: flwr.app.Array(np.ascontiguousarray(v))
                                                   for k, v in res.state.items()})
        return flwr.app.Message(to_record(res.reply, **{"engine:train_macs": int(res.train_macs),
                                                        "engine:teacher_macs": int(res.teacher_macs)}),
                                reply_to=msg)

    return app


class FlowerTransport:
    """Messages through a Flower ``Grid``; bytes from the records' ``count_bytes()``."""

    def __init__(self, grid: Any, ap_nodes: dict[int, int], progress: Callable[[int], Any] | None = None):
        self.grid = grid
        self.ap_nodes = ap_nodes
        self.node_aps = {n: a for a, n in ap_nodes.items()}
        self.progress = progress

    def exchange(self, topology: str, rnd: int, messages: dict[int, Payload]) -> dict[int, Exchange]:
        flwr = _flwr()
        out_msgs, sent = [], {}
        for ap in sorted(messages):
            record = to_record(messages[ap], **{"engine:topology": topology, "engine:round": rnd})
            sent[ap] = record["arrays"].count_bytes()
            out_msgs.append(flwr.app.Message(record, dst_node_id=self.ap_nodes[ap], message_type="train",
                                             group_id=f"{topology}:{rnd}"))
        out: dict[int, Exchange] = {}
        for reply in self.grid.send_and_receive(out_msgs):
            ap = self.node_aps[reply.metadata.src_node_id]
            if reply.has_error():
                raise RuntimeError(f"AP {ap} failed in {topology} round {rnd}: {reply.error.reason}")
            payload, extra = from_record(reply.content)
            out[ap] = Exchange(payload, sent[ap], reply.content["arrays"].count_bytes(),
                               int(extra.get("train_macs", 0)), int(extra.get("teacher_macs", 0)))
            if self.progress:
                self.progress(1)
        missing = sorted(set(messages) - set(out))
        if missing:
            raise RuntimeError(f"no reply from APs {missing[:5]} in {topology} round {rnd}")
        return out


def make_server_app(cfg: FleetConfig, world_folder: str, names: Sequence[str], ledger: Ledger,
                    results: dict[str, Any], progress: bool = True) -> Any:
    """The ServerApp: maps nodes to APs (one hello message each), then runs every topology in turn."""
    flwr = _flwr()
    app = flwr.serverapp.ServerApp()

    @app.main()
    def main(grid: Any, context: Any) -> None:
        try:
            world = World(world_folder)
            nodes = _wait_for_nodes(grid, len(world.ap_ids))
            hello = [flwr.app.Message(to_record(Payload(), **{"engine:op": HELLO}), dst_node_id=n,
                                      message_type="train", group_id="hello") for n in nodes]
            ap_nodes = {}
            for reply in grid.send_and_receive(hello):
                if reply.has_error():
                    raise RuntimeError(f"node {reply.metadata.src_node_id} failed to start: {reply.error.reason}")
                ap_nodes[int(reply.content["config"]["engine:ap"])] = reply.metadata.src_node_id
            if sorted(ap_nodes) != world.ap_ids:
                raise RuntimeError(f"{len(ap_nodes)} Flower nodes answered for {len(world.ap_ids)} APs")
            results.update(run_topologies(names, cfg, world, ServerCache(cfg, world),
                                          lambda update: FlowerTransport(grid, ap_nodes, progress=update), ledger,
                                          desc="fleet (flower)", progress=progress))
        except BaseException as exc:  # surfaced by run_flower after the simulation ends
            results["__error__"] = exc
            raise

    return app


def _wait_for_nodes(grid: Any, count: int, timeout_s: float = 600.0) -> list[int]:
    """The node ids once ``count`` SuperNodes have registered (they connect asynchronously)."""
    import time

    start = time.monotonic()
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= count:
            return nodes
        if time.monotonic() - start > timeout_s:
            raise RuntimeError(f"only {len(nodes)} of {count} Flower nodes registered in {timeout_s:.0f} s")
        time.sleep(0.2)


def make_apps(cfg: FleetConfig, world_folder: str | Path, names: Sequence[str], ledger: Ledger,
              results: dict[str, Any], progress: bool = True) -> tuple[Any, Any]:
    """(ServerApp, ClientApp) for a world: what ``run_simulation`` or ``flwr run`` executes."""
    folder = str(Path(world_folder).resolve())
    return (make_server_app(cfg, folder, names, ledger, results, progress), make_client_app(cfg, folder))


def run_flower(cfg: FleetConfig, world: World, names: Sequence[str], ledger: Ledger, *, workers: int = 2,
               progress: bool = True) -> dict[str, dict[int, dict[str, float]]]:
    """Every topology in ``names`` through Flower's simulation engine (Ray backend, ``workers`` actors)."""
    flwr = _flwr()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"   # inherited by the Ray actors: one thread per simulated AP
    saved_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_tensorflow_shim(), saved_path) if p)
    try:
        return _run_flower(flwr, cfg, world, names, ledger, workers=workers, progress=progress)
    finally:
        if saved_path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved_path


def _run_flower(flwr: Any, cfg: FleetConfig, world: World, names: Sequence[str], ledger: Ledger, *, workers: int,
                progress: bool) -> dict[str, dict[int, dict[str, float]]]:
    results: dict[str, Any] = {}
    server_app, client_app = make_apps(cfg, world.folder, names, ledger, results, progress)
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"num_cpus": int(workers), "num_gpus": 0, "include_dashboard": False,
                             "logging_level": "error", "log_to_driver": False}}
    for name in ("flwr", "ray"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        flwr.simulation.run_simulation(server_app=server_app, client_app=client_app,
                                       num_supernodes=len(world.ap_ids), backend_name="ray",
                                       backend_config=backend)
    except SystemExit as exc:  # Flower exits the process on some errors; turn it into ours
        raise RuntimeError(f"Flower simulation ended with exit code {exc.code}") from None
    error = results.pop("__error__", None)
    if error is not None:
        raise error
    missing = [n for n in names if n not in results]
    if missing:
        raise RuntimeError(f"the Flower simulation ended without results for {missing}")
    return results
