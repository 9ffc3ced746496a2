"""``edgekd bundle check``: a bundle's TFLite artifacts on the board's instruction set vs the host.

The artifacts the target uses run on the same raw (already quantised) input windows twice, through the same
runner script (``runner.py``): natively with the host's interpreter, and in the emulated board environment
(``env.py``: the board's python3.11, numpy and interpreter under qemu-user, the core pinned) on a copy of the
bundle as the board receives it. The raw outputs are compared: bit-identical, or within a stated tolerance
(int8: ``tolerance_lsb``; float: ``fp_rtol`` of the largest host output) with the best and the two best beams
the same on every window and horizon. The int8 default, 4 LSB, is set above what was measured, not assumed
away: XNNPACK's NEON and x86 int8 kernels round an intermediate value on a tie differently, and the recurrent
core carries it on (BENCHMARKS.md: the image student, up to 3 LSB in 0.45% of its logits, beams equal).
Each result is appended to the artifact's ``board_checks`` in ``manifest.json`` (atomic rewrite).

Emulation says nothing about latency (an emulated invoke is ~50-90x slower): only the outputs are checked.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import edgekd
from edgekd.device.bundle import MANIFEST_NAME, Bundle, open_bundle, read_manifest
from edgekd.device.errors import EdgekdError
from edgekd.device.io import atomic_write_json
from edgekd.device.runtime.backends import TFLiteBackend, open_artifact
from edgekd.device.targets import TargetProfile, load_target
from edgekd.host.boardcheck.env import BoardEnv, ensure_env
from edgekd.host.boardcheck.runner import PERTURB_ENV

RUNNER = Path(__file__).with_name("runner.py")
XNNPACK_LINE = re.compile(r"XNNPACK delegate", re.IGNORECASE)


@dataclasses.dataclass
class ArtifactCheck:
    """One artifact's board-vs-host comparison (the manifest's ``board_checks`` entry is :meth:`record`)."""
    student: str
    kind: str
    windows: int
    status: str                  # identical | within_tolerance | mismatch
    max_abs_diff: float          # raw output units: int8 LSB for an int8 output
    mismatched: int              # output values that differ
    values: int
    top1_agreement: float        # fraction of (window, horizon) whose best beam is the same
    top2_agreement: float        # ... whose two best beams are the same set
    board_xnnpack: bool
    host_xnnpack: bool
    board_invoke_s: float
    inputs: str = ""             # which windows were run

    def record(self, env: BoardEnv, target: str, tolerance: str) -> dict:
        return {"target": target, "arch": env.arch, "core": env.core.name, "qemu_cpu": env.core.qemu_cpu,
                "interpreter": env.interpreter, "numpy": env.numpy, "xnnpack": self.board_xnnpack,
                "host": f"{platform.machine()} ({'XNNPACK' if self.host_xnnpack else 'builtin kernels'})",
                "inputs": self.inputs, "windows": self.windows, "status": self.status,
                "max_abs_diff": self.max_abs_diff, "mismatched_values": self.mismatched, "values": self.values,
                "top1_agreement": self.top1_agreement, "top2_agreement": self.top2_agreement,
                "tolerance": tolerance, "checked": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "edgekd_version": edgekd.__version__}


@dataclasses.dataclass
class CheckReport:
    target: str
    env: BoardEnv
    checks: list[ArtifactCheck]
    skipped: list[tuple[str, str, str]]   # (student, kind, why)
    seconds: float

    @property
    def passed(self) -> bool:
        return all(c.status != "mismatch" for c in self.checks)


def check_bundle(bundle_dir: str | Path, target: str | TargetProfile, *, windows: int = 64,
                 data: str | Path | None = None, threads: int | None = None, tolerance_lsb: int = 4,
                 fp_rtol: float = 1e-5, cache: Path | None = None, write_manifest: bool = True) -> CheckReport:
    """Run the target's TFLite artifacts of ``bundle_dir`` under emulation and compare with the host.

    Inputs: ``windows`` held-out test windows of the dataset ``data`` (evenly spread, as the export's
    parity gate draws them), else the first ``windows`` of the bundle's recorded calibration windows.
    """
    start = time.perf_counter()
    profile = load_target(target)
    if profile.core is None:
        raise EdgekdError(f"target '{profile.name}' names no board core to emulate (cpu.arch "
                          f"{profile.cpu.arch})", field="core",
                          fix="check an ARM target (rpi5, rpi4, jetson), or add core: to its profile "
                              "(see targets/rpi5.yaml)")
    bundle = open_bundle(bundle_dir)  # schema + every sha256
    selected, skipped = select_artifacts(bundle, profile)
    env = ensure_env(profile.cpu.arch, profile.core, profile.cpu.cores, cache=cache)
    threads = threads or profile.threads
    with tempfile.TemporaryDirectory(prefix="edgekd-boardcheck-") as tmp:
        work = Path(tmp)
        board_bundle = work / "board" / "bundle"
        shutil.copytree(bundle.path, board_bundle)  # the bundle as the board receives it
        shutil.copy2(RUNNER, work / "board" / RUNNER.name)
        jobs = _prepare_inputs(bundle, selected, windows, data, work / "inputs")
        host_env = {k: v for k, v in os.environ.items() if k != PERTURB_ENV}  # the test hook is board-only
        host_log, _ = _run_side(jobs, bundle.path, work / "host", threads,
                                lambda job: [sys.executable, "-s", str(RUNNER), str(job)], host_env)
        board_log, info = _run_side(jobs, board_bundle, work / "board_out", threads,
                                    lambda job: env.argv(work / "board" / RUNNER.name, str(job), str(env.site)),
                                    env.environ())
        checks = [_compare(student, kind, work, tolerance_lsb, fp_rtol, XNNPACK_LINE.search(host_log) is not None,
                           XNNPACK_LINE.search(board_log) is not None, info["invoke_s"][f"{student}/{kind}"])
                  for student, kind in selected]
        for check, job in zip(checks, jobs):
            check.inputs = job["described"]
    report = CheckReport(profile.name, env, checks, skipped, time.perf_counter() - start)
    if write_manifest:
        tolerance = f"int8 <= {tolerance_lsb} LSB, float <= {fp_rtol:g} x max|host|, top-1 and top-2 beams equal"
        record_checks(bundle.path, report, tolerance=tolerance)
    return report


def select_artifacts(bundle: Bundle, profile: TargetProfile) -> tuple[list[tuple[str, str]],
                                                                        list[tuple[str, str, str]]]:
    """(student, kind) of every TFLite artifact the target uses; the others with why they are not checked."""
    selected, skipped = [], []
    for student, entry in bundle.students.items():
        for kind, artifact in entry["artifacts"].items():
            if not profile.wants(kind):
                skipped.append((student, kind, f"not used by {profile.name}"))
            elif artifact["format"] != "tflite":
                skipped.append((student, kind, "ONNX: the board environment holds only the TFLite interpreter"))
            else:
                selected.append((student, kind))
    if not selected:
        raise EdgekdError(f"the bundle has no TFLite artifact that {profile.name} uses", file=bundle.path,
                          field="students.*.artifacts", fix=f"export for {profile.name} with `edgekd export`")
    return selected, skipped


def student_windows(bundle: Bundle, student: str, windows: int, data: str | Path | None
                    ) -> tuple[dict[str, np.ndarray], str]:
    """(modality -> float32 ``[N, ...]``, a description) of the windows ``student``'s artifacts run on."""
    modalities = tuple(bundle.students[student]["modalities"])
    if data is None:
        calibration = bundle.calibration_inputs(student)
        count = min(windows, min(len(calibration[m]) for m in modalities))
        return {m: calibration[m][:count] for m in modalities}, f"calibration windows of the bundle (first {count})"
    from edgekd.host.data import load_dataset
    from edgekd.host.export.pipeline import eval_positions

    test = load_dataset(data, "test", modalities=modalities)
    positions = eval_positions(len(test), windows)
    batch = test.batch(positions)
    return ({m: np.asarray(batch[m], np.float32) for m in modalities},
            f"held-out test windows of {data} ({len(positions)}, evenly spread)")


