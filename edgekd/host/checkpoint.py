"""Checkpoints: weights + architecture + config + data fingerprint + metrics + teacher stats.

A checkpoint is self-describing: ``load_checkpoint(path).build()`` recreates the
model from the registry without the caller knowing its class. Written
atomically (temporary file, then rename).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from edgekd import __version__
from edgekd.device.errors import EdgekdError
from edgekd.device.io import atomic_write_bytes

if TYPE_CHECKING:
    from edgekd.host.models.base import BeamModel

CHECKPOINT_FORMAT = "edgekd-checkpoint/1"


@dataclasses.dataclass
class Checkpoint:
    path: Path | None
    model_name: str
    model_kwargs: dict
    state_dict: dict
    config: dict
    data: dict
    metrics: dict
    teacher_stats: dict | None
    extra: dict

    def build(self, *, eval_mode: bool = True) -> BeamModel:
        """Recreate the model from the registry and load the weights."""
        from edgekd.host.models import create_model

        model = create_model(self.model_name, **self.model_kwargs)
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as exc:
            raise EdgekdError(f"weights do not fit model '{self.model_name}': {str(exc).splitlines()[0]}",
                              file=self.path, field="state_dict",
                              fix="the checkpoint is corrupt or was written by another edgekd version; retrain it"
                              ) from None
        if eval_mode:
            model.eval()
        return model


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, *, config: dict | None = None,
                    data: dict | None = None, metrics: dict | None = None,
                    teacher_stats: dict | None = None, extra: dict | None = None) -> Path:
    """Save ``model`` (created by ``edgekd.host.models.create_model``) with its metadata, atomically."""
    name = getattr(model, "registry_name", None)
    if name is None:
        raise TypeError("model was not created through edgekd.host.models.create_model (no registry_name)")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "edgekd_version": __version__,
        "torch_version": str(torch.__version__),  # TorchVersion is not weights_only-loadable
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "model": name,
        "model_kwargs": dict(getattr(model, "registry_kwargs", {})),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": config or {},
        "data": data or {},
        "metrics": metrics or {},
        "teacher_stats": teacher_stats,
        "extra": extra or {},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike, *, expect_model: str | None = None) -> Checkpoint:
    """Read a checkpoint; errors name the file and say how to fix it."""
    path = Path(path)
    if not path.is_file():
        raise EdgekdError("checkpoint not found", file=path, fix="check the path, or train one with `edgekd train`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise EdgekdError(f"not a readable PyTorch checkpoint ({reason})", file=path,
                          fix="pass a .pt written by `edgekd train` or `edgekd distill`") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise EdgekdError("not an edgekd checkpoint (missing or unknown 'format')", file=path, field="format",
                          fix="pass a .pt written by `edgekd train` or `edgekd distill`")
    missing = [key for key in ("model", "model_kwargs", "state_dict") if key not in payload]
    if missing:
        raise EdgekdError(f"checkpoint lacks {missing}", file=path, field=missing[0],
                          fix="the file is damaged or was edited: re-train or re-distill it")
    if expect_model is not None and payload["model"] != expect_model:
        raise EdgekdError(f"checkpoint holds model '{payload['model']}', expected '{expect_model}'",
                          file=path, field="model", fix=f"pass a checkpoint of '{expect_model}'")
    return Checkpoint(path=path, model_name=payload["model"], model_kwargs=payload["model_kwargs"],
                      state_dict=payload["state_dict"], config=payload.get("config", {}),
                      data=payload.get("data", {}), metrics=payload.get("metrics", {}),
                      teacher_stats=payload.get("teacher_stats"), extra=payload.get("extra", {}))


def update_checkpoint(path: str | os.PathLike, **fields: Any) -> Path:
    """Rewrite selected top-level fields (e.g. ``teacher_stats``) of a checkpoint atomically."""
    path = Path(path)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    payload.update(fields)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write_bytes(path, buffer.getvalue())
