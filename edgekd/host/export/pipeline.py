"""``export_bundle``: checkpoints -> a verified multi-student deployment bundle for one target.

Per student (one checkpoint per modality set): calibration set from the train
split -> ONNX (checked, simplified, ORT parity with torch) -> TFLite fp32 /
fp16 / full-int8 (child process) -> ONNX QDQ int8 where the target runs ONNX
Runtime -> every artifact scored by its real interpreter on held-out windows
-> parity gate -> manifest entry. The bundle is built in a temporary folder
and renamed into place only when everything passed.

Students export side by side (``jobs``): the TFLite conversion, 75% of a student's export time, runs in
a child process, so one student's conversion overlaps another's; everything in this process (torch,
ORT, the interpreters) runs under one lock, one student at a time, as before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
from tqdm.auto import tqdm

from edgekd.device.errors import EdgekdError
from edgekd.device.io import atomic_directory, atomic_write_json, scratch_directory, sha256_file

if TYPE_CHECKING:
    from edgekd.host.checkpoint import Checkpoint
    from edgekd.host.models.base import BeamModel

log = logging.getLogger(__name__)
# Calibration windows a bundle ships (a sample of the set, for `bench`, `bundle check` and firmware_bench
# inputs); the image set in full was 67 of a 69 MB bundle.
BUNDLE_CALIBRATION_WINDOWS = 32

FUSION = "fusion"
FP32_TOLERANCE = 1e-3   # onnx2tf float32 vs ONNX float32, relative to max(1, |logit|)
# The file each artifact kind is shipped as, in the student's folder of the bundle.
ARTIFACT_FILES = {"onnx_fp32": "model_fp32.onnx", "onnx_int8_qdq": "model_int8_qdq.onnx",
                  "tflite_fp32": "model_fp32.tflite", "tflite_fp16": "model_fp16.tflite",
                  "tflite_int8": "model_int8.tflite"}


class ParityGateError(EdgekdError):
    """The parity gate refused the export (exit code 2 through the CLI)."""


@dataclasses.dataclass
class StudentSource:
    name: str
    checkpoint_path: Path
    checkpoint: Checkpoint
    model: BeamModel
    modalities: tuple[str, ...]


def student_name(modalities: Sequence[str]) -> str:
    """The student's key in a bundle: its modality, or 'fusion' for several."""
    return modalities[0] if len(modalities) == 1 else FUSION


def eval_positions(n: int, count: int | None) -> np.ndarray:
    """Evenly spread positions over the split (covers every drive, unlike the first ``count``)."""
    if count is None or count >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, count).round().astype(np.int64))


def export_bundle(checkpoints: Sequence[str | os.PathLike], target, data: str | os.PathLike,
                  out: str | os.PathLike, *, allow_degraded: bool = False, overwrite: bool = False,
                  calibration_size: int | None = None, eval_windows: int | None = None,
                  threads: int = 1, keep_work: bool = False, progress: bool = True,
                  explain: bool = False, jobs: int | None = None) -> dict:
    """Export ``checkpoints`` for ``target`` (name, alias, YAML path or profile) into bundle ``out``.

    ``eval_windows``: held-out windows the parity gate scores (None: every test window; the CLI and the demo
    default to that, so both give the same verdict). ``explain``: add the per-tensor int8-vs-float error
    report of every int8 TFLite file (``explain.explain_int8``) to the parity entry and the log. ``jobs``:
    students exported side by side (None: as many as students and CPUs allow; 1: one after another).

    Returns the manifest. Raises :class:`ParityGateError` when the gate fails
    (unless ``allow_degraded``) and :class:`EdgekdError` for every other failure;
    in both cases nothing is left at ``out``.
    """
    import torch

    from edgekd.device.targets import load_target
    from edgekd.host.data import load_dataset
    from edgekd.host.export.manifest import manifest_skeleton

    torch.set_num_threads(max(1, threads))
    profile = load_target(target)
    if not checkpoints:
        raise EdgekdError("no checkpoint given", fix="pass one checkpoint per student")
    students = _load_students(checkpoints, profile)
    modalities = sorted({m for s in students for m in s.modalities})
    train = load_dataset(data, "train", modalities=modalities)
    test = _held_out(data, modalities)
    for s in students:
        _check_fits(s, train)

    manifest = manifest_skeleton(profile.to_dict())
    failures: list[str] = []
    reports: dict[str, str] = {}
    with atomic_directory(out, overwrite=overwrite, what="bundle directory", marker="manifest.json") as bundle_dir, \
            scratch_directory("edgekd-export-") as scratch:
        def export_one(s: StudentSource):
            return _export_student(s, profile, train, test, bundle_dir, Path(scratch) / s.name,
                                   calibration_size=calibration_size, eval_windows=eval_windows,
                                   threads=threads, progress=progress, explain=explain)

        for s, (entry, report) in zip(students, _side_by_side(export_one, students, jobs), strict=True):
            manifest["students"][s.name] = entry
            failures += report.failures
            reports[s.name] = report.table()
            if keep_work:
                shutil.copytree(Path(scratch) / s.name, bundle_dir / s.name / "work", dirs_exist_ok=True)
        _gate_manifest(manifest, failures, reports, out, allow_degraded=allow_degraded)
        atomic_write_json(bundle_dir / "manifest.json", manifest)
    for name, table in reports.items():
        log.info("parity of %s:\n%s", name, table)
    return manifest


