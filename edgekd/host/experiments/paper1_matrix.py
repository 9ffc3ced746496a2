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
TIME_LIMIT_S = 25 * 60
# The paper's regime (issue 18): the comparison is only meaningful where the models have learnt something;
# top-1 mean over horizons on the test split, in fractions.
MIN_TEACHER_TOP1 = 0.35
MIN_NOKD_STUDENT_TOP1 = 0.25
# seeds for the self-KD vs teacher comparison per horizon
MIN_SELF_KD_SEEDS = 3

# What paper 1 reports (DeepSense scenario 9), for the report's side-by-side table. Top-1 per horizon
# t0..t3 from the paper's Fig. 4 data as restated in shared/REFERENCE.md; top-2 gain (points) over the
# no-KD student per horizon from its Table II. None: the paper gives no figure.
PAPER_TOP1: dict[str, tuple[float, float, float, float] | None] = {
    "image_teacher": (0.464, 0.471, 0.432, 0.383),
    "image_teacher_self": None,
    "image_student_none": (0.385, 0.378, 0.393, 0.391),
    "image_student_kd": (0.418, 0.426, 0.436, 0.422),
    "image_student_rkd": (0.442, 0.425, 0.436, 0.444),
    "fusion_teacher": (0.507, 0.510, 0.495, 0.495),
    "fusion_student_none": (0.429, 0.460, 0.458, 0.450),
    "fusion_student_kd": (0.476, 0.499, 0.496, 0.480),
    "fusion_student_rkd": (0.478, 0.485, 0.486, 0.487),
}
PAPER_TOP2_GAIN: dict[str, tuple[float, float, float, float]] = {
    "image_teacher": (9.15, 8.92, 5.76, 0.94),
    "image_teacher_self": (5.52, 8.92, 8.84, 5.21),
    "image_student_kd": (4.18, 4.42, 5.92, 5.05),
    "image_student_rkd": (5.21, 5.60, 5.13, 5.60),
    "fusion_teacher": (10.84, 9.32, 8.74, 8.97),
    "fusion_student_kd": (7.69, 5.13, 4.66, 7.46),
    "fusion_student_rkd": (7.69, 6.29, 6.18, 5.59),
}


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
    # with shared teachers: distil the self-KD teacher with this many seeds (first_seed, ...) from the one
    # trained teacher, so its per-horizon comparison has a spread; null = one, like the other teachers
    self_kd_seeds: int | None = None
    threads: int | None = 2
    # after the teachers, the students (and self-KD teachers) of every seed side by side in this many
    # processes of one torch thread each; 1: one after another with ``threads`` threads
    workers: int = 1
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
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.self_kd_seeds is not None and self.self_kd_seeds <= 0:
            raise ValueError(f"self_kd_seeds must be positive or null, got {self.self_kd_seeds}")
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

    def fingerprint_fields(self) -> dict[str, Any]:
        fields = super().fingerprint_fields()
        fields.pop("self_kd_seeds")   # more self-KD seeds add runs; they change none already finished
        fields.pop("workers")         # how runs are scheduled, like threads
        return fields

    def self_kd_seed_list(self) -> list[int]:
        """The seeds the self-KD teacher is distilled with (all seeds when teachers are trained per seed)."""
        seeds = self.seed_list()
        if self.teachers_per_seed:
            return seeds
        return seeds[:self.self_kd_seeds or 1]

    def method_of(self, spec: RunSpec) -> str:
        """The KD method ``spec`` runs with under this profile."""
        return self.methods.get(spec.name, spec.method)

    def overrides_for(self, spec: RunSpec) -> dict[str, Any]:
        by_role = self.self_kd if spec.method == "self" else (self.teacher if spec.role == "teacher" else self.student)
        return {**self.common, **by_role, **self.runs.get(spec.name, {})}



# the named profiles (profiles/paper1-<name>.yaml): quick fits the 2-core host in under 25 minutes, paper is
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
