"""``edgekd bench --compare``: every format of every student, and its teacher, in one interleaved run.

For each student of a bundle the comparison loads, in ONE process:

- the teacher in PyTorch fp32 (the model a user would otherwise deploy),
- the student in PyTorch fp32 (its checkpoint, found from the manifest or ``--checkpoints``),
- the bundle's ONNX fp32, ONNX QDQ int8, TFLite fp32 (fp16) and TFLite int8 artifacts,

and times them INTERLEAVED: each round runs every format for a short block of
back-to-back calls on held-out test windows, in an order that rotates per
round, so slow drift (thermal throttling, frequency scaling, a neighbour's
load) hits all formats equally instead of whichever ran last. Blocks, not single
calls: the first call after another format ran finds the caches full of that
format's code and data (measured: +35 us on a ~20 us TFLite int8 LiDAR call
after a PyTorch call), a cost of benchmarking six runtimes in one process, not
of the format; a deployment runs one model back to back. That first call per
block is still timed and reported apart (``latency_after_switch``).

Each format is timed as a deployment runs it, end to end (float32 window
already in the model's layout in, float32 logits out): int8 TFLite includes
quantising the input and dequantising the output; buffers are allocated and
tensor indices, scales and names are looked up once at load
(``Backend.runner``), never per call; PyTorch runs under ``inference_mode``.
All formats, PyTorch included, run with the same thread count (the target's).

The first pass over the evaluation windows also yields the predictions that
give top-2 accuracy (mean over horizons) on the held-out test split.
Energy per inference comes from firmware_bench's meters, one short block per
format (a meter cannot split an interleaved loop); with no readable meter it is
the target's power model, labelled ``estimated`` everywhere.

A format that is absent from the bundle is a row with status ``missing``, one
that fails to load or run is ``error: ...``; nothing is dropped silently.
Host side: PyTorch is imported lazily, only here.
"""

from __future__ import annotations

import array
import csv
import dataclasses
import datetime as dt
import gc
import io
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekd import __version__
from edgekd.device.errors import EdgekdError
from edgekd.device.io import atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_file

log = logging.getLogger(__name__)

SCHEMA = "edgekd-compare/1"
TEACHER = "teacher_torch_fp32"
# Row order in every output; tflite_fp16 is listed only when the bundle ships it.
FORMATS: dict[str, str] = {
    TEACHER: "PyTorch fp32 (teacher)",
    "torch_fp32": "PyTorch fp32",
    "onnx_fp32": "ONNX Runtime fp32",
    "onnx_int8_qdq": "ONNX Runtime QDQ int8",
    "tflite_fp32": "TFLite fp32",
    "tflite_fp16": "TFLite fp16",
    "tflite_int8": "TFLite int8",
}
OPTIONAL_FORMATS = ("tflite_fp16",)
ARTIFACT_FORMATS = ("onnx_fp32", "onnx_int8_qdq", "tflite_fp32", "tflite_fp16", "tflite_int8")
# Acceptance of the deployed student against its teacher (issue 7).
MIN_SPEEDUP = 10.0
MAX_TOP2_DROP_POINTS = 3.0

TIMING = ("end to end per call (float32 window in, float32 logits out; int8 quantise + invoke + dequantise), "
          "steady state: blocks of back-to-back calls per format, formats interleaved round-robin per round")

JSON_NAME, CSV_NAME, MD_NAME, PNG_NAME = "compare.json", "compare.csv", "compare.md", "compare_latency_cdf.png"

