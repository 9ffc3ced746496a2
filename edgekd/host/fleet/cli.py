"""``edgekd fleet``: paper 1's distilling topologies and baselines across a simulated fleet of APs."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import click

from edgekd.device.errors import EdgekdError
from edgekd.device.io import atomic_directory

MARKER = "summary.json"


def _cache_root(cache: str | None) -> Path:
    if cache:
        return Path(cache)
    return Path(os.environ.get("EDGEKD_CACHE", Path.home() / ".cache" / "edgekd")) / "fleet"


class _PeakMemory:
    """Peak resident memory of this process and its children (the Ray actors), sampled every 0.5 s."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            try:
                procs = [me, *me.children(recursive=True)]
            except psutil.Error:
                procs = [me]
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(0.5)

    def __enter__(self) -> _PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def run_fleet(*, names: list[str], config: str | None, out: str, seeds: int, engine: str, workers: int,
              cache: str | None, overwrite: bool, progress: bool = True, **overrides: Any) -> dict[str, Any]:
    """Render the world(s), run every topology on every seed with one engine, write the outputs."""
    from edgekd.device.io import check_replaceable
    from edgekd.host.fleet.config import load_fleet_config
    from edgekd.host.fleet.driver import check_deadline, resolve_topologies
    from edgekd.host.fleet.ledger import Ledger
    from edgekd.host.fleet.report import write_outputs
    from edgekd.host.fleet.scenario import World, build_world, config_fingerprint, heterogeneity

    if seeds < 1:
        raise EdgekdError(f"--seeds must be at least 1, got {seeds}", field="--seeds", fix="pass --seeds 1 or more")
    if engine not in ("flower", "inproc"):
        raise EdgekdError(f"unknown engine {engine!r}", field="--engine", fix="flower or inproc")
    names = resolve_topologies(names)
    base = load_fleet_config(config, **overrides)
    check_deadline(base, names)
    check_replaceable(out, overwrite=overwrite, marker=MARKER, what="fleet output directory")
    if engine == "flower":
        from edgekd.host.fleet.engine_flower import run_flower as run_engine
    else:
        from edgekd.host.fleet.engine_inproc import run_inproc as run_engine  # type: ignore[assignment]

    started = time.monotonic()
    runs: list[dict[str, Any]] = []
    with _PeakMemory() as mem:
        for k in range(seeds):
            cfg = load_fleet_config(config, **{**overrides, "seed": base.seed + k})
            folder = _cache_root(cache) / f"world-{config_fingerprint(cfg)}"
            build_world(cfg, folder, progress=progress)
            world = World(folder)
            ledger = Ledger()
            kwargs = {"workers": workers} if engine == "flower" else {}
            results = run_engine(cfg, world, names, ledger, progress=progress, **kwargs)
            het = heterogeneity(world)
            runs.append({"seed": cfg.seed, "results": results, "ledger": ledger, "aps": len(world.ap_ids),
                         "heterogeneity": het, "specs": {s.site: s.__dict__ for s in world.aps},
                         "world": str(folder), "excluded_aps": len(world.meta["excluded_aps"])})
    first = runs[0]
    stragglers = {}
    first_ledger: Ledger = first["ledger"]
    for name in names:
        rounds = [r for r in first_ledger.round_times if r["topology"] == name]
        slow = max(rounds, key=lambda r: r["seconds"])["stragglers"] if rounds else []
        stragglers[name] = [{**s, "board": first["specs"][s["ap"]]["board"]} for s in slow]
    info = {"engine": engine, "seeds": seeds, "topologies": names, "config": base.to_dict(),
            "wall_s": round(time.monotonic() - started, 1), "peak_rss_mb": round(mem.peak / 2**20, 1),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "heterogeneity_mean_js": float(sum(r["heterogeneity"]["mean_js"] for r in runs) / len(runs)),
            "server_vs_fleet_js": float(sum(r["heterogeneity"]["server_vs_fleet_js"] for r in runs) / len(runs)),
            "excluded_aps": [r["excluded_aps"] for r in runs], "worlds": [r["world"] for r in runs],
            "stragglers": stragglers}
    with atomic_directory(out, overwrite=overwrite, what="fleet output directory", marker=MARKER) as tmp:
        result = write_outputs(tmp, base, names, runs, info)
        from edgekd.device.io import atomic_write_json

        atomic_write_json(tmp / "run.json", info)
    return {**result, "run": info}


