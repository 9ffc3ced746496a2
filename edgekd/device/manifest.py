"""The bundle manifest (``manifest.json``) as typed dataclasses: the one definition of its schema.

The writer (``edgekd.host.export.manifest``) fills these classes; the reader
(``edgekd.device.bundle``) validates through :meth:`Manifest.from_dict`. Every
problem is collected as ``"field.path: problem"``; unknown keys are problems too,
so a typo or a field from another tool never passes silently. DEVICE SIDE
(standard library only): boards validate bundles before they load a model.

Optional fields that a bundle does not hold are ``None`` and are left out by
:meth:`Manifest.to_dict` (``TensorSpec.quantization`` is the exception: an explicit
``null`` says "a float tensor"), so ``from_dict(d).to_dict() == d`` for every valid ``d``.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from edgekd.device.contracts import ARTIFACT_KINDS
from edgekd.device.errors import EdgekdError

MANIFEST_NAME = "manifest.json"
BUNDLE_FORMAT = "edgekd-bundle/1"
FORMATS: tuple[str, ...] = ("onnx", "tflite")
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
_KEEP_NULL = {"keep_null": True}  # field metadata: written as null rather than left out

M = TypeVar("M")


class _Entry:
    """``to_dict``: the JSON form (optional fields that are None left out)."""

    def to_dict(self) -> dict[str, Any]:
        return _unparse(self)


@dataclasses.dataclass
class Quantization(_Entry):
    scale: float
    zero_point: int


@dataclasses.dataclass
class TensorSpec(_Entry):
    """One input or output of an artifact, as its interpreter reports it."""
    name: str
    shape: list[int]
    dtype: str
    tensor: str | None = None             # the name inside the file (TFLite tensor name)
    layout: str | None = None             # axis letters, e.g. NTF (edgekd.host.export.manifest.LAYOUTS)
    quantization: Quantization | None = dataclasses.field(default=None, metadata=_KEEP_NULL)


@dataclasses.dataclass
class Accuracy(_Entry):
    """Held-out accuracy of an artifact (``edgekd.device.metrics.evaluate_predictions``, fractions)."""
    top1: list[float]
    top2: list[float]
    top5: list[float]
    top2_mean: float
    dba: float
    n: int
    top3: list[float] | None = None
    top1_mean: float | None = None
    top3_mean: float | None = None
    top5_mean: float | None = None
    dba_per_horizon: list[float] | None = None


@dataclasses.dataclass
class Artifact(_Entry):
    path: str                             # relative to the bundle folder
    sha256: str
    size: int
    format: str                           # one of FORMATS
    precision: str                        # one of PRECISIONS
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    ops: dict[str, int]
    accuracy: Accuracy
    opset: int | None = None              # ONNX artifacts
    size_breakdown: dict[str, int] | None = None
    lean_graph_notes: list[str] | None = None
    board_checks: list[dict[str, Any]] | None = None   # results of checks on an (emulated) board


@dataclasses.dataclass
class Calibration(_Entry):
    recipe: str
    split: str
    indices_sha256: str
    count: int
    file: str                             # relative to the bundle folder, like every artifact path
    sha256: str                           # required: every file a board may open is hashed
    seed: int | None = None
    size: int | None = None
    stratify: list[str] | None = None
    allocation: str | None = None
    shipped: int | None = None            # windows of the set kept in ``file`` (a sample; older bundles: all)


@dataclasses.dataclass
class Checkpoint(_Entry):
    sha256: str
    metrics: dict[str, Any]
    file: str | None = None               # the checkpoint's file name on the host (a record, never opened)
    data_fingerprint: str | None = None


@dataclasses.dataclass
class Student(_Entry):
    model: str
    modalities: list[str]
    window: int
    horizons: int
    num_beams: int
    input_shapes: dict[str, list[int]]
    preprocessing: dict[str, Any]
    checkpoint: Checkpoint
    calibration: Calibration
    artifacts: dict[str, Artifact]        # artifact kind (contracts.ARTIFACT_KINDS) -> artifact
    model_kwargs: dict[str, Any] | None = None
    int8_rewrite: dict[str, Any] | None = None
    reference_accuracy: dict[str, Accuracy] | None = None   # artifacts scored but not shipped
    parity: dict[str, Any] | None = None
    export_seconds: dict[str, float] | None = None


@dataclasses.dataclass
class Manifest(_Entry):
    format: str
    created: str
    edgekd_version: str
    versions: dict[str, str | None]
    target: dict[str, Any]                # the target profile as loaded (edgekd.device.targets)
    students: dict[str, Student]
    degraded: bool | None = None          # True: written with --allow-degraded past a failed parity gate
    degraded_reasons: list[str] | None = None

    @classmethod
    def from_dict(cls, data: Any, *, source: str | os.PathLike = "<manifest>") -> Manifest:
        """The typed manifest; raises :class:`EdgekdError` naming ``source``, the first bad field and the fix."""
        problems = manifest_problems(data)
        if problems:
            raise EdgekdError(f"manifest breaks the bundle schema ({len(problems)} problem(s)): "
                              + "; ".join(problems[:8]), file=source, field=problems[0].split(":")[0],
                              fix="re-export the bundle with `edgekd export`")
        return _parse(cls, data, "", [])


def manifest_problems(data: Any) -> list[str]:
    """Every schema violation of ``data`` as 'field: problem' (an empty list: valid)."""
    problems: list[str] = []
    if not isinstance(data, dict):
        return ["<top>: the manifest must be a JSON object"]
    manifest = _parse(Manifest, data, "", problems)
    if data.get("format") not in (None, BUNDLE_FORMAT):
        problems.append(f"format: unsupported bundle format {data.get('format')!r}, expected {BUNDLE_FORMAT}")
    if isinstance(manifest, Manifest) and isinstance(manifest.students, dict):
        if not manifest.students:
            problems.append("students: the bundle holds no student")
        for name, student in manifest.students.items():
            if isinstance(student, Student):
                _student_problems(student, f"students.{name}", problems)
    return problems


# ------------------------------------------------------------------ checks across fields


def _student_problems(student: Student, where: str, problems: list[str]) -> None:
    if isinstance(student.calibration, Calibration):
        _path_problem(student.calibration.file, f"{where}.calibration.file", problems)
        _sha256_problem(student.calibration.sha256, f"{where}.calibration.sha256", problems)
    if isinstance(student.checkpoint, Checkpoint) and isinstance(student.checkpoint.file, str) \
            and Path(student.checkpoint.file).name != student.checkpoint.file:
        problems.append(f"{where}.checkpoint.file: must be a bare file name (a record of the source checkpoint)")
    for name, value in (("window", student.window), ("horizons", student.horizons), ("num_beams", student.num_beams)):
        if isinstance(value, int) and value <= 0:
            problems.append(f"{where}.{name}: must be a positive integer")
    if not isinstance(student.artifacts, dict):
        return
    if "tflite_int8" not in student.artifacts:
        problems.append(f"{where}.artifacts: tflite_int8 is missing (every bundle ships it)")
    for kind, artifact in student.artifacts.items():
        at = f"{where}.artifacts.{kind}"
        if kind not in ARTIFACT_KINDS:
            problems.append(f"{at}: unknown artifact kind (known: {', '.join(ARTIFACT_KINDS)})")
        if isinstance(artifact, Artifact):
            _artifact_problems(artifact, kind, at, student.modalities, problems)


def _artifact_problems(artifact: Artifact, kind: str, at: str, modalities: Any, problems: list[str]) -> None:
    if artifact.format not in FORMATS:
        problems.append(f"{at}.format: must be one of {list(FORMATS)}")
    if artifact.precision not in PRECISIONS:
        problems.append(f"{at}.precision: must be one of {list(PRECISIONS)}")
    _path_problem(artifact.path, f"{at}.path", problems)
    _sha256_problem(artifact.sha256, f"{at}.sha256", problems)
    for side in ("inputs", "outputs"):
        for i, tensor in enumerate(getattr(artifact, side) or []):
            if not isinstance(tensor, TensorSpec):
                continue
            if tensor.dtype in ("int8", "uint8") and not isinstance(tensor.quantization, Quantization):
                problems.append(f"{at}.{side}[{i}].quantization: an integer tensor needs scale and zero_point")
            elif isinstance(tensor.quantization, Quantization) and not tensor.quantization.scale > 0:
                problems.append(f"{at}.{side}[{i}].quantization.scale: must be a positive number")
            if kind == "tflite_int8" and tensor.dtype != "int8":
                problems.append(f"{at}.{side}[{i}].dtype: a full-int8 artifact must have int8 {side}, "
                                f"not {tensor.dtype}")
    names = [t.name for t in artifact.inputs or [] if isinstance(t, TensorSpec)]
    if isinstance(modalities, list) and modalities and names and sorted(names) != sorted(modalities):
        problems.append(f"{at}.inputs: names {names} differ from the student's modalities {modalities}")


def _path_problem(path: Any, at: str, problems: list[str]) -> None:
    if isinstance(path, str) and (not path or os.path.isabs(path) or ".." in Path(path).parts or "\\" in path):
        problems.append(f"{at}: must be relative and inside the bundle, got {path!r}")


def _sha256_problem(digest: Any, at: str, problems: list[str]) -> None:
    if isinstance(digest, str) and not (len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
        problems.append(f"{at}: must be 64 lowercase hex digits")


# ------------------------------------------------------------------ dict <-> dataclass


def _parse(cls: type[M], data: Any, where: str, problems: list[str]) -> M:
    """``cls`` built from ``data``, appending every problem; fields that are wrong stay as given."""
    if not isinstance(data, dict):
        problems.append(f"{where or '<top>'}: must be an object")
        return data
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in sorted(set(data) - set(fields)):
        problems.append(f"{_join(where, key)}: unknown key (allowed: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, field in fields.items():
        at = _join(where, name)
        if name in data:
            values[name] = _value(hints[name], data[name], at, problems)
        elif field.default is dataclasses.MISSING:
            problems.append(f"{at}: missing")
            values[name] = None
    return cls(**values)


def _value(tp: Any, value: Any, at: str, problems: list[str]) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _parse(tp, value, at, problems) if isinstance(value, dict) else _wrong(value, at, problems)
    if origin is list:
        if not isinstance(value, list):
            return _wrong(value, at, problems)
        return [_value(args[0], v, f"{at}[{i}]", problems) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            return _wrong(value, at, problems)
        return {k: _value(args[1], v, _join(at, k), problems) for k, v in value.items()}
    if tp is Any:
        return value
    allowed: tuple[type, ...] = (int, float) if tp is float else (tp,)
    if not isinstance(value, allowed) or (tp is not bool and isinstance(value, bool)):
        return _wrong(value, at, problems)
    return value


def _wrong(value: Any, at: str, problems: list[str]) -> Any:
    problems.append(f"{at}: wrong type {type(value).__name__}")
    return value


def _unparse(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _unparse(getattr(value, f.name)) for f in dataclasses.fields(value)
                if getattr(value, f.name) is not None or f.metadata.get("keep_null")}
    if isinstance(value, dict):
        return {k: _unparse(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unparse(v) for v in value]
    return value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
