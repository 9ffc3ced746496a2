"""Shared builders for the export integration tests (no tests here).

A small learnable dataset written with the real dataset store: each drive
moves the best beam smoothly across the 64-beam codebook, and every sensor
sees the user where the beam points (a bright blob in the image column, a
radar peak in the angle bin, a LiDAR return in the azimuth bin, the GPS
position). Students from the real model zoo are trained on it for a few
seconds, so the parity gate scores models that really predict.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

NUM_BEAMS = 64


def make_dataset(out: Path, *, drives: int = 14, frames_per_drive: int = 70, seed: int = 0,
                 image_size: int = 64, radar_shape: tuple[int, int] = (64, 32)) -> Path:
    from edgekd.host.data import write_dataset

    rng = np.random.default_rng(seed)
    beams, drive_ids, lighting, weather = [], [], [], []
    for d in range(drives):
        start = rng.uniform(8, 56)
        speed = rng.uniform(-0.35, 0.35)
        track = np.clip(start + speed * np.arange(frames_per_drive) + rng.normal(0, 0.2, frames_per_drive), 0, 63)
        beams.append(np.rint(track).astype(np.int64))
        drive_ids.append(np.full(frames_per_drive, d, np.int32))
        lighting.append(np.full(frames_per_drive, d % 3, np.int8))
        weather.append(np.full(frames_per_drive, (d // 3) % 3, np.int8))
    beam = np.concatenate(beams)
    n = len(beam)
    grid = np.arange(NUM_BEAMS)
    power = np.exp(-0.5 * ((grid[None, :] - beam[:, None]) / 1.5) ** 2).astype(np.float32)
    power += rng.uniform(0, 0.02, power.shape).astype(np.float32)

    lidar = rng.uniform(0, 0.05, (n, 216)).astype(np.float32)
    centre = beam * 216 / NUM_BEAMS
    for k in range(-2, 3):
        idx = np.clip(np.rint(centre + k).astype(int), 0, 215)
        lidar[np.arange(n), idx] = 1.5 - 0.2 * abs(k)

    image = rng.integers(0, 30, (n, 1, image_size, image_size), dtype=np.uint8)
    brightness = np.array([255, 170, 90], np.uint8)[np.concatenate(lighting)]
    cols = np.rint(beam * (image_size - 4) / (NUM_BEAMS - 1)).astype(int)
    for i in range(n):
        image[i, 0, 20:40, cols[i]:cols[i] + 4] = brightness[i]

    radar = rng.uniform(0, 0.1, (n, 2, *radar_shape)).astype(np.float32)
    angle = np.rint(beam * (radar_shape[1] - 1) / (NUM_BEAMS - 1)).astype(int)
    rng_bins = rng.integers(10, radar_shape[0] - 10, n)
    for i in range(n):
        radar[i, 0, rng_bins[i] - 2:rng_bins[i] + 2, max(angle[i] - 1, 0):angle[i] + 2] = 1.0
        radar[i, 1, :, angle[i]] = 0.8

    gps = np.stack([beam / NUM_BEAMS, 0.5 + rng.normal(0, 0.01, n)], axis=1).astype(np.float32)
    return write_dataset(out, frames={"image": image, "radar": radar, "lidar": lidar, "gps": gps},
                         power=power, beams=beam,
                         frame_info={"drive": np.concatenate(drive_ids), "lighting": np.concatenate(lighting),
                                     "weather": np.concatenate(weather)},
                         source="synthetic", config={"test": "export"}, seed=seed, split=(0.6, 0.2, 0.2))


def train_student(model_name: str, data: Path, out: Path, *, epochs: int = 6, seed: int = 0,
                  **model_kwargs) -> Path:
    """A few epochs of plain cross-entropy on the train split; saves an edgekd checkpoint."""
    import torch

    from edgekd.host.checkpoint import save_checkpoint
    from edgekd.host.data import load_dataset
    from edgekd.host.models import create_model

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    model = create_model(model_name, **model_kwargs)
    ds = load_dataset(data, "train", modalities=model.input_modalities)
    batch = ds.batch(np.arange(len(ds)))
    inputs = model.inputs_from_batch(batch)
    target = torch.as_tensor(batch["beams"])
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(epochs):
        for chunk in np.array_split(rng.permutation(len(ds)), max(1, len(ds) // 32)):
            logits = model(*[x[chunk] for x in inputs])
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                     target[chunk].reshape(-1))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval()
    return save_checkpoint(out, model, data={"path": str(data), "fingerprint": ds.fingerprint,
                                             "modalities": list(model.input_modalities)},
                           metrics={"train_loss": float(loss.detach())})


def cache_dir(name: str, *parts: str) -> Path:
    """A folder in the system temp dir keyed by ``parts`` (e.g. source hashes), reused across runs."""
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"edgekd-{name}-{key}"
    return path


def source_key() -> str:
    """Hash of the sources that decide what a trained fixture looks like (models, store, this file)."""
    import edgekd

    root = Path(edgekd.__file__).parent
    digest = hashlib.sha256()
    store = [root / "host" / "data" / f"{m}.py" for m in ("store", "layout", "writer", "reader")]
    for path in sorted([*root.glob("host/models/*.py"), *store, Path(__file__)]):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0", "false")
