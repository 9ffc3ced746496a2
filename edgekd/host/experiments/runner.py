"""The experiment runner shared by `edgekd demo` and every `edgekd reproduce`.

Three pieces, one behaviour everywhere:

- **profiles**: one YAML file per named profile (``profiles/<experiment>-<name>.yaml``), loaded into the
  experiment's typed dataclass by :func:`edgekd.device.config.config_from_dict` (unknown keys are errors
  naming the file, the field and the fix); ``--config`` keys and CLI flags go on top.
- **the plan**: ``OUT/plan.json`` pins what the results depend on (profile, dataset, target). A rerun into
  the same folder with another plan is refused, naming every changed field (:func:`plan_diff`).
- **resumable stages**: a finished stage (or run) leaves a JSON marker, written last
  (:class:`Markers`); a rerun skips it. :func:`run_stage` times a stage (wall and CPU) and names it when
  it fails.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from edgekd.device.config import config_from_dict, load_yaml
from edgekd.device.errors import EdgekdError
from edgekd.device.io import atomic_write_json

log = logging.getLogger(__name__)
T = TypeVar("T")
PROFILE_DIR = Path(__file__).parent / "profiles"


# ---------------------------------------------------------------------------
# profiles


class SeededProfile:
    """What every experiment profile dataclass shares: seeds ``first_seed, first_seed + 1, ...`` and the plan
    fields (all but ``seeds`` and ``threads``, which a rerun may change)."""

    first_seed: int
    seeds: int
    threads: int | None

    def seed_list(self) -> list[int]:
        return [self.first_seed + i for i in range(self.seeds)]

    def fingerprint_fields(self) -> dict[str, Any]:
        """What a finished run depends on (seeds and threads may change between reruns)."""
        import dataclasses

        fields = dataclasses.asdict(self)  # type: ignore[call-overload]
        fields.pop("seeds")
        fields.pop("threads")
        return fields


def profile_path(experiment: str, name: str) -> Path:
    """The YAML file of a named profile, e.g. ``profiles/paper1-quick.yaml``."""
    return PROFILE_DIR / f"{experiment}-{name}.yaml"


def merge_mappings(base: Mapping[str, Any], update: Mapping[str, Any],
                   depth: Mapping[str, int] | None = None) -> dict[str, Any]:
    """``update`` over ``base``; a key named in ``depth`` merges its mapping that many levels deep
    (e.g. ``{"runs": 2}``: per run, then per setting) instead of replacing it."""
    depth = depth or {}
    merged = dict(base)
    for key, value in update.items():
        merged[key] = _merge(merged.get(key), value, depth.get(key, 0))
    return merged


def _merge(base: Any, update: Any, levels: int) -> Any:
    if levels <= 0 or not isinstance(update, Mapping):
        return update
    base = base if isinstance(base, Mapping) else {}
    return {**base, **{k: _merge(base.get(k), v, levels - 1) for k, v in update.items()}}


def load_profile(cls: type[T], experiment: str, name: str, names: Sequence[str], *,
                 config_path: str | os.PathLike | None = None, overrides: Mapping[str, Any] | None = None,
                 depth: Mapping[str, int] | None = None) -> T:
    """The named profile's YAML, then the keys of ``config_path``, then the non-None ``overrides``."""
    if name not in names:
        raise EdgekdError(f"unknown profile '{name}'", field="profile", fix=f"choose one of: {', '.join(names)}")
    path = profile_path(experiment, name)
    data, source = load_yaml(path), str(path)
    if config_path is not None:
        data, source = merge_mappings(data, load_yaml(config_path), depth), str(config_path)
    data = merge_mappings(data, {k: v for k, v in (overrides or {}).items() if v is not None}, depth)
    try:
        return config_from_dict(cls, data, source=source)
    except EdgekdError as exc:
        raise EdgekdError(exc.what, file=exc.file or source, field=exc.field,
                          fix=exc.fix or f"see the keys of {cls.__module__}.{cls.__name__}") from None


# ---------------------------------------------------------------------------
# the plan


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(obj, Mapping) or (prefix and not obj):
        return {prefix: obj}
    flat: dict[str, Any] = {}
    for key, value in obj.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def plan_diff(old: Mapping[str, Any], new: Mapping[str, Any], ignore: Collection[str] = ()) -> list[str]:
    """The dotted names of every field whose value differs between two plans (``ignore``: never compared)."""
    a, b = _flatten(old), _flatten(json.loads(json.dumps(new)))
    return [k for k in sorted(set(a) | set(b), key=lambda k: (k not in b, k))
            if k not in ignore and a.get(k, ...) != b.get(k, ...)]


