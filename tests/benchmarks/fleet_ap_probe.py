"""The decentralized AP step under other knobs: KD weight and temperature, epochs, the AP's unlabelled windows.

For each seed, the fleet's world is rendered (with ``--unlabelled-windows`` per AP when given), the server
teacher is trained once exactly as the protocol trains it (``ServerCache.teacher()``, saved under OUT so a
rerun reuses it), and then every variant of the AP step runs on every AP against that one teacher: the
student from the AP's usual init seed, trained by ``learn.fit`` on the AP's labelled windows (plus, where the
variant says so, its unlabelled windows labelled by the teacher), scored on the AP's test windows. A
variant is ``ALPHA:T:UNLABELLED:EPOCHS`` (``UNLABELLED`` 0 or 1; ``ALPHA`` 0 is local-only). Writes
``OUT/probe.jsonl`` (one row per seed, AP and variant) and prints each variant's mean top-2 and its gain
over the first variant, per seed.

    python tests/benchmarks/fleet_ap_probe.py --config FLEET.yaml --aps 10 --seeds 3 --unlabelled-windows 360 \\
        --out /tmp/approbe 0:4:0:8 0.5:4:0:8 0:4:0:32 0.5:4:0:32 0.5:4:1:8
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from edgekd.host.fleet import learn
from edgekd.host.fleet.config import load_fleet_config
from edgekd.host.fleet.scenario import World, build_world, config_fingerprint, derive_seed
from edgekd.host.fleet.topologies import INIT, TRAIN, ApContext, ServerCache, distil_split, evaluate


def parse_variant(text: str) -> tuple[float, float, bool, int]:
    alpha, temperature, unlabelled, epochs = text.split(":")
    return float(alpha), float(temperature), bool(int(unlabelled)), int(epochs)


def shared_teacher(cache: ServerCache, path: Path) -> torch.nn.Module:
    """The protocol's server teacher for this seed, trained once and kept at ``path``."""
    if path.is_file():
        teacher = learn.seeded_model(cache.cfg.teacher, 0)
        teacher.load_state_dict(torch.load(path))
    else:
        teacher, _ = cache.teacher()
        torch.save(teacher.state_dict(), path)
    return teacher.eval()


def ap_variant(ctx: ApContext, teacher: torch.nn.Module, variant: tuple[float, float, bool, int]) -> float:
    """The AP's student top-2 on its test windows after one variant of the decentralized step."""
    alpha, temperature, use_unlabelled, epochs = variant
    cfg, data = ctx.cfg, ctx.data()
    split, labelled = distil_split(data) if use_unlabelled else ("train", None)
    student = learn.seeded_model(cfg.student, derive_seed(cfg.seed, ctx.ap, INIT))
    t_logits = learn.predict(teacher, data, split) if alpha > 0 or labelled is not None else None
    learn.fit(student, data, split, epochs=epochs, seed=derive_seed(cfg.seed, ctx.ap, TRAIN), lr=cfg.lr,
              batch_size=cfg.batch_size, teacher_logits=t_logits, alpha=alpha, temperature=temperature,
              labelled=labelled)
    return evaluate(ctx, student, server_test=False)["top2"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="+", help="ALPHA:T:UNLABELLED:EPOCHS; the first is the reference")
    parser.add_argument("--config", default="default", help="fleet profile YAML or a shipped profile's name")
    parser.add_argument("--aps", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (one world and teacher each)")
    parser.add_argument("--unlabelled-windows", type=int, default=0, help="per AP, for the variants that use them")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/fleetcache"), help="rendered worlds")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    variants = [parse_variant(v) for v in args.variants]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in range(args.seeds):
        cfg = load_fleet_config(args.config, aps=args.aps, seed=seed, unlabelled_windows=args.unlabelled_windows)
        world = World(build_world(cfg, args.cache / f"world-{config_fingerprint(cfg)}", progress=False))
        teacher = shared_teacher(ServerCache(cfg, world), args.out / f"teacher_seed{seed}.pt")
        for ap in world.ap_ids:
            ctx = ApContext(cfg, world, ap, 1)
            for text, variant in zip(args.variants, variants):
                rows.append({"seed": seed, "ap": ap, "variant": text, "top2": ap_variant(ctx, teacher, variant)})
                with (args.out / "probe.jsonl").open("a") as f:
                    f.write(json.dumps(rows[-1]) + "\n")
    for text in args.variants:
        top2 = {(r["seed"], r["ap"]): r["top2"] for r in rows if r["variant"] == text}
        ref = {(r["seed"], r["ap"]): r["top2"] for r in rows if r["variant"] == args.variants[0]}
        per_seed = [100 * np.mean([top2[k] - ref[k] for k in top2 if k[0] == s]) for s in range(args.seeds)]
        print(f"{text:>14s}: top-2 {100 * np.mean(list(top2.values())):5.1f} %, vs {args.variants[0]} "
              f"{np.mean(per_seed):+.2f} pts (per seed {', '.join(f'{g:+.2f}' for g in per_seed)})")


if __name__ == "__main__":
    main()
