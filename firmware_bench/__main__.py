"""``python -m firmware_bench``: benchmark a bundle on this board (latency, memory, energy)."""

from __future__ import annotations

import json
import logging
import sys

import click

from edgekd.device.errors import EdgekdError
from firmware_bench.harness import BACKEND_ARTIFACTS, BenchSettings, run_benchmark
from firmware_bench.power import METERS, parse_power_model
from firmware_bench.report import to_text

METER_CHOICES = "auto|" + "|".join(n for n in METERS.names() if n != "csv") + "|csv:FILE"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--bundle", "bundle", required=True, type=click.Path(exists=True, file_okay=False),
              help="Bundle directory written by `edgekd export` (holds manifest.json).")
@click.option("--student", default=None, help="Student to benchmark (image, radar, lidar, ...); default: all.")
@click.option("--backend", type=click.Choice(sorted(BACKEND_ARTIFACTS)), default=None,
              help="Interpreter: tflite or ort (ONNX Runtime); default: the bundle's target profile.")
@click.option("--artifact", default=None,
              help="Manifest artifact kind (tflite_int8, tflite_fp16, tflite_fp32, onnx_int8_qdq, onnx_fp32); "
                   "default: the best one for the backend.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Interpreter threads; default: the target profile's.")
@click.option("--runs", type=click.IntRange(min=1), default=None,
              help="Timed runs (at least this many). Without --runs/--seconds: the MLPerf single-stream "
                   "minimum, 1024 runs and 10 s.")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Run the timed loop for at least this many seconds (with --runs: until both are reached).")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True,
              help="Warm-up runs after the first inference, not timed into the statistics.")
@click.option("--power-meter", "power_meter", default=None, metavar=METER_CHOICES,
              help="Energy source: auto tries the board meters then the estimate; csv:FILE reads an "
                   "external meter's log (time, watts). Default: the target profile's meter, else auto.")
@click.option("--power-model", "power_model", default=None, metavar="IDLE_W,ACTIVE_W",
              help="Board watts idle and with all cores busy, for the estimate; default: the target profile's.")
@click.option("--idle-seconds", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Seconds of idle power measured before loading (0: skip); gives energy above idle.")
@click.option("--op-profile/--no-op-profile", default=True, show_default=True,
              help="Add an op profile (separate pass after the timed runs).")
@click.option("--op-profile-tool", default=None, type=click.Path(dir_okay=False),
              help="TFLite benchmark_model binary for per-op times (default: benchmark_model on PATH).")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Check the artifact's and calibration set's sha256 against the manifest first.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Directory for bench.json and bench.csv.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead of the text table.")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(bundle: str, student: str | None, backend: str | None, artifact: str | None, threads: int | None,
         runs: int | None, seconds: float | None, warmup: int, power_meter: str | None,
         power_model: str | None, idle_seconds: float, op_profile: bool, op_profile_tool: str | None,
         verify: bool, out: str | None, as_json: bool, verbose: int) -> None:
    """Benchmark a bundle on this board: load time, latency percentiles, memory, energy per inference.

    Inputs cycle through the student's calibration windows. The headline p90
    needs 1024 runs and 10 s (MLPerf single stream); shorter runs are flagged.
    Energy always carries its method: measured:<meter>, estimated or unavailable.
    """
    logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 2),
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = BenchSettings(
            backend=backend, artifact=artifact, threads=threads, runs=runs, seconds=seconds, warmup=warmup,
            power_meter=power_meter, idle_seconds=idle_seconds, op_profile=op_profile,
            op_profile_tool=op_profile_tool, verify=verify,
            power_model=parse_power_model(power_model) if power_model else None)
        report = run_benchmark(bundle, student, settings=settings, out=out)
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
