"""The fleet's world: N access-point sites and the server's older sites, rendered by the synthetic scenario.

Each access point (AP) is a base station in its own stretch of the synthetic world
(:mod:`edgekd.host.data.synth`): its own street geometry (distance to the road, lanes), blocker
rate (traffic density, share of trucks/buses), lighting and weather mix and sensor set, and a
board from ``targets/``. The server holds labelled data from an older, narrower mix of sites
(``server_mix``), a test set of that mix and an unlabelled proxy set (rehearsal).

Everything derives from ``(seed, site)``: the same config gives the same world, byte for byte.
The world is written once to a folder (``world.json`` + one ``.npz`` per site) that every engine
and every topology reads, so a comparison runs all topologies on the very same data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.device.errors import EdgekdError
from edgekd.device.io import atomic_write_json
from edgekd.device.targets import load_target
from edgekd.host.data.layout import window_starts
from edgekd.host.fleet.config import FleetConfig, SiteMix

log = logging.getLogger(__name__)

WORLD_FORMAT = 1
SERVER = -1   # the server's site id in seeds and file names
HORIZONS = 4
WINDOW = 8
SPAN = WINDOW + HORIZONS - 1
# an AP's split of windows without beam labels; their beams are stored as NO_LABEL so that reading one as a
# label fails (cross-entropy rejects a negative class) instead of leaking the synthesiser's ground truth
UNLABELLED = "unlabelled"
NO_LABEL = -1


def derive_seed(*parts: int) -> int:
    """A 32-bit seed from integer parts (seed, AP id, round, stream): independent streams, reproducible."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


@dataclasses.dataclass(frozen=True)
class SiteSpec:
    """One site: where its base station stands and what it sees."""

    site: int                       # AP id (0..N-1), or a server site (< 0)
    curb_offset_m: float
    lanes_each_way: int
    density_per_100m: float
    tall_fraction: float
    user_speed_mps: tuple[float, float]
    lighting_probs: tuple[float, float, float]
    weather_probs: tuple[float, float, float]
    sensors: tuple[str, ...]
    board: str


def draw_site(site: int, mix: SiteMix, cfg: FleetConfig, rng: np.random.Generator) -> SiteSpec:
    """A site's parameters drawn from ``mix`` (pure in ``rng``)."""
    lo, hi = mix.user_speed_mps
    a, b = np.sort(rng.uniform(lo, hi, size=2))
    sensors = tuple(m for m in sorted(cfg.sensor_probs) if rng.random() < cfg.sensor_probs[m])
    names = sorted(cfg.boards)
    weights = np.array([cfg.boards[n] for n in names], dtype=np.float64)
    board = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    return SiteSpec(
        site=site,
        curb_offset_m=round(float(rng.uniform(*mix.curb_offset_m)), 3),
        lanes_each_way=int(rng.integers(mix.lanes_each_way[0], mix.lanes_each_way[1] + 1)),
        density_per_100m=round(float(rng.uniform(*mix.density_per_100m)), 3),
        tall_fraction=round(float(rng.uniform(*mix.tall_fraction)), 3),
        user_speed_mps=(round(float(a), 3), round(float(max(b, a + 0.5)), 3)),
        lighting_probs=_simplex(rng.dirichlet(mix.lighting_concentration)),
        weather_probs=_simplex(rng.dirichlet(mix.weather_concentration)),
        sensors=sensors,
        board=board,
    )


def _simplex(p: np.ndarray) -> tuple[float, float, float]:
    q = np.round(np.asarray(p, dtype=np.float64), 4)
    q[0] = 1.0 - q[1] - q[2]
    return (float(q[0]), float(q[1]), float(q[2]))


def plan_sites(cfg: FleetConfig) -> tuple[list[SiteSpec], list[SiteSpec]]:
    """The APs and the server's sites of a config (no rendering)."""
    for board in cfg.boards:
        load_target(board)   # an unknown board is an EdgekdError naming the known ones
    aps = [draw_site(i, cfg.site_mix, cfg, np.random.default_rng(derive_seed(cfg.seed, i, 0xA5)))
           for i in range(cfg.aps)]
    server = [draw_site(SERVER - k, cfg.server_mix, cfg, np.random.default_rng(derive_seed(cfg.seed, SERVER - k, 0x5E)))
              for k in range(cfg.server_sites)]
    return aps, server