# Held by a student's export whenever it works in this process (torch's ONNX exporter and the
# interpreters are not meant to run concurrently); not while its converter child runs.
_IN_PROCESS = threading.Lock()


def _side_by_side(export_one, students: list[StudentSource], jobs: int | None) -> list:
    """``export_one`` per student, ``jobs`` at a time, results in student order; the first failure is raised
    once the running exports are done (those not started yet are cancelled)."""
    jobs = min(len(students), jobs or os.cpu_count() or 1)
    if jobs <= 1:
        return [export_one(s) for s in students]
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="edgekd-export")
    try:
        futures = [pool.submit(export_one, s) for s in students]
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _gate_manifest(manifest: dict, failures: list[str], reports: dict[str, str], out: str | os.PathLike, *,
                   allow_degraded: bool) -> None:
    """Refuse a failed parity gate (unless ``allow_degraded``: then mark it), and check our own manifest."""
    from edgekd.host.export.manifest import checked_manifest

    if failures and not allow_degraded:
        tables = "\n".join(f"[{name}]\n{table}" for name, table in reports.items())
        raise ParityGateError("parity gate failed:\n  - " + "\n  - ".join(failures) + "\n" + tables,
                              file=out, field="int8_max_top2_drop",
                              fix="retrain/recalibrate the student (larger --calibration-size), or pass "
                                  "--allow-degraded to write the bundle marked degraded")
    manifest["degraded"] = bool(failures)
    manifest["degraded_reasons"] = failures
    checked_manifest(manifest)  # our own writer broke the contract: never ship that


def _load_students(checkpoints: Sequence[str | os.PathLike], profile) -> list[StudentSource]:
    from edgekd.host.checkpoint import load_checkpoint

    students: list[StudentSource] = []
    for path in checkpoints:
        ckpt = load_checkpoint(path)
        if ckpt.model_name.endswith("_teacher"):   # a teacher is 24-32x the student: never the board's model
            raise EdgekdError(f"this is a teacher checkpoint (model '{ckpt.model_name}'), not a student",
                              file=path, field="model",
                              fix="export the distilled student (`edgekd distill ... --out student.pt`); "
                                  "teachers stay on the host")
        model = cast("BeamModel", ckpt.build())  # checked below: it declares input_modalities
        modalities = tuple(getattr(model, "input_modalities", ()))
        if not modalities:
            raise EdgekdError(f"model '{ckpt.model_name}' declares no input_modalities", file=path,
                              fix="export models built from edgekd.host.models (BeamModel)")
        name = student_name(modalities)
        if any(s.name == name for s in students):
            raise EdgekdError(f"two checkpoints are both the '{name}' student", file=path,
                              fix="pass one checkpoint per student (modality)")
        if name not in profile.students:
            raise EdgekdError(f"target '{profile.name}' does not deploy a '{name}' student", file=path,
                              field="students",
                              fix=f"this target deploys: {', '.join(profile.students)}; pick another target")
        students.append(StudentSource(name, Path(path), ckpt, model, modalities))
    return students


def _held_out(data, modalities):
    from edgekd.host.data import load_dataset

    for split in ("test", "val"):
        try:
            ds = load_dataset(data, split, modalities=modalities)
        except EdgekdError:
            continue
        if len(ds):
            if split != "test":
                log.warning("no test split: the parity gate scores the %s split", split)
            return ds
    raise EdgekdError("the dataset has no held-out windows (test or val split)", file=data, field="splits",
                      fix="create the dataset with a test split")


