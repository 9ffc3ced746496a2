"""Deployment bundles on the reading side: manifest check, sha256 verification, loading.

DEVICE SIDE (the runtime and ``firmware_bench`` use it on boards). The writing
side is ``edgekd.host.export``. The schema is the typed :class:`edgekd.device.manifest.Manifest`;
a bundle whose manifest breaks it, or whose artifact bytes differ from the recorded
sha256, is refused with an error that names the artifact. Loading a model is the
runtime's job (``edgekd.device.runtime.backends.open_artifact``): this module never
imports the runtime, so the runtime can import it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import zipfile
from pathlib import Path

from edgekd.device.errors import EdgekdError
from edgekd.device.io import sha256_bytes
from edgekd.device.manifest import BUNDLE_FORMAT, MANIFEST_NAME, Manifest, manifest_problems
from edgekd.device.signing import trusted_key_path, verify_manifest_bytes

__all__ = ["BUNDLE_FORMAT", "MANIFEST_NAME", "Bundle", "check_degraded", "degraded_note", "manifest_problems",
           "open_bundle", "parse_manifest", "read_manifest", "read_manifest_bytes", "read_verified_bytes",
           "verify_artifact_file", "verify_bundle", "verify_files"]

log = logging.getLogger(__name__)

def read_manifest_bytes(bundle_dir: str | os.PathLike) -> bytes:
    """The exact bytes of ``manifest.json``: the ones the signature covers and the ones parsed."""
    folder = Path(bundle_dir)
    if not folder.is_dir():
        raise EdgekdError("no such bundle folder" if not folder.exists() else "not a bundle folder (a file)",
                          file=bundle_dir, fix="pass the folder written by `edgekd export`")
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise EdgekdError("not a bundle: manifest.json is missing", file=bundle_dir,
                          fix="pass a folder written by `edgekd export`")
    return path.read_bytes()


def parse_manifest(data: bytes, path: str | os.PathLike, *, check_schema: bool = True) -> dict:
    """``manifest.json`` bytes as a dict, validated through :class:`Manifest` (unless ``check_schema`` is False)."""
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EdgekdError(f"manifest is not valid JSON: {exc}", file=path, fix="re-export the bundle") from None
    if check_schema:
        Manifest.from_dict(manifest, source=path)
    return manifest


def read_manifest(bundle_dir: str | os.PathLike, *, check_schema: bool = True,
                  trusted_key: str | os.PathLike | None = None) -> dict:
    """The manifest as a dict, validated through :class:`Manifest` (unless ``check_schema`` is False).

    Where a trusted key is configured (``trusted_key`` or ``$EDGEKD_TRUSTED_KEY``) the signature over
    the manifest is checked first, so every reader of a bundle (``firmware_bench`` included) refuses an
    unsigned or re-signed one; a degraded bundle is logged as a warning.
    """
    data = read_manifest_bytes(bundle_dir)
    key = trusted_key_path(trusted_key)
    if key is not None:
        verify_manifest_bytes(bundle_dir, data, key)
    manifest = parse_manifest(data, Path(bundle_dir) / MANIFEST_NAME, check_schema=check_schema)
    if check_schema:
        check_degraded(bundle_dir, manifest, None)
    return manifest


def read_verified_bytes(bundle_dir: str | os.PathLike, rel: str, sha256: str | None, *,
                        field: str = "sha256") -> bytes:
    """The bytes of bundle file ``rel`` after checking them against ``sha256``: what was hashed is what is used.

    ``rel`` must be relative and stay inside the bundle (symlinks resolved), so a manifest can never
    make a board open a file elsewhere.
    """
    folder = Path(bundle_dir)
    path = folder / rel
    if os.path.isabs(rel) or ".." in Path(rel).parts or not path.resolve().is_relative_to(folder.resolve()):
        raise EdgekdError(f"path {rel!r} points outside the bundle", file=folder / MANIFEST_NAME, field=field,
                          fix="re-export the bundle; every path in a manifest is relative and inside the bundle")
    if not path.is_file():
        raise EdgekdError("artifact file is missing", file=path, field="path", fix="re-export the bundle")
    data = path.read_bytes()
    digest = sha256_bytes(data)
    if digest != sha256:
        raise EdgekdError(f"{rel} was modified: sha256 {digest[:16]}... differs from "
                          f"the manifest's {str(sha256)[:16]}...", file=path, field=field,
                          fix="re-export the bundle; never edit artifacts in place")
    return data


def verify_artifact_file(bundle_dir: str | os.PathLike, artifact: dict) -> Path:
    """The artifact's path after checking its sha256 against the manifest."""
    read_verified_bytes(bundle_dir, artifact["path"], artifact.get("sha256"))
    return Path(bundle_dir) / artifact["path"]


def _bundle_files(manifest: dict) -> list[tuple[str, str, str | None]]:
    """(label, relative path, sha256) of every file the manifest names."""
    files = []
    for student_name, student in manifest["students"].items():
        for kind, artifact in student["artifacts"].items():
            files.append((f"{student_name}/{kind}", artifact["path"], artifact.get("sha256")))
        calibration = student["calibration"]
        files.append((f"{student_name}/calibration", calibration["file"], calibration.get("sha256")))
    return files


