"""Target board profiles: one YAML per board in ``targets/``, typed and validated.

A profile says what ``edgekd export --target NAME`` produces for a board (which
artifacts, which runtime backend and execution providers), the int8 accuracy
budget of the parity gate, the per-frame latency and memory budgets, the power
meter used for energy, and the modality policy of the on-board runtime.

DEVICE SIDE: the runtime on a board loads profiles too (numpy/yaml/click only).
A source checkout reads the repository's ``targets/``; an installed package reads the
copy that the wheel ships in ``<prefix>/share/edgekd/targets`` (pyproject ``data-files``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Literal

import click

from edgekd.device.config import config_from_dict, config_to_dict, load_yaml
from edgekd.device.contracts import LIGHTING, MODALITIES, RUNTIME_MODALITIES, ArtifactKind
from edgekd.device.errors import EdgekdError
from edgekd.device.registry import Registry

log = logging.getLogger(__name__)

# A student is named by its modality, or "fusion" for a model that takes several.
STUDENT_NAMES: tuple[str, ...] = (*MODALITIES, "fusion")
EXECUTION_PROVIDERS: tuple[str, ...] = (
    "TensorrtExecutionProvider", "CUDAExecutionProvider", "OpenVINOExecutionProvider",
    "XnnpackExecutionProvider", "CPUExecutionProvider",
)

# Where profiles live: EDGEKD_TARGETS_DIR, else the repository's targets/ folder, else the installed copy.
ENV_TARGETS_DIR = "EDGEKD_TARGETS_DIR"
INSTALLED_TARGETS = Path("share", "edgekd", "targets")  # under sys.prefix; [tool.setuptools.data-files]


@dataclasses.dataclass(frozen=True)
class CpuSpec:
    arch: Literal["aarch64", "armv7l", "x86_64"]
    cores: int
    features: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class BoardCore:
    """The board's CPU core, as ``edgekd bundle check`` emulates it (QEMU model + the kernel's /proc/cpuinfo)."""
    name: str                           # the board's core, e.g. cortex-a76
    qemu_cpu: str                       # QEMU_CPU: the board's core, or the nearest model QEMU has
    implementer: str                    # MIDR fields as /proc/cpuinfo prints them ("0x41" = Arm)
    part: str
    variant: str
    revision: int
    cpuinfo_features: tuple[str, ...]   # the kernel's Features line; must not exceed what qemu_cpu emulates


@dataclasses.dataclass(frozen=True)
class Accelerator:
    kind: Literal["gpu", "npu", "dsp"]
    name: str
    memory_mb: int | None = None


@dataclasses.dataclass(frozen=True)
class PowerModel:
    """Board power for energy estimates when no meter is present (watts)."""
    idle_w: float
    active_w: float


@dataclasses.dataclass(frozen=True)
class Policy:
    """Per lighting condition, the students the runtime tries in order of preference."""
    day: tuple[str, ...] = ("fusion", "image", "radar", "lidar")
    dusk: tuple[str, ...] = ("fusion", "radar", "image", "lidar")
    night: tuple[str, ...] = ("radar", "lidar", "image")
    quality_margin: float = 0.1     # switch only when the new student is this much better
    min_dwell_frames: int = 10      # hysteresis: frames to stay on a student before switching again
    staleness_s: float = 0.35       # a sensor frame older than this counts as missing

    def order(self, lighting: str) -> tuple[str, ...]:
        if lighting not in LIGHTING:
            raise EdgekdError(f"unknown lighting '{lighting}'", fix=f"one of: {', '.join(LIGHTING)}")
        return getattr(self, lighting)


@dataclasses.dataclass(frozen=True)
class TargetProfile:
    name: str
    description: str
    cpu: CpuSpec
    backend: Literal["tflite", "ort"]
    artifacts: tuple[ArtifactKind, ...]
    latency_budget_ms: float
    memory_budget_mb: float
    power_meter: Literal["rapl", "ina3221", "tegrastats", "rpi5-pmic", "csv", "estimate"]
    power_model: PowerModel
    aliases: tuple[str, ...] = ()
    accelerator: Accelerator | None = None
    execution_providers: tuple[str, ...] = ()
    threads: int = 1
    precision: Literal["int8", "fp16", "fp32"] = "int8"
    int8_max_top2_drop: float = 1.0
    students: tuple[str, ...] = RUNTIME_MODALITIES
    policy: Policy = dataclasses.field(default_factory=Policy)
    core: BoardCore | None = None
    # The public key (.pub of `edgekd bundle keygen`) every bundle run on this board must be signed
    # with; a relative path is relative to the profile's YAML. Only the board's own profile counts:
    # the copy recorded inside a bundle's manifest is never trusted to name its own key.
    trusted_key: str | None = None

    def to_dict(self) -> dict:
        return config_to_dict(self)

    def wants(self, artifact: str) -> bool:
        return artifact in self.artifacts


def validate_profile(profile: TargetProfile, source: str) -> TargetProfile:
    """Cross-field checks the type system cannot express; errors name the field and the fix."""
    def bad(field: str, what: str, fix: str) -> EdgekdError:
        return EdgekdError(what, file=source, field=field, fix=fix)

    _check_finite(profile, "", source)
    if "tflite_int8" not in profile.artifacts:
        raise bad("artifacts", "every target must produce tflite_int8", "add tflite_int8 to artifacts")
    if len(set(profile.artifacts)) != len(profile.artifacts):
        raise bad("artifacts", "an artifact is listed twice", "list each artifact once")
    if profile.backend == "ort" and not {"onnx_fp32", "onnx_int8_qdq"} & set(profile.artifacts):
        raise bad("artifacts", "backend 'ort' needs an ONNX artifact", "add onnx_fp32 and/or onnx_int8_qdq")
    if profile.backend == "ort" and not profile.execution_providers:
        raise bad("execution_providers", "backend 'ort' needs execution providers",
                  "list them in order of preference, ending with CPUExecutionProvider")
    for ep in profile.execution_providers:
        if ep not in EXECUTION_PROVIDERS:
            raise bad("execution_providers", f"unknown execution provider '{ep}'",
                      f"one of: {', '.join(EXECUTION_PROVIDERS)}")
    if profile.precision == "fp16" and "tflite_fp16" not in profile.artifacts:
        raise bad("precision", "precision fp16 but no tflite_fp16 artifact", "add tflite_fp16 to artifacts")
    for name in ("threads", "latency_budget_ms", "memory_budget_mb"):
        if getattr(profile, name) <= 0:
            raise bad(name, f"must be positive, got {getattr(profile, name)!r}", f"set {name} > 0")
    if profile.cpu.cores <= 0:
        raise bad("cpu.cores", "must be positive", "set the number of CPU cores")
    if not 0 <= profile.int8_max_top2_drop <= 100:
        raise bad("int8_max_top2_drop", "must be between 0 and 100 (points of top-2 accuracy)",
                  "e.g. 1.0")
    if profile.power_model.idle_w < 0 or profile.power_model.active_w < profile.power_model.idle_w:
        raise bad("power_model", "need 0 <= idle_w <= active_w", "set measured board powers in watts")
    if profile.power_model.active_w > 10_000:
        raise bad("power_model.active_w", f"{profile.power_model.active_w} W is not a board's power",
                  "set measured board powers in watts")
    if profile.policy.staleness_s > 60:
        raise bad("policy.staleness_s", f"{profile.policy.staleness_s} s would keep hour-old frames fresh",
                  "a frame older than about one frame period is stale: e.g. 0.35")
    _validate_students(profile, source)
    return profile


def _check_finite(obj: object, where: str, source: str) -> None:
    """Every float in the profile is finite (YAML's .nan/.inf would make sensors never stale, budgets void)."""
    for field in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, field.name)
        at = f"{where}.{field.name}" if where else field.name
        if isinstance(value, float) and not math.isfinite(value):
            raise EdgekdError(f"must be a finite number, got {value!r}", file=source, field=at,
                              fix=f"set {at} to a number (not .nan or .inf)")
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            _check_finite(value, at, source)