def eligible(aps: Sequence[SiteSpec], cfg: FleetConfig) -> list[SiteSpec]:
    """The APs that have every sensor the student reads; none is an error."""
    ok = [s for s in aps if all(m in s.sensors for m in cfg.inputs)]
    if not ok:
        need = " and ".join(cfg.inputs)
        raise EdgekdError(f"no access point has {need} (sensor_probs gives "
                          f"{', '.join(f'{m}: {cfg.sensor_probs.get(m, 0.0)}' for m in cfg.inputs)})",
                          field="modality", fix="choose a modality the sites have, or raise sensor_probs")
    return ok


def scene_for(site: SiteSpec) -> Any:
    """The synthetic scene config of one site (the shipped default scene with the site's parameters)."""
    from edgekd.host.data.synth import load_scene_config

    base = load_scene_config()
    street = dataclasses.replace(base.street, curb_offset_m=site.curb_offset_m, lanes_each_way=site.lanes_each_way)
    traffic = dataclasses.replace(base.traffic, density_per_100m=site.density_per_100m,
                                  tall_fraction=site.tall_fraction)
    user = dataclasses.replace(base.user, speed_mps=site.user_speed_mps)
    conditions = dataclasses.replace(base.conditions, lighting_probs=site.lighting_probs,
                                     weather_probs=site.weather_probs)
    return dataclasses.replace(base, street=street, traffic=traffic, user=user, conditions=conditions)


def config_fingerprint(cfg: FleetConfig) -> str:
    """What the world depends on (not the training budgets): a changed key renders a new world."""
    keys = ("aps", "seed", "train_windows", "test_windows", "site_mix", "sensor_probs", "server_mix",
            "server_sites", "server_windows", "server_test_windows", "proxy_windows", "image_size", "boards")
    data = {k: cfg.to_dict()[k] for k in keys}
    if cfg.unlabelled_windows:   # only when used, so worlds rendered before the key existed stay valid
        data["unlabelled_windows"] = cfg.unlabelled_windows
    data["inputs"] = list(cfg.inputs)
    data["format"] = WORLD_FORMAT
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------ rendering

def _render(site: SiteSpec, splits: dict[str, int], inputs: tuple[str, ...], image_size: int,
            seed: int) -> dict[str, np.ndarray]:
    """Synthesise each split from its own drives; keep only the student's inputs, frames stored once."""
    from edgekd.host.data.synth import synthesize

    scene = scene_for(site)
    # the camera is rendered only if a student reads it: a tiny image otherwise (it is dropped)
    size = image_size if "image" in inputs else 16
    frames: dict[str, list[np.ndarray]] = {m: [] for m in inputs}
    beams: list[np.ndarray] = []
    out: dict[str, np.ndarray] = {}
    offset = 0
    for k, (split, count) in enumerate(splits.items()):
        rec = synthesize(scene, windows=count, seed=derive_seed(seed, site.site, k), image_size=size, workers=0)
        starts = window_starts(rec.frame_info["drive"], SPAN)[:count] + offset
        out[f"starts_{split}"] = starts.astype(np.int32)
        for m in inputs:
            frames[m].append(rec.frames[m])
        beams.append(np.full(rec.num_frames, NO_LABEL, np.int16) if split == UNLABELLED else rec.beams.astype(np.int16))
        offset += rec.num_frames
    for m in inputs:
        out[f"frames_{m}"] = np.concatenate(frames[m])
    out["beams"] = np.concatenate(beams)
    return out


def _render_job(args: tuple[SiteSpec, dict[str, int], tuple[str, ...], int, int, str]) -> str:
    site, splits, inputs, image_size, seed, path = args
    arrays = _render(site, splits, inputs, image_size, seed)
    tmp = Path(path).with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    tmp.replace(path)
    return path