Runner = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclasses.dataclass
class CompareSettings:
    """What one comparison does (CLI flags resolved against the target profile)."""

    runs: int = 300                  # timed runs per format (at least one pass over the eval windows)
    warmup: int = 10                 # untimed interleaved rounds first
    block: int = 10                  # back-to-back timed calls per format per round (after one switch call)
    eval_windows: int | None = 300   # held-out test windows (evenly spread); None = the whole split
    threads: int | None = None       # every format; default: target profile's, capped at usable CPUs
    providers: Sequence[str] | None = None
    power_meter: str | None = None   # default: the target profile's meter, else auto
    power_model: Any = None          # firmware_bench.power.PowerModel; default: the target profile's
    energy_seconds: float = 1.0      # per format; 0 skips energy
    target: str | None = None        # profile name/path overriding the bundle's recorded target

    def __post_init__(self) -> None:
        checks = [("runs", self.runs >= 1, "e.g. --runs 300"), ("warmup", self.warmup >= 0, "e.g. --warmup 10"),
                  ("block", self.block >= 1, "e.g. --block 10"),
                  ("energy-seconds", self.energy_seconds >= 0, "0 skips energy"),
                  ("threads", self.threads is None or self.threads >= 1, "e.g. --threads 1"),
                  ("eval-windows", self.eval_windows is None or self.eval_windows >= 1, "e.g. --eval-windows 300")]
        for name, ok, fix in checks:
            if not ok:
                raise EdgekdError(f"invalid value for --{name}", field=f"--{name}", fix=fix)


@dataclasses.dataclass
class Candidate:
    """One row: a format of one student, its runner while loaded, and what was measured."""

    student: str
    key: str
    status: str = "ok"
    source: str | None = None
    size_bytes: int | None = None
    size_kind: str | None = None     # "file" or "weights" (PyTorch: parameter + buffer bytes)
    run: Runner | None = None
    latencies_ns: array.array = dataclasses.field(default_factory=lambda: array.array("q"))  # steady state
    switch_ns: array.array = dataclasses.field(default_factory=lambda: array.array("q"))     # first after a switch
    outputs: list = dataclasses.field(default_factory=list)
    backend: Any = None              # artifact formats: the runtime Backend behind ``run`` (for the phase split)
    phases: dict[str, Any] | None = None
    energy: dict[str, Any] = dataclasses.field(default_factory=dict)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def label(self) -> str:
        return FORMATS[self.key]

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.run is not None

    def fail(self, exc: BaseException) -> None:
        text = exc.what if isinstance(exc, EdgekdError) else f"{type(exc).__name__}: {exc}"
        self.status = "error: " + " ".join(str(text).split())[:200]
        self.run = None


# ----------------------------------------------------------------------------- finding checkpoints


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


def find_teacher(student_ckpt: Path | None, modalities: Sequence[str],
                 given: Sequence[Path]) -> tuple[Path | None, str]:
    """The teacher: one of ``given`` with the student's modalities, else the one the student was distilled from."""
    for path in given:
        if _checkpoint_modalities(path) == list(modalities):
            return path, ""
    if student_ckpt is not None:
        from edgekd.host.checkpoint import load_checkpoint

        record = (load_checkpoint(student_ckpt).config or {}).get("teacher") or {}
        path = Path(record["path"]) if record.get("path") else None
        if path is not None and path.is_file():
            if _sha_matches(path, record.get("sha256")):
                return path, ""
            return None, f"teacher {path} changed since distillation (sha256); pass it with --teacher"
    return None, f"no teacher for {'+'.join(modalities)}; pass it with --teacher"


# ----------------------------------------------------------------------------- runners


def torch_runner(path: Path, modalities: Sequence[str]) -> tuple[Runner, int, dict[str, Any]]:
    """A batch-1 PyTorch fp32 runner (inference mode) and its weights' size in bytes."""
    import torch

    from edgekd.host.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    model = ckpt.build().float().eval()
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


# ----------------------------------------------------------------------------- timing


def rotation(i: int, n: int) -> list[int]:
    """Order of the ``n`` formats in round ``i``: a rotation, so each format takes each slot equally often."""
    return [(i + k) % n for k in range(n)]