def _common(f: Any) -> Any:
    options = [
        click.option("--aps", type=int, default=None, help="Access points in the fleet (default 100; the profile's)."),
        click.option("--modality", default=None,
                     help="Student family: image | radar | lidar | fusion (default radar; the profile's)."),
        click.option("--seeds", type=int, default=1, show_default=True,
                     help="Seeds (each a fresh world and fresh models); means and std pool APs and seeds."),
        click.option("--seed", type=int, default=None, help="First seed (default 0; the profile's)."),
        click.option("--engine", type=click.Choice(["flower", "inproc"]), default="flower", show_default=True,
                     help="flower: Flower's simulation engine (Ray); inproc: the same steps in this process."),
        click.option("--workers", type=int, default=2, show_default=True,
                     help="Flower: Ray actors (one CPU and one simulated AP at a time each)."),
        click.option("--config", type=click.Path(dir_okay=False), default=None,
                     help="Fleet profile YAML (default: edgekd/host/fleet/profiles/default.yaml)."),
        click.option("--deadline-s", type=float, default=None,
                     help="Straggler deadline per round (simulated seconds): slower APs sit the round out."),
        click.option("--rounds", type=int, default=None, help="FedAvg / FD rounds (default: the profile's)."),
        click.option("--train-windows", type=int, default=None, help="Training windows per AP (the profile's)."),
        click.option("--unlabelled-windows", type=int, default=None,
                     help="Windows per AP with no beam label; only decentralized learns from them, through the "
                          "teacher's outputs (the profile's; default 0)."),
        click.option("--cache", type=click.Path(file_okay=False), default=None,
                     help="Where rendered worlds are kept and reused (default: $EDGEKD_CACHE/fleet or "
                          "~/.cache/edgekd/fleet)."),
        click.option("--out", required=True, type=click.Path(file_okay=False),
                     help="Output folder: report.md, summary.json, per_ap.csv, ledger.json, PNGs."),
        click.option("--overwrite", is_flag=True, help="Replace an existing fleet output folder."),
        click.option("--quiet", is_flag=True, help="No progress bars."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


@click.group()
def fleet() -> None:
    """Paper 1's distilling topologies (centralized, decentralized, semi-centralized) and baselines
    (local, oracle, FedAvg, federated distillation) across a simulated fleet of access points, with
    a ledger of bytes and MACs measured from the messages (Flower or in-process)."""


@fleet.command("list")
def list_command() -> None:
    """List the topologies."""
    from edgekd.host.fleet.topologies import TOPOLOGIES

    for name in TOPOLOGIES.names():
        click.echo(f"{name:18s} {TOPOLOGIES.get(name).description}")


def _echo_summary(result: dict[str, Any], out: str) -> None:
    for name, r in result["rows"].items():
        click.echo(f"{name:18s} top-2 {100 * r['top2_mean']:5.1f}%  down {r['down_bytes'] / 1e6:9.2f} MB  "
                   f"up {r['up_bytes'] / 1e6:9.2f} MB  edge {r['edge_train_macs_per_ap'] / 1e9:7.2f} GMAC/AP")
    for c in result["acceptance"]:
        mark = "-" if c["pass"] is None else ("ok" if c["pass"] else "NO")
        click.echo(f"[{mark}] {c['check']}: {c['measured']}")
    info = result["run"]
    click.echo(f"wrote {out}/report.md ({info['wall_s']:.0f} s, peak {info['peak_rss_mb']:.0f} MB, "
               f"load {info['load_average']})")


@fleet.command("simulate")
@click.option("--topology", "topologies", multiple=True, required=True,
              help="Topology (repeatable): centralized, decentralized, decentralized-adapted, semi-centralized, "
                   "semi-norehearsal, local, oracle, fedavg, fd.")
@_common
def simulate(topologies: tuple[str, ...], aps: int | None, modality: str | None, seeds: int, seed: int | None,
             engine: str, workers: int, config: str | None, deadline_s: float | None, rounds: int | None,
             train_windows: int | None, unlabelled_windows: int | None, cache: str | None, out: str, overwrite: bool,
             quiet: bool) -> None:
    """Run one or more topologies on a simulated fleet."""
    result = run_fleet(names=list(topologies), config=config, out=out, seeds=seeds, engine=engine, workers=workers,
                       cache=cache, overwrite=overwrite, progress=not quiet, aps=aps, modality=modality, seed=seed,
                       deadline_s=deadline_s, rounds=rounds, train_windows=train_windows,
                       unlabelled_windows=unlabelled_windows)
    _echo_summary(result, out)


@fleet.command("compare")
@_common
def compare(aps: int | None, modality: str | None, seeds: int, seed: int | None, engine: str, workers: int,
            config: str | None, deadline_s: float | None, rounds: int | None, train_windows: int | None,
            unlabelled_windows: int | None, cache: str | None, out: str, overwrite: bool, quiet: bool) -> None:
    """Every topology on the same fleet, one table (report.md); decentralized-adapted runs by name only."""
    from edgekd.host.fleet.topologies import compared

    result = run_fleet(names=compared(), config=config, out=out, seeds=seeds, engine=engine, workers=workers,
                       cache=cache, overwrite=overwrite, progress=not quiet, aps=aps, modality=modality, seed=seed,
                       deadline_s=deadline_s, rounds=rounds, train_windows=train_windows,
                       unlabelled_windows=unlabelled_windows)
    _echo_summary(result, out)
