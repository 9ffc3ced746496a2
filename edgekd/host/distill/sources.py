"""Batch sources: where the trainer's training batches come from.

The trainer (:mod:`edgekd.host.distill.trainer`) runs the same loop over any
:class:`BatchSource`: :class:`DatasetSource` reads real windows of a dataset split
(vectorised ``WindowDataset.batch`` reads, shuffled per epoch by a generator seeded
with ``(seed, epoch)`` so a resumed run sees the same order, one shard per rank);
the data-free path plugs in a source of generated windows
(:class:`edgekd.host.distill.datafree.run.SyntheticSource`).

The read helpers (batches, predictions, the teacher feature cache, hidden-state
statistics) live here too: they are what a dataset source is made of.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from edgekd.device.errors import EdgekdError
from edgekd.host.distill import ddp
from edgekd.host.distill.methods import TeacherCache, model_inputs

if TYPE_CHECKING:
    from edgekd.host.models.base import BeamModel

Batch = dict[str, Tensor]


# ---------------------------------------------------------------------------
# small pure helpers


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of ``n`` windows for ``epoch``; depends only on (seed, epoch), so resume repeats it."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def train_indices(n: int, max_windows: int | None) -> np.ndarray:
    """Positions of the training windows used: the first ``max_windows`` (whole early drives, like one node's log)."""
    return np.arange(n if max_windows is None else min(n, max_windows))


def batch_slices(indices: np.ndarray, batch_size: int, *, min_last: int = 1) -> list[np.ndarray]:
    """Consecutive chunks of ``indices``; a final chunk smaller than ``min_last`` is dropped."""
    chunks = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    if chunks and len(chunks[-1]) < min_last:
        chunks.pop()
    return chunks


def to_tensors(arrays: Mapping[str, np.ndarray], keys: Sequence[str], device: torch.device) -> Batch:
    """Model inputs (float32) and labels (int64) of a numpy batch as torch tensors on ``device``."""
    out = {k: torch.from_numpy(np.ascontiguousarray(arrays[k])).to(device) for k in keys}
    out["beams"] = torch.from_numpy(np.asarray(arrays["beams"], dtype=np.int64)).to(device)
    return out


def iterate_batches(ds: Any, chunks: Sequence[np.ndarray], keys: Sequence[str], device: torch.device,
                    num_workers: int = 0) -> Iterator[Batch]:
    """Batches of ``ds`` as tensors; with workers, the next batches are read in background threads."""
    if num_workers <= 0:
        for chunk in chunks:
            yield to_tensors(ds.batch(chunk), keys, device)
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=num_workers) as pool:
        pending: list[concurrent.futures.Future | None] = [pool.submit(ds.batch, c) for c in chunks[:num_workers + 1]]
        for i in range(len(chunks)):
            future = pending[i]
            assert future is not None
            arrays = future.result()
            if i + num_workers + 1 < len(chunks):
                pending.append(pool.submit(ds.batch, chunks[i + num_workers + 1]))
            pending[i] = None
            yield to_tensors(arrays, keys, device)


