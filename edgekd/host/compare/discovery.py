"""Which checkpoints a bundle's students and teachers came from: the manifest's record, a demo folder, or the flags."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from edgekd.device.io import sha256_file

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DemoLayout:
    """The folder `edgekd demo` writes around its bundle (``edgekd.host.experiments.demo``'s stage paths)."""

    root: Path
    data: Path | None             # DEMO/data/dataset
    students: tuple[Path, ...]    # DEMO/students/*.pt
    teachers: tuple[Path, ...]    # DEMO/teachers/*.pt


def demo_layout(bundle: str | os.PathLike) -> DemoLayout | None:
    """The demo folder around ``bundle`` (``DEMO/bundle``), or None when the bundle does not sit in one."""
    root = Path(bundle).resolve().parent
    data = root / "data" / "dataset"
    students = tuple(sorted((root / "students").glob("*.pt")))
    teachers = tuple(sorted((root / "teachers").glob("*.pt")))
    if not ((data / "meta.json").is_file() or students or teachers):
        return None
    return DemoLayout(root, data if (data / "meta.json").is_file() else None, students, teachers)


def _sha_matches(path: Path, sha256: str | None) -> bool:
    return not sha256 or sha256_file(path) == sha256


def find_student_checkpoint(bundle: Path, name: str, entry: dict, given: Sequence[Path]) -> tuple[Path | None, str]:
    """The checkpoint the student was exported from: by sha256 among ``given``, else next to the bundle.

    Returns (path, "") or (None, why). A file with the recorded name but other
    bytes is refused: comparing against a different training run would be wrong.
    """
    record = entry.get("checkpoint") or {}
    sha, filename = record.get("sha256"), record.get("file")
    for path in given:
        if sha and sha256_file(path) == sha:
            return path, ""
    candidates = [bundle / filename, bundle.parent / filename, Path.cwd() / filename] if filename else []
    for path in candidates:
        if path.is_file():
            if _sha_matches(path, sha):
                return path, ""
            return None, f"{path} differs from the exported checkpoint (sha256)"
    modalities = list(entry.get("modalities") or [])
    same_modalities = [path for path in given if _checkpoint_modalities(path) == modalities]
    if same_modalities and not sha:  # no sha in the manifest: fall back to the modality
        return same_modalities[0], ""
    if same_modalities:
        return None, (f"{same_modalities[0]} is not the checkpoint this bundle was exported from (sha256 "
                      "differs); pass the exported one or re-export")
    where = f"'{filename}' not found next to the bundle" if filename else "the manifest names no checkpoint file"
    return None, f"{where}; pass it with --checkpoints"


def _checkpoint_modalities(path: Path) -> list[str] | None:
    """The modalities a checkpoint's model takes, from its data record (no weights loaded); None if unreadable.

    Not building the model here: a checkpoint whose weights no longer fit must
    become an ``error`` row of its format, not stop the comparison.
    """
    from edgekd.host.checkpoint import load_checkpoint

    try:
        ckpt = load_checkpoint(path)
        recorded = (ckpt.data or {}).get("modalities")
        if recorded:
            return list(recorded)
        from edgekd.host.models import create_model

        return list(create_model(ckpt.model_name, **ckpt.model_kwargs).input_modalities)
    except Exception as exc:  # an unreadable checkpoint matches nothing; its reason is logged
        log.warning("cannot read %s: %s", path, exc)
        return None


def find_teacher(student_ckpt: Path | None, modalities: Sequence[str], given: Sequence[Path], *,
                 fallback: Sequence[Path] = ()) -> tuple[Path | None, str]:
    """The teacher: one of ``given`` with the student's modalities, else the one the student was distilled from.

    The recorded teacher is looked for at its recorded path, then among ``fallback`` (a demo's
    ``teachers/*.pt``) by its sha256; with no sha256 recorded, a ``fallback`` of the same modalities.
    """
    for path in given:
        if _checkpoint_modalities(path) == list(modalities):
            return path, ""
    record: dict = {}
    if student_ckpt is not None:
        from edgekd.host.checkpoint import load_checkpoint

        record = (load_checkpoint(student_ckpt).config or {}).get("teacher") or {}
    sha = record.get("sha256")
    recorded = Path(record["path"]) if record.get("path") else None
    if recorded is not None and recorded.is_file() and _sha_matches(recorded, sha):
        return recorded, ""
    for candidate in fallback:
        if sha and sha256_file(candidate) == sha:
            return candidate, ""
        if not sha and _checkpoint_modalities(candidate) == list(modalities):
            return candidate, ""
    if recorded is not None and recorded.is_file():
        return None, f"teacher {recorded} changed since distillation (sha256); pass it with --teacher"
    return None, f"no teacher for {'+'.join(modalities)}; pass it with --teacher"
