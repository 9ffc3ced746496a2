"""Training and evaluation primitives the topologies share (torch, single-threaded, seeded).

A loss is a dict of named terms combined by weights (:func:`edgekd.host.distill.losses.combine`):
``loss_ce`` (labels), ``loss_kd`` (teacher logits per window), ``loss_rehearsal`` (teacher logits
on shipped rehearsal windows), ``loss_fd`` (per-label average logits, federated distillation).
Every function returns how many samples it pushed through which model, which is what the MAC
ledger multiplies.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np
import torch

from edgekd.host.distill.losses import combine, cross_entropy_loss, kl_div_loss
from edgekd.host.fleet.scenario import SiteData, window_batch
from edgekd.host.models import create_model
from edgekd.host.models.base import BeamModel

NUM_BEAMS = 64
HORIZONS = 4


def single_thread() -> None:
    """One thread per simulated node (2 cores shared by many)."""
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def seeded_model(name: str, seed: int) -> BeamModel:
    """A fresh model whose initial weights depend only on ``seed``."""
    single_thread()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(name)


@functools.cache
def model_cost(name: str) -> dict[str, int]:
    """Parameters, float buffers (BatchNorm statistics) and MACs of one forward pass (batch 1)."""
    from edgekd.host.reports.model_cost import count_macs

    model = seeded_model(name, 0)
    return {"params": sum(p.numel() for p in model.parameters()),
            "buffers": sum(b.numel() for b in model.buffers() if b.dtype.is_floating_point),
            "macs": count_macs(model, model.example_inputs(1))}


def model_vectors(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """The model as two flat float32 vectors: ``params`` and ``buffers`` (what goes on the wire)."""
    params = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy().astype(np.float32)
    bufs = [b.detach().reshape(-1).float() for b in model.buffers() if b.dtype.is_floating_point]
    buffers = torch.cat(bufs).numpy().astype(np.float32) if bufs else np.zeros(0, dtype=np.float32)
    return {"params": params, "buffers": buffers}


def load_vectors(model: torch.nn.Module, params: np.ndarray, buffers: np.ndarray) -> None:
    """Inverse of :func:`model_vectors`."""
    i = 0
    with torch.no_grad():
        for p in model.parameters():
            n = p.numel()
            p.copy_(torch.from_numpy(np.asarray(params[i:i + n], dtype=np.float32)).view_as(p))
            i += n
        j = 0
        for b in model.buffers():
            if b.dtype.is_floating_point:
                n = b.numel()
                b.copy_(torch.from_numpy(np.asarray(buffers[j:j + n], dtype=np.float32)).view_as(b))
                j += n
    if i != len(params):
        raise ValueError(f"parameter vector has {len(params)} values, the model {i}")


@dataclasses.dataclass
class Rehearsal:
    """Shipped rehearsal windows: their frames (stored once), window starts, the teacher's logits."""

    frames: dict[str, np.ndarray]
    starts: np.ndarray
    logits: np.ndarray   # [R, 4, 64]

    def batch(self, idx: np.ndarray) -> list[np.ndarray]:
        xs, _ = window_batch(self.frames, None, self.starts[idx])
        return xs


def _tensors(xs: Sequence[np.ndarray]) -> list[torch.Tensor]:
    return [torch.from_numpy(x) for x in xs]


