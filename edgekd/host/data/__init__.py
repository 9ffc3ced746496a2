"""Datasets for beam tracking: the synthetic scenario, the DeepSense 6G importer, the store and loader.

``load_dataset(path, split)`` is what training and evaluation use; it needs
only numpy. This package root must not import torch (or the simulator): the
loader runs wherever numpy does.
"""

from edgekd.device.contracts import MODALITIES
from edgekd.host.data.store import (
    DATASET_FORMAT,
    SPLITS,
    WindowDataset,
    WindowSpec,
    load_dataset,
    read_meta,
    summarize_dataset,
    verify_dataset,
    write_dataset,
    write_recording,
)

__all__ = [
    "DATASET_FORMAT",
    "MODALITIES",
    "SPLITS",
    "WindowDataset",
    "WindowSpec",
    "load_dataset",
    "read_meta",
    "summarize_dataset",
    "verify_dataset",
    "write_dataset",
    "write_recording",
]
