"""``edgekd train | distill | evaluate | metadata``: thin click commands over :mod:`edgekd.host.distill.api`."""

from __future__ import annotations

from pathlib import Path

import click

from edgekd.device.errors import EdgekdError


def _common_options(func=None, *, data_required: bool = True):
    """Options shared by train and distill (each overrides the YAML config)."""
    if func is None:   # used as @_common_options(data_required=False)
        return lambda f: _common_options(f, data_required=data_required)
    data_help = "Dataset directory (from `edgekd data synth` or `edgekd data import-deepsense`)."
    if not data_required:
        data_help += " With --method datafree only its test split is read, for evaluation (optional)."
    options = [
        click.option("--data", "data", required=data_required, default=None, type=click.Path(path_type=Path),
                     help=data_help),
        click.option("--out", "out", required=True, type=click.Path(path_type=Path),
                     help="Checkpoint to write (.pt); the per-epoch log goes next to it as .log.jsonl."),
        click.option("--config", "config", type=click.Path(path_type=Path), default=None,
                     help="YAML TrainConfig (unknown keys are errors); flags below override it."),
        click.option("--epochs", type=int, default=None, help="Maximum number of epochs."),
        click.option("--lr", type=float, default=None, help="Learning rate."),
        click.option("--batch-size", type=int, default=None, help="Windows per batch (per rank under torchrun)."),
        click.option("--seed", type=int, default=None, help="Seed for init, shuffling and partner sampling."),
        click.option("--max-train-windows", type=int, default=None,
                     help="Use only the first N training windows (emulates a node's small local dataset)."),
        click.option("--patience", type=int, default=None, help="Early-stopping patience in epochs (val loss)."),
        click.option("--threads", type=int, default=None, help="torch intra-op threads."),
        click.option("--precision", type=click.Choice(["fp32", "bf16", "auto"]), default=None,
                     help="Arithmetic of the training forward pass: fp32 (default), bf16 (torch.autocast; "
                          "evaluation and saved weights stay fp32), or auto = bf16 where the CPU has native bf16 "
                          "(AVX512-BF16/AMX). Pays for wide conv nets (the image teacher ~2x), not small students."),
        click.option("--device", type=str, default=None, help="cpu, cuda or cuda:N."),
        click.option("--log", "log_path", type=click.Path(path_type=Path), default=None,
                     help="JSONL log path (default: OUT with suffix .log.jsonl)."),
        click.option("--resume", is_flag=True, default=False,
                     help="Continue the interrupted/finished run saved at --out (epochs, optimizer, schedule)."),
        click.option("--no-progress", is_flag=True, default=False, help="Hide the progress bar."),
        click.option("--overwrite", is_flag=True, default=False,
                     help="Replace an existing --out checkpoint (only an edgekd checkpoint is ever replaced)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _check_data(data: Path | None) -> None:
    """Before any epoch: the frames of the training and validation windows are finite (else name the rows)."""
    from edgekd.host.data.reader import check_split_finite

    if data is not None:
        for split in ("train", "val"):
            check_split_finite(data, split)


def _check_out(out: Path, *, overwrite: bool, resume: bool) -> None:
    """A single-file --out: new, or (with --overwrite) an edgekd checkpoint; --resume continues the one there."""
    from edgekd.device.io import check_replaceable_file

    if resume:
        return
    check_replaceable_file(out, overwrite=overwrite, is_own=_is_checkpoint, what="checkpoint")


def _is_checkpoint(path: Path) -> bool:
    from edgekd.host.checkpoint import load_checkpoint

    try:
        load_checkpoint(path)
    except Exception:  # any failure to read it as a checkpoint means: not ours, never replace it
        return False
    return True


def _config(config, **flags):
    from edgekd.host.distill.config import load_train_config

    progress = None if not flags.pop("no_progress", False) else False
    return load_train_config(config, progress=progress, **flags)


def _summary(result, out: Path) -> str:
    test = result.metrics.get("test") or result.metrics.get("val") or {}
    split = "test" if "test" in result.metrics else "val"
    top1 = " ".join(f"{v:.3f}" for v in test.get("top1", []))
    qat = result.metrics.get("qat")
    extra = (f"; QAT {qat['epochs']} epochs in {qat['seconds']:.1f}s (+{100 * qat['cost_vs_float_run']:.0f}% of "
             f"the float run)" if qat else "")
    return (f"wrote {out} ({result.method}, {result.epochs_run} epochs, best {result.best_epoch}, "
            f"{result.seconds:.1f}s{extra}); {split} top-1 t0..t3: {top1}")


@click.command("train")
@click.option("--model", "model_name", required=True, help="Registered model name (see `edgekd models list`).")
@_common_options
def train(model_name, data, out, config, log_path, resume, overwrite, **flags):
    """Train a model on the labels only (a teacher, or the no-KD student baseline)."""
    from edgekd.host.distill.api import train_model

    _check_out(out, overwrite=overwrite, resume=resume)
    _check_data(data)
    cfg = _config(config, **flags)
    _, result = train_model(model_name, data, cfg, out=out, resume=resume, log_path=log_path)
    if result.checkpoint:
        click.echo(_summary(result, out))


@click.command("distill")
@click.option("--teacher", type=click.Path(path_type=Path), default=None,
              help="Teacher checkpoint (required except for --method dml/none).")
@click.option("--student", default=None, help="Registered student model name (omit for --method self).")
@click.option("--method", required=True,
              help="KD method: kd, mse, rkd, rkd-park, fitnet, self, dml, none (and any registered later).")
@click.option("--alpha", type=float, default=None, help="Distillation weight: (1-alpha)*focal + alpha*distill.")
@click.option("--temperature", type=float, default=None, help="Softmax temperature of the KL terms.")
@click.option("--horizon-weights", default=None,
              help="Per-horizon weights of the distillation term, e.g. 0.7,0.9,1.1,1.3 (normalised to mean 1).")
@click.option("--generator-loss", type=click.Choice(["weighted", "metadata", "activation", "entropy"]), default=None,
              help="--method datafree: generator loss variant (weighted = alpha*metadata + beta*activation + "
                   "gamma*entropy; default from the config: weighted).")
@click.option("--student-loss", type=click.Choice(["kl", "mse"]), default=None,
              help="--method datafree: student loss, KL at --temperature (x T^2) or MSE between raw logits.")
@click.option("--qat", is_flag=True, default=False,
              help="After the float run, fine-tune the student with fake quantisation that models the exported "
                   "full-int8 graph (torch.ao; per-tensor activations, per-channel conv / per-tensor dense "
                   "weights, the logits as exported); the checkpoint exports through the same path.")
@click.option("--qat-epochs", type=click.IntRange(min=1), default=None,
              help="QAT fine-tune epochs (default: the config's qat.epochs, else 8% of --epochs).")
@_common_options(data_required=False)
def distill(teacher, student, method, alpha, temperature, horizon_weights, generator_loss, student_loss, qat,
            qat_epochs, data, out, config, log_path, resume, overwrite, **flags):
    """Distil a student from a teacher checkpoint with a registered KD method."""
    from edgekd.host.distill.api import distill_model
    from edgekd.host.distill.config import parse_horizon_weights
    from edgekd.host.distill.methods import KD_METHODS

    _check_out(out, overwrite=overwrite, resume=resume)
    cfg = _config(config, alpha=alpha, temperature=temperature,
                  horizon_weights=parse_horizon_weights(horizon_weights), **flags)
    if qat or qat_epochs is not None:
        import dataclasses

        cfg = dataclasses.replace(cfg, qat=dataclasses.replace(
            cfg.qat, enabled=True, epochs=qat_epochs if qat_epochs is not None else cfg.qat.epochs))
    if cfg.qat.enabled and resume:
        raise EdgekdError("--resume does not continue a QAT fine-tune", field="qat",
                          fix="rerun without --resume (or resume the float run without --qat, then rerun with --qat)")
    if KD_METHODS.resolve(method) == "datafree":
        if cfg.qat.enabled:
            raise EdgekdError("--qat does not apply to --method datafree", field="qat",
                              fix="distil the data-free student without --qat")
        _distill_datafree(teacher, student, cfg, data, out, generator_loss=generator_loss, student_loss=student_loss,
                          alpha=alpha, resume=resume, log_path=log_path)
        return
    if generator_loss is not None or student_loss is not None:
        raise EdgekdError("--generator-loss / --student-loss apply to --method datafree only", field="method",
                          fix="drop them, or pass --method datafree")
    if data is None:
        raise EdgekdError(f"--method {method} trains on a dataset", field="data", fix="pass --data DATASET")
    _check_data(data)
    _, result = distill_model(teacher, student, method, data, cfg, out=out, resume=resume, log_path=log_path)
    if result.checkpoint:
        click.echo(_summary(result, out))


def _distill_datafree(teacher, student, cfg, data, out, *, generator_loss, student_loss, alpha, resume, log_path):
    """``--method datafree``: generator + synthetic set + student; only the test split of --data is read."""
    import dataclasses

    from edgekd.host.distill.datafree import distill_datafree

    unsupported = {"--alpha (there is no label term)": alpha is not None,
                   "--max-train-windows (no training data is read)": cfg.max_train_windows is not None,
                   "--device other than cpu": cfg.device != "cpu"}
    given = [name for name, on in unsupported.items() if on]
    if given:
        raise EdgekdError(f"{given[0]} does not apply to --method datafree", field="method",
                          fix="drop the option (the generator/student settings live under `datafree:` in --config)")
    if teacher is None:
        raise EdgekdError("--method datafree needs a teacher checkpoint", field="teacher",
                          fix="pass --teacher lidar_teacher.pt (with metadata: `edgekd metadata CKPT --data D`)")
    overrides = {k: v for k, v in {"generator_loss": generator_loss, "student_loss": student_loss}.items()
                 if v is not None}
    cfg = dataclasses.replace(cfg, datafree=dataclasses.replace(cfg.datafree, **overrides))
    _, result = distill_datafree(teacher, student or "lidar_student", cfg, out, data=data, resume=resume,
                                log_path=log_path)
    test = result.metrics.get("test", {})
    scores = (f"; test top-1 t0..t3: {' '.join(f'{v:.3f}' for v in test['top1'])}, "
              f"top-5 mean {test['top5_mean']:.3f} (teacher {result.metrics['teacher_test']['top5_mean']:.3f})"
              if test else "")
    click.echo(f"wrote {out} (datafree, generator {result.generator_loss}, student {result.student_loss}, "
               f"{result.seconds:.1f}s, no real training input){scores}")


@click.command("evaluate")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Dataset directory.")
@click.option("--split", default="test", show_default=True, help="Split to evaluate: train, val or test.")
@click.option("--plot", type=click.Path(path_type=Path), default=None,
              help="Write a grouped bar plot (top-k per horizon, like the paper's Fig. 4) to this PNG.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Write the metrics as JSON to this file.")
@click.option("--batch-size", type=int, default=256, show_default=True, help="Windows per inference batch.")
def evaluate(checkpoint, data, split, plot, json_path, batch_size):
    """Per-horizon top-k accuracy and DBA of a checkpoint on one split."""
    from edgekd.device.io import atomic_write_json
    from edgekd.host.data.reader import check_split_finite
    from edgekd.host.distill.api import evaluate_checkpoint
    from edgekd.host.distill.report import format_topk_table, plot_topk

    if batch_size <= 0:
        raise EdgekdError("must be positive", field="batch_size", fix="pass --batch-size 1 or more")
    check_split_finite(data, split)   # metrics from NaN frames would be silently wrong
    metrics = evaluate_checkpoint(checkpoint, data, split, batch_size=batch_size)
    click.echo(format_topk_table(metrics))
    if plot is not None:
        plot_topk({checkpoint.stem: metrics}, plot, title=f"{metrics['model']} on {split}")
        click.echo(f"wrote {plot}")
    if json_path is not None:
        atomic_write_json(json_path, metrics)
        click.echo(f"wrote {json_path}")


@click.command("metadata")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="Dataset directory whose training split the model was trained on.")
@click.option("--max-train-windows", type=int, default=None,
              help="Use the first N training windows (default: the same as the checkpoint's run).")
def metadata(checkpoint, data, max_train_windows):
    """(Re)compute the data-free KD metadata over the training split and store it in CHECKPOINT.

    Mean/variance of the last hidden state (the paper's metadata) and, for LiDAR
    teachers, per-step mean/variance of the first-layer pre-activations and GRU states.
    """
    from edgekd.host.checkpoint import load_checkpoint
    from edgekd.host.distill.api import add_teacher_stats
    from edgekd.host.distill.datafree import MODALITY, add_layer_metadata

    stats = add_teacher_stats(checkpoint, data, max_train_windows=max_train_windows)
    click.echo(f"wrote teacher_stats to {checkpoint}: {len(stats['last_hidden_mean'])} hidden units "
               f"over {stats['count']} training windows")
    if tuple(load_checkpoint(checkpoint).build().input_modalities) == (MODALITY,):
        layers = add_layer_metadata(checkpoint, data, max_train_windows=max_train_windows)
        click.echo("  + per-step layer statistics: " + ", ".join(
            f"{name} {len(entry['mean'])}x{len(entry['mean'][0])}" for name, entry in layers["layers"].items()))


__all__ = ["train", "distill", "evaluate", "metadata"]
