"""One trainer for teachers, no-KD baselines and every KD method, data-free KD included.

Adam/AdamW, cosine schedule per epoch, gradient clipping, a finite-loss check,
early stopping on the validation loss (the supervised loss of the deployed
model, comparable across methods) or a validation top-k (``monitor``), seeds, a
tqdm bar, a JSONL line per epoch, best-on-val weights, the frozen teacher's
features computed once (``cache_teacher``), atomic checkpoints (rewritten after
every epoch, so ``resume`` can continue an interrupted run) and, at the end, the
last-hidden-state statistics over the training windows (data-free KD metadata).

The training batches come from a :class:`edgekd.host.distill.sources.BatchSource`:
a dataset split (:class:`~edgekd.host.distill.sources.DatasetSource`, built here
when a dataset is passed) or the data-free path's generated windows. Without
validation windows there is no early stopping and the last epoch's weights are
kept. Under ``torchrun`` each rank trains on its shard; only rank 0 writes.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from edgekd.device.errors import EdgekdError
from edgekd.host.checkpoint import save_checkpoint
from edgekd.host.distill import ddp
from edgekd.host.distill.config import TrainConfig
from edgekd.host.distill.losses import cross_entropy_loss, focal_loss
from edgekd.host.distill.methods import Distiller
from edgekd.host.distill.optim import (
    build_optimizer,
    build_scheduler,
    check_finite,
    optimizer_step,
    resolve_precision,
    training_autocast,
)
from edgekd.host.distill.sources import BatchSource, DatasetSource, predict, train_indices

if TYPE_CHECKING:
    from edgekd.host.models.base import BeamModel

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# small pure helpers


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all ranks use the same seed: DDP starts from rank 0's weights anyway)."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


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
    """Fit a :class:`Distiller` on a batch source (or a dataset split); see the module docstring."""

    def __init__(self, distiller: Distiller, train: Any, val_ds: Any, cfg: TrainConfig, *, test_ds: Any = None,
                 out: str | os.PathLike | None = None, log_path: str | os.PathLike | None = None,
                 checkpoint_meta: Mapping[str, Any] | None = None, dist: ddp.DistInfo | None = None,
                 log_preamble: Sequence[Mapping[str, Any]] = (), log_tags: Mapping[str, Any] | None = None):
        """``train``: a :class:`BatchSource`, or a dataset whose first ``cfg.max_train_windows`` windows train.

        ``checkpoint_meta``: ``config``/``data``/``extra`` of the checkpoint, and ``metrics`` merged into the
        final metrics. ``log_preamble``: JSONL lines written first in a fresh log (e.g. an earlier stage's
        history); ``log_tags``: keys added to every epoch's line.
        """
        self.distiller = distiller
        self.cfg = distiller.cfg
        self.val_ds, self.test_ds = val_ds, test_ds
        self.out = Path(out) if out is not None else None
        self.log_path = Path(log_path) if log_path is not None else (
            self.out.with_suffix(".log.jsonl") if self.out is not None else None)
        self.meta = dict(checkpoint_meta or {})
        self.log_preamble, self.log_tags = list(log_preamble), dict(log_tags or {})
        self.dist = dist or ddp.DistInfo()
        self.device = torch.device(cfg.device)
        self.precision = resolve_precision(cfg.precision, self.device)
        self.distiller.to(self.device)
        self.module = ddp.wrap(self.distiller, self.dist, self.device)
        self.params = [p for p in self.distiller.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.params, self.cfg.optimizer, self.cfg.lr, self.cfg.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, self.cfg.scheduler, self.cfg.epochs)
        self.source: BatchSource = train if isinstance(train, BatchSource) else DatasetSource(
            train, train_indices(len(train), self.cfg.max_train_windows), self._input_keys(),
            batch_size=self.cfg.batch_size, seed=self.cfg.seed, device=self.device, dist=self.dist,
            num_workers=self.cfg.num_workers)
        self.state = _State()
        self.final_metrics: dict[str, Any] | None = None
        self.teacher_stats: dict[str, Any] | None = None

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
        count, batches = self.source.epoch_batches(epoch)
        sums: dict[str, float] = {}
        bar = tqdm(total=count, desc=f"epoch {epoch}", leave=False, unit="batch",
                   disable=not (self.cfg.progress and self.dist.is_main))
        for step, batch in enumerate(batches, start=1):
            with training_autocast(self.precision, self.device):
                _, terms = self.module(batch)
            if not torch.isfinite(terms["loss"]).all():
                _check_finite_inputs(batch, f"epoch {epoch}, batch {step}")   # bad data, not a bad lr
            check_finite(terms["loss"], "training loss", f"at epoch {epoch}", field="lr",
                         fix="lower the learning rate or the distillation weights")
            optimizer_step(terms["loss"], self.optimizer, self.params, self.cfg.grad_clip)
            self.distiller.after_step()
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value.detach().item()
            bar.update(1)
            bar.set_postfix(loss=f"{sums['loss'] / step:.4f}")
        bar.close()
        means = {name: total / max(count, 1) for name, total in sums.items()}
        ranks = ddp.gather_objects(means, self.dist)   # every rank's shard counts in the logged loss
        return {name: float(np.mean([r[name] for r in ranks])) for name in means}

    def _cache_teacher(self) -> None:
        """Precompute the frozen teacher's features on the training windows (``cfg.cache_teacher``)."""
        names = self.distiller.teacher_feature_names()
        teacher = self.distiller.teacher
        if not (self.cfg.cache_teacher and names and teacher is not None):
            return
        t0 = time.perf_counter()
        cache = self.source.teacher_cache(teacher, names, self.cfg.eval_batch_size, self.device)
        if cache is not None:
            self.distiller.set_teacher_cache(cache)
            log.info("teacher %s cached for %d windows in %.1f s", "/".join(names),
                     len(cache.features[names[0]]), time.perf_counter() - t0)

    def _input_keys(self) -> tuple[str, ...]:
        keys: list[str] = []
        for model in (self.distiller.student, self.distiller.teacher, *getattr(self.distiller, "peers", ())):
            if model is not None:
                keys += [m for m in model.input_modalities if m not in keys]
        return tuple(keys)

    def evaluate(self, ds, model: BeamModel | None = None) -> dict[str, Any]:
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
        if st.epoch == 0:
            self._start_log()
        if (self.val_ds is None or len(self.val_ds) == 0) and isinstance(self.source, DatasetSource):
            log.warning("no validation windows: no early stopping, the last epoch's weights are kept")
        if st.epoch < self.cfg.epochs:
            self._cache_teacher()
        while st.epoch < self.cfg.epochs:
            record = self._run_epoch(st.epoch + 1)
            self._log_epoch(record)
            if self.out is not None and self.dist.is_main:
                self._save(final=False)
            if st.bad_epochs >= self.cfg.patience:
                stopped_early = True
                log.info("early stop at epoch %d (best %d)", st.epoch, st.best_epoch)
                break
        return self._finish(stopped_early, time.perf_counter() - start)

    def _run_epoch(self, epoch: int) -> dict[str, Any]:
        """Train one epoch, validate, keep the best weights; returns the epoch's record (also in the history)."""
        st = self.state
        t0 = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        train_terms = self.train_epoch(epoch)
        if self.scheduler is not None:
            self.scheduler.step()
        record: dict[str, Any] = {"epoch": epoch, "lr": lr, "world_size": self.dist.world_size, "train": train_terms}
        score = math.nan
        if self.val_ds is not None and len(self.val_ds):
            record["val"] = self.evaluate(self.val_ds)
            score = monitor_score(record["val"], self.cfg.monitor)
        if "val" not in record or score < st.best_val:
            st.best_val, st.best_epoch, st.bad_epochs = score, epoch, 0
            deploy = self.distiller.deploy_model()
            st.best_weights = {k: v.detach().cpu().clone() for k, v in deploy.state_dict().items()}
        else:
            st.bad_epochs += 1
        st.epoch = epoch
        record["seconds"] = round(time.perf_counter() - t0, 3)
        st.history.append(record)
        return record

    def _finish(self, stopped_early: bool, seconds: float) -> TrainResult:
        st = self.state
        deploy = self.distiller.deploy_model()
        if st.best_weights is not None:
            deploy.load_state_dict(st.best_weights)
        metrics: dict[str, Any] = {**self.meta.get("metrics", {}), "best_epoch": st.best_epoch,
                                   "train_precision": self.precision}
        if self.val_ds is not None and len(self.val_ds):
            metrics["val"] = self.evaluate(self.val_ds, deploy)
        if self.test_ds is not None and len(self.test_ds):
            metrics["test"] = self.evaluate(self.test_ds, deploy)
        stats = None
        if self.dist.is_main:
            stats = self.source.hidden_state_stats(deploy, self.cfg.eval_batch_size, self.device)
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
    def _start_log(self) -> None:
        """A fresh run starts a fresh log (a resumed one appends), beginning with ``log_preamble``."""
        if self.log_path is None or not self.dist.is_main:
            return
        self.log_path.unlink(missing_ok=True)
        if self.log_preamble:
            self._append_log(self.log_preamble)

    def _append_log(self, records: Sequence[Mapping[str, Any]]) -> None:
        assert self.log_path is not None
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as handle:
            handle.writelines(json.dumps(_jsonable(record)) + "\n" for record in records)

    def _log_epoch(self, record: dict) -> None:
        val = record.get("val", {})
        log.info("epoch %d: train %.4f val %s top1 %s", record["epoch"], record["train"].get("loss", math.nan),
                 f"{val['loss']:.4f}" if val else "-", val.get("top1", "-"))
        if self.log_path is not None and self.dist.is_main:
            self._append_log([{**self.log_tags, **record}])

    def _save(self, *, final: bool) -> None:
        st = self.state
        assert self.out is not None
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
        metrics = _jsonable(self.final_metrics or {**self.meta.get("metrics", {}), "best_epoch": st.best_epoch,
                                                   "val": _best_record(st).get("val", {})})
        save_checkpoint(self.out, saved, config=self.meta.get("config", {}), data=self.meta.get("data", {}),
                        metrics=metrics, teacher_stats=self.teacher_stats,
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



def _check_finite_inputs(batch: Mapping[str, Any], where: str) -> None:
    """Name the input array (and how many windows) when a non-finite loss came from NaN/inf data."""
    for name, value in batch.items():
        if isinstance(value, Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            bad = (~torch.isfinite(value.reshape(value.shape[0], -1))).any(dim=1).nonzero().flatten().tolist()
            raise EdgekdError(f"training input '{name}' holds NaN/inf values in {len(bad)} of {value.shape[0]} "
                              f"windows of the batch ({where}, batch positions {bad[:5]}); the loss cannot be "
                              "finite", field=f"frames/{name}",
                              fix="the dataset is corrupt: `edgekd data info DATA` names the rows; re-generate "
                                  "or re-import it (the learning rate is not the cause)")
