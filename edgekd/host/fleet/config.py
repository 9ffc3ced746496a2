"""The fleet experiment's configuration: one typed dataclass, loaded from YAML, unknown keys rejected.

Every knob that shapes the simulated fleet lives here (sites, server data, training budgets,
boards, links); the command line overrides a few of them. Defaults ship as
``edgekd/host/fleet/profiles/default.yaml``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from edgekd.device.config import config_to_dict, load_config
from edgekd.device.contracts import MODALITIES
from edgekd.device.errors import EdgekdError

PROFILES = Path(__file__).with_name("profiles")
DEFAULT_PROFILE = PROFILES / "default.yaml"

# A fleet "modality" names the student family; fusion reads image and radar.
STUDENT_INPUTS: dict[str, tuple[str, ...]] = {
    "image": ("image",), "radar": ("radar",), "lidar": ("lidar",), "fusion": ("image", "radar"),
}


@dataclasses.dataclass
class SiteMix:
    """The distribution site parameters are drawn from (uniform ranges; Dirichlet for condition mixes).

    Each access point draws its own street geometry, traffic (the blocker rate), lighting and
    weather mix and sensor set from this; the server's older sites draw from ``server_mix``.
    """

    curb_offset_m: tuple[float, float] = (2.0, 14.0)   # base station to the near curb
    lanes_each_way: tuple[int, int] = (1, 3)
    density_per_100m: tuple[float, float] = (0.5, 5.0)
    tall_fraction: tuple[float, float] = (0.1, 0.7)     # share of trucks/buses: the LOS blockers
    user_speed_mps: tuple[float, float] = (5.0, 20.0)   # the user's speeds are drawn inside this
    lighting_concentration: tuple[float, float, float] = (2.0, 1.0, 1.0)  # Dirichlet over day/dusk/night
    weather_concentration: tuple[float, float, float] = (3.0, 1.0, 0.5)   # clear/rain/fog

    def __post_init__(self) -> None:
        for name in ("curb_offset_m", "lanes_each_way", "density_per_100m", "tall_fraction", "user_speed_mps"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, got {(lo, hi)}")
        if self.lanes_each_way[0] < 1:
            raise ValueError("lanes_each_way must start at 1 or more")
        if self.curb_offset_m[0] <= 0 or self.user_speed_mps[0] <= 0:
            raise ValueError("curb_offset_m and user_speed_mps must be positive")
        for name in ("lighting_concentration", "weather_concentration"):
            if any(c <= 0 for c in getattr(self, name)):
                raise ValueError(f"{name}: three positive Dirichlet concentrations")


def _default_server_mix() -> SiteMix:
    # The "outdated server data": an older, narrower mix of sites (two-lane streets near the base
    # station, light traffic, mostly daylight), not the spread the deployed fleet sees.
    return SiteMix(curb_offset_m=(2.0, 5.0), lanes_each_way=(2, 2), density_per_100m=(0.5, 2.0),
                   tall_fraction=(0.1, 0.4), lighting_concentration=(8.0, 1.0, 0.5),
                   weather_concentration=(8.0, 1.0, 0.5))


@dataclasses.dataclass
class FleetConfig:
    """One fleet experiment. See the YAML profile for what each key means."""

    aps: int = 100
    modality: str = "radar"
    seed: int = 0
    # per access point: fresh local data (labelled) for training and for testing
    train_windows: int = 120
    test_windows: int = 60
    # per access point: windows its sensors recorded with no beam label (no beam sweep ran for them). Only a
    # topology with the teacher at the AP (decentralized) learns from them, through the teacher's outputs;
    # the others train on labels and never see them. 0: the AP holds labelled windows only.
    unlabelled_windows: int = 0
    site_mix: SiteMix = dataclasses.field(default_factory=SiteMix)
    # probability that a site has each sensor (a board without the sensor cannot run that student)
    sensor_probs: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"image": 1.0, "radar": 1.0, "lidar": 0.5, "gps": 1.0})
    # server: the older mix of sites, labelled; an unlabelled proxy set; a test set of the same mix
    server_mix: SiteMix = dataclasses.field(default_factory=_default_server_mix)
    server_sites: int = 12
    server_windows: int = 1500
    server_test_windows: int = 300
    proxy_windows: int = 300
    rehearsal_windows: int = 32        # semi-centralized: proxy windows (+ teacher logits) shipped to each AP
    image_size: int = 64
    # training budgets (epochs over the data set each stage sees)
    server_epochs: int = 8             # teacher and server student (also the oracle's, on the pooled data)
    local_epochs: int = 8              # an AP training alone / distilling from the teacher
    finetune_epochs: int = 2           # semi-centralized: fine-tuning the shipped student
    teacher_adapt_epochs: int = 2      # decentralized-adapted: fine-tuning the shipped teacher at the AP ...
    teacher_adapt_lr: float = 1e-3     # ... below the training lr: it starts from trained weights
    rounds: int = 4                    # FedAvg / federated distillation rounds
    round_epochs: int = 2              # epochs per FedAvg / FD round
    # batch 8 / lr 3e-3: an AP holds ~120 windows, so batch 32 gave 32 Adam steps in 8 epochs and the
    # AP-trained students stayed at chance; batch 8 gives 120 steps for the same MACs (BENCHMARKS.md)
    batch_size: int = 8
    # fits on server-held data (the teacher and server student on ~1,500 windows, the oracle's on every
    # site's pooled ~12,000): batch 8 there made the 100-AP comparison run 53 min, batch 32 gives ~47
    # Adam steps per epoch on 1,500 windows, plenty; MACs do not depend on the batch size
    server_batch_size: int = 32
    lr: float = 3e-3
    kd_alpha: float = 0.5              # (1 - alpha) * CE + alpha * KL
    kd_temperature: float = 4.0
    fd_beta: float = 0.5               # federated distillation: weight of the per-label logit term
    # boards and links (simulated round time; deterministic, not wall clock)
    boards: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"rpi4": 0.3, "rpi5": 0.3, "jetson": 0.2, "x86-ap": 0.2})
    # sustained fp32 training throughput assumed per board, GMAC/s (targets/*.yaml hold no compute rate)
    board_gmac_per_s: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"rpi4": 3.0, "rpi5": 8.0, "jetson": 40.0, "x86-ap": 25.0})
    downlink_mbps: float = 100.0
    uplink_mbps: float = 20.0
    deadline_s: float | None = None    # a round's straggler deadline (None: wait for every AP)

    def __post_init__(self) -> None:
        if self.aps < 1:
            raise ValueError(f"aps must be at least 1, got {self.aps}")
        if self.modality not in STUDENT_INPUTS:
            raise ValueError(f"unknown modality {self.modality!r} (known: {', '.join(STUDENT_INPUTS)})")
        for name in ("train_windows", "test_windows", "server_sites", "server_windows", "server_test_windows",
                     "proxy_windows", "image_size", "server_epochs", "local_epochs", "rounds", "round_epochs",
                     "batch_size", "server_batch_size", "teacher_adapt_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.rehearsal_windows < 0 or self.finetune_epochs < 0 or self.unlabelled_windows < 0:
            raise ValueError("rehearsal_windows, finetune_epochs and unlabelled_windows must be >= 0")
        if self.rehearsal_windows > self.proxy_windows:
            raise ValueError("rehearsal_windows cannot exceed proxy_windows")
        if not 0 <= self.kd_alpha <= 1 or not 0 <= self.fd_beta <= 1:
            raise ValueError("kd_alpha and fd_beta must be in [0, 1]")
        if self.kd_temperature <= 0 or self.lr <= 0 or self.teacher_adapt_lr <= 0:
            raise ValueError("kd_temperature, lr and teacher_adapt_lr must be positive")
        unknown = set(self.sensor_probs) - set(MODALITIES)
        if unknown:
            raise ValueError(f"sensor_probs: unknown sensor {sorted(unknown)[0]!r} (known: {', '.join(MODALITIES)})")
        if any(not 0 <= p <= 1 for p in self.sensor_probs.values()):
            raise ValueError("sensor_probs values must be in [0, 1]")
        if not self.boards or any(w < 0 for w in self.boards.values()) or sum(self.boards.values()) <= 0:
            raise ValueError("boards: a mapping of target name to a non-negative weight, at least one positive")
        missing = sorted(set(self.boards) - set(self.board_gmac_per_s))
        if missing:
            raise ValueError(f"board_gmac_per_s has no rate for board {missing[0]!r}")
        if any(r <= 0 for r in self.board_gmac_per_s.values()):
            raise ValueError("board_gmac_per_s rates must be positive")
        if self.downlink_mbps <= 0 or self.uplink_mbps <= 0:
            raise ValueError("downlink_mbps and uplink_mbps must be positive")
        if self.deadline_s is not None and self.deadline_s <= 0:
            raise ValueError("deadline_s must be positive (or null for no deadline)")

    @property
    def student(self) -> str:
        return f"{self.modality}_student"

    @property
    def teacher(self) -> str:
        return f"{self.modality}_teacher"

    @property
    def inputs(self) -> tuple[str, ...]:
        return STUDENT_INPUTS[self.modality]

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


def load_fleet_config(path: str | os.PathLike | None = None, **overrides: Any) -> FleetConfig:
    """The fleet config from YAML (a path, a shipped profile's name, or the default), then the CLI overrides."""
    if "modality" in overrides and overrides["modality"] is not None and overrides["modality"] not in STUDENT_INPUTS:
        raise EdgekdError(f"unknown modality {overrides['modality']!r}", field="--modality",
                          fix=f"one of: {', '.join(STUDENT_INPUTS)}")
    if overrides.get("aps") is not None and int(overrides["aps"]) < 1:
        raise EdgekdError(f"a fleet needs at least one access point, got --aps {overrides['aps']}",
                          field="--aps", fix="pass --aps 1 or more (default 100)")
    if path is not None and not Path(path).exists() and (PROFILES / f"{path}.yaml").is_file():
        path = PROFILES / f"{path}.yaml"   # a shipped profile by name (default, tiny)
    cfg = load_config(FleetConfig, path if path is not None else DEFAULT_PROFILE)
    try:
        return _override(cfg, overrides)
    except ValueError as exc:
        raise EdgekdError(str(exc), file=path, fix="check the value") from None


def _override(cfg: FleetConfig, overrides: dict[str, Any]) -> FleetConfig:
    from edgekd.device.config import override

    return override(cfg, **overrides)