def fit(model: BeamModel, data: SiteData, split: str, *, epochs: int, seed: int, lr: float, batch_size: int,
        teacher_logits: np.ndarray | None = None, alpha: float = 0.0, temperature: float = 4.0,
        rehearsal: Rehearsal | None = None, label_logits: np.ndarray | None = None, beta: float = 0.0,
        labelled: np.ndarray | None = None) -> int:
    """Train ``model`` in place; returns the sample passes (forward + backward) it made.

    Loss terms: ``loss_ce`` always; ``loss_kd`` (KL to ``teacher_logits[i]`` of each window, weight
    ``alpha`` against ``1 - alpha`` for CE); ``loss_rehearsal`` (KL to the rehearsal set's teacher
    logits, one rehearsal batch beside every local batch, weight ``alpha``); ``loss_fd`` (KL to the
    per-label average logits of the label of each row, weight ``beta``).

    ``labelled`` (bool per window of ``split``) marks the windows that have beam labels: ``loss_ce`` then
    sums over those rows only, divided by the batch size (a batch of unlabelled windows learns from the
    teacher alone); it needs ``teacher_logits``, which is what the other windows learn from.
    """
    if labelled is not None and teacher_logits is None:
        raise ValueError("unlabelled windows need teacher_logits to learn from")
    single_thread()
    n = data.count(split)
    if n == 0 or epochs == 0:
        return 0
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    weights: dict[str, float] = {"loss_ce": 1.0}
    if teacher_logits is not None:
        weights = {"loss_ce": 1.0 - alpha, "loss_kd": alpha}
    if rehearsal is not None:
        weights["loss_rehearsal"] = alpha
    if label_logits is not None:
        weights = {k: v * (1.0 - beta) for k, v in weights.items()}
        weights["loss_fd"] = beta
    model.train()
    passes = 0
    for _ in range(epochs):
        order = rng.permutation(n)
        for lo in range(0, n, batch_size):
            idx = order[lo:lo + batch_size]
            xs, beams = data.batch(split, idx)
            logits = model(*_tensors(xs))
            y = torch.from_numpy(beams)
            terms = {"loss_ce": cross_entropy_loss(logits, y) if labelled is None
                     else _labelled_ce(logits, y, torch.from_numpy(labelled[idx]))}
            passes += len(idx)
            if teacher_logits is not None:
                terms["loss_kd"] = kl_div_loss(logits, torch.from_numpy(teacher_logits[idx]), temperature)
            if label_logits is not None:
                target = torch.from_numpy(label_logits)[y]          # [B, 4, 64]: the average logits of each label
                terms["loss_fd"] = kl_div_loss(logits, target, temperature)
            if rehearsal is not None:
                ridx = rng.choice(len(rehearsal.starts), size=min(batch_size, len(rehearsal.starts)), replace=False)
                r_logits = model(*_tensors(rehearsal.batch(ridx)))
                terms["loss_rehearsal"] = kl_div_loss(r_logits, torch.from_numpy(rehearsal.logits[ridx]), temperature)
                passes += len(ridx)
            loss = combine(terms, weights)["loss"]
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
    return passes


def _labelled_ce(logits: torch.Tensor, beams: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the labelled rows, scaled by their share of the batch (0 with none)."""
    if not bool(labelled.any()):
        return logits.sum() * 0.0
    return cross_entropy_loss(logits[labelled], beams[labelled]) * labelled.float().mean()


def predict(model: BeamModel, data: SiteData, split: str, batch_size: int = 256) -> np.ndarray:
    """Logits ``[n, 4, 64]`` of every window of a split (eval mode, no grad)."""
    single_thread()
    model.eval()
    out = []
    with torch.no_grad():
        n = data.count(split)
        for lo in range(0, n, batch_size):
            xs, _ = data.batch(split, np.arange(lo, min(lo + batch_size, n)))
            out.append(model(*_tensors(xs)).numpy())
    return np.concatenate(out) if out else np.zeros((0, HORIZONS, NUM_BEAMS), dtype=np.float32)


def predict_windows(model: BeamModel, xs: Sequence[np.ndarray]) -> np.ndarray:
    single_thread()
    model.eval()
    with torch.no_grad():
        return model(*_tensors(xs)).numpy()


def topk_accuracy(logits: np.ndarray, beams: np.ndarray, k: int = 2) -> float:
    """Top-k accuracy, mean over the windows and the 4 horizons (t0..t3)."""
    top = np.argsort(-logits, axis=-1)[..., :k]
    return float(np.mean(np.any(top == beams[..., None], axis=-1)))


def label_logit_sums(logits: np.ndarray, beams: np.ndarray,
                     num_beams: int = NUM_BEAMS) -> tuple[np.ndarray, np.ndarray]:
    """Per-label sums of logit vectors and counts (every horizon's row under its own label)."""
    rows = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
    labels = beams.reshape(-1)
    sums = np.zeros((num_beams, logits.shape[-1]), dtype=np.float64)
    np.add.at(sums, labels, rows)
    counts = np.bincount(labels, minlength=num_beams).astype(np.float64)
    return sums, counts