def _prepare_inputs(bundle: Bundle, selected: list[tuple[str, str]], windows: int, data: str | Path | None,
                    folder: Path) -> list[dict]:
    """Per artifact, the raw input tensors of its windows, quantised as the board runtime does."""
    folder.mkdir(parents=True)
    jobs = []
    for student, kind in selected:
        backend = open_artifact(bundle.path, bundle.artifact(student, kind), threads=1)
        assert isinstance(backend, TFLiteBackend)  # select_artifacts keeps TFLite artifacts only
        inputs, described = student_windows(bundle, student, windows, data)
        count = len(next(iter(inputs.values())))
        raws = [backend.quantize_inputs({m: x[i:i + 1] for m, x in inputs.items()}) for i in range(count)]
        in_details, _ = backend.io_details()
        path = folder / f"{student}_{kind}.npz"
        arrays: dict[str, Any] = {f"in{j}": np.stack([r[j] for r in raws]) for j in range(len(in_details))}
        np.savez(path, **arrays)
        artifact = bundle.artifact(student, kind)
        jobs.append({"key": f"{student}/{kind}", "path": artifact["path"], "sha256": artifact["sha256"],
                     "inputs": str(path), "input_indices": [int(d["index"]) for d in in_details],
                     "file": f"{student}_{kind}.npz", "described": described})
    return jobs


