"""The comparison of one bundle: load every format of every student, time them interleaved, write the report."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekd import __version__
from edgekd.device.errors import EdgekdError
from edgekd.host.compare.candidates import load_candidates
from edgekd.host.compare.discovery import demo_layout, find_student_checkpoint, find_teacher
from edgekd.host.compare.energy import energy_blocks
from edgekd.host.compare.formats import SCHEMA, TIMING
from edgekd.host.compare.settings import CompareSettings, resolve_settings
from edgekd.host.compare.summary import acceptance, summarise
from edgekd.host.compare.timing import PHASE_RUNS, interleaved_loop, phase_split
from edgekd.host.compare.writers import write_compare

log = logging.getLogger(__name__)

def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


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


@dataclasses.dataclass
class Sources:
    """Where the comparison's inputs come from: the dataset and the checkpoints (flags, else a demo's folder)."""

    data: Path
    students: list[Path]
    teachers: list[Path]
    fallback_teachers: list[Path]
    found: dict[str, Any]


def find_sources(bundle: Path, data: str | os.PathLike | None, checkpoints: Sequence[str | os.PathLike],
                 teachers: Sequence[str | os.PathLike]) -> Sources:
    """The flags' dataset and checkpoints; when the bundle is ``DEMO/bundle`` of `edgekd demo`, the demo's own
    dataset, students and teachers fill what the flags leave open."""
    layout = demo_layout(bundle)
    given = [Path(p) for p in checkpoints]
    given_teachers = [Path(p) for p in teachers]
    for path in [*given, *given_teachers]:
        if not path.is_file():
            raise EdgekdError("checkpoint not found", file=path, field="--checkpoints/--teacher",
                              fix="check the path")
    if data is None and (layout is None or layout.data is None):
        raise EdgekdError("--compare needs a dataset", field="--data",
                          fix="pass --data DIR (its test split gives accuracy and inputs), or compare a bundle "
                              "that sits in an `edgekd demo` folder (DEMO/bundle next to DEMO/data/dataset)")
    found: dict[str, Any] = {"demo": None if layout is None else str(layout.root)}
    if data is None:
        assert layout is not None and layout.data is not None
        data = layout.data
        found["data"] = str(data)
    students, fallback = list(given), []
    if layout is not None:
        students += [p for p in layout.students if p not in given]
        fallback = list(layout.teachers)
        found.update(students=[str(p) for p in layout.students], teachers=[str(p) for p in layout.teachers])
    return Sources(Path(data), students, given_teachers, fallback, found)


def compare_bundle(bundle: str | os.PathLike, data: str | os.PathLike | None = None, *,
                   checkpoints: Sequence[str | os.PathLike] = (), teachers: Sequence[str | os.PathLike] = (),
                   student: str | None = None, settings: CompareSettings | None = None,
                   out: str | os.PathLike | None = None, meter_options: Any = None) -> dict[str, Any]:
    """Compare every format of every student (and its teacher) of ``bundle`` on ``data``'s test split.

    ``data`` and the checkpoints default to a demo's own (see :func:`find_sources`). Returns the
    report (rows in ``report["rows"]``); with ``out`` also writes compare.json / .csv / .md and the
    latency CDF PNG.
    """
    import torch

    from edgekd.device.bundle import open_bundle
    from firmware_bench.power import MeterOptions, choose_reader

    bundle = Path(bundle)
    # Schema now; each artifact's sha256 when it is loaded, so a modified file is an error row, not a crash.
    manifest = open_bundle(bundle, verify=False).manifest
    settings, target = resolve_settings(settings or CompareSettings(), manifest.get("target") or {})
    names = [student] if student else list(manifest["students"])
    for name in names:
        if name not in manifest["students"]:
            raise EdgekdError(f"bundle has no student '{name}'", file=bundle / "manifest.json", field="students",
                              fix=f"students: {', '.join(manifest['students'])}")
    sources = find_sources(bundle, data, checkpoints, teachers)
    assert settings.threads is not None and settings.power_meter is not None  # resolved
    torch.set_num_threads(settings.threads)  # matched to the interpreters' threads
    options = dataclasses.replace(meter_options or MeterOptions(), power_model=settings.power_model)
    reader, skipped = choose_reader(settings.power_meter, options)

    load_before = _load_average()
    rows: list[dict[str, Any]] = []
    latencies: dict[str, dict[str, list[float]]] = {}
    notes: list[str] = []
    for name in names:
        student_rows, latencies[name] = compare_student(bundle, name, manifest["students"][name], sources, settings,
                                                        reader, notes)
        rows += student_rows
    peak = _compute_floor(rows, settings.threads, notes)
    report = {
        "schema": SCHEMA, "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "edgekd_version": __version__, "host": _host_info(),
        # other processes on the CPUs show up as a heavy latency tail: say how busy the machine was
        "load_average_1m": {"before": load_before, "after": _load_average()},
        "bundle": str(bundle), "data": str(sources.data), "found": sources.found, "target": target.get("name"),
        "threads": settings.threads, "torch_threads": torch.get_num_threads(),
        "runs": settings.runs, "warmup": settings.warmup, "eval_windows": settings.eval_windows,
        "block": settings.block, "timing": TIMING,
        "energy_meter": _meter_record(settings, reader, skipped),
        "rows": rows,
        "int8_peak": peak,
        "acceptance_rule": settings.rule(),
        "acceptance": acceptance(rows, settings.rule()),
        "notes": notes,
        "latencies_ms": latencies,
    }
    if out is not None:
        write_compare(report, out)
    return report


def compare_student(bundle: Path, name: str, entry: dict, sources: Sources, settings: CompareSettings, reader: Any,
                    notes: list[str]) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    """One student's rows and steady-state latencies (ms) per format; notes a dataset mismatch."""
    windows, beams, ds = eval_windows(sources.data, entry["modalities"], settings.eval_windows)
    recorded = (entry.get("checkpoint") or {}).get("data_fingerprint")
    if recorded and recorded != ds.fingerprint:
        notes.append(f"{name}: the student was trained on another dataset than {sources.data} (fingerprint differs)")
    ckpt, ckpt_why = find_student_checkpoint(bundle, name, entry, sources.students)
    teacher, teacher_why = find_teacher(ckpt, entry["modalities"], sources.teachers, fallback=sources.fallback_teachers)
    cands = load_candidates(bundle, name, entry, ckpt, ckpt_why, teacher, teacher_why, settings)
    log.info("%s: timing %d formats interleaved over %d windows", name, sum(c.ok for c in cands), len(windows))
    interleaved_loop(cands, windows, runs=settings.runs, warmup=settings.warmup, block=settings.block)
    phase_split(cands, windows, runs=min(settings.runs, PHASE_RUNS))
    energy_blocks(cands, windows, reader, settings.energy_seconds)
    latencies = {c.key: [v / 1e6 for v in c.latencies_ns] for c in cands if c.ok and len(c.latencies_ns)}
    rows = summarise(cands, beams)
    macs = _student_macs(ckpt)
    for row in rows:
        if row["format"] == "tflite_int8":
            row["macs"] = macs
    return rows, latencies