def check_plan(out: Path, plan: Mapping[str, Any], *, fix: str, resume: bool | None = None,
               ignore: Collection[str] = ()) -> None:
    """Write ``out/plan.json``, or check that the one there describes the same experiment.

    ``resume=None``: a rerun always continues the folder (finished runs are reused); ``True``/``False``:
    the caller's ``--resume`` flag, so an earlier folder is continued only when asked. A changed plan is
    refused either way, with every changed field named, and ``fix`` says what to do instead.
    """
    path = out / "plan.json"
    if path.is_file():
        if resume is False:
            raise EdgekdError("the output folder holds an earlier run", file=out, field="--out",
                              fix="pass --resume to continue it (finished stages are skipped), --overwrite "
                                  "to start over, or another --out")
        changed = plan_diff(json.loads(path.read_text()), plan, ignore)
        if changed:
            raise EdgekdError(f"this folder holds runs of another profile or dataset (changed: {', '.join(changed)})",
                              file=path, field=changed[0], fix=fix)
        return
    if resume is False and out.exists() and any(out.iterdir()):
        raise EdgekdError("the output folder exists and is not empty", file=out, field="--out",
                          fix="choose a new --out, or --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, plan)


# ---------------------------------------------------------------------------
# resumable stages


class Markers:
    """One JSON marker per finished stage or run, ``<root>/<key>.json`` (``key`` may hold a ``/``)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def done(self, key: str) -> dict | None:
        path = self.path(key)
        return json.loads(path.read_text()) if path.is_file() else None

    def mark(self, key: str, record: Mapping[str, Any]) -> dict:
        atomic_write_json(self.path(key), record)
        return dict(record)


def cpu_seconds(children: bool = False) -> float:
    """User + system CPU time of this process (all threads), plus its finished children if asked."""
    import resource

    usage = [resource.getrusage(resource.RUSAGE_SELF)]
    if children:
        usage.append(resource.getrusage(resource.RUSAGE_CHILDREN))
    return sum(u.ru_utime + u.ru_stime for u in usage)


class Clock:
    """Wall and CPU seconds since construction (CPU time beside wall time: a shared host's wall time
    says more about the neighbours)."""

    def __init__(self, children: bool = False):
        self.children = children
        self.wall0, self.cpu0 = time.perf_counter(), cpu_seconds(children)

    def seconds(self) -> float:
        return time.perf_counter() - self.wall0

    def cpu(self) -> float:
        return cpu_seconds(self.children) - self.cpu0


def load_average() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def run_stage(markers: Markers, stage: str, body: Callable[[], dict], *, head: str, about: str,
              echo: Callable[[str], None]) -> dict:
    """Run ``body`` unless ``stage`` has its marker; the marker records wall/CPU seconds and what ``body``
    returned. A failure is re-raised as an :class:`EdgekdError` naming the stage."""
    done = markers.done(stage)
    if done is not None:
        echo(f"{head}: done earlier ({done['seconds']:.0f} s), skipped")
        return done
    echo(f"{head}: {about}")
    clock = Clock(children=True)   # the export converts in a child process
    try:
        outputs = body()
    except EdgekdError as exc:
        raise EdgekdError(f"stage '{stage}' failed: {exc.what}", file=exc.file, field=exc.field,
                          fix=(exc.fix + "; then " if exc.fix else "") + "rerun with --resume to keep the "
                              "finished stages") from exc
    except Exception as exc:   # a library failure deep inside a stage: name the stage, keep the cause
        log.debug("stage %s failed", stage, exc_info=True)
        raise EdgekdError(f"stage '{stage}' failed: {type(exc).__name__}: {exc}", file=markers.root.parent,
                          fix="run with -vv for the traceback; rerun with --resume to keep the finished "
                              "stages") from exc
    record = markers.mark(stage, {"stage": stage, "seconds": round(clock.seconds(), 2),
                                  "cpu_seconds": round(clock.cpu(), 2), "load_average": load_average(), **outputs})
    echo(f"{head}: finished in {record['seconds']:.0f} s")
    return record
