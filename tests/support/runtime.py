"""Shared builders for the runtime tests and benchmarks (no tests here).

A real three-student bundle (image, radar, LiDAR students from the model zoo,
trained for a few seconds on the learnable export-test dataset, exported with
the real converters for x86-ap) and a short real drive from the simulator.
Both are cached in the system temp dir, keyed by the sources that shape them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from support.export import cache_dir, make_dataset, train_student

STUDENTS = ("image", "radar", "lidar")


def runtime_bundle() -> Path:
    """``<cache>/bundle``: image + radar + lidar students for x86-ap (built once, ~2 min)."""
    # keyed on this file only: the runtime reads bundles, so a bundle built by an earlier model zoo is
    # still a valid fixture (and the tests do not rebuild every time another room edits its models)
    root = cache_dir("runtime-bundle", Path(__file__).read_text())
    bundle = root / "bundle"
    if (bundle / "manifest.json").is_file():
        return bundle
    import torch

    from edgekd.host.export import export_bundle

    torch.set_num_threads(1)
    work = root.with_name(root.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    make_dataset(work / "data")
    for name in STUDENTS:
        train_student(f"{name}_student", work / "data", work / f"{name}.pt", epochs=4)
    export_bundle([work / f"{name}.pt" for name in STUDENTS], "x86-ap", work / "data", work / "bundle",
                  eval_windows=60, allow_degraded=True)
    shutil.rmtree(root, ignore_errors=True)
    work.rename(root)
    return bundle


def short_drive(minutes: float = 0.8, seed: int = 3) -> Path:
    """A real drive from the simulator (every segment of the default plan, a few seconds each)."""
    import hashlib

    import edgekd.host.data.drive as drive_mod
    import edgekd.host.data.synth as synth_mod

    # keyed on the whole recorder and simulator source: a change anywhere in them records a new drive
    source = hashlib.sha256(Path(drive_mod.__file__).read_bytes() + Path(synth_mod.__file__).read_bytes()).hexdigest()
    root = cache_dir("runtime-drive", source, str(minutes), str(seed))
    path = root / "drive.npz"
    if not path.is_file():
        arrays, meta = drive_mod.record_drive(minutes=minutes, seed=seed, image_size=64)
        drive_mod.write_drive(path, arrays, meta, overwrite=True)
    return path