@torch.no_grad()
def predict(model: BeamModel, ds: Any, indices: np.ndarray, batch_size: int, device: torch.device,
            num_workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``[N, H, C]`` and labels ``[N, H]`` of ``model`` (eval mode) on windows ``indices``."""
    was_training = model.training
    model.eval()
    logits, beams = [], []
    for batch in iterate_batches(ds, batch_slices(indices, batch_size), model.input_modalities, device, num_workers):
        logits.append(model(*model_inputs(model, batch)).float().cpu().numpy())
        beams.append(batch["beams"].cpu().numpy())
    model.train(was_training)
    if not logits:
        return np.zeros((0,), np.float32), np.zeros((0,), np.int64)
    return np.concatenate(logits), np.concatenate(beams)


@torch.no_grad()
def teacher_cache(teacher: BeamModel, names: Sequence[str], ds: Any, indices: np.ndarray, batch_size: int,
                  device: torch.device, num_workers: int = 0) -> TeacherCache:
    """The features ``names`` of the (eval-mode) ``teacher`` on windows ``indices`` of ``ds``."""
    was_training = teacher.training
    teacher.eval()
    parts: dict[str, list[Tensor]] = {name: [] for name in names}
    for batch in iterate_batches(ds, batch_slices(indices, batch_size), teacher.input_modalities, device, num_workers):
        feats = teacher.forward_features(*model_inputs(teacher, batch))
        for name in names:
            parts[name].append(feats[name])
    teacher.train(was_training)
    index = torch.from_numpy(np.asarray(indices, dtype=np.int64)).to(device)
    return TeacherCache(index, {name: torch.cat(chunks) for name, chunks in parts.items()})


@torch.no_grad()
def hidden_state_stats(model: BeamModel, ds: Any, indices: np.ndarray, batch_size: int = 256,
                       device: torch.device | str = "cpu") -> dict[str, Any]:
    """Mean and (population) variance of ``features["last_hidden"]`` over windows ``indices``.

    Accumulated in float64 sums so the result does not depend on the batch size.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    total = total_sq = torch.zeros(0, dtype=torch.float64)
    count = 0
    for batch in iterate_batches(ds, batch_slices(indices, batch_size), model.input_modalities, device):
        hidden = model.forward_features(*model_inputs(model, batch))["last_hidden"].double().cpu()
        hidden = hidden.reshape(hidden.shape[0], -1)
        total = hidden.sum(0) if count == 0 else total + hidden.sum(0)
        total_sq = hidden.pow(2).sum(0) if count == 0 else total_sq + hidden.pow(2).sum(0)
        count += hidden.shape[0]
    model.train(was_training)
    if count == 0:
        raise EdgekdError("no training windows to compute hidden-state statistics from", field="train",
                          fix="use a dataset with a non-empty training split")
    mean = total / count
    var = (total_sq / count - mean.pow(2)).clamp_min(0.0)
    return {"last_hidden_mean": mean.float().tolist(), "last_hidden_var": var.float().tolist(), "count": count}


# ---------------------------------------------------------------------------
# the sources


@runtime_checkable
class BatchSource(Protocol):
    """What the trainer needs from its training data."""

    def epoch_batches(self, epoch: int) -> tuple[int, Iterator[Batch]]:
        """``(number of batches, the batches)`` of ``epoch`` (1-based) for this rank."""
        ...

    def teacher_cache(self, teacher: BeamModel, names: Sequence[str], batch_size: int,
                      device: torch.device) -> TeacherCache | None:
        """The frozen teacher's features ``names`` on every training window (None: nothing to cache)."""
        ...

    def hidden_state_stats(self, model: BeamModel, batch_size: int, device: torch.device) -> dict[str, Any] | None:
        """The trained model's last-hidden-state statistics over the training windows (None: no real windows)."""
        ...


class DatasetSource:
    """Real windows ``indices`` of a dataset split, shuffled per (seed, epoch), this rank's shard, with labels."""

    def __init__(self, ds: Any, indices: np.ndarray, keys: Sequence[str], *, batch_size: int, seed: int,
                 device: torch.device, dist: ddp.DistInfo | None = None, num_workers: int = 0):
        self.ds, self.indices, self.keys = ds, indices, tuple(keys)
        self.batch_size, self.seed, self.device = batch_size, seed, device
        self.dist, self.num_workers = dist or ddp.DistInfo(), num_workers

    def __len__(self) -> int:
        return len(self.indices)

    def epoch_batches(self, epoch: int) -> tuple[int, Iterator[Batch]]:
        order = self.indices[epoch_permutation(len(self.indices), self.seed, epoch)]
        chunks = batch_slices(ddp.shard(order, self.dist), self.batch_size, min_last=2)
        return len(chunks), self._batches(chunks)

    def _batches(self, chunks: list[np.ndarray]) -> Iterator[Batch]:
        batches = iterate_batches(self.ds, chunks, self.keys, self.device, self.num_workers)
        for chunk, batch in zip(chunks, batches, strict=True):
            batch["index"] = torch.from_numpy(np.asarray(chunk, dtype=np.int64)).to(self.device)
            yield batch

    def teacher_cache(self, teacher: BeamModel, names: Sequence[str], batch_size: int,
                      device: torch.device) -> TeacherCache | None:
        return teacher_cache(teacher, names, self.ds, self.indices, batch_size, device, self.num_workers)

    def hidden_state_stats(self, model: BeamModel, batch_size: int, device: torch.device) -> dict[str, Any] | None:
        return hidden_state_stats(model, self.ds, self.indices, batch_size, device)
