"""``python -m firmware_bench``: benchmark a bundle on this board (latency, memory, energy)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from edgekd.device.errors import EdgekdError
from firmware_bench.harness import run_benchmark
from firmware_bench.options import bench_options, settings_from_options
from firmware_bench.report import to_text


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@bench_options
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(bundle: Path, student: str | None, out: Path | None, as_json: bool, verbose: int, **options: Any) -> None:
    """Benchmark a bundle on this board: load time, latency percentiles, memory, energy per inference.

    Inputs cycle through the student's calibration windows. The headline p90
    needs 1024 runs and 10 s (MLPerf single stream); shorter runs are flagged.
    Energy always carries its method: measured:<meter>, estimated or unavailable.
    Settings the flags leave open come from the target profile recorded in the bundle.
    """
    logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 2),
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        report = run_benchmark(bundle, student, settings=settings_from_options(**options), out=out)
    except EdgekdError as exc:
        click.echo(f"error: {exc.format()}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=_json_default))
    else:
        click.echo(to_text(report), nl=False)


def _json_default(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


if __name__ == "__main__":  # pragma: no cover
    main(prog_name="python -m firmware_bench")
