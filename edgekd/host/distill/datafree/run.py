"""The data-free run (paper 2, steps 4-5): the student learns from the synthetic set through the one trainer.

:class:`SyntheticSource` is the trainer's batch source here: the fixed synthetic set
(or a fresh one per epoch), shuffled per (seed, epoch). The student, its method
(:class:`edgekd.host.distill.methods.DataFreeKD`) and the trainer's finite-loss check,
per-epoch checkpoints, resume and JSONL log are those of every other KD method.
No validation data exists in a data-free run: the last epoch's weights are kept.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgekd.device.errors import EdgekdError
from edgekd.device.io import sha256_file
from edgekd.host.checkpoint import Checkpoint
from edgekd.host.distill.checks import accepted_arguments, check_model_fits_data, prepare_threads, resume_checkpoint
from edgekd.host.distill.config import DataFreeConfig, TrainConfig
from edgekd.host.distill.datafree.generator import (
    LidarGenerator,
    SyntheticSet,
    fit_generator,
    synthesize_set,
    train_generator,
)
from edgekd.host.distill.datafree.losses import TeacherMetadata
from edgekd.host.distill.datafree.teacher import MODALITY, load_teacher
from edgekd.host.distill.methods import TeacherCache, build_distiller
from edgekd.host.distill.sources import batch_slices, epoch_permutation, predict
from edgekd.host.distill.trainer import Trainer, TrainResult, accuracy_metrics, seed_everything

if TYPE_CHECKING:
    from edgekd.host.models.base import BeamModel

log = logging.getLogger(__name__)

EVALUATION_SPLIT = "test"        # the only split of a dataset the data-free path may open
SHAPE_KWARGS = ("num_beams", "window", "horizons", "lidar_bins")   # what the student takes from the teacher
STUDENT_INITS = ("scratch", "teacher_embedding")
# DataFreeConfig's settings beyond the paper, recorded with every student and in the paper-2 report:
#  smoothness_weight: weight of the scan smoothness prior in every generator variant (0: off, the
#  default: with per-layer metadata it moved the student by < 1 point, within seed noise; with
#  last-hidden-only metadata it outweighs that term and the student fell from ~81% to ~35%);
#  student_init: "teacher_embedding" starts the student from the teacher's first layer (Linear
#  bins -> 64, the same shape in both) and keeps it frozen, as DistilBERT starts from teacher
#  layers: no data involved, and the student then only learns the recurrent part on the
#  teacher's own view of a scan (generated scans can stray in directions the teacher ignores;
#  a student with its own first layer would learn from that noise); "scratch": the paper's student.
#  adversarial_steps / adversarial_weight: between epochs the generator also seeks inputs where
#  the student disagrees with the teacher (Adaptive DeepInversion's competition term); 0 steps: off.
#  input_noise: Gaussian noise on every synthetic batch, relabelled by the teacher (the generator's
#  outputs span a low-dimensional set; real scans lie off it, where a from-scratch student would
#  otherwise never have seen the teacher's answer).
BEYOND_PAPER_OPTIONS = ("smoothness_weight", "student_init", "adversarial_steps", "adversarial_weight",
                        "input_noise", "input_noise_width")


def beyond_paper_options(cfg: DataFreeConfig) -> dict[str, Any]:
    return {name: getattr(cfg, name) for name in BEYOND_PAPER_OPTIONS}


# ---------------------------------------------------------------------------
# step 4: the student on the synthetic set


@dataclasses.dataclass(frozen=True)
class Relabelled:
    """``datafree.input_noise``: noise of this std (and correlation width in bins) on every synthetic batch,
    whose windows the frozen ``teacher`` (eval mode) then labels afresh."""

    std: float
    width: float
    teacher: Callable[[Tensor], Tensor]


def bin_noise(shape: Sequence[int], std: float, width: float, generator: torch.Generator) -> Tensor:
    """Gaussian noise of per-value std ``std``; with ``width > 0`` correlated along the last axis (bins) by a
    Gaussian kernel of that std in bins (zero-padded at the ends), the kernel normed so the std is kept."""
    white = torch.randn(tuple(shape), generator=generator)
    if width <= 0:
        return std * white
    half = max(1, int(math.ceil(3 * width)))
    taps = torch.arange(-half, half + 1, dtype=white.dtype)
    kernel = torch.exp(-0.5 * (taps / width) ** 2)
    kernel = kernel / kernel.norm()
    bins = white.shape[-1]
    smooth = F.conv1d(white.reshape(-1, 1, bins), kernel.view(1, 1, -1), padding=half).reshape(white.shape)
    return std * smooth


class SyntheticSource:
    """The trainer's batch source of a data-free run: generated windows with the teacher's logits, no labels.

    With ``resample``, epoch ``e > 1`` draws from ``resample(e)`` (a fresh synthetic set
    per epoch, ``datafree.resample_each_epoch``); a resumed run redraws the same sets.
    """

    def __init__(self, synthetic: SyntheticSet, *, batch_size: int, seed: int,
                 resample: Callable[[int], SyntheticSet] | None = None,
                 noisy: Relabelled | None = None):
        self.synthetic, self.batch_size, self.seed, self.resample = synthetic, batch_size, seed, resample
        self.noisy = noisy

    def __len__(self) -> int:
        return len(self.synthetic)

    def epoch_batches(self, epoch: int) -> tuple[int, Iterator[dict[str, Tensor]]]:
        if self.resample is not None and epoch > 1:
            self.synthetic = self.resample(epoch)
        chunks = batch_slices(epoch_permutation(len(self.synthetic), self.seed, epoch), self.batch_size, min_last=2)
        noise = torch.Generator().manual_seed(self.seed * 100_003 + epoch)   # per (seed, epoch): resume repeats it
        return len(chunks), self._batches(self.synthetic, chunks, self.noisy, noise)

    @staticmethod
    def _batches(synthetic: SyntheticSet, chunks: Sequence[np.ndarray], noisy: Relabelled | None,
                 noise: torch.Generator) -> Iterator[dict[str, Tensor]]:
        for chunk in chunks:
            index = torch.from_numpy(chunk)
            inputs, logits = synthetic.inputs[index], synthetic.teacher_logits[index]
            if noisy is not None:
                inputs = inputs + bin_noise(inputs.shape, noisy.std, noisy.width, noise)
                with torch.no_grad():
                    logits = noisy.teacher(inputs)
            yield {MODALITY: inputs, "teacher_logits": logits}

    def teacher_cache(self, teacher: BeamModel, names: Sequence[str], batch_size: int,
                      device: torch.device) -> TeacherCache | None:
        return None   # the teacher's logits travel with the synthetic set

    def hidden_state_stats(self, model: BeamModel, batch_size: int, device: torch.device) -> dict[str, Any] | None:
        return None   # no real training window: no metadata for a later data-free run of this student


def init_student_from_teacher(student: BeamModel, teacher: BeamModel, how: str) -> BeamModel:
    """``teacher_embedding``: copy the teacher's first layer into the student, frozen (see BEYOND_PAPER_OPTIONS)."""
    if how not in STUDENT_INITS:
        raise ValueError(f"student init must be one of {STUDENT_INITS}, got {how!r}")
    if how == "scratch":
        return student
    s_embed, t_embed = cast(nn.Linear, student.embed), cast(nn.Linear, teacher.embed)
    if s_embed.weight.shape != t_embed.weight.shape:
        raise EdgekdError(f"the student's first layer {tuple(s_embed.weight.shape)} differs from the teacher's "
                          f"{tuple(t_embed.weight.shape)}", field="datafree.student_init",
                          fix="use student_init: scratch for this pair")
    with torch.no_grad():
        s_embed.weight.copy_(t_embed.weight)
        s_embed.bias.copy_(t_embed.bias)
    s_embed.requires_grad_(False)
    return student