def _check_fits(s: StudentSource, ds) -> None:
    shapes = {m: tuple(x.shape[1:]) for m, x in zip(s.modalities, s.model.example_inputs(1))}
    for m, shape in shapes.items():
        if tuple(ds.shapes[m]) != shape:
            raise EdgekdError(f"model '{s.checkpoint.model_name}' takes {m} windows {list(shape)}, the dataset "
                              f"has {list(ds.shapes[m])}", file=s.checkpoint_path, field=f"input_shapes.{m}",
                              fix="export with the dataset the student was trained on")
    fingerprint = (s.checkpoint.data or {}).get("fingerprint")
    if fingerprint and fingerprint != ds.fingerprint:
        log.warning("%s was trained on another dataset (fingerprint %s..., this one %s...)",
                    s.checkpoint_path, fingerprint[:12], ds.fingerprint[:12])


class _Stages:
    """Times the export stages of one student and shows them on a progress bar."""

    def __init__(self, name: str, count: int, progress: bool) -> None:
        self.timings: dict[str, float] = {}
        self._bar = tqdm(total=count, desc=f"export {name}", unit="stage", leave=False, disable=not progress)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - start, 2)
        self._bar.set_postfix_str(name)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


@dataclasses.dataclass
class _OnnxResult:
    path: Path
    int8_rewrite: dict | None
    parity_torch_ort: float


def _export_student(s: StudentSource, profile, train, test, bundle_dir: Path, work: Path, *,
                    calibration_size, eval_windows, threads, progress=True, explain=False):
    work.mkdir(parents=True, exist_ok=True)
    sdir = bundle_dir / s.name
    sdir.mkdir(parents=True, exist_ok=True)
    wanted = set(profile.artifacts)
    stages = _Stages(s.name, 5 if "onnx_int8_qdq" in wanted else 4, progress)
    with _IN_PROCESS:
        with stages.stage("calibration"):  # train split only
            calibration, full_file, calibration_file = _calibrate(s, train, work, sdir, calibration_size)
        with stages.stage("onnx"):
            onnx = _export_onnx_stage(s, calibration, work)
    with stages.stage("tflite"):           # a child process: another student may work here meanwhile
        files = _convert_tflite_stage(s, onnx.path, work, full_file, wanted)
    with _IN_PROCESS:
        return _score_student(s, profile, train, test, bundle_dir, work, stages, calibration, calibration_file,
                              onnx, files, eval_windows=eval_windows, threads=threads, explain=explain)


def _score_student(s: StudentSource, profile, train, test, bundle_dir: Path, work: Path, stages: _Stages,
                   calibration, calibration_file: Path, onnx: _OnnxResult, files: dict[str, Path], *,
                   eval_windows, threads, explain):
    """QDQ, the artifacts in place, every artifact scored, the parity report and the manifest entry."""
    wanted = set(profile.artifacts)
    sdir = bundle_dir / s.name
    if "onnx_int8_qdq" in wanted:
        with stages.stage("qdq"):
            files["onnx_int8_qdq"] = _quantize_qdq_stage(profile, onnx.path, work, calibration.windows())
    shipped = _place_artifacts(files, wanted, sdir)
    with stages.stage("evaluate"):
        positions = eval_positions(len(test), eval_windows)
        batch = test.batch(positions)
        logits = _evaluate_artifacts(files, {m: batch[m] for m in s.modalities}, s.modalities, threads)
    if explain:
        from edgekd.host.export.explain import explain_int8

        with stages.stage("explain"):   # the calibration windows: what the converter's ranges came from
            explained = explain_int8(files["tflite_int8"], onnx.path, calibration.windows(), s.modalities)
    stages.close()
    report = _parity_stage(s, logits, batch["beams"], work, budget_points=profile.int8_max_top2_drop)
    artifacts = _artifact_entries(s, shipped, report, bundle_dir, steps=int(train.window + train.horizons - 1))
    entry = _student_entry(s, train, bundle_dir, calibration, calibration_file, artifacts)
    entry["int8_rewrite"] = onnx.int8_rewrite
    entry["reference_accuracy"] = {k: report.accuracies[k] for k in files if k not in shipped}
    sizes = {k: os.path.getsize(p) for k, p in files.items()}
    entry["parity"] = {**report.to_dict(), "torch_vs_onnx_max_abs": onnx.parity_torch_ort,
                       "eval_split": test.split, "eval_windows": int(len(positions)),
                       "int8_size_ratio_vs_fp32_tflite": round(sizes["tflite_fp32"] / sizes["tflite_int8"], 2)}
    if explain:
        entry["parity"]["explain"] = {"tflite_int8": explained}
    entry["export_seconds"] = stages.timings
    return entry, report


