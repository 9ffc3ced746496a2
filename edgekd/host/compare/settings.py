"""What one comparison does: the flags, resolved against the target profile by firmware_bench's one resolver."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from edgekd.device.errors import EdgekdError
from firmware_bench.settings import resolve_target

# The acceptance rule's defaults: issue 7's deployment target for the TFLite int8 student against its teacher.
MIN_SPEEDUP = 10.0
MAX_TOP2_DROP_POINTS = 3.0


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
    min_speedup: float = MIN_SPEEDUP              # acceptance: TFLite int8 p50 speed-up over the teacher, at least
    max_top2_drop: float = MAX_TOP2_DROP_POINTS   # acceptance: top-2 points below the teacher, at most

    def __post_init__(self) -> None:
        checks = [("runs", self.runs >= 1, "e.g. --runs 300"), ("warmup", self.warmup >= 0, "e.g. --warmup 10"),
                  ("block", self.block >= 1, "e.g. --block 10"),
                  ("energy-seconds", self.energy_seconds >= 0, "0 skips energy"),
                  ("threads", self.threads is None or self.threads >= 1, "e.g. --threads 1"),
                  ("eval-windows", self.eval_windows is None or self.eval_windows >= 1, "e.g. --eval-windows 300"),
                  ("min-speedup", self.min_speedup >= 0, "e.g. --min-speedup 10"),
                  ("max-top2-drop", self.max_top2_drop >= 0, "e.g. --max-top2-drop 3")]
        for name, ok, fix in checks:
            if not ok:
                raise EdgekdError(f"invalid value for --{name}", field=f"--{name}", fix=fix)

    def rule(self) -> dict[str, Any]:
        """The acceptance rule as data (recorded in every output next to its verdicts)."""
        return {"min_speedup_p50": self.min_speedup, "max_top2_drop_points": self.max_top2_drop,
                "text": f"p50 speed-up >= {self.min_speedup:g}x and top-2 drop <= {self.max_top2_drop:g} points"}


def resolve_settings(settings: CompareSettings, target: dict) -> tuple[CompareSettings, dict]:
    """Threads (capped at the usable CPUs), providers, meter and power model from the target unless given.

    ``settings.target`` (``--target``) replaces the bundle's recorded target; the rules are
    firmware_bench's one resolver (``settings.resolve_target``), as for ``edgekd bench``.
    """
    if settings.target:
        from edgekd.device.targets import load_target

        target = load_target(settings.target).to_dict()
    resolved = resolve_target(target, threads=settings.threads, providers=settings.providers,
                              power_meter=settings.power_meter, power_model=settings.power_model, cap_threads=True)
    return dataclasses.replace(settings, threads=resolved.threads, providers=resolved.providers,
                               power_meter=resolved.power_meter, power_model=resolved.power_model), target
