"""Paper 1's matrix: the runs, the profile that parametrises them, and what a finished run records.

Shared by the runner (:mod:`edgekd.host.experiments.paper1`) and the report
(:mod:`edgekd.host.experiments.paper1_report`). The named profiles are YAML files,
``profiles/paper1-<name>.yaml``; BENCHMARKS.md says why their numbers are what they are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgekd.host.experiments.runner import SeededProfile

PLAN_FORMAT = "edgekd-paper1-plan/1"
KS = (1, 2, 5)
# Acceptance of the issue: a distilled student gains this many top-2 points (mean over horizons) over
# the no-KD student, averaged over at least MIN_SEEDS seeds; students are this many times smaller.
MIN_GAIN_POINTS = 2.0
MIN_SEEDS = 3
MIN_PARAM_RATIO = 15.0
TIME_LIMIT_S = 20 * 60


# ---------------------------------------------------------------------------
# the matrix


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One cell of the matrix: which model learns how, from which paper config, with which teacher."""

    name: str                 # file stem and row key, e.g. "image_student_kd"
    group: str                # "image" or "fusion"
    model: str                # registry name
    method: str               # KD method ("none" = labels only)
    role: str                 # "teacher" (server, whole train split) or "student" (node, local data)
    paper_config: str         # stem of the shipped config in edgekd/host/distill/configs
    label: str                # row name in the report
    teacher_run: str | None = None   # run whose checkpoint teaches this one


RUNS: tuple[RunSpec, ...] = (
    RunSpec("image_teacher", "image", "image_teacher", "none", "teacher", "teacher", "Teacher (w/o self-KD)"),
    RunSpec("image_teacher_self", "image", "image_teacher", "self", "teacher", "self_kd", "Teacher (w/ self-KD)",
            "image_teacher"),
    RunSpec("image_student_none", "image", "image_student", "none", "student", "image_student_none",
            "Student (no KD)"),
    RunSpec("image_student_kd", "image", "image_student", "kd", "student", "image_student_kd",
            "Response-based student", "image_teacher"),
    RunSpec("image_student_rkd", "image", "image_student", "rkd", "student", "image_student_rkd",
            "Relation-based student", "image_teacher"),
    RunSpec("fusion_teacher", "fusion", "fusion_teacher", "none", "teacher", "teacher", "Teacher"),
    RunSpec("fusion_student_none", "fusion", "fusion_student", "none", "student", "fusion_student_none",
            "Student (no KD)"),
    RunSpec("fusion_student_kd", "fusion", "fusion_student", "kd", "student", "fusion_student_kd",
            "Response-based student", "fusion_teacher"),
    RunSpec("fusion_student_rkd", "fusion", "fusion_student", "rkd", "student", "fusion_student_rkd",
            "Relation-based student", "fusion_teacher"),
)
RUN_BY_NAME = {spec.name: spec for spec in RUNS}
# the methods a profile may swap in for a run's (``Paper1Profile.methods``): same kind of knowledge only
METHOD_FAMILIES = {"kd": ("kd", "mse"), "rkd": ("rkd", "rkd-park")}
GROUPS = {"image": "Image only", "fusion": "Image & radar"}
NEEDED_MODALITIES = ("image", "radar")


def baseline_run(group: str) -> str:
    """The no-KD student every row of ``group`` is compared with."""
    return f"{group}_student_none"


def teacher_row(group: str) -> str:
    return f"{group}_teacher"


# ---------------------------------------------------------------------------
# profiles


@dataclasses.dataclass
class Paper1Profile(SeededProfile):
    """Everything that decides the experiment besides the seeds; loaded from YAML, unknown keys rejected.

    The ``*_overrides`` mappings hold :class:`~edgekd.host.distill.config.TrainConfig` keys applied on top of
    each run's paper config, in this order: ``common``, then ``teacher``/``self_kd``/``student`` by role,
    then ``runs[<run name>]``.
    """

    # dataset synthesised when --data is not given
    windows: int = 2000
    image_size: int = 64
    data_seed: int = 0
    split: str = "0.7,0.15,0.15"
    # the node's local dataset: this share of the training windows (students only)
    local_fraction: float = 0.2
    # seeds: first_seed, first_seed + 1, ...
    seeds: int = 3
    first_seed: int = 42
    # one teacher (and one self-KD teacher) per seed; false = trained once with first_seed, shared
    teachers_per_seed: bool = True
    threads: int | None = 2
    common: dict[str, Any] = dataclasses.field(default_factory=dict)
    teacher: dict[str, Any] = dataclasses.field(default_factory=dict)
    self_kd: dict[str, Any] = dataclasses.field(default_factory=dict)
    student: dict[str, Any] = dataclasses.field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    # per run name, a KD method of the same family replacing the matrix's (see METHOD_FAMILIES)
    methods: dict[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("windows", "image_size", "seeds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not 0.0 < self.local_fraction <= 1.0:
            raise ValueError(f"local_fraction must be in (0, 1], got {self.local_fraction}")
        if self.threads is not None and self.threads <= 0:
            raise ValueError(f"threads must be positive or null, got {self.threads}")
        unknown = sorted(set(self.runs) - set(RUN_BY_NAME))
        if unknown:
            raise ValueError(f"runs: unknown run '{unknown[0]}' (known: {', '.join(RUN_BY_NAME)})")
        for run, method in self.methods.items():
            family = METHOD_FAMILIES.get(RUN_BY_NAME[run].method, ()) if run in RUN_BY_NAME else None
            if family is None:
                raise ValueError(f"methods: unknown run '{run}' (known: {', '.join(RUN_BY_NAME)})")
            if method not in family:
                raise ValueError(f"methods: run '{run}' may use {' or '.join(family) or 'no other method'}, "
                                 f"not {method!r}")

    def method_of(self, spec: RunSpec) -> str:
        """The KD method ``spec`` runs with under this profile."""
        return self.methods.get(spec.name, spec.method)

    def overrides_for(self, spec: RunSpec) -> dict[str, Any]:
        by_role = self.self_kd if spec.method == "self" else (self.teacher if spec.role == "teacher" else self.student)
        return {**self.common, **by_role, **self.runs.get(spec.name, {})}



# the named profiles (profiles/paper1-<name>.yaml): quick fits the 2-core host in under 20 minutes, paper is
# the paper's schedule
PROFILES = ("quick", "paper")
# how deep --config keys merge into the profile's mappings (e.g. runs: per run, then per setting)
MERGE_DEPTH = {"common": 1, "teacher": 1, "self_kd": 1, "student": 1, "runs": 2}


@dataclasses.dataclass
class RunRecord:
    """What one finished run produced (also ``runs/seed<S>/<run>.json`` on disk)."""

    run: str
    seed: int
    model: str
    method: str
    checkpoint: str
    train_windows: int
    epochs_run: int
    best_epoch: int
    seconds: float          # wall time of the invocation that finished the run (train + evaluate + save)
    test: dict[str, Any]
    cpu_seconds: float | None = None   # CPU time of this process for the run (wall time lies on a busy host)
    skipped: bool = False   # read from a previous invocation's record

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclasses.dataclass
class Paper1Result:
    profile: Paper1Profile
    data: Path
    records: list[RunRecord]
    local_windows: int
    train_windows: int
    model_costs: dict[str, dict[str, int]]
    wall_seconds: float
    synth_seconds: float
    load_average: tuple[float, float]