def _noisy(teacher: BeamModel, df: DataFreeConfig) -> Relabelled | None:
    return Relabelled(df.input_noise, df.input_noise_width, teacher.eval()) if df.input_noise > 0 else None


def student_trainer(student: BeamModel, teacher: BeamModel, source: SyntheticSource, cfg: TrainConfig,
                    **kwargs: Any) -> Trainer:
    """The trainer for the student phase: method ``datafree`` on ``source`` (``kwargs``: out, log, meta, test)."""
    return Trainer(build_distiller("datafree", student, teacher, cfg), source, None, cfg, **kwargs)


def student_history(result: TrainResult) -> list[dict]:
    """``[{"epoch", "loss", ...}]``: the mean training terms of every epoch."""
    return [{"epoch": record["epoch"], **record["train"]} for record in result.history]


def train_student(student: BeamModel, teacher: BeamModel, synthetic: SyntheticSet, cfg: TrainConfig, *,
                  progress: bool | None = None,
                  resample: Callable[[int], SyntheticSet] | None = None) -> tuple[BeamModel, list[dict]]:
    """Fit ``student`` to the teacher's logits on ``synthetic`` (KL or MSE, ``cfg.datafree.student_loss``).

    The trainer with a :class:`SyntheticSource` and no output files: Adam/AdamW at ``cfg.lr``,
    cosine schedule over ``cfg.epochs``, gradient clipping, the finite-loss check, batches of
    ``cfg.batch_size`` in a (seed, epoch) shuffled order; the last epoch's weights are kept.
    """
    if progress is not None:
        cfg = dataclasses.replace(cfg, progress=progress)
    noisy = _noisy(teacher, cfg.datafree)
    source = SyntheticSource(synthetic, batch_size=cfg.batch_size, seed=cfg.seed, resample=resample,
                             noisy=noisy)
    result = student_trainer(student, teacher, source, cfg).fit()
    return student.eval(), student_history(result)