def _calibrate(s: StudentSource, train, work: Path, sdir: Path, calibration_size: int | None):
    """Stage 1: the calibration set, drawn from the train split by the student's recipe; the whole set goes
    to the converter (in ``work``), a sample of it to the bundle (the board only needs benchmark and check
    inputs; the manifest records the whole set by its indices' digest)."""
    from edgekd.host.export.calibration import draw_calibration_set, load_recipe

    recipe = load_recipe(s.name, size=calibration_size)
    calibration = draw_calibration_set(train, recipe, s.modalities)
    full_file = calibration.save(work / "calibration_full.npz")
    calibration_file = calibration.save(sdir / "calibration.npz", max_windows=BUNDLE_CALIBRATION_WINDOWS)
    return calibration, full_file, calibration_file


def _export_onnx_stage(s: StudentSource, calibration, work: Path) -> _OnnxResult:
    """Stage 2: torch -> ONNX, with the int8-friendly logits rewrite and the torch-vs-ORT parity check."""
    from edgekd.host.export.int8_rewrite import check_same_deployed, int8_friendly_logits
    from edgekd.host.export.onnx_export import DeployedLogits, export_onnx, ort_parity

    onnx_path = work / "model_fp32.onnx"
    # What every artifact computes: the logits shifted to max 0 and floored (onnx_export.DeployedLogits), from a
    # logits layer rewritten to quantise well (int8_rewrite; the same logits on the calibration windows, checked).
    rewritten, int8_rewrite = int8_friendly_logits(s.model, calibration.inputs, s.modalities)
    deployed = DeployedLogits(rewritten).eval()
    if int8_rewrite is not None:
        int8_rewrite["calibration_max_abs_change"] = check_same_deployed(
            DeployedLogits(s.model).eval(), deployed, calibration.inputs, s.modalities)
    export_onnx(deployed, onnx_path, input_names=s.modalities, example_inputs=s.model.example_inputs(1))
    parity = ort_parity(deployed, onnx_path, calibration.windows()[:16])
    return _OnnxResult(onnx_path, int8_rewrite, parity)


def _convert_tflite_stage(s: StudentSource, onnx_path: Path, work: Path, calibration_file: Path,
                          wanted: set[str]) -> dict[str, Path]:
    """Stage 3: ONNX -> TFLite (fp32 always: it checks onnx2tf against ONNX; fp16/int8 as the target wants).

    Returns artifact kind -> file in ``work`` (shipped or only scored as a reference).
    """
    from edgekd.host.export.tflite import convert_onnx_to_tflite, verify_int8_tflite

    precisions = ["fp32", "int8"] + (["fp16"] if "tflite_fp16" in wanted else [])
    tflite_files = convert_onnx_to_tflite(onnx_path, work / "tflite", input_names=s.modalities,
                                          calibration_npz=calibration_file, precisions=precisions)
    verify_int8_tflite(tflite_files["int8"])
    files = {"onnx_fp32": onnx_path, "tflite_fp32": tflite_files["fp32"], "tflite_int8": tflite_files["int8"]}
    if "fp16" in tflite_files:
        files["tflite_fp16"] = tflite_files["fp16"]
    return files


def _quantize_qdq_stage(profile, onnx_path: Path, work: Path, windows: list[dict[str, np.ndarray]]) -> Path:
    """Stage 4: ONNX QDQ int8 (symmetric activations where the target runs TensorRT)."""
    from edgekd.host.export.qdq import quantize_onnx_qdq

    tensorrt = "TensorrtExecutionProvider" in (profile.execution_providers or ())
    return quantize_onnx_qdq(onnx_path, work / "model_int8_qdq.onnx", windows, symmetric_activations=tensorrt)


def _place_artifacts(files: dict[str, Path], wanted: set[str], sdir: Path) -> dict[str, Path]:
    """What the target ships goes into the bundle; the other files are scored from scratch as references."""
    shipped = {}
    for kind, path in files.items():
        if kind in wanted:
            shipped[kind] = sdir / ARTIFACT_FILES[kind]
            shutil.copyfile(path, shipped[kind])
    return shipped