def _run_side(jobs: list[dict], bundle_dir: Path, out: Path, threads: int, argv, environ: dict[str, str]
              ) -> tuple[str, dict]:
    """Run the runner over every job on one side; (its stderr, its JSON info line)."""
    out.mkdir(parents=True)
    job_file = out / "job.json"
    job_file.write_text(json.dumps({"threads": threads, "artifacts": [
        {"key": j["key"], "model": str(bundle_dir / j["path"]), "sha256": j["sha256"], "inputs": j["inputs"],
         "input_indices": j["input_indices"], "out": str(out / j["file"])} for j in jobs]}))
    proc = subprocess.run(argv(job_file), capture_output=True, text=True, env=environ, check=False)
    if proc.returncode != 0:
        side = "board (emulated)" if "QEMU_CPU" in environ else "host"
        tail = " | ".join(proc.stderr.strip().splitlines()[-4:])
        raise EdgekdError(f"the {side} run failed (exit {proc.returncode}): {tail}", field="runner",
                          fix="nothing was checked; see the error above")
    return proc.stderr, json.loads(proc.stdout.strip().splitlines()[-1])


def _compare(student: str, kind: str, work: Path, tolerance_lsb: int, fp_rtol: float, host_xnnpack: bool,
             board_xnnpack: bool, board_s: float) -> ArtifactCheck:
    name = f"{student}_{kind}.npz"
    with np.load(work / "host" / name) as h, np.load(work / "board_out" / name) as b:
        host, board = h["out0"], b["out0"]
    identical = host.shape == board.shape and host.dtype == board.dtype and np.array_equal(host, board)
    wide = np.float64 if host.dtype.kind == "f" else np.int64
    diff = np.abs(host.astype(wide) - board.astype(wide))
    top1, top2 = top_agreement(host, board)
    if host.dtype.kind == "f":
        close = float(diff.max()) <= fp_rtol * float(np.abs(host).max())
    else:
        close = float(diff.max()) <= tolerance_lsb
    same_beams = top1 == top2 == 1.0
    status = "identical" if identical else ("within_tolerance" if close and same_beams else "mismatch")
    return ArtifactCheck(student, kind, int(host.shape[0]), status, float(diff.max()), int((diff != 0).sum()),
                         int(diff.size), top1, top2, board_xnnpack, host_xnnpack, round(board_s, 3))


def top_agreement(host: np.ndarray, board: np.ndarray) -> tuple[float, float]:
    """Fractions of (window, horizon) rows with the same best beam, and the same set of two best beams."""
    h = host.reshape(-1, host.shape[-1]).astype(np.float64)
    b = board.reshape(-1, board.shape[-1]).astype(np.float64)
    # stable sort: ties break by beam index on both sides alike
    h2, b2 = np.argsort(-h, axis=1, kind="stable")[:, :2], np.argsort(-b, axis=1, kind="stable")[:, :2]
    top1 = float(np.mean(h2[:, 0] == b2[:, 0]))
    top2 = float(np.mean(np.all(np.sort(h2, axis=1) == np.sort(b2, axis=1), axis=1)))
    return top1, top2


def record_checks(bundle_dir: Path, report: CheckReport, *, tolerance: str) -> None:
    """Append each result to its artifact's ``board_checks`` (replacing this target's previous one)."""
    manifest = read_manifest(bundle_dir)
    for check in report.checks:
        artifact = manifest["students"][check.student]["artifacts"][check.kind]
        entries = [e for e in artifact.get("board_checks") or [] if e.get("target") != report.target]
        entries.append(check.record(report.env, report.target, tolerance))
        artifact["board_checks"] = entries
    atomic_write_json(Path(bundle_dir) / MANIFEST_NAME, manifest)


def format_report(report: CheckReport) -> str:
    """The table ``edgekd bundle check`` prints."""
    env = report.env
    lines = [f"target: {report.target}  board: {env.arch} {env.core.name} (QEMU_CPU={env.core.qemu_cpu})  "
             f"{env.interpreter}, numpy {env.numpy}  vs host {platform.machine()}",
             f"{'student':<8} {'artifact':<12} {'windows':>7} {'status':<16} {'max diff':>9} {'differ':>10} "
             f"{'top1 agree':>10} {'top2 agree':>10} {'XNNPACK b/h':>11}"]
    for c in report.checks:
        lines.append(f"{c.student:<8} {c.kind:<12} {c.windows:>7} {c.status:<16} {c.max_abs_diff:>9.4g} "
                     f"{c.mismatched:>4}/{c.values:<5} {c.top1_agreement:>10.4f} {c.top2_agreement:>10.4f} "
                     f"{'yes' if c.board_xnnpack else 'NO':>5}/{'yes' if c.host_xnnpack else 'NO':<5}")
    lines += [f"{s:<8} {k:<12} not checked: {why}" for s, k, why in report.skipped]
    verdict = "PASS" if report.passed else "FAIL: the board's outputs differ from the host's"
    lines.append(f"{verdict} ({report.seconds:.1f} s)")
    return "\n".join(lines)