# ---------------------------------------------------------------------------
# step 5: evaluation on the test split only


def open_evaluation_split(data_path: str | os.PathLike) -> Any:
    """The test split (LiDAR only) of ``data_path``: the only real data the data-free path reads."""
    from edgekd.host.data import load_dataset

    return load_dataset(data_path, EVALUATION_SPLIT, modalities=(MODALITY,))


def evaluate_on(model: BeamModel, ds: Any, batch_size: int = 256) -> dict[str, Any]:
    """Top-k / DBA per horizon of ``model`` on every window of ``ds``."""
    check_model_fits_data(model, ds)
    logits, beams = predict(model, ds, np.arange(len(ds)), batch_size, torch.device("cpu"))
    if len(beams) == 0:
        raise EdgekdError(f"the {EVALUATION_SPLIT} split has no windows", file=ds.path, field="splits.test",
                          fix="use a dataset with a test split")
    return accuracy_metrics(logits, beams)


# ---------------------------------------------------------------------------
# the whole run


@dataclasses.dataclass
class DataFreeResult(TrainResult):
    """The trainer's result of the student phase plus the generator side (``metrics``: "test", "teacher_test")."""

    generator_loss: str = ""
    student_loss: str = ""
    generator_history: list[dict] = dataclasses.field(default_factory=list)
    student_history: list[dict] = dataclasses.field(default_factory=list)
    synthetic: dict = dataclasses.field(default_factory=dict)


def student_kwargs_from_teacher(ckpt: Checkpoint, student_name: str) -> dict[str, Any]:
    """The shape kwargs (beams, window, horizons, bins) of the teacher that the student accepts."""
    accepted = accepted_arguments(student_name)
    return {k: v for k, v in ckpt.model_kwargs.items() if k in SHAPE_KWARGS and k in accepted}


def _make_student(student_name: str, ck: Checkpoint, teacher: BeamModel, cfg: TrainConfig,
                  student_kwargs: Mapping[str, Any] | None) -> BeamModel:
    from edgekd.host.models import create_model

    kwargs = {**student_kwargs_from_teacher(ck, student_name), **(student_kwargs or {})}
    seed_everything(cfg.seed + 2)
    student = create_model(student_name, **kwargs)
    if tuple(student.input_modalities) != (MODALITY,) or student.input_shapes() != teacher.input_shapes():
        raise EdgekdError(f"student '{student_name}' does not take the teacher's LiDAR windows "
                          f"{teacher.input_shapes()}", field="student", fix="pick a LiDAR student, e.g. lidar_student")
    return init_student_from_teacher(student, teacher, cfg.datafree.student_init)