def _student_macs(ckpt: Path | None) -> int | None:
    """MACs of one batch-1 call of the student (``count_macs``: matmuls and convolutions)."""
    if ckpt is None:
        return None
    from edgekd.host.checkpoint import load_checkpoint
    from edgekd.host.reports.model_cost import count_macs

    model = load_checkpoint(ckpt).build()
    return int(count_macs(model, model.example_inputs(1)))


def _compute_floor(rows: list[dict[str, Any]], threads: int, notes: list[str]) -> dict[str, Any] | None:
    """Each int8 row's compute floor (MACs / this CPU's measured peak int8 MAC rate) and share of floor."""
    from edgekd.host.compare.floor import peak_int8_macs_per_second, student_floor

    int8 = [r for r in rows if r["format"] == "tflite_int8" and r.get("macs")]
    if not int8:
        return None
    try:
        peak = peak_int8_macs_per_second(threads)
    except Exception as exc:   # the floor is a side figure: a converter failure must not lose the comparison
        notes.append(f"compute floor not measured: {type(exc).__name__}: {exc}")
        return None
    for r in int8:
        r["compute_floor"] = student_floor(r["macs"], peak, (r["latency"] or {}).get("p50_ms"))
    return peak


def _meter_record(settings: CompareSettings, reader: Any, skipped: list) -> dict[str, Any]:
    return {"requested": settings.power_meter, "method": reader.method if reader is not None else "unavailable",
            "meter": reader.meter if reader is not None else None,
            "scope": reader.scope if reader is not None else None,
            "skipped": skipped, "seconds_per_format": settings.energy_seconds}


def _host_info() -> dict[str, Any]:
    from firmware_bench.harness import host_info

    return host_info()
