"""Paper 2's matrix: the profile, the generator variants and the rows of Figs. 3-5.

Shared by the runner (:mod:`edgekd.host.experiments.paper2`) and the report
(:mod:`edgekd.host.experiments.paper2_report`). The named profiles are YAML files,
``profiles/paper2-<name>.yaml``; BENCHMARKS.md says why their numbers are what they are.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from edgekd.host.experiments.runner import SeededProfile

PLAN_FORMAT = "edgekd-paper2-plan/1"
GeneratorLoss = Literal["weighted", "metadata", "activation", "entropy"]
StudentLoss = Literal["kl", "mse"]
VARIANTS: tuple[GeneratorLoss, ...] = ("weighted", "metadata", "activation", "entropy")
# Acceptance (issue 4): the data-free student (metadata generator, MSE student) keeps at least this share
# of the teacher's top-5 averaged over horizons, mean over at least MIN_SEEDS seeds.
MIN_TOP5_RATIO = 0.90
MIN_SEEDS = 3
QUICK_LIMIT_S = 15 * 60


@dataclasses.dataclass
class Paper2Profile(SeededProfile):
    """Everything that decides the experiment besides the seeds (YAML keys, unknown ones rejected)."""

    windows: int = 4000            # dataset synthesised when --data is not given (LiDAR only)
    data_seed: int = 0
    seeds: int = 3
    first_seed: int = 42
    threads: int | None = 1
    lr: float = 1e-3
    batch_size: int = 32
    teacher_epochs: int = 15
    student_epochs: int = 12       # no-KD / KD / KD-MSE students on the real training split
    patience: int = 20
    kd_alpha: float = 0.6
    kd_temperature: float = 2.0
    generator_steps: int = 400
    synthetic_samples: int = 3000
    # data-free students (BENCHMARKS.md: why batch 128 at lr 1e-2)
    datafree_epochs: int = 30
    datafree_lr: float = 1e-2
    datafree_batch_size: int = 128
    resample_each_epoch: bool = True    # a fresh synthetic set every student epoch (DataFreeConfig)
    # how the generator's tanh becomes a scan (DataFreeConfig.output_mapping)
    output_mapping: Literal["affine", "no_return"] = "no_return"
    datafree_temperature: float = 2.0
    metadata_weight: float = 1.0   # alpha / beta / gamma of the weighted generator loss
    activation_weight: float = 0.1
    entropy_weight: float = 0.1
    # beyond the paper (DataFreeConfig): "teacher_embedding" = weight transfer, the student starts from a
    # frozen copy of the teacher's first layer; "scratch" = the paper's student, no teacher weight
    student_init: Literal["teacher_embedding", "scratch"] = "teacher_embedding"
    input_noise: float = 0.0       # noise on the synthetic windows, relabelled by the teacher (0 = off)
    input_noise_width: float = 0.0  # its correlation along the bins (Gaussian kernel std in bins; 0 = white)

    def __post_init__(self) -> None:
        for name in ("windows", "seeds", "lr", "batch_size", "teacher_epochs", "student_epochs", "patience",
                     "generator_steps", "synthetic_samples", "datafree_epochs", "datafree_lr",
                     "datafree_batch_size", "kd_temperature", "datafree_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not 0.0 <= self.kd_alpha <= 1.0:
            raise ValueError(f"kd_alpha must be in [0, 1], got {self.kd_alpha}")
        if self.threads is not None and self.threads <= 0:
            raise ValueError(f"threads must be positive or null, got {self.threads}")
        if self.student_init not in ("teacher_embedding", "scratch"):
            raise ValueError(f"student_init must be teacher_embedding or scratch, got {self.student_init!r}")
        for name in ("input_noise", "input_noise_width"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


# the named profiles (profiles/paper2-<name>.yaml): smoke is a tiny pass for the tests, quick runs under
# 15 minutes on the 2-core host, paper is the paper's schedule
PROFILES = ("smoke", "quick", "paper")


@dataclasses.dataclass(frozen=True)
class Row:
    """One bar group of a figure: which run label it shows."""

    figure: str
    key: str       # run key in the records, e.g. "df_metadata_mse"
    label: str


def figure_rows(best: str) -> list[Row]:
    rows = [Row("fig3", f"df_{v}_kl", f"generator: {v}") for v in VARIANTS]
    rows += [Row("fig4", f"df_{best}_kl", f"KL ({best} generator)"),
             Row("fig4", f"df_{best}_mse", f"MSE ({best} generator)")]
    rows += [Row("fig5", "teacher", "teacher"), Row("fig5", "student_none", "student w/o KD"),
             Row("fig5", "student_kd", "standard KD"), Row("fig5", "student_kd_mse", "KD-MSE"),
             Row("fig5", "df_metadata_mse", "DF-KD (metadata, MSE)")]
    return rows


def datafree_options(profile: Paper2Profile) -> dict[str, Any]:
    """The data-free settings beyond the paper: the profile's, and DataFreeConfig's defaults for the rest."""
    from edgekd.host.distill import datafree as D
    from edgekd.host.distill.config import DataFreeConfig

    return D.beyond_paper_options(DataFreeConfig(student_init=profile.student_init, input_noise=profile.input_noise,
                                                 input_noise_width=profile.input_noise_width))