def _resumed_generator(ckpt: Checkpoint) -> tuple[LidarGenerator, list[dict]]:
    """The generator (and its history) stored with the student checkpoint of the run being resumed."""
    stored = ckpt.extra.get("generator")
    if not stored:
        raise EdgekdError("the checkpoint has no generator to resume the data-free run with", file=ckpt.path,
                          field="extra.generator", fix="start the run again without --resume")
    kwargs = dict(stored["kwargs"])
    kwargs["input_range"] = tuple(kwargs["input_range"])
    generator = LidarGenerator(**kwargs)
    generator.load_state_dict(stored["state_dict"])
    return generator.eval(), list(ckpt.extra.get("datafree", {}).get("generator_history", []))


def distill_datafree(teacher_ckpt: str | os.PathLike | Checkpoint, student_name: str = "lidar_student",
                     cfg: TrainConfig | None = None, out: str | os.PathLike | None = None, *,
                     data: str | os.PathLike | None = None, student_kwargs: Mapping[str, Any] | None = None,
                     synthetic: SyntheticSet | None = None, generator: LidarGenerator | None = None,
                     generator_history: list[dict] | None = None, resume: bool | str | os.PathLike = False,
                     log_path: str | os.PathLike | None = None) -> tuple[BeamModel, DataFreeResult]:
    """Data-free KD of ``student_name`` from a LiDAR teacher checkpoint (see :mod:`edgekd.host.distill.datafree`).

    Reads the teacher checkpoint and, only when ``data`` is given, the *test*
    split of that dataset for evaluation. ``synthetic`` reuses an already
    generated set (e.g. the same generator for a KL and an MSE student; pass
    its ``generator`` and ``generator_history`` too, to store them).
    ``out`` gets the student checkpoint after every epoch and a JSONL log (``log_path``,
    default ``OUT.log.jsonl``): the generator's losses, then the student's epochs.
    ``resume`` continues an interrupted run from ``out`` (or the given checkpoint): the
    stored generator redraws the same synthetic set.
    """
    start = time.perf_counter()
    cfg = cfg or TrainConfig()
    if cfg.device != "cpu":   # the generator, the synthetic set and the frozen teacher live on the CPU
        raise EdgekdError(f"data-free KD runs on the CPU, not device '{cfg.device}'", field="device",
                          fix="use --device cpu for --method datafree")
    prepare_threads(cfg)
    df = cfg.datafree
    test_ds = open_evaluation_split(data) if data is not None else None   # fail fast on a bad path
    ck, teacher, metadata = load_teacher(teacher_ckpt, df)
    resume_ck = resume_checkpoint(Path(out) if out else None, resume, student_name, "datafree")
    generator, generator_history, synthetic = _generator_and_set(teacher, metadata, cfg, resume_ck, synthetic,
                                                                 generator, generator_history)
    log.info("synthetic set: %s", synthetic.summary())
    student = _make_student(student_name, ck, teacher, cfg, student_kwargs)
    metrics: dict[str, Any] = {}
    if test_ds is not None:
        check_model_fits_data(student, test_ds)
        if ck.data.get("fingerprint") not in (None, test_ds.fingerprint):
            log.warning("teacher %s was trained on another dataset than %s", ck.path, data)
        metrics["teacher_test"] = evaluate_on(teacher, test_ds, cfg.eval_batch_size)
    resample = (_resampler(generator, teacher, cfg, student=student if df.adversarial_steps else None,
                           metadata=metadata) if df.resample_each_epoch else None)
    noisy = _noisy(teacher, df)
    source = SyntheticSource(synthetic, batch_size=cfg.batch_size, seed=cfg.seed, resample=resample,
                             noisy=noisy)
    meta = _checkpoint_meta(student, ck, cfg, synthetic.summary(), generator, generator_history, test_ds)
    trainer = student_trainer(student, teacher, source, cfg, test_ds=test_ds, out=out, log_path=log_path,
                              checkpoint_meta={**meta, "metrics": metrics},
                              log_preamble=[{"phase": "generator", **r} for r in generator_history],
                              log_tags={"phase": "student"})
    if resume_ck is not None:
        trainer.load_resume_state(resume_ck.extra["train_state"], resume_ck.state_dict)
    fitted = trainer.fit()
    result = DataFreeResult(**{f.name: getattr(fitted, f.name) for f in dataclasses.fields(TrainResult)},
                            generator_loss=df.generator_loss, student_loss=df.student_loss,
                            generator_history=generator_history, student_history=student_history(fitted),
                            synthetic=synthetic.summary())
    result.seconds = round(time.perf_counter() - start, 3)
    return student.eval(), result


