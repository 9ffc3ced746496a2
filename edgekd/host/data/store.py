"""The dataset store: frames once per drive on disk, windows as index arrays, a memory-mapped loader.

This module is the store's one import path; the code lives in three modules:
``layout`` (the format: constants, window and split rules, fingerprint,
condition mix), ``writer`` (``write_dataset``, ``write_recording``,
``synthesize_dataset``) and ``reader`` (``read_meta``, the array checks,
``WindowDataset``, ``load_dataset``, ``summarize_dataset``). The on-disk layout
is described in :mod:`edgekd.host.data.layout`.
"""

from __future__ import annotations

from edgekd.host.data.layout import (
    DATASET_FORMAT,
    DEFAULT_PREPROCESSING,
    INFO_DTYPES,
    SOURCES,
    SPLITS,
    STORED_DTYPES,
    UNKNOWN,
    WindowSpec,
    condition_mix,
    fingerprint_of,
    normalise_split,
    segment_runs,
    split_drives,
    window_starts,
)
from edgekd.host.data.reader import (
    WindowDataset,
    check_arrays,
    load_dataset,
    read_meta,
    summarize_dataset,
    verify_dataset,
)
from edgekd.host.data.writer import check_output, synthesize_dataset, write_dataset, write_recording

__all__ = [
    "DATASET_FORMAT", "DEFAULT_PREPROCESSING", "INFO_DTYPES", "SOURCES", "SPLITS", "STORED_DTYPES", "UNKNOWN",
    "WindowDataset", "WindowSpec", "check_arrays", "check_output",
    "condition_mix", "fingerprint_of", "load_dataset", "normalise_split", "read_meta", "segment_runs",
    "split_drives", "summarize_dataset", "synthesize_dataset", "verify_dataset", "window_starts",
    "write_dataset", "write_recording",
]
