"""Benchmark settings and the ONE resolver that fills them from a target profile.

``edgekd bench`` (a profile named with ``--target``), ``python -m firmware_bench``
(the target recorded in the bundle) and ``edgekd bench --compare`` all resolve
threads, backend, execution providers, power meter and power model with
:func:`resolve_target`: a flag given on the command line wins, else the
profile's value. One rule lives here and nowhere else: a profile may name the
``csv`` meter (an external logger), but only the command line knows the log
file, so ``csv`` without a file means ``auto`` (board meters, then the estimate).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from edgekd.device.errors import EdgekdError
from edgekd.device.targets import usable_cpus, warn_if_oversubscribed
from firmware_bench import inputs as inputs_mod
from firmware_bench.latency import StopRule
from firmware_bench.power import PowerModel, check_meter_spec

log = logging.getLogger(__name__)

# --backend -> artifacts to try, in order, when --artifact is not given.
BACKEND_ARTIFACTS = {
    "tflite": ("tflite_int8", "tflite_fp16", "tflite_fp32"),
    "ort": ("onnx_int8_qdq", "onnx_fp32"),
}
BACKEND_FORMAT = {"tflite": "tflite", "ort": "onnx"}


@dataclasses.dataclass
class BenchSettings:
    """What one benchmark run does (CLI flags and target-profile defaults resolved)."""

    backend: str | None = None          # tflite | ort; default: the bundle's target profile
    artifact: str | None = None         # manifest artifact kind; default: best for the backend
    threads: int | None = None          # default: target profile threads
    runs: int | None = None             # see latency.StopRule
    seconds: float | None = None
    warmup: int = 10
    power_meter: str | None = None      # default: the target's meter, else auto
    power_model: PowerModel | None = None
    idle_seconds: float = 1.0
    op_profile: bool = True
    op_profile_tool: str | None = None  # TFLite benchmark_model binary
    op_profile_runs: int = 50
    max_windows: int = inputs_mod.DEFAULT_MAX_WINDOWS
    verify: bool = True
    providers: Sequence[str] | None = None
    trusted_key: str | None = None      # the bundle must be signed with it (default: $EDGEKD_TRUSTED_KEY)

    def __post_init__(self) -> None:
        if self.backend is not None and self.backend not in BACKEND_ARTIFACTS:
            raise EdgekdError(f"unknown backend '{self.backend}'", field="--backend",
                              fix=f"one of: {', '.join(BACKEND_ARTIFACTS)}")
        if self.warmup < 0:
            raise EdgekdError("must be >= 0", field="--warmup", fix="e.g. --warmup 10")
        if self.threads is not None and self.threads < 1:
            raise EdgekdError("must be >= 1", field="--threads", fix="e.g. --threads 4")
        if self.idle_seconds < 0:
            raise EdgekdError("must be >= 0", field="--idle-seconds", fix="0 skips the idle baseline")
        try:
            StopRule(self.runs, self.seconds)
        except ValueError as exc:
            raise EdgekdError(str(exc), field="--runs/--seconds", fix="give a positive number") from None
        if self.power_meter is not None:
            check_meter_spec(self.power_meter)   # before anything is loaded or measured


@dataclasses.dataclass(frozen=True)
class TargetSettings:
    """What a benchmark takes from a target profile, after the command line's overrides."""

    threads: int | None
    backend: str
    providers: tuple[str, ...] | None
    power_meter: str
    power_model: PowerModel | None




def target_power_model(target: Mapping[str, Any]) -> PowerModel | None:
    """The profile's ``power_model`` (idle and all-cores watts), labelled with the profile it came from."""
    model = target.get("power_model")
    if not isinstance(model, Mapping) or "idle_w" not in model or "active_w" not in model:
        return None
    return PowerModel(float(model["idle_w"]), float(model["active_w"]),
                      source=f"target profile '{target.get('name', '?')}'")


def resolve_meter(requested: str | None, target: Mapping[str, Any]) -> str:
    """The flag's meter, else the profile's, else ``auto``; a profile's bare ``csv`` (no log file) is ``auto``."""
    meter = requested or target.get("power_meter") or "auto"
    if meter == "csv":
        log.warning("target '%s' measures energy with an external meter: pass --power-meter csv:LOG.csv; "
                    "trying the board's meters, then the estimate", target.get("name", "?"))
        meter = "auto"
    return meter


def resolve_target(target: Any, *, threads: int | None = None, backend: str | None = None,
                   providers: Sequence[str] | None = None, power_meter: str | None = None,
                   power_model: PowerModel | None = None, cap_threads: bool = False) -> TargetSettings:
    """Fill what the flags left open from ``target`` (a ``TargetProfile`` or its dict, e.g. a manifest's).

    ``cap_threads`` (``bench --compare``, which also sets torch's threads) caps the profile's
    threads at the CPUs this process may use and defaults to 1; a given ``threads`` is never capped.
    """
    profile: Mapping[str, Any] = target.to_dict() if hasattr(target, "to_dict") else dict(target or {})
    if threads is None and cap_threads:
        threads = min(int(profile.get("threads") or 1), usable_cpus())
    profile_backend = profile.get("backend")
    chosen = threads or profile.get("threads")
    warn_if_oversubscribed(chosen, profile.get("name"))
    return TargetSettings(
        threads=chosen,
        backend=backend or (profile_backend if profile_backend in BACKEND_ARTIFACTS else "tflite"),
        providers=tuple(providers or profile.get("execution_providers") or ()) or None,
        power_meter=resolve_meter(power_meter, profile),
        power_model=power_model or target_power_model(profile))


def resolve_settings(settings: BenchSettings, target: Any) -> BenchSettings:
    """``settings`` with what its flags left open filled from ``target`` (see :func:`resolve_target`)."""
    resolved = resolve_target(target, threads=settings.threads, backend=settings.backend,
                              providers=settings.providers, power_meter=settings.power_meter,
                              power_model=settings.power_model)
    return dataclasses.replace(settings, **{f.name: getattr(resolved, f.name) for f in dataclasses.fields(resolved)})
