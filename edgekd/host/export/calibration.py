"""Calibration sets for full-integer int8 quantisation: recipes (calibration/*.yaml) and the draw.

A recipe says how many windows, stratified over which labels and conditions,
and with which seed; the windows always come from the TRAIN split (never from
the held-out data the parity gate scores). The drawn set is saved as
``<student>/calibration.npz`` in the bundle and recorded in the manifest
(recipe, indices sha256, count), so a bundle says exactly what it was
calibrated on.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgekd.device.config import config_from_dict, load_yaml
from edgekd.device.errors import EdgekdError
from edgekd.device.io import sha256_bytes

log = logging.getLogger(__name__)

Stratum = Literal["beam", "lighting", "weather", "los_blocked", "drive"]
ENV_CALIBRATION_DIR = "EDGEKD_CALIBRATION_DIR"


@dataclasses.dataclass(frozen=True)
class CalibrationRecipe:
    name: str
    size: int = 256
    split: Literal["train"] = "train"
    stratify: tuple[Stratum, ...] = ("beam", "lighting", "weather")
    # balanced: every stratum gets one window before any gets two (coverage of rare conditions);
    # proportional: strata keep their share of the split.
    allocation: Literal["balanced", "proportional"] = "balanced"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.size <= 0:
            raise EdgekdError(f"must be positive, got {self.size}", field="size", fix="e.g. size: 256")


@dataclasses.dataclass
class CalibrationSet:
    recipe: CalibrationRecipe
    indices: np.ndarray                 # positions in the train split, int64, sorted
    inputs: dict[str, np.ndarray]       # modality -> [N, T, ...] float32

    @property
    def indices_sha256(self) -> str:
        return indices_digest(self.indices)

    def __len__(self) -> int:
        return len(self.indices)

    def windows(self) -> list[dict[str, np.ndarray]]:
        """One batch-1 input dict per window (what converters' calibration readers consume)."""
        return [{m: x[i:i + 1] for m, x in self.inputs.items()} for i in range(len(self))]

    def record(self, file: str, shipped: int | None = None) -> dict:
        """The manifest's ``calibration`` entry (``shipped``: windows kept in the bundle's file)."""
        entry = {"recipe": self.recipe.name, "split": self.recipe.split, "indices_sha256": self.indices_sha256,
                 "count": len(self), "file": file, "seed": self.recipe.seed, "size": self.recipe.size,
                 "stratify": list(self.recipe.stratify), "allocation": self.recipe.allocation}
        if shipped is not None:
            entry["shipped"] = int(shipped)
        return entry

    def sample_positions(self, max_windows: int | None) -> np.ndarray:
        """Positions in the set of at most ``max_windows`` windows spread evenly over it (the set is sorted
        by train-split position, so the sample spans the drives the strata were drawn from)."""
        if max_windows is None or max_windows >= len(self):
            return np.arange(len(self))
        return np.unique(np.linspace(0, len(self) - 1, max_windows).round().astype(np.int64))

    def save(self, path: str | os.PathLike, max_windows: int | None = None) -> Path:
        """Write ``calibration.npz`` atomically: ``indices`` (the whole set's train positions, whose digest the
        manifest records), ``sample`` (the positions in the set of the windows kept) and one array per modality
        holding those windows (``max_windows``: None keeps every window, as the converter needs)."""
        import io

        from edgekd.device.io import atomic_write_bytes

        keep = self.sample_positions(max_windows)
        buffer = io.BytesIO()
        arrays: dict[str, Any] = {"indices": self.indices, "sample": keep,   # modality names, not savez flags
                                  **{m: x[keep] for m, x in self.inputs.items()}}
        np.savez(buffer, **arrays)
        path = atomic_write_bytes(path, buffer.getvalue())
        os.chmod(path, 0o644)  # shipped in the bundle like the model files
        return path


def indices_digest(indices: np.ndarray) -> str:
    return sha256_bytes(np.ascontiguousarray(indices, dtype="<i8").tobytes())


def calibration_dir() -> Path:
    env = os.environ.get(ENV_CALIBRATION_DIR)
    return Path(env) if env else Path(__file__).resolve().parents[3] / "calibration"


def load_recipe(name_or_path: str | os.PathLike, *, size: int | None = None) -> CalibrationRecipe:
    """Recipe by student name (calibration/<name>.yaml) or YAML path; ``size`` overrides the recipe."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or os.sep in text:
        path = Path(text)
    else:
        path = calibration_dir() / f"{text}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in calibration_dir().glob("*.yaml"))
            raise EdgekdError(f"no calibration recipe for '{text}'", file=path,
                              fix=f"known recipes: {', '.join(known)}; or pass a YAML path")
    data = load_yaml(path)
    data.setdefault("name", path.stem)
    recipe = config_from_dict(CalibrationRecipe, data, source=str(path))
    if size is not None:
        recipe = dataclasses.replace(recipe, size=int(size))
    return recipe


def stratum_keys(beams_t0: np.ndarray, conditions: dict[str, np.ndarray],
                 stratify: Sequence[str]) -> np.ndarray:
    """One integer key per window combining the stratification variables."""
    columns = []
    for name in stratify:
        if name == "beam":
            columns.append(np.asarray(beams_t0, dtype=np.int64))
        elif name in conditions:
            columns.append(np.asarray(conditions[name]).astype(np.int64))
        else:
            log.info("calibration: the dataset records no '%s'; not stratifying over it", name)
    if not columns:
        return np.zeros(len(beams_t0), dtype=np.int64)
    _, keys = np.unique(np.stack(columns, axis=1), axis=0, return_inverse=True)
    return keys.reshape(-1)


def draw_indices(keys: np.ndarray, size: int, *, allocation: str = "balanced", seed: int = 0) -> np.ndarray:
    """Sorted positions of ``size`` windows drawn without replacement, stratified by ``keys``."""
    n = len(keys)
    if n == 0:
        raise EdgekdError("the train split has no windows to calibrate on", field="split",
                          fix="use a dataset with a non-empty train split")
    size = min(size, n)
    rng = np.random.default_rng(seed)
    strata = [rng.permutation(np.flatnonzero(keys == k)) for k in rng.permutation(np.unique(keys))]
    if allocation == "proportional":
        counts = np.array([len(s) for s in strata], dtype=np.float64)
        quota = counts / counts.sum() * size
        take = np.floor(quota).astype(int)
        for i in np.argsort(-(quota - take))[: size - take.sum()]:   # largest remainders
            take[i] += 1
        chosen = np.concatenate([s[:t] for s, t in zip(strata, take)])
    else:
        # Round r takes the r-th window of every stratum still holding one.
        depth = max(len(s) for s in strata)
        rounds = [np.array([s[r] for s in strata if r < len(s)], dtype=np.int64) for r in range(depth)]
        chosen = np.concatenate(rounds)[:size]
    return np.sort(chosen.astype(np.int64))


def draw_calibration_set(dataset, recipe: CalibrationRecipe, modalities: Sequence[str]) -> CalibrationSet:
    """Draw ``recipe`` from ``dataset`` (the TRAIN split of ``edgekd.host.data.load_dataset``)."""
    split = getattr(dataset, "split", "train")
    if split != "train":
        raise EdgekdError(f"calibration must come from the train split, got '{split}'", field="split",
                          fix="load the dataset with split='train'")
    missing = [m for m in modalities if m not in dataset.modalities]
    if missing:
        raise EdgekdError(f"the dataset has no {missing} frames (it has {list(dataset.modalities)})",
                          file=getattr(dataset, "path", None), field="modalities",
                          fix="pass the dataset the student was trained on")
    beams_t0 = _labels_only(dataset).batch(np.arange(len(dataset)))["beams"][:, 0]
    keys = stratum_keys(beams_t0, dataset.conditions, recipe.stratify)
    indices = draw_indices(keys, recipe.size, allocation=recipe.allocation, seed=recipe.seed)
    batch = dataset.batch(indices)
    inputs = {m: np.ascontiguousarray(batch[m], dtype=np.float32) for m in modalities}
    log.info("calibration %s: %d windows from %d strata of the train split", recipe.name, len(indices),
             len(np.unique(keys)))
    return CalibrationSet(recipe=recipe, indices=indices, inputs=inputs)


def _labels_only(dataset):
    # The same split without sensor frames: reading every train image just for its label would be slow.
    try:
        return type(dataset)(dataset.path, dataset.split, dataset.meta, modalities=())
    except (TypeError, AttributeError):
        return dataset
