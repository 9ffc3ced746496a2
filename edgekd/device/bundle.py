"""Deployment bundles on the reading side: manifest schema, sha256 verification, loading.

TORCH-FREE (the runtime and ``firmware_bench`` use it on boards). The writing
side is ``edgekd.host.export``. The schema is ``docs/CONTRACTS.md``; a bundle whose
manifest breaks it, or whose artifact bytes differ from the recorded sha256,
is refused with an error that names the artifact.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgekd.device.errors import EdgekdError
from edgekd.device.io import sha256_file

MANIFEST_NAME = "manifest.json"
BUNDLE_FORMAT = "edgekd-bundle/1"
ARTIFACT_KINDS = ("onnx_fp32", "onnx_int8_qdq", "tflite_fp32", "tflite_fp16", "tflite_int8")
FORMATS = {"onnx", "tflite"}
PRECISIONS = {"fp32", "fp16", "int8"}

_TOP_KEYS = {"format": str, "created": str, "edgekd_version": str, "versions": dict, "target": dict,
             "students": dict}
_STUDENT_KEYS = {"model": str, "modalities": list, "window": int, "horizons": int, "num_beams": int,
                 "input_shapes": dict, "preprocessing": dict, "checkpoint": dict, "calibration": dict,
                 "artifacts": dict}
_ARTIFACT_KEYS = {"path": str, "sha256": str, "size": int, "format": str, "precision": str, "inputs": list,
                  "outputs": list, "ops": dict, "accuracy": dict}
_TENSOR_KEYS = {"name": str, "shape": list, "dtype": str}
_ACCURACY_KEYS = {"top1": list, "top2": list, "top5": list, "top2_mean": (int, float), "dba": (int, float),
                  "n": int}
_CALIBRATION_KEYS = {"recipe": str, "split": str, "indices_sha256": str, "count": int, "file": str}


def manifest_problems(manifest: Any) -> list[str]:
    """Every schema violation of ``manifest`` as 'field: problem' (empty list = valid)."""
    problems: list[str] = []
    if not isinstance(manifest, dict):
        return ["<top>: the manifest must be a JSON object"]
    _require(manifest, _TOP_KEYS, "", problems)
    if manifest.get("format") not in (None, BUNDLE_FORMAT):
        problems.append(f"format: unsupported bundle format {manifest.get('format')!r}, expected {BUNDLE_FORMAT}")
    students = manifest.get("students")
    if isinstance(students, dict):
        if not students:
            problems.append("students: the bundle holds no student")
        for name, student in students.items():
            _student_problems(student, f"students.{name}", problems)
    return problems


def _student_problems(student: Any, where: str, problems: list[str]) -> None:
    if not isinstance(student, dict):
        problems.append(f"{where}: must be an object")
        return
    _require(student, _STUDENT_KEYS, where, problems)
    if isinstance(student.get("calibration"), dict):
        _require(student["calibration"], _CALIBRATION_KEYS, f"{where}.calibration", problems)
    artifacts = student.get("artifacts")
    if not isinstance(artifacts, dict):
        return
    if "tflite_int8" not in artifacts:
        problems.append(f"{where}.artifacts: tflite_int8 is missing (every bundle ships it)")
    modalities = student.get("modalities") or []
    for kind, artifact in artifacts.items():
        at = f"{where}.artifacts.{kind}"
        if kind not in ARTIFACT_KINDS:
            problems.append(f"{at}: unknown artifact kind (known: {', '.join(ARTIFACT_KINDS)})")
        if not isinstance(artifact, dict):
            problems.append(f"{at}: must be an object")
            continue
        _require(artifact, _ARTIFACT_KEYS, at, problems)
        if artifact.get("format") not in FORMATS:
            problems.append(f"{at}.format: must be one of {sorted(FORMATS)}")
        if artifact.get("precision") not in PRECISIONS:
            problems.append(f"{at}.precision: must be one of {sorted(PRECISIONS)}")
        path = artifact.get("path")
        if isinstance(path, str) and (os.path.isabs(path) or ".." in Path(path).parts):
            problems.append(f"{at}.path: must be relative and inside the bundle")
        for side in ("inputs", "outputs"):
            for i, tensor in enumerate(artifact.get(side) or []):
                if isinstance(tensor, dict):
                    _require(tensor, _TENSOR_KEYS, f"{at}.{side}[{i}]", problems)
                    _quantization_problems(tensor, f"{at}.{side}[{i}]", problems)
                else:
                    problems.append(f"{at}.{side}[{i}]: must be an object")
        names = [t.get("name") for t in artifact.get("inputs") or [] if isinstance(t, dict)]
        if modalities and names and sorted(names) != sorted(modalities):
            problems.append(f"{at}.inputs: names {names} differ from the student's modalities {modalities}")
        if isinstance(artifact.get("accuracy"), dict):
            _require(artifact["accuracy"], _ACCURACY_KEYS, f"{at}.accuracy", problems)
        if kind == "tflite_int8":
            for side in ("inputs", "outputs"):
                for i, tensor in enumerate(artifact.get(side) or []):
                    if isinstance(tensor, dict) and tensor.get("dtype") != "int8":
                        problems.append(f"{at}.{side}[{i}].dtype: a full-int8 artifact must have int8 "
                                        f"{side}, not {tensor.get('dtype')}")


def _quantization_problems(tensor: dict, where: str, problems: list[str]) -> None:
    quant = tensor.get("quantization")
    if tensor.get("dtype") in ("int8", "uint8"):
        if not isinstance(quant, dict) or not {"scale", "zero_point"} <= set(quant):
            problems.append(f"{where}.quantization: an integer tensor needs scale and zero_point")
        elif not (isinstance(quant["scale"], (int, float)) and quant["scale"] > 0):
            problems.append(f"{where}.quantization.scale: must be a positive number")
    elif quant is not None and not isinstance(quant, dict):
        problems.append(f"{where}.quantization: must be null or an object")


def _require(obj: dict, keys: dict, where: str, problems: list[str]) -> None:
    for key, kind in keys.items():
        field = f"{where}.{key}" if where else key
        if key not in obj:
            problems.append(f"{field}: missing")
        elif not isinstance(obj[key], kind) or (kind is int and isinstance(obj[key], bool)):
            problems.append(f"{field}: wrong type {type(obj[key]).__name__}")


def read_manifest(bundle_dir: str | os.PathLike, *, check_schema: bool = True) -> dict:
    path = Path(bundle_dir) / MANIFEST_NAME
    if not path.is_file():
        raise EdgekdError("not a bundle: manifest.json is missing", file=bundle_dir,
                          fix="pass a folder written by `edgekd export`")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EdgekdError(f"manifest is not valid JSON: {exc}", file=path, fix="re-export the bundle") from None
    if check_schema:
        problems = manifest_problems(manifest)
        if problems:
            raise EdgekdError(f"manifest breaks the bundle schema ({len(problems)} problem(s)): "
                              + "; ".join(problems[:8]), file=path, field=problems[0].split(":")[0],
                              fix="re-export the bundle with `edgekd export`")
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

    def open(self, student: str, kind: str = "tflite_int8", *, threads: int | None = None,
             providers: Sequence[str] | None = None):
        """A loaded backend (``edgekd.device.runtime.backends.Backend``); refuses a modified file."""
        from edgekd.device.runtime.backends import open_artifact

        return open_artifact(self.path, self.artifact(student, kind), threads=threads, providers=providers)

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