def interleaved_loop(candidates: Sequence[Candidate], windows: Sequence[dict[str, np.ndarray]], *, runs: int,
                     warmup: int, block: int = 10, clock: Callable[[], int] = time.perf_counter_ns) -> int:
    """Warm up, then time every live candidate in short blocks of back-to-back calls, rotating the order per round.

    A round gives each format one block: first a *switch* call (the first one
    after another format ran: caches and branch predictors still hold that
    format's code and data; timed into ``switch_ns``, reported apart), then up to
    ``block`` steady-state calls timed into ``latencies_ns``: a deployment runs
    one model back to back, as TFLite's ``benchmark_model`` and MLPerf
    single-stream time it. Rounds are short (milliseconds), so drift still hits
    every format alike. Rounds go on until each format has ``runs`` steady
    timings and has seen every window once; each call takes the next window in
    order, and the outputs of the first pass over ``windows`` are kept for
    accuracy. A candidate that raises is marked ``error`` and leaves the loop;
    the others go on. Returns the rounds run. GC is paused during the loop
    (a collection pause belongs to no format).
    """
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    live = [c for c in candidates if c.ok]
    n = len(windows)
    for i in range(warmup):
        for k in rotation(i, len(live)):
            _call(live[k], windows[i % n], clock, timed=None)
    calls = timed = rounds = 0
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        while timed < runs or calls < n:
            steady = min(block, max(runs - timed, n - calls - 1, 1))
            for k in rotation(rounds, len(live)):
                for j in range(steady + 1):
                    index = calls + j
                    sink = live[k].switch_ns if j == 0 else live[k].latencies_ns
                    out = _call(live[k], windows[index % n], clock, timed=sink)
                    if out is not None and index < n:
                        live[k].outputs.append(np.array(out, copy=True))  # runners may reuse their buffer
            calls, timed, rounds = calls + steady + 1, timed + steady, rounds + 1
    finally:
        if was_enabled:
            gc.enable()
    return rounds


def _call(cand: Candidate, window: dict[str, np.ndarray], clock: Callable[[], int], *,
          timed: array.array | None) -> np.ndarray | None:
    if not cand.ok:
        return None
    run = cand.run
    try:
        t0 = clock()
        out = run(window)
        t1 = clock()
    except Exception as exc:
        log.warning("%s/%s failed while running: %s", cand.student, cand.key, exc)
        cand.fail(exc)
        return None
    if timed is not None:
        timed.append(t1 - t0)
    return out


PHASE_RUNS = 500


def phase_split(candidates: Sequence[Candidate], windows: Sequence[dict[str, np.ndarray]], *, runs: int) -> None:
    """Where an artifact's call goes: p50 of input quantisation, interpreter invoke, output dequantisation.

    A separate back-to-back pass (firmware_bench's timed loop over the
    backend's phase methods) after the interleaved one, so its three extra
    clock reads never touch the headline figures. A failure loses the split,
    not the row.
    """
    from firmware_bench.latency import StopRule, timed_loop

    for cand in candidates:
        if not cand.ok or cand.backend is None:
            continue
        try:
            timings = timed_loop(cand.backend, windows, StopRule(runs=runs))
        except Exception as exc:  # diagnostics must not sink the comparison
            log.warning("%s/%s phase split failed: %s", cand.student, cand.key, exc)
            continue
        summary = timings.summary()
        cand.phases = {"runs": timings.runs, **{f"{phase}_p50_ms": summary[phase]["p50_ms"]
                                                for phase in ("quantize", "invoke", "dequantize", "end_to_end")}}


# ----------------------------------------------------------------------------- energy


def energy_blocks(candidates: Sequence[Candidate], windows: Sequence[dict[str, np.ndarray]], reader: Any,
                  seconds: float) -> None:
    """One metered block per format (round-robin order): per inference = block joules / block runs."""
    from firmware_bench.harness import UNAVAILABLE

    for cand in candidates:
        if not cand.ok:
            cand.energy = {"method": None, "per_inference_mj": None}
            continue
        if seconds <= 0:
            cand.energy = {"method": "not measured (--energy-seconds 0)", "per_inference_mj": None}
            continue
        if reader is None:
            cand.energy = {"method": UNAVAILABLE, "per_inference_mj": None,
                           "note": "no readable power meter and no power model"}
            continue
        runs, t_start = 0, time.perf_counter()
        try:
            reader.start()
            while runs == 0 or time.perf_counter() - t_start < seconds:
                cand.run(windows[runs % len(windows)])
                runs += 1
            wall = time.perf_counter() - t_start
            joules = reader.stop()
        except Exception as exc:
            cand.energy = {"method": UNAVAILABLE, "per_inference_mj": None, "error": f"{type(exc).__name__}: {exc}"}
            continue
        window = reader.window_s or wall
        # mean power over the meter's window times the loop's own duration: the runs' energy
        cand.energy = {"method": reader.method, "meter": reader.meter, "scope": reader.scope,
                       "per_inference_mj": joules / window * wall / runs * 1e3, "mean_power_w": joules / window,
                       "runs": runs, "seconds": wall, "notes": list(reader.notes)}