def verify_bundle(bundle_dir: str | os.PathLike, *, trusted_key: str | os.PathLike | None = None,
                  allow_degraded: bool | None = None) -> dict:
    """Check the signature (where a key is configured), the schema and every file's sha256; returns the manifest.

    ``trusted_key``: the public key the manifest must be signed with (default ``$EDGEKD_TRUSTED_KEY``;
    none configured: the signature is not checked). ``allow_degraded``: a bundle written past a failed
    parity gate is refused with False, accepted with True, accepted with a logged warning with None.
    """
    data = read_manifest_bytes(bundle_dir)
    key = trusted_key_path(trusted_key)
    if key is not None:
        key_fingerprint = verify_manifest_bytes(bundle_dir, data, key)
        log.info("bundle %s: signature verified (key %s)", bundle_dir, key_fingerprint)
    manifest = parse_manifest(data, Path(bundle_dir) / MANIFEST_NAME)
    verify_files(bundle_dir, manifest)
    check_degraded(bundle_dir, manifest, allow_degraded)
    return manifest


def verify_files(bundle_dir: str | os.PathLike, manifest: dict) -> None:
    """Every file the (schema-checked) manifest names: inside the bundle, present, matching its sha256."""
    failures = []
    for label, rel, digest in _bundle_files(manifest):
        try:
            read_verified_bytes(bundle_dir, rel, digest)
        except EdgekdError as exc:
            failures.append(f"{label} ({rel}): {exc.what}")
    if failures:
        raise EdgekdError("bundle verification failed: " + "; ".join(failures), file=bundle_dir,
                          field="sha256", fix="re-export the bundle with `edgekd export`")


def degraded_note(manifest: dict) -> str | None:
    """One line saying why the bundle is degraded, or None for a bundle that passed its parity gate."""
    if not manifest.get("degraded"):
        return None
    reasons = manifest.get("degraded_reasons") or ["no reason recorded"]
    return "bundle is DEGRADED (written past a failed parity gate): " + "; ".join(reasons)


def check_degraded(bundle_dir: str | os.PathLike, manifest: dict, allow_degraded: bool | None) -> None:
    """Refuse (False), accept silently (True) or accept with a warning (None) a degraded bundle."""
    note = degraded_note(manifest)
    if note is None or allow_degraded:
        return
    if allow_degraded is False:
        raise EdgekdError(note, file=Path(bundle_dir) / MANIFEST_NAME, field="degraded",
                          fix="re-export until the parity gate passes, or pass --allow-degraded to use it anyway")
    log.warning("%s: %s", bundle_dir, note)


@dataclasses.dataclass
class Bundle:
    """An opened (and by default verified) bundle."""
    path: Path
    manifest: dict

    @property
    def students(self) -> dict[str, dict]:
        return self.manifest["students"]

    @property
    def target(self) -> dict:
        return self.manifest["target"]

    def artifact(self, student: str, kind: str = "tflite_int8") -> dict:
        if student not in self.students:
            raise EdgekdError(f"bundle has no student '{student}'", file=self.path,
                              fix=f"students in this bundle: {', '.join(self.students)}")
        artifacts = self.students[student]["artifacts"]
        if kind not in artifacts:
            raise EdgekdError(f"student '{student}' has no artifact '{kind}'", file=self.path,
                              fix=f"artifacts: {', '.join(artifacts)}")
        return artifacts[kind]

    def artifact_bytes(self, student: str, kind: str = "tflite_int8") -> bytes:
        """The artifact's bytes, checked against its sha256 (hand these to the interpreter, not the path)."""
        artifact = self.artifact(student, kind)
        return read_verified_bytes(self.path, artifact["path"], artifact.get("sha256"),
                                   field=f"students.{student}.artifacts.{kind}.sha256")

    def calibration_inputs(self, student: str) -> dict:
        """The saved calibration windows of ``student`` (modality -> [N, ...] float32), hash-checked, no pickle."""
        import numpy as np

        calibration = self.students[student]["calibration"]
        data = read_verified_bytes(self.path, calibration["file"], calibration.get("sha256"),
                                   field=f"students.{student}.calibration.sha256")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                return {k: arrays[k] for k in arrays.files if k not in ("indices", "sample")}
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise EdgekdError(f"calibration file is not a plain .npz ({exc})", file=self.path / calibration["file"],
                              field=f"students.{student}.calibration.file", fix="re-export the bundle") from None


def open_bundle(bundle_dir: str | os.PathLike, *, verify: bool = True, trusted_key: str | os.PathLike | None = None,
                allow_degraded: bool | None = None) -> Bundle:
    """Read the manifest (schema-checked); with ``verify`` check the signature and re-hash every file first.

    A trusted key (``trusted_key`` or ``$EDGEKD_TRUSTED_KEY``) is checked even without ``verify``:
    a configured key is never skipped. See :func:`verify_bundle` for ``allow_degraded``.
    """
    if verify:
        manifest = verify_bundle(bundle_dir, trusted_key=trusted_key, allow_degraded=allow_degraded)
    else:
        data = read_manifest_bytes(bundle_dir)
        key = trusted_key_path(trusted_key)
        if key is not None:
            verify_manifest_bytes(bundle_dir, data, key)
        manifest = parse_manifest(data, Path(bundle_dir) / MANIFEST_NAME)
        check_degraded(bundle_dir, manifest, allow_degraded)
    return Bundle(path=Path(bundle_dir), manifest=manifest)