def build_world(cfg: FleetConfig, folder: str | Path, *, workers: int = 0, progress: bool = True) -> Path:
    """Render the world into ``folder`` (reused when its fingerprint matches). Returns the folder."""
    folder = Path(folder)
    aps, server = plan_sites(cfg)
    fleet = eligible(aps, cfg)
    fp = config_fingerprint(cfg)
    meta_path = folder / "world.json"
    if meta_path.is_file():
        try:
            if json.loads(meta_path.read_text()).get("fingerprint") == fp:
                return folder
        except (OSError, ValueError):
            pass
    folder.mkdir(parents=True, exist_ok=True)
    jobs = []
    ap_splits = {"train": cfg.train_windows, "test": cfg.test_windows}
    if cfg.unlabelled_windows:   # rendered last: the labelled splits stay the drives they were without it
        ap_splits[UNLABELLED] = cfg.unlabelled_windows
    for site in fleet:
        jobs.append((site, ap_splits, cfg.inputs, cfg.image_size, cfg.seed, str(folder / f"ap_{site.site:04d}.npz")))
    per = {"train": -(-cfg.server_windows // cfg.server_sites), "test": -(-cfg.server_test_windows // cfg.server_sites),
           "proxy": -(-cfg.proxy_windows // cfg.server_sites)}
    for site in server:
        jobs.append((site, per, cfg.inputs, cfg.image_size, cfg.seed, str(folder / f"server_{-site.site:03d}.npz")))
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc="fleet world", unit="site", disable=not progress)
    if workers > 1:
        import concurrent.futures
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            for _ in pool.map(_render_job, jobs):
                bar.update(1)
    else:
        for job in jobs:
            _render_job(job)
            bar.update(1)
    bar.close()
    meta = {"format": WORLD_FORMAT, "fingerprint": fp, "config": cfg.to_dict(),
            "aps": [dataclasses.asdict(s) for s in fleet],
            "excluded_aps": [dataclasses.asdict(s) for s in aps if s not in fleet],
            "server_sites": [dataclasses.asdict(s) for s in server]}
    atomic_write_json(meta_path, meta)
    return folder


# ------------------------------------------------------------------ reading

class SiteData:
    """One site's windows: ``batch(split, idx)`` gives float32 inputs (one per modality) and ``[B, 4]`` beams."""

    def __init__(self, arrays: dict[str, np.ndarray], inputs: tuple[str, ...]):
        self.inputs = inputs
        self.frames = {m: arrays[f"frames_{m}"] for m in inputs}
        self.beams = arrays["beams"].astype(np.int64)
        self.starts = {k[len("starts_"):]: v.astype(np.int64) for k, v in arrays.items() if k.startswith("starts_")}

    @classmethod
    def load(cls, path: str | Path, inputs: tuple[str, ...]) -> SiteData:
        with np.load(path, allow_pickle=False) as z:
            return cls({k: z[k] for k in z.files}, inputs)

    @classmethod
    def merge(cls, parts: Sequence[SiteData], splits: Sequence[str]) -> SiteData:
        """Several sites' ``splits`` pooled into one (frames concatenated, starts shifted)."""
        inputs = parts[0].inputs
        arrays: dict[str, np.ndarray] = {}
        offset = 0
        frames: dict[str, list[np.ndarray]] = {m: [] for m in inputs}
        beams: list[np.ndarray] = []
        starts: dict[str, list[np.ndarray]] = {s: [] for s in splits}
        for p in parts:
            for m in inputs:
                frames[m].append(p.frames[m])
            beams.append(p.beams)
            for s in splits:
                starts[s].append(p.starts[s] + offset)
            offset += len(p.beams)
        for m in inputs:
            arrays[f"frames_{m}"] = np.concatenate(frames[m])
        arrays["beams"] = np.concatenate(beams)
        for s in splits:
            arrays[f"starts_{s}"] = np.concatenate(starts[s])
        return cls(arrays, inputs)

    def count(self, split: str) -> int:
        return len(self.starts[split])

    def pool(self, name: str, splits: Sequence[str]) -> None:
        """Add split ``name``: the windows of ``splits``, in that order (frames are shared, not copied)."""
        self.starts[name] = np.concatenate([self.starts[s] for s in splits])

    def batch(self, split: str, idx: np.ndarray | None = None) -> tuple[list[np.ndarray], np.ndarray]:
        starts = self.starts[split] if idx is None else self.starts[split][np.asarray(idx, dtype=np.int64)]
        return window_batch(self.frames, self.beams, starts)

    def label_histogram(self, split: str = "train", num_beams: int = 64) -> np.ndarray:
        """Counts of the t0 beam over a split's windows."""
        return np.bincount(self.beams[self.starts[split] + WINDOW - 1], minlength=num_beams)


def window_batch(frames: dict[str, np.ndarray], beams: np.ndarray | None,
                 starts: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Stack windows ``starts`` of frame arrays: inputs ``[B, T, ...]`` float32 (uint8 scaled to [0, 1])."""
    rows = starts[:, None] + np.arange(WINDOW)
    xs = []
    for values in frames.values():
        x = values[rows.ravel()]
        x = x.astype(np.float32) * np.float32(1 / 255) if x.dtype == np.uint8 else x.astype(np.float32)
        xs.append(x.reshape(rows.shape + values.shape[1:]))
    if beams is None:
        return xs, np.zeros((len(starts), 0), dtype=np.int64)
    labels = beams[(starts[:, None] + WINDOW - 1 + np.arange(HORIZONS)).ravel()].reshape(len(starts), HORIZONS)
    return xs, labels.astype(np.int64)


class World:
    """A rendered world folder: the APs (in id order), the server's pooled data, the config it was made from."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        meta_path = self.folder / "world.json"
        if not meta_path.is_file():
            raise EdgekdError("not a fleet world folder (no world.json)", file=self.folder,
                              fix="render it with `edgekd fleet simulate` (it writes OUT/world)")
        self.meta = json.loads(meta_path.read_text())
        self.aps = [SiteSpec(**_tuples(s)) for s in self.meta["aps"]]
        self.server_sites = [SiteSpec(**_tuples(s)) for s in self.meta["server_sites"]]
        self.inputs = _inputs(self.meta["config"]["modality"])
        self._server: SiteData | None = None

    @property
    def ap_ids(self) -> list[int]:
        return [s.site for s in self.aps]

    def site(self, ap: int) -> SiteData:
        return SiteData.load(self.folder / f"ap_{ap:04d}.npz", self.inputs)

    def spec(self, ap: int) -> SiteSpec:
        return next(s for s in self.aps if s.site == ap)

    def server(self) -> SiteData:
        if self._server is None:
            parts = [SiteData.load(self.folder / f"server_{-s.site:03d}.npz", self.inputs) for s in self.server_sites]
            self._server = SiteData.merge(parts, ("train", "test", "proxy"))
        return self._server


def _inputs(modality: str) -> tuple[str, ...]:
    from edgekd.host.fleet.config import STUDENT_INPUTS

    return STUDENT_INPUTS[modality]


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


# ------------------------------------------------------------------ heterogeneity

def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (bits, in [0, 1]) of two histograms (normalised here)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    p = p / p.sum()
    q = q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / b[nz])))

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def heterogeneity(world: World) -> dict[str, Any]:
    """Each AP's beam-histogram divergence from the fleet's, and the server's from the fleet's."""
    hists = {ap: world.site(ap).label_histogram() for ap in world.ap_ids}
    fleet = np.sum(list(hists.values()), axis=0)
    per_ap = {ap: round(js_divergence(h, fleet), 4) for ap, h in hists.items()}
    values = np.array(list(per_ap.values()))
    server = world.server().label_histogram()
    return {"per_ap_js": per_ap, "mean_js": round(float(values.mean()), 4),
            "max_js": round(float(values.max()), 4), "server_vs_fleet_js": round(js_divergence(server, fleet), 4)}