def energy_text(energy: dict[str, Any]) -> str:
    """``0.123 mJ (estimated)``: never a bare number."""
    if not energy or energy.get("method") is None:
        return "-"
    if energy.get("per_inference_mj") is None:
        return f"n/a ({energy['method']})"
    return f"{energy['per_inference_mj']:.3f} mJ ({energy['method']})"


# ----------------------------------------------------------------------------- the comparison


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def resolve_settings(settings: CompareSettings, target: dict) -> tuple[CompareSettings, dict]:
    """Threads, providers, meter and power model from the target profile unless given."""
    from firmware_bench.harness import _target_power_model

    if settings.target:
        from edgekd.device.targets import load_target

        target = load_target(settings.target).to_dict()
    threads = settings.threads or min(int(target.get("threads") or 1), _usable_cpus())
    meter = settings.power_meter or target.get("power_meter") or "auto"
    if meter == "csv":  # the profile can say csv but only the command line knows the file
        meter = "auto"
    resolved = dataclasses.replace(
        settings, threads=threads, power_meter=meter,
        providers=settings.providers or target.get("execution_providers") or None,
        power_model=settings.power_model or _target_power_model(target))
    return resolved, target


def eval_windows(data: Path, modalities: Sequence[str], count: int | None) -> tuple[list[dict], np.ndarray, Any]:
    """Batch-1 held-out test windows (evenly spread over the split) and their labels ``[N, 4]``."""
    from edgekd.host.data import load_dataset
    from edgekd.host.export.pipeline import eval_positions

    ds = load_dataset(data, "test", modalities=list(modalities))
    if len(ds) == 0:
        raise EdgekdError("the dataset's test split is empty", file=data, field="splits",
                          fix="compare on a dataset with held-out test windows")
    batch = ds.batch(eval_positions(len(ds), count))
    arrays = {m: np.ascontiguousarray(batch[m], dtype=np.float32) for m in modalities}
    n = len(batch["beams"])
    windows = [{m: a[i:i + 1] for m, a in arrays.items()} for i in range(n)]
    return windows, np.asarray(batch["beams"]), ds


