"""Loading every format of one student as a runner (PyTorch, ONNX Runtime, TFLite); a broken format is a row."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.device.errors import EdgekdError
from edgekd.device.io import sha256_file
from edgekd.host.compare.formats import FORMATS, OPTIONAL_FORMATS, TEACHER, Candidate, Runner
from edgekd.host.compare.settings import CompareSettings

log = logging.getLogger(__name__)

def torch_runner(path: Path, modalities: Sequence[str]) -> tuple[Runner, int, dict[str, Any]]:
    """A batch-1 PyTorch fp32 runner (inference mode) and its weights' size in bytes."""
    import torch

    from edgekd.host.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    model: Any = ckpt.build().float().eval()
    if list(model.input_modalities) != list(modalities):
        raise EdgekdError(f"checkpoint takes {list(model.input_modalities)}, the student {list(modalities)}",
                          file=path, fix="pass the checkpoint of this student")
    names = list(model.input_modalities)

    def run(window: dict[str, np.ndarray]) -> np.ndarray:
        # from_numpy shares the window's memory (no copy); inference_mode skips autograd bookkeeping
        with torch.inference_mode():
            return model(*[torch.from_numpy(window[m]) for m in names]).numpy()

    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    params = sum(p.numel() for p in model.parameters())
    return run, size, {"model": ckpt.model_name, "params": params, "checkpoint_sha256": sha256_file(path)}


def artifact_runner(bundle: Path, artifact: dict, *, threads: int | None,
                    providers: Sequence[str] | None) -> tuple[Runner, int, dict[str, Any], Any]:
    """The backend's lean runner (sha256 checked here, at load, never per call), the file's size, info, backend."""
    from edgekd.device.runtime.backends import open_artifact

    backend = open_artifact(bundle, artifact, threads=threads, providers=providers)
    info: dict[str, Any] = {"backend": type(backend).__name__}
    if hasattr(backend, "providers"):
        info["providers"] = list(backend.providers)
    return backend.runner(), int((bundle / artifact["path"]).stat().st_size), info, backend


def load_candidates(bundle: Path, name: str, entry: dict, student_ckpt: Path | None, student_why: str,
                    teacher: Path | None, teacher_why: str, settings: CompareSettings) -> list[Candidate]:
    """One candidate per format; a format that is absent or fails to load keeps its row with the reason."""
    modalities = list(entry["modalities"])
    rows = []
    for key in FORMATS:
        if key in OPTIONAL_FORMATS and key not in entry["artifacts"]:
            continue
        cand = Candidate(student=name, key=key)
        try:
            if key in (TEACHER, "torch_fp32"):
                path, why = (teacher, teacher_why) if key == TEACHER else (student_ckpt, student_why)
                if path is None:
                    cand.status = f"missing: {why}"
                else:
                    cand.source = str(path)
                    cand.run, cand.size_bytes, cand.info = torch_runner(path, modalities)
                    cand.size_kind = "weights"
            elif key not in entry["artifacts"]:
                cand.status = "missing: not in the bundle (the target does not ship it)"
            else:
                artifact = entry["artifacts"][key]
                cand.source = artifact["path"]
                cand.run, cand.size_bytes, cand.info, cand.backend = artifact_runner(
                    bundle, artifact, threads=settings.threads, providers=settings.providers)
                cand.size_kind = "file"
        except Exception as exc:  # a broken format is a row, not a crash of the comparison
            log.warning("%s/%s failed to load: %s", name, key, exc)
            cand.fail(exc)
        rows.append(cand)
    return rows