def _generator_and_set(teacher: BeamModel, metadata: TeacherMetadata | None, cfg: TrainConfig,
                       resume_ck: Checkpoint | None, synthetic: SyntheticSet | None, generator: LidarGenerator | None,
                       history: list[dict] | None) -> tuple[LidarGenerator | None, list[dict], SyntheticSet]:
    """The generator (trained now, given, or the resumed run's) and the synthetic set it makes (or was given)."""
    if resume_ck is not None:
        generator, history = _resumed_generator(resume_ck)
        synthetic = None
    elif synthetic is None:
        generator, history = train_generator(teacher, metadata, cfg.datafree, seed=cfg.seed, progress=cfg.progress)
    if synthetic is None:
        assert generator is not None
        synthetic = synthesize_set(generator, teacher, cfg.datafree.synthetic_samples, seed=cfg.seed + 1)
    return generator, history or [], synthetic


def _resampler(generator: LidarGenerator | None, teacher: BeamModel, cfg: TrainConfig, *,
               student: BeamModel | None = None,
               metadata: TeacherMetadata | None = None) -> Callable[[int], SyntheticSet]:
    """Epoch ``e``'s fresh set; with a ``student`` (``adversarial_steps``), drawn after the generator has taken
    those steps toward inputs the student gets wrong (a resumed run refines from the stored generator)."""
    if generator is None:
        raise ValueError("resample_each_epoch needs the generator, not only a synthetic set")
    df = cfg.datafree
    if student is not None:   # refine a copy: the checkpoint keeps the generator the run started from
        generator = copy.deepcopy(generator)

    def resample(epoch: int) -> SyntheticSet:
        if student is not None:
            fit_generator(generator, teacher, metadata, df, steps=df.adversarial_steps,
                          seed=cfg.seed + 2 + 1000 * epoch, student=student)
        return synthesize_set(generator, teacher, df.synthetic_samples, seed=cfg.seed + 1 + 1000 * epoch)
    return resample


def _checkpoint_meta(student: BeamModel, teacher_ck: Checkpoint, cfg: TrainConfig, synthetic: dict,
                     generator: LidarGenerator | None, generator_history: list[dict], test_ds: Any) -> dict[str, Any]:
    """The student checkpoint's config/data/extra: no training data (``data.train_windows`` is 0)."""
    shapes = {m: list(s) for m, s in student.input_shapes().items()}
    data: dict[str, Any] = {"path": None, "fingerprint": None, "modalities": [MODALITY], "shapes": shapes,
                            "train_windows": 0, "real_training_inputs": 0}
    if test_ds is not None:
        data["evaluation"] = {"path": str(Path(test_ds.path).resolve()), "split": EVALUATION_SPLIT,
                              "fingerprint": test_ds.fingerprint}
    teacher = {"path": str(teacher_ck.path), "sha256": sha256_file(teacher_ck.path) if teacher_ck.path else None,
               "model": teacher_ck.model_name, "model_kwargs": dict(teacher_ck.model_kwargs)}
    extra: dict[str, Any] = {"datafree": {"synthetic": synthetic, "options": beyond_paper_options(cfg.datafree),
                                          "generator_history": generator_history}}
    if generator is not None:
        extra["generator"] = {"kwargs": generator.constructor_kwargs(),
                              "state_dict": {k: v.detach().cpu() for k, v in generator.state_dict().items()}}
    return {"config": {"method": "datafree", "train": dataclasses.asdict(cfg), "teacher": teacher},
            "data": data, "extra": extra}


__all__ = [
    "BEYOND_PAPER_OPTIONS", "DataFreeResult", "EVALUATION_SPLIT", "Relabelled", "SHAPE_KWARGS", "STUDENT_INITS",
    "SyntheticSource", "beyond_paper_options", "bin_noise", "distill_datafree", "evaluate_on",
    "init_student_from_teacher", "open_evaluation_split", "student_kwargs_from_teacher", "train_student",
]