def compare_bundle(bundle: str | os.PathLike, data: str | os.PathLike, *, checkpoints: Sequence[str | os.PathLike] = (),
                   teachers: Sequence[str | os.PathLike] = (), student: str | None = None,
                   settings: CompareSettings | None = None, out: str | os.PathLike | None = None,
                   meter_options: Any = None) -> dict[str, Any]:
    """Compare every format of every student (and its teacher) of ``bundle`` on ``data``'s test split.

    Returns the report (rows in ``report["rows"]``); with ``out`` also writes
    compare.json / .csv / .md and the latency CDF PNG.
    """
    import torch

    from edgekd.device.bundle import open_bundle
    from firmware_bench.harness import host_info
    from firmware_bench.power import MeterOptions, choose_reader

    bundle, data = Path(bundle), Path(data)
    # Schema now; each artifact's sha256 when it is loaded, so a modified file is an error row, not a crash.
    manifest = open_bundle(bundle, verify=False).manifest
    settings, target = resolve_settings(settings or CompareSettings(), manifest.get("target") or {})
    names = [student] if student else list(manifest["students"])
    for name in names:
        if name not in manifest["students"]:
            raise EdgekdError(f"bundle has no student '{name}'", file=bundle / "manifest.json", field="students",
                              fix=f"students: {', '.join(manifest['students'])}")
    given = [Path(p) for p in checkpoints]
    given_teachers = [Path(p) for p in teachers]
    for path in [*given, *given_teachers]:
        if not path.is_file():
            raise EdgekdError("checkpoint not found", file=path, field="--checkpoints/--teacher",
                              fix="check the path")
    torch.set_num_threads(settings.threads)  # matched to the interpreters' threads

    options = dataclasses.replace(meter_options or MeterOptions(), power_model=settings.power_model)
    reader, skipped = choose_reader(settings.power_meter, options)

    load_before = _load_average()
    rows: list[dict[str, Any]] = []
    latencies: dict[str, dict[str, list[float]]] = {}
    notes: list[str] = []
    for name in names:
        entry = manifest["students"][name]
        windows, beams, ds = eval_windows(data, entry["modalities"], settings.eval_windows)
        recorded = (entry.get("checkpoint") or {}).get("data_fingerprint")
        if recorded and recorded != ds.fingerprint:
            notes.append(f"{name}: the student was trained on another dataset than {data} (fingerprint differs)")
        ckpt, ckpt_why = find_student_checkpoint(bundle, name, entry, given)
        teacher, teacher_why = find_teacher(ckpt, entry["modalities"], given_teachers)
        cands = load_candidates(bundle, name, entry, ckpt, ckpt_why, teacher, teacher_why, settings)
        log.info("%s: timing %d formats interleaved over %d windows", name, sum(c.ok for c in cands), len(windows))
        interleaved_loop(cands, windows, runs=settings.runs, warmup=settings.warmup, block=settings.block)
        phase_split(cands, windows, runs=min(settings.runs, PHASE_RUNS))
        energy_blocks(cands, windows, reader, settings.energy_seconds)
        rows += summarise(cands, beams)
        latencies[name] = {c.key: [v / 1e6 for v in c.latencies_ns] for c in cands if c.ok and len(c.latencies_ns)}
        del cands  # free the interpreters before the next student

    report = {
        "schema": SCHEMA,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "edgekd_version": __version__,
        "host": host_info(),
        # other processes on the CPUs show up as a heavy latency tail: say how busy the machine was
        "load_average_1m": {"before": load_before, "after": _load_average()},
        "bundle": str(bundle),
        "data": str(data),
        "target": target.get("name"),
        "threads": settings.threads,
        "torch_threads": torch.get_num_threads(),
        "runs": settings.runs, "warmup": settings.warmup, "eval_windows": settings.eval_windows,
        "block": settings.block,
        "timing": TIMING,
        "energy_meter": {"requested": settings.power_meter,
                         "method": reader.method if reader is not None else "unavailable",
                         "meter": reader.meter if reader is not None else None,
                         "scope": reader.scope if reader is not None else None,
                         "skipped": skipped, "seconds_per_format": settings.energy_seconds},
        "rows": rows,
        "acceptance": acceptance(rows),
        "notes": notes,
        "latencies_ms": latencies,
    }
    if out is not None:
        write_compare(report, out)
    return report


def summarise(cands: Sequence[Candidate], beams: np.ndarray) -> list[dict[str, Any]]:
    """Rows with accuracy, latency statistics and the ratios against the teacher."""
    from edgekd.device.metrics import evaluate_predictions
    from firmware_bench.latency import latency_stats

    rows = []
    for c in cands:
        row: dict[str, Any] = {"student": c.student, "format": c.key, "label": c.label, "status": c.status,
                               "source": c.source, "size_bytes": c.size_bytes, "size_kind": c.size_kind,
                               "info": c.info, "top2_mean": None, "top2": None, "accuracy_n": None,
                               "latency": None, "latency_after_switch": None, "fps": None, "energy": c.energy,
                               "speedup_vs_teacher_p50": None, "speedup_vs_teacher_p50_after_switch": None,
                               "top2_vs_teacher_points": None}
        if c.ok and len(c.outputs) == len(beams):
            logits = np.concatenate(c.outputs).reshape(len(beams), *c.outputs[0].shape[1:])
            acc = evaluate_predictions(logits, beams, ks=(1, 2))
            row.update(top2_mean=acc["top2_mean"], top2=acc["top2"], top1_mean=acc["top1_mean"], accuracy_n=acc["n"])
        if c.ok and len(c.latencies_ns):
            stats = latency_stats(c.latencies_ns)
            row["latency"] = stats
            row["fps"] = 1e3 / stats["mean_ms"] if stats["mean_ms"] > 0 else None
            row["runs"] = stats["n"]
        if c.ok and len(c.switch_ns):
            row["latency_after_switch"] = latency_stats(c.switch_ns)
        row["phases"] = c.phases
        rows.append(row)
    teacher = next((r for r in rows if r["format"] == TEACHER and r["latency"]), None)
    if teacher is not None:
        for r in rows:
            if r["latency"]:
                r["speedup_vs_teacher_p50"] = teacher["latency"]["p50_ms"] / r["latency"]["p50_ms"]
            if r["latency_after_switch"] and teacher["latency_after_switch"]:
                r["speedup_vs_teacher_p50_after_switch"] = (teacher["latency_after_switch"]["p50_ms"]
                                                            / r["latency_after_switch"]["p50_ms"])
            if r["top2_mean"] is not None and teacher["top2_mean"] is not None:
                r["top2_vs_teacher_points"] = 100.0 * (r["top2_mean"] - teacher["top2_mean"])
    return rows