def _validate_students(profile: TargetProfile, source: str) -> None:
    for student in profile.students:
        if student not in STUDENT_NAMES:
            raise EdgekdError(f"unknown student '{student}'", file=source, field="students",
                              fix=f"students are modality keys: {', '.join(STUDENT_NAMES)}")
    policy = profile.policy
    for lighting in LIGHTING:
        order = getattr(policy, lighting)
        if not order:
            raise EdgekdError("empty student list", file=source, field=f"policy.{lighting}",
                              fix="list at least one student")
        for student in order:
            if student not in STUDENT_NAMES:
                raise EdgekdError(f"unknown student '{student}'", file=source, field=f"policy.{lighting}",
                                  fix=f"students are modality keys: {', '.join(STUDENT_NAMES)}")
        if len(set(order)) != len(order):
            raise EdgekdError("a student is listed twice", file=source, field=f"policy.{lighting}",
                              fix="list each student once")
    if not 0 <= policy.quality_margin < 1:
        raise EdgekdError("must be in [0, 1)", file=source, field="policy.quality_margin", fix="e.g. 0.1")
    if policy.min_dwell_frames < 0:
        raise EdgekdError("must be >= 0", file=source, field="policy.min_dwell_frames", fix="e.g. 10")
    if policy.staleness_s <= 0:
        raise EdgekdError("must be positive", file=source, field="policy.staleness_s", fix="e.g. 0.35")


