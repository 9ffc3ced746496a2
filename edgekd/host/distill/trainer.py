"""One trainer for teachers, no-KD baselines and every KD method.

Adam/AdamW, cosine schedule per epoch, gradient clipping, early stopping on
the validation loss (the supervised loss of the deployed model, comparable
across methods) or a validation top-k (``monitor``), seeds, a tqdm bar, a
JSONL line per epoch, best-on-val weights, the frozen teacher's features
computed once (``cache_teacher``), atomic checkpoints (rewritten after every epoch, so ``resume`` can
continue an interrupted run) and, at the end, the last-hidden-state
statistics over the training windows (data-free KD metadata).

Batches come from ``WindowDataset.batch`` (vectorised reads), shuffled per
epoch by a generator seeded with ``(seed, epoch)`` so a resumed run sees the
same order. Under ``torchrun`` each rank trains on its shard; only rank 0 writes.
"""

from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from edgekd.device.errors import EdgekdError
from edgekd.host.checkpoint import save_checkpoint
from edgekd.host.distill import ddp
from edgekd.host.distill.config import TrainConfig
from edgekd.host.distill.losses import cross_entropy_loss, focal_loss
from edgekd.host.distill.methods import Distiller, TeacherCache, model_inputs

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# small pure helpers


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all ranks use the same seed: DDP starts from rank 0's weights anyway)."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of ``n`` windows for ``epoch``; depends only on (seed, epoch), so resume repeats it."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def train_indices(n: int, max_windows: int | None) -> np.ndarray:
    """Positions of the training windows used: the first ``max_windows`` (whole early drives, like one node's log)."""
    return np.arange(n if max_windows is None else min(n, max_windows))


def to_tensors(arrays: Mapping[str, np.ndarray], keys: Sequence[str], device: torch.device) -> dict[str, Tensor]:
    """Model inputs (float32) and labels (int64) of a numpy batch as torch tensors on ``device``."""
    out = {k: torch.from_numpy(np.ascontiguousarray(arrays[k])).to(device) for k in keys}
    out["beams"] = torch.from_numpy(np.asarray(arrays["beams"], dtype=np.int64)).to(device)
    return out


def batch_slices(indices: np.ndarray, batch_size: int, *, min_last: int = 1) -> list[np.ndarray]:
    """Consecutive chunks of ``indices``; a final chunk smaller than ``min_last`` is dropped."""
    chunks = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    if chunks and len(chunks[-1]) < min_last:
        chunks.pop()
    return chunks


def iterate_batches(ds, chunks: Sequence[np.ndarray], keys: Sequence[str], device: torch.device,
                    num_workers: int = 0) -> Iterator[dict[str, Tensor]]:
    """Batches of ``ds`` as tensors; with workers, the next batches are read in background threads."""
    if num_workers <= 0:
        for chunk in chunks:
            yield to_tensors(ds.batch(chunk), keys, device)
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=num_workers) as pool:
        pending = [pool.submit(ds.batch, chunk) for chunk in chunks[:num_workers + 1]]
        for i in range(len(chunks)):
            arrays = pending[i].result()
            if i + num_workers + 1 < len(chunks):
                pending.append(pool.submit(ds.batch, chunks[i + num_workers + 1]))
            pending[i] = None
            yield to_tensors(arrays, keys, device)


def supervised_loss_value(logits: Tensor, beams: Tensor, cfg: TrainConfig) -> float:
    if cfg.supervised_loss == "ce":
        return float(cross_entropy_loss(logits, beams))
    return float(focal_loss(logits, beams, cfg.focal_gamma))


def monitor_score(val: Mapping[str, Any], monitor: str) -> float:
    """The validation quantity ``monitor`` as lower-is-better (accuracies are negated)."""
    return float(val["loss"]) if monitor == "loss" else -float(val[f"{monitor}_mean"])


def accuracy_metrics(logits: np.ndarray, beams: np.ndarray) -> dict[str, Any]:
    """Per-horizon top-1/2/3/5 and DBA with their means over horizons (``edgekd.device.metrics``)."""
    from edgekd.device.metrics import evaluate_predictions

    return evaluate_predictions(logits, beams)