def acceptance(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per student: is TFLite int8 at least 10x faster (p50) than the PyTorch teacher, top-2 within 3 points?"""
    result = {}
    for r in rows:
        if r["format"] != "tflite_int8":
            continue
        speedup, delta = r["speedup_vs_teacher_p50"], r["top2_vs_teacher_points"]
        if speedup is None or delta is None:
            result[r["student"]] = {"passed": None, "reason": "teacher or int8 student not measured"}
            continue
        result[r["student"]] = {"speedup_p50": speedup, "top2_vs_teacher_points": delta,
                                "passed": bool(speedup >= MIN_SPEEDUP and delta >= -MAX_TOP2_DROP_POINTS),
                                "rule": f"p50 speed-up >= {MIN_SPEEDUP:g}x and top-2 drop "
                                        f"<= {MAX_TOP2_DROP_POINTS:g} points"}
    return result


# ----------------------------------------------------------------------------- outputs

MD_COLUMNS = ("Student", "Format", "Status", "Size (KiB)", "Top-2 (%)", "p50 (ms)", "p90 (ms)", "FPS",
              "Energy / inference", "p50 vs teacher")
CSV_COLUMNS = ("student", "format", "label", "status", "size_bytes", "size_kind", "top2_mean", "top2_t0", "top2_t1",
               "top2_t2", "top2_t3", "accuracy_n", "runs", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms",
               "max_ms", "fps", "p50_after_switch_ms", "energy_method", "energy_per_inference_mj", "energy_scope",
               "speedup_vs_teacher_p50", "top2_vs_teacher_points", "source")


def _num(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def to_markdown(report: dict[str, Any]) -> str:
    load = report.get("load_average_1m") or {}
    busy = (f" Load average (1 min) {load['before']:.1f} before, {load['after']:.1f} after on "
            f"{report['host'].get('cpus_usable') or report['host'].get('cpu_count')} CPUs."
            if load.get("before") is not None and load.get("after") is not None else "")
    lines = [f"# Format comparison: {report['bundle']} (target {report.get('target') or '-'})", "",
             f"Held-out test windows of `{report['data']}`; {report['threads']} thread(s) for every format; "
             f"{report['timing']}. Energy: {report['energy_meter']['method']}"
             + (f" ({report['energy_meter']['scope']})" if report['energy_meter']['scope'] else "") + "." + busy, "",
             "| " + " | ".join(MD_COLUMNS) + " |", "|" + "---|" * len(MD_COLUMNS)]
    for r in report["rows"]:
        lat = r["latency"] or {}
        size = None if r["size_bytes"] is None else r["size_bytes"] / 1024
        speedup = r["speedup_vs_teacher_p50"]
        size_text = _num(size, ".1f") + (" (weights)" if r["size_kind"] == "weights" else "")
        cells = (r["student"], r["label"], r["status"].replace("|", "/"), size_text,
                 _num(None if r["top2_mean"] is None else 100 * r["top2_mean"], ".1f"),
                 _num(lat.get("p50_ms"), ".3f"), _num(lat.get("p90_ms"), ".3f"), _num(r["fps"], ".0f"),
                 energy_text(r["energy"]), "-" if speedup is None else f"{speedup:.1f}x")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += detail_lines(report["rows"])
    for name, verdict in report["acceptance"].items():
        if verdict.get("passed") is None:
            lines.append(f"- {name}: acceptance not evaluated ({verdict['reason']})")
        else:
            lines.append(f"- {name}: TFLite int8 is {verdict['speedup_p50']:.1f}x faster (p50) than the PyTorch fp32 "
                         f"teacher, top-2 {verdict['top2_vs_teacher_points']:+.1f} points: "
                         f"{'PASS' if verdict['passed'] else 'FAIL'} ({verdict['rule']})")
    if report["energy_meter"]["method"] == "estimated":
        lines.append("- energy is ESTIMATED from the target's power model (no readable meter), not measured")
    for note in report["notes"]:
        lines.append(f"- {note}")
    return "\n".join(lines) + "\n"


def detail_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Per student, for TFLite int8: where its call goes, and the cold-cache figures next to the teacher's."""
    lines = []
    for r in rows:
        if r["format"] != "tflite_int8":
            continue
        phases = r.get("phases")
        if phases:
            us = {k: 1e3 * phases[f"{k}_p50_ms"] for k in ("quantize", "invoke", "dequantize")}
            lines.append(f"- {r['student']}: TFLite int8 call split (separate back-to-back pass, p50): quantise input "
                         f"{us['quantize']:.1f} us, invoke {us['invoke']:.1f} us, dequantise output "
                         f"{us['dequantize']:.1f} us")
        teacher = next((t for t in rows if t["student"] == r["student"] and t["format"] == TEACHER), None)
        if r["latency_after_switch"] and (teacher or {}).get("latency_after_switch"):
            lines.append(f"- {r['student']}: first call after another format ran (cold caches, not the headline): "
                         f"TFLite int8 p50 {r['latency_after_switch']['p50_ms']:.3f} ms, teacher "
                         f"{teacher['latency_after_switch']['p50_ms']:.3f} ms "
                         f"({r['speedup_vs_teacher_p50_after_switch']:.1f}x)")
    return lines


def to_csv(report: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in report["rows"]:
        lat, energy, top2 = r["latency"] or {}, r["energy"] or {}, r["top2"] or [None] * 4
        row = {"student": r["student"], "format": r["format"], "label": r["label"], "status": r["status"],
               "size_bytes": r["size_bytes"], "size_kind": r["size_kind"], "top2_mean": r["top2_mean"],
               **{f"top2_t{h}": top2[h] for h in range(4)}, "accuracy_n": r["accuracy_n"], "runs": r.get("runs"),
               **{k: lat.get(k) for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms")},
               "fps": r["fps"], "p50_after_switch_ms": (r.get("latency_after_switch") or {}).get("p50_ms"),
               "energy_method": energy.get("method"),
               "energy_per_inference_mj": energy.get("per_inference_mj"), "energy_scope": energy.get("scope"),
               "speedup_vs_teacher_p50": r["speedup_vs_teacher_p50"],
               "top2_vs_teacher_points": r["top2_vs_teacher_points"], "source": r["source"]}
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


def plot_latency_cdf(report: dict[str, Any]) -> bytes:
    """PNG bytes: one panel per student, the empirical latency CDF of each format (log time axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    students = list(report["latencies_ms"]) or ["(none)"]
    fig, axes = plt.subplots(1, len(students), figsize=(5.5 * len(students), 4.2), squeeze=False)
    for ax, name in zip(axes[0], students):
        for key, values in report["latencies_ms"].get(name, {}).items():
            ms = np.sort(np.asarray(values))
            ax.step(ms, np.arange(1, ms.size + 1) / ms.size, where="post", label=FORMATS[key])
        ax.set_xscale("log")
        ax.set_xlabel("latency per inference (ms, log scale)")
        ax.set_ylabel("fraction of runs")
        ax.set_title(f"{name} student")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{report['bundle']} on {report['host'].get('board') or report['host']['machine']}, "
                 f"{report['threads']} thread(s)", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def write_compare(report: dict[str, Any], out: str | os.PathLike) -> dict[str, Path]:
    """compare.json / .csv / .md and compare_latency_cdf.png in ``out``, each written atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / JSON_NAME, "csv": out / CSV_NAME, "markdown": out / MD_NAME, "png": out / PNG_NAME}
    atomic_write_json(paths["json"], report)
    atomic_write_text(paths["csv"], to_csv(report))
    atomic_write_text(paths["markdown"], to_markdown(report))
    atomic_write_bytes(paths["png"], plot_latency_cdf(report))
    return paths
