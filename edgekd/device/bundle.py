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
import json
import os
from pathlib import Path

from edgekd.device.errors import EdgekdError
from edgekd.device.io import sha256_file
from edgekd.device.manifest import BUNDLE_FORMAT, MANIFEST_NAME, Manifest, manifest_problems

__all__ = ["BUNDLE_FORMAT", "MANIFEST_NAME", "Bundle", "manifest_problems", "open_bundle", "read_manifest",
           "verify_artifact_file", "verify_bundle"]

def read_manifest(bundle_dir: str | os.PathLike, *, check_schema: bool = True) -> dict:
    """The manifest as a dict, validated through :class:`Manifest` (unless ``check_schema`` is False)."""
    path = Path(bundle_dir) / MANIFEST_NAME
    if not path.is_file():
        raise EdgekdError("not a bundle: manifest.json is missing", file=bundle_dir,
                          fix="pass a folder written by `edgekd export`")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EdgekdError(f"manifest is not valid JSON: {exc}", file=path, fix="re-export the bundle") from None
    if check_schema:
        Manifest.from_dict(manifest, source=path)
    return manifest


def verify_artifact_file(bundle_dir: str | os.PathLike, artifact: dict) -> Path:
    """The artifact's path after checking its size and sha256 against the manifest."""
    path = Path(bundle_dir) / artifact["path"]
    if not path.is_file():
        raise EdgekdError("artifact file is missing", file=path, field="path", fix="re-export the bundle")
    digest = sha256_file(path)
    if digest != artifact.get("sha256"):
        raise EdgekdError(f"artifact {artifact['path']} was modified: sha256 {digest[:16]}... differs from "
                          f"the manifest's {str(artifact.get('sha256'))[:16]}...", file=path, field="sha256",
                          fix="re-export the bundle; never edit artifacts in place")
    return path


def verify_bundle(bundle_dir: str | os.PathLike) -> dict:
    """Check the schema and every artifact hash (plus calibration files); returns the manifest."""
    manifest = read_manifest(bundle_dir)
    failures = []
    for student_name, student in manifest["students"].items():
        for kind, artifact in student["artifacts"].items():
            try:
                verify_artifact_file(bundle_dir, artifact)
            except EdgekdError as exc:
                failures.append(f"{student_name}/{kind} ({artifact['path']}): {exc.what}")
        calibration = student["calibration"]
        if "sha256" in calibration:
            try:
                verify_artifact_file(bundle_dir, {"path": calibration["file"], "sha256": calibration["sha256"]})
            except EdgekdError as exc:
                failures.append(f"{student_name}/calibration ({calibration['file']}): {exc.what}")
    if failures:
        raise EdgekdError("bundle verification failed: " + "; ".join(failures), file=bundle_dir,
                          field="sha256", fix="re-export the bundle with `edgekd export`")
    return manifest


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

    def calibration_inputs(self, student: str) -> dict:
        """The saved calibration windows of ``student`` (modality -> [N, ...] float32)."""
        import numpy as np

        calibration = self.students[student]["calibration"]
        path = self.path / calibration["file"]
        with np.load(path) as data:
            return {k: data[k] for k in data.files if k != "indices"}


def open_bundle(bundle_dir: str | os.PathLike, *, verify: bool = True) -> Bundle:
    """Read the manifest (schema-checked); with ``verify`` re-hash every artifact first."""
    manifest = verify_bundle(bundle_dir) if verify else read_manifest(bundle_dir)
    return Bundle(path=Path(bundle_dir), manifest=manifest)
