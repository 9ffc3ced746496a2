"""Benchmark inputs: real windows from the student's calibration set in the bundle, not zeros.

Zeros make int8 kernels take unrepresentative paths (and some models' runtime
depends on the data through caches), so the timed loop cycles through the
saved calibration windows (``<student>/calibration.npz``, one ``[N, T, ...]``
float32 array per modality).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgekd.device.errors import EdgekdError

DEFAULT_MAX_WINDOWS = 256


def calibration_file(bundle_dir: str | os.PathLike, student_name: str, student: dict) -> Path:
    """Where the student's calibration set is: the manifest's entry, else ``<student>/calibration.npz``."""
    relative = (student.get("calibration") or {}).get("file") or f"{student_name}/calibration.npz"
    return Path(bundle_dir) / relative


def load_windows(path: str | os.PathLike, input_names: Sequence[str], *,
                 max_windows: int = DEFAULT_MAX_WINDOWS) -> list[dict[str, np.ndarray]]:
    """Batch-1 windows ``{name: [1, T, ...] float32}`` from a calibration ``.npz``.

    Only the first ``max_windows`` windows are kept (copied, contiguous) so the
    inputs do not dominate the process's memory on a small board.
    """
    path = Path(path)
    if not path.is_file():
        raise EdgekdError("calibration set not found", file=path, field="calibration.file",
                          fix="re-export the bundle; benchmark inputs are drawn from the calibration set")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [n for n in input_names if n not in data.files]
            if missing:
                raise EdgekdError(f"calibration set has no arrays for inputs {missing} (it has {data.files})",
                                  file=path, field="calibration.file",
                                  fix="re-export the bundle so the calibration set holds every model input")
            arrays = {n: np.ascontiguousarray(data[n][:max_windows], dtype=np.float32) for n in input_names}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        # object (pickled) arrays are refused, never unpickled: a calibration file must not run code
        raise EdgekdError(f"calibration set cannot be read as plain numeric arrays: {exc}", file=path,
                          field="calibration.file", fix="re-export the bundle (the file is corrupt or not "
                          "edgekd's)") from None
    counts = {n: a.shape[0] for n, a in arrays.items()}
    if len(set(counts.values())) != 1 or min(counts.values()) == 0:
        raise EdgekdError(f"calibration arrays have different or zero window counts {counts}", file=path,
                          fix="re-export the bundle")
    count = next(iter(counts.values()))
    return [{n: a[i:i + 1] for n, a in arrays.items()} for i in range(count)]