def _evaluate_artifacts(files: dict[str, Path], inputs: dict[str, np.ndarray], modalities: tuple[str, ...],
                        threads: int) -> dict[str, np.ndarray]:
    """Stage 5: every artifact (shipped or reference) run by its real interpreter on the held-out windows."""
    from edgekd.device.runtime.backends import Backend, OrtBackend, TFLiteBackend
    from edgekd.host.export.parity import predict

    logits = {}
    for kind, path in files.items():
        backend: Backend
        if kind.startswith("tflite"):
            backend = TFLiteBackend(path, name=kind, threads=threads, input_names=modalities,
                                    precision=kind.split("_")[1])
        else:
            backend = OrtBackend(path, name=kind, threads=threads, input_names=modalities,
                                 precision="int8" if "int8" in kind else "fp32")
        logits[kind] = predict(backend.run, inputs)
    return logits


def _parity_stage(s: StudentSource, logits: dict[str, np.ndarray], beams: np.ndarray, work: Path, *,
                  budget_points: float):
    """The float conversion check, then the parity gate (constant predictions, int8 top-2 drop)."""
    from edgekd.host.export.parity import parity_gate

    _check_float_conversion(logits, s, work)
    return parity_gate(s.name, logits, beams, budget_points=budget_points)


def _artifact_entries(s: StudentSource, shipped: dict[str, Path], report, bundle_dir: Path, *,
                      steps: int) -> dict[str, dict]:
    """The manifest entry of every shipped artifact: file, I/O, ops, sizes, accuracy, lean-graph notes."""
    from edgekd.host.export.graph import lean_graph_notes, onnx_ops, tflite_ops
    from edgekd.host.export.manifest import onnx_entry, relative, tflite_entry
    from edgekd.host.export.tflite_compact import tflite_size_breakdown

    artifacts = {}
    for kind, path in shipped.items():
        rel = relative(path, bundle_dir)
        precision = {"onnx_fp32": "fp32", "onnx_int8_qdq": "int8"}.get(kind) or kind.split("_")[1]
        if kind.startswith("tflite"):
            entry = tflite_entry(bundle_dir, rel, precision=precision, input_names=s.modalities,
                                 ops=tflite_ops(path))
            entry["size_breakdown"] = tflite_size_breakdown(path.read_bytes())
        else:
            entry = onnx_entry(bundle_dir, rel, precision=precision, ops=onnx_ops(path))
        entry["accuracy"] = report.accuracies[kind]
        entry["lean_graph_notes"] = lean_graph_notes(entry["ops"], steps=steps,
                                                     kind="tflite" if kind.startswith("tflite") else "onnx")
        artifacts[kind] = entry
    for note in artifacts["tflite_int8"]["lean_graph_notes"]:
        log.info("%s int8 graph: %s", s.name, note)
    return artifacts


def _student_entry(s: StudentSource, train, bundle_dir: Path, calibration, calibration_file: Path,
                   artifacts: dict[str, dict]) -> dict:
    """The student's manifest entry up to its artifacts (the caller adds rewrite, references, parity, timings)."""
    from edgekd.host.export.manifest import relative

    ckpt = s.checkpoint
    return {
        "model": ckpt.model_name,
        "model_kwargs": ckpt.model_kwargs,
        "modalities": list(s.modalities),
        "window": int(train.window), "horizons": int(train.horizons), "num_beams": int(train.num_beams),
        "input_shapes": {m: list(train.shapes[m]) for m in s.modalities},
        "preprocessing": {m: train.meta["modalities"][m].get("preprocessing", {}) for m in s.modalities},
        "checkpoint": {"file": s.checkpoint_path.name, "sha256": sha256_file(s.checkpoint_path),
                       "metrics": ckpt.metrics, "data_fingerprint": (ckpt.data or {}).get("fingerprint")},
        "calibration": {**calibration.record(relative(calibration_file, bundle_dir),
                                             shipped=len(calibration.sample_positions(BUNDLE_CALIBRATION_WINDOWS))),
                        "sha256": sha256_file(calibration_file)},
        "artifacts": artifacts,
    }


def _check_float_conversion(logits: dict, s: StudentSource, work: Path) -> None:
    """onnx2tf float32 must reproduce ONNX float32: a layout mistake shows up here, not on the board."""
    from edgekd.host.export.tflite import keep_log

    reference, converted = logits["onnx_fp32"], logits["tflite_fp32"]
    worst = float(np.max(np.abs(reference - converted)))
    allowed = FP32_TOLERANCE * max(1.0, float(np.max(np.abs(reference))))
    if worst > allowed:
        raise EdgekdError(f"the float32 TFLite of '{s.name}' differs from ONNX by {worst:.3g} (> {allowed:.3g}): "
                          "onnx2tf mis-converted the graph", file=keep_log(work / "tflite" / "convert.log"),
                          fix="report the model to its owner; an op's layout is converted wrongly")