@torch.no_grad()
def predict(model: nn.Module, ds, indices: np.ndarray, batch_size: int, device: torch.device,
            num_workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``[N, H, C]`` and labels ``[N, H]`` of ``model`` (eval mode) on windows ``indices``."""
    was_training = model.training
    model.eval()
    logits, beams = [], []
    for batch in iterate_batches(ds, batch_slices(indices, batch_size), model.input_modalities, device,
                                 num_workers):
        logits.append(model(*model_inputs(model, batch)).float().cpu().numpy())
        beams.append(batch["beams"].cpu().numpy())
    model.train(was_training)
    if not logits:
        return np.zeros((0,), np.float32), np.zeros((0,), np.int64)
    return np.concatenate(logits), np.concatenate(beams)


@torch.no_grad()
def teacher_cache(teacher: nn.Module, names: Sequence[str], ds, indices: np.ndarray, batch_size: int,
                  device: torch.device, num_workers: int = 0) -> TeacherCache:
    """The features ``names`` of the (eval-mode) ``teacher`` on windows ``indices`` of ``ds``."""
    was_training = teacher.training
    teacher.eval()
    parts: dict[str, list[Tensor]] = {name: [] for name in names}
    for batch in iterate_batches(ds, batch_slices(indices, batch_size), teacher.input_modalities, device,
                                 num_workers):
        feats = teacher.forward_features(*model_inputs(teacher, batch))
        for name in names:
            parts[name].append(feats[name])
    teacher.train(was_training)
    index = torch.from_numpy(np.asarray(indices, dtype=np.int64)).to(device)
    return TeacherCache(index, {name: torch.cat(chunks) for name, chunks in parts.items()})


@torch.no_grad()
def hidden_state_stats(model: nn.Module, ds, indices: np.ndarray, batch_size: int = 256,
                       device: torch.device | str = "cpu") -> dict[str, Any]:
    """Mean and (population) variance of ``features["last_hidden"]`` over windows ``indices``.

    Accumulated in float64 sums so the result does not depend on the batch size.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    total, total_sq, count = None, None, 0
    for batch in iterate_batches(ds, batch_slices(indices, batch_size), model.input_modalities, device):
        hidden = model.forward_features(*model_inputs(model, batch))["last_hidden"].double().cpu()
        hidden = hidden.reshape(hidden.shape[0], -1)
        total = hidden.sum(0) if total is None else total + hidden.sum(0)
        total_sq = hidden.pow(2).sum(0) if total_sq is None else total_sq + hidden.pow(2).sum(0)
        count += hidden.shape[0]
    model.train(was_training)
    if count == 0:
        raise EdgekdError("no training windows to compute hidden-state statistics from", field="train",
                          fix="use a dataset with a non-empty training split")
    mean = total / count
    var = (total_sq / count - mean.pow(2)).clamp_min(0.0)
    return {"last_hidden_mean": mean.float().tolist(), "last_hidden_var": var.float().tolist(), "count": count}


# ---------------------------------------------------------------------------
# the trainer


@dataclasses.dataclass
class TrainResult:
    """What a run produced; ``metrics`` holds ``val`` (best epoch) and ``test`` (when the split exists)."""

    method: str
    epochs_run: int
    best_epoch: int
    best_val_loss: float | None
    stopped_early: bool
    metrics: dict
    teacher_stats: dict | None
    history: list[dict]
    checkpoint: str | None = None
    log: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class _State:
    """Mutable loop state (what a resume restores)."""

    epoch: int = 0                    # epochs completed
    best_val: float = math.inf        # monitored validation score of the best epoch (lower is better)
    best_epoch: int = 0
    bad_epochs: int = 0
    best_weights: dict | None = None  # deploy model state at the best epoch
    history: list[dict] = dataclasses.field(default_factory=list)


class Trainer:
    """Fit a :class:`Distiller` on a dataset split; see the module docstring for what it does."""

    def __init__(self, distiller: Distiller, train_ds, val_ds, cfg: TrainConfig, *, test_ds=None,
                 out: str | os.PathLike | None = None, log_path: str | os.PathLike | None = None,
                 checkpoint_meta: Mapping[str, Any] | None = None, dist: ddp.DistInfo | None = None):
        self.distiller = distiller
        self.cfg = distiller.cfg
        self.train_ds, self.val_ds, self.test_ds = train_ds, val_ds, test_ds
        self.out = Path(out) if out is not None else None
        self.log_path = Path(log_path) if log_path is not None else (
            self.out.with_suffix(".log.jsonl") if self.out is not None else None)
        self.meta = dict(checkpoint_meta or {})
        self.dist = dist or ddp.DistInfo()
        self.device = torch.device(cfg.device)
        self.distiller.to(self.device)
        self.module = ddp.wrap(self.distiller, self.dist, self.device)
        self.params = [p for p in self.distiller.parameters() if p.requires_grad]
        opt_cls = torch.optim.AdamW if self.cfg.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(self.params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        self.scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.cfg.epochs)
                          if self.cfg.scheduler == "cosine" else None)
        self.train_idx = train_indices(len(train_ds), self.cfg.max_train_windows)
        self.state = _State()

    # -- resume ---------------------------------------------------------------------------------
    def load_resume_state(self, train_state: Mapping[str, Any], best_weights: Mapping[str, Tensor]) -> None:
        self.distiller.load_trainable_state(train_state["distiller"])
        self.optimizer.load_state_dict(train_state["optimizer"])
        if self.scheduler is not None and train_state.get("scheduler"):
            self.scheduler.load_state_dict(train_state["scheduler"])
        if train_state.get("torch_rng") is not None:
            torch.set_rng_state(train_state["torch_rng"])
        self.state = _State(epoch=int(train_state["epoch"]), best_val=float(train_state["best_val"]),
                            best_epoch=int(train_state["best_epoch"]), bad_epochs=int(train_state["bad_epochs"]),
                            best_weights={k: v.clone() for k, v in best_weights.items()},
                            history=list(train_state.get("history", [])))
        log.info("resuming after epoch %d (best epoch %d, val loss %.4f)", self.state.epoch,
                 self.state.best_epoch, self.state.best_val)

    # -- one epoch ------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.module.train()
        order = self.train_idx[epoch_permutation(len(self.train_idx), self.cfg.seed, epoch)]
        chunks = batch_slices(ddp.shard(order, self.dist), self.cfg.batch_size, min_last=2)
        keys = self._input_keys()
        sums: dict[str, float] = {}
        bar = tqdm(total=len(chunks), desc=f"epoch {epoch}", leave=False, unit="batch",
                   disable=not (self.cfg.progress and self.dist.is_main))
        batches = iterate_batches(self.train_ds, chunks, keys, self.device, self.cfg.num_workers)
        for step, (chunk, batch) in enumerate(zip(chunks, batches), start=1):
            batch["index"] = torch.from_numpy(np.asarray(chunk, dtype=np.int64)).to(self.device)
            _, terms = self.module(batch)
            loss = terms["loss"]
            if not torch.isfinite(loss.detach()):
                raise EdgekdError(f"training loss became {loss.item()} at epoch {epoch}", field="lr",
                                  fix="lower the learning rate or the distillation weights")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
            self.optimizer.step()
            self.distiller.after_step()
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value.detach().item()
            bar.update(1)
            bar.set_postfix(loss=f"{sums['loss'] / step:.4f}")
        bar.close()
        means = {name: total / max(len(chunks), 1) for name, total in sums.items()}
        ranks = ddp.gather_objects(means, self.dist)   # every rank's shard counts in the logged loss
        return {name: float(np.mean([r[name] for r in ranks])) for name in means}

    def _cache_teacher(self) -> None:
        """Precompute the frozen teacher's features on the training windows (``cfg.cache_teacher``)."""
        names = self.distiller.teacher_feature_names()
        if not (self.cfg.cache_teacher and names and self.distiller.teacher is not None):
            return
        t0 = time.perf_counter()
        self.distiller.set_teacher_cache(teacher_cache(self.distiller.teacher, names, self.train_ds, self.train_idx,
                                                       self.cfg.eval_batch_size, self.device, self.cfg.num_workers))
        log.info("teacher %s cached for %d windows in %.1f s", "/".join(names), len(self.train_idx),
                 time.perf_counter() - t0)

    def _input_keys(self) -> tuple[str, ...]:
        keys: list[str] = []
        for model in (self.distiller.student, self.distiller.teacher, *getattr(self.distiller, "peers", ())):
            if model is not None:
                keys += [m for m in model.input_modalities if m not in keys]
        return tuple(keys)

    def evaluate(self, ds, model: nn.Module | None = None) -> dict[str, Any]:
        """Loss + accuracy metrics of the deploy model on ``ds``; ranks share the windows and gather."""
        model = model or self.distiller.deploy_model()
        mine = np.arange(len(ds))[self.dist.rank::self.dist.world_size]
        logits, beams = predict(model, ds, mine, self.cfg.eval_batch_size, self.device, self.cfg.num_workers)
        parts = ddp.gather_objects((logits, beams), self.dist)
        parts = [p for p in parts if len(p[0])]
        logits = np.concatenate([p[0] for p in parts])
        beams = np.concatenate([p[1] for p in parts])
        metrics = accuracy_metrics(logits, beams)
        metrics["loss"] = supervised_loss_value(torch.from_numpy(logits), torch.from_numpy(beams), self.cfg)
        metrics["n"] = int(len(beams))
        return metrics

    # -- the loop -------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        start = time.perf_counter()
        st = self.state
        stopped_early = False
        deploy = self.distiller.deploy_model()
        if st.epoch == 0 and self.log_path is not None and self.dist.is_main:
            self.log_path.unlink(missing_ok=True)   # a fresh run starts a fresh log; a resumed one appends
        if self.val_ds is None or len(self.val_ds) == 0:
            log.warning("no validation windows: no early stopping, the last epoch's weights are kept")
        if st.epoch < self.cfg.epochs:
            self._cache_teacher()
        while st.epoch < self.cfg.epochs:
            epoch = st.epoch + 1
            t0 = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            train_terms = self.train_epoch(epoch)
            if self.scheduler is not None:
                self.scheduler.step()
            record: dict[str, Any] = {"epoch": epoch, "lr": lr,
                                      "world_size": self.dist.world_size, "train": train_terms}
            if self.val_ds is not None and len(self.val_ds):
                val = self.evaluate(self.val_ds)
                record["val"] = val
                improved = monitor_score(val, self.cfg.monitor) < st.best_val
            else:
                improved = True
            if improved:
                st.best_val = monitor_score(record["val"], self.cfg.monitor) if "val" in record else math.nan
                st.best_epoch, st.bad_epochs = epoch, 0
                st.best_weights = {k: v.detach().cpu().clone() for k, v in deploy.state_dict().items()}
            else:
                st.bad_epochs += 1
            st.epoch = epoch
            record["seconds"] = round(time.perf_counter() - t0, 3)
            st.history.append(record)
            self._log_epoch(record)
            if self.out is not None and self.dist.is_main:
                self._save(final=False)
            if st.bad_epochs >= self.cfg.patience:
                stopped_early = True
                log.info("early stop at epoch %d (best %d)", epoch, st.best_epoch)
                break
        return self._finish(stopped_early, time.perf_counter() - start)

    def _finish(self, stopped_early: bool, seconds: float) -> TrainResult:
        st = self.state
        deploy = self.distiller.deploy_model()
        if st.best_weights is not None:
            deploy.load_state_dict(st.best_weights)
        metrics: dict[str, Any] = {"best_epoch": st.best_epoch}
        if self.val_ds is not None and len(self.val_ds):
            metrics["val"] = self.evaluate(self.val_ds, deploy)
        if self.test_ds is not None and len(self.test_ds):
            metrics["test"] = self.evaluate(self.test_ds, deploy)
        stats = None
        if self.dist.is_main:
            stats = hidden_state_stats(deploy, self.train_ds, self.train_idx, self.cfg.eval_batch_size, self.device)
        self.final_metrics, self.teacher_stats = metrics, stats
        if self.out is not None and self.dist.is_main:
            self._save(final=True)
        ddp.barrier(self.dist)
        return TrainResult(method=self.distiller.method, epochs_run=st.epoch, best_epoch=st.best_epoch,
                           best_val_loss=_best_record(st).get("val", {}).get("loss"),
                           stopped_early=stopped_early, metrics=metrics, teacher_stats=stats, history=st.history,
                           checkpoint=str(self.out) if self.out else None,
                           log=str(self.log_path) if self.log_path else None, seconds=round(seconds, 3))

    # -- outputs (rank 0) -----------------------------------------------------------------------
    def _log_epoch(self, record: dict) -> None:
        val = record.get("val", {})
        log.info("epoch %d: train %.4f val %s top1 %s", record["epoch"], record["train"].get("loss", math.nan),
                 f"{val['loss']:.4f}" if val else "-", val.get("top1", "-"))
        if self.log_path is None or not self.dist.is_main:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(_jsonable(record)) + "\n")

    def _save(self, *, final: bool) -> None:
        st = self.state
        deploy = self.distiller.deploy_model()
        # The saved weights are always the best-on-val ones; the live state travels in extra for --resume.
        saved = copy.deepcopy(deploy).cpu()
        if st.best_weights is not None:
            saved.load_state_dict(st.best_weights)
        train_state = {
            "method": self.distiller.method,
            "epoch": st.epoch, "best_val": st.best_val, "best_epoch": st.best_epoch, "bad_epochs": st.bad_epochs,
            "distiller": {k: v.detach().cpu() for k, v in self.distiller.trainable_state().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "history": _jsonable(st.history),
            "finished": final,
            "torch_rng": torch.get_rng_state(),   # dropout masks of a resumed run match an uninterrupted one
        }
        metrics = _jsonable(getattr(self, "final_metrics", None) or
                            {"best_epoch": st.best_epoch, "val": _best_record(st).get("val", {})})
        save_checkpoint(self.out, saved, config=self.meta.get("config", {}), data=self.meta.get("data", {}),
                        metrics=metrics, teacher_stats=getattr(self, "teacher_stats", None),
                        extra={**self.meta.get("extra", {}), "train_state": train_state})


def _best_record(st: _State) -> dict:
    for record in st.history:
        if record["epoch"] == st.best_epoch:
            return record
    return {}


def _jsonable(obj: Any) -> Any:
    """Plain python (lists/floats) for JSON logs and weights_only checkpoints."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    if isinstance(obj, Tensor):
        return obj.tolist()
    return obj


def __getattr__(name: str):
    # The run-level API (train_model, distill_model, ...) lives in edgekd.host.distill.api, which imports this
    # module; resolving it lazily lets callers import it from here as well.
    if name in ("train_model", "distill_model", "evaluate_checkpoint", "add_teacher_stats"):
        from edgekd.host.distill import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
