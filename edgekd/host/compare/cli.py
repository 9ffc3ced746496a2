"""What ``edgekd bench --compare`` runs: the device-side command looks this module up by name (importlib).

``edgekd.device.bench`` may not import the host side (import-linter), so it
calls :func:`run` with its parsed options and prints the text it returns.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekd.device.errors import EdgekdError
from edgekd.host.compare.markdown import to_markdown
from edgekd.host.compare.run import compare_bundle
from edgekd.host.compare.settings import MAX_TOP2_DROP_POINTS, MIN_SPEEDUP, CompareSettings
from firmware_bench.options import parse_providers
from firmware_bench.power import parse_power_model


def require_host_extra() -> None:
    """A device-only install ships this module but not PyTorch: say which extra to install, no traceback."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise EdgekdError(f"--compare runs the PyTorch models too, and PyTorch cannot be imported here: {exc}",
                          field="--compare",
                          fix="pip install 'edgekd[host]' on a host machine; on a board run `edgekd bench "
                              "--target NAME` (plain mode)") from None


def run(bundle: Path, *, target: str | None, student: str | None, out: Path | None, as_json: bool,
        runs: int | None = None, warmup: int = 10, threads: int | None = None, providers: str | None = None,
        power_meter: str | None = None, power_model: str | None = None, data: Path | None = None,
        checkpoints: tuple[Path, ...] = (), teachers: tuple[Path, ...] = (), eval_windows: int = 300,
        block: int = 10, energy_seconds: float = 1.0, min_speedup: float | None = None,
        max_top2_drop: float | None = None, **_plain_mode: Any) -> tuple[dict[str, Any], str]:
    """Compare every format of ``bundle``; returns the report and its text (JSON or the Markdown table).

    Options of plain mode only (backend, artifact, seconds, idle seconds, op profile, verify) do not
    apply to a comparison and are ignored, as before.
    """
    require_host_extra()
    settings = CompareSettings(
        runs=runs or CompareSettings.runs, warmup=warmup, eval_windows=eval_windows, block=block, threads=threads,
        providers=parse_providers(providers), power_meter=power_meter,
        power_model=parse_power_model(power_model) if power_model else None, energy_seconds=energy_seconds,
        target=target, min_speedup=MIN_SPEEDUP if min_speedup is None else min_speedup,
        max_top2_drop=MAX_TOP2_DROP_POINTS if max_top2_drop is None else max_top2_drop)
    report = compare_bundle(bundle, data, checkpoints=checkpoints, teachers=teachers, student=student,
                            settings=settings, out=out)
    return report, json.dumps(report, indent=2, default=str) if as_json else to_markdown(report)