def targets_dir() -> Path:
    env = os.environ.get(ENV_TARGETS_DIR)
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2] / "targets"
    return checkout if checkout.is_dir() else Path(sys.prefix) / INSTALLED_TARGETS


def load_profile_file(path: str | os.PathLike) -> TargetProfile:
    """Load and validate one profile YAML."""
    path = Path(path)
    profile = config_from_dict(TargetProfile, load_yaml(path), source=str(path))
    if profile.trusted_key and not Path(profile.trusted_key).is_absolute():
        profile = dataclasses.replace(profile, trusted_key=str(path.parent / profile.trusted_key))
    return validate_profile(profile, str(path))


def _registry() -> Registry[Path]:
    # Rebuilt on each call: a handful of small files, and tests point EDGEKD_TARGETS_DIR elsewhere.
    registry: Registry[Path] = Registry("target")
    folder = targets_dir()
    for path in sorted(folder.glob("*.yaml")):
        data = load_yaml(path)
        name = data.get("name", path.stem)
        if name != path.stem:
            raise EdgekdError(f"profile name '{name}' differs from its file name", file=path, field="name",
                              fix=f"rename the file to {name}.yaml or set name: {path.stem}")
        aliases = data.get("aliases") or ()
        registry.add(name, path, aliases=tuple(aliases))
    return registry


def list_targets() -> list[str]:
    """Names of the known target profiles (without aliases)."""
    return _registry().names()


def load_target(name_or_path: str | os.PathLike | TargetProfile) -> TargetProfile:
    """A profile by name, alias (``jetson`` -> ``jetson-orin-nano``) or YAML path."""
    if isinstance(name_or_path, TargetProfile):
        return name_or_path
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or os.sep in text:
        return load_profile_file(text)
    return load_profile_file(_registry().get(text))


def profile_from_dict(data: dict, *, source: str = "<manifest>") -> TargetProfile:
    """Rebuild a profile recorded in a bundle manifest."""
    return validate_profile(config_from_dict(TargetProfile, data, source=source), source)


# ----------------------------------------------------------------------------- CLI


@click.group()
def targets() -> None:
    """List and show target board profiles (targets/*.yaml)."""


@targets.command("list")
def list_command() -> None:
    """One line per target: name, aliases, backend, artifacts."""
    for name in list_targets():
        profile = load_target(name)
        alias = f" (alias: {', '.join(profile.aliases)})" if profile.aliases else ""
        click.echo(f"{name}{alias}: backend={profile.backend} threads={profile.threads} "
                   f"artifacts={','.join(profile.artifacts)} - {profile.description}")


@targets.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the validated profile as JSON.")
def show_command(name: str, as_json: bool) -> None:
    """Show the validated profile NAME (a name, an alias or a YAML path)."""
    profile = load_target(name)
    data = profile.to_dict()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    import yaml

    click.echo(yaml.safe_dump(_plain(data), sort_keys=False).rstrip())


def _plain(obj):
    # yaml.safe_dump cannot write tuples
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def warn_if_oversubscribed(threads: int | None, profile_name: str | None) -> None:
    """Say so when a profile's thread count exceeds this host's CPUs (e.g. jetson's 6 on a 2-core box)."""
    if threads and int(threads) > usable_cpus():
        log.warning("%d interpreter threads on %d usable CPU(s) here (profile %r): the threads share cores and "
                    "the latency is not the board's; pass --threads %d to measure on this host",
                    int(threads), usable_cpus(), profile_name, usable_cpus())
