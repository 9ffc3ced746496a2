"""``edgekd bench``: benchmark a bundle for a target board, or compare every format (``--compare``).

Plain mode takes threads, backend, execution providers and the power meter
from the target profile (flags override), runs firmware_bench's
``run_benchmark`` and prints its table. It stays light (no torch/tensorflow):
it runs on a board with ``edgekd[device]``.

``--compare`` (host only: it runs PyTorch too) is ``edgekd.host.compare``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from edgekd.device.errors import EdgekdError

log = logging.getLogger(__name__)


def settings_from_target(profile: Any, *, threads: int | None = None, backend: str | None = None,
                         providers: Sequence[str] | None = None, power_meter: str | None = None,
                         power_model: Any = None, **fields: Any):
    """firmware_bench settings for ``profile`` (a ``TargetProfile``); any given flag overrides the profile."""
    from firmware_bench.harness import BenchSettings
    from firmware_bench.power import PowerModel

    meter = power_meter or profile.power_meter
    if meter == "csv":  # the profile names an external meter, but only the command line knows its log file
        log.warning("target '%s' measures energy with an external meter: pass --power-meter csv:LOG.csv; "
                    "trying the board's meters, then the estimate", profile.name)
        meter = "auto"
    model = power_model or PowerModel(profile.power_model.idle_w, profile.power_model.active_w,
                                      source=f"target profile '{profile.name}'")
    return BenchSettings(threads=threads or profile.threads, backend=backend or profile.backend,
                         providers=tuple(providers or profile.execution_providers) or None,
                         power_meter=meter, power_model=model, **fields)


def _providers(text: str | None) -> tuple[str, ...] | None:
    return tuple(p.strip() for p in text.split(",") if p.strip()) if text else None


@click.command("bench", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--bundle", "bundle", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Bundle directory written by `edgekd export` (holds manifest.json).")
@click.option("--target", "-t", default=None,
              help="Target profile (name, alias or YAML; see `edgekd targets list`): threads, backend, execution "
                   "providers and power meter come from it. Required without --compare; with --compare the "
                   "default is the target recorded in the bundle.")
@click.option("--student", default=None, help="Only this student (image, radar, lidar, ...); default: all.")
@click.option("--runs", type=click.IntRange(min=1), default=None,
              help="Timed runs. Plain mode default: the MLPerf single-stream minimum (1024 runs and 10 s); "
                   "--compare default: 300 per format.")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Plain mode: time the loop for at least this many seconds (with --runs: until both are reached).")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True,
              help="Untimed warm-up runs (with --compare: interleaved rounds over all formats).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Interpreter threads (and torch threads with --compare); default: the target profile's "
                   "(with --compare capped at the usable CPUs).")
@click.option("--backend", type=click.Choice(["tflite", "ort"]), default=None,
              help="Plain mode interpreter: tflite or ort (ONNX Runtime); default: the target profile's.")
@click.option("--artifact", default=None,
              help="Plain mode artifact kind (tflite_int8, tflite_fp16, tflite_fp32, onnx_int8_qdq, onnx_fp32); "
                   "default: the best one for the backend.")
@click.option("--providers", default=None, metavar="EP[,EP...]",
              help="ONNX Runtime execution providers in order of preference; default: the target profile's.")
@click.option("--power-meter", "power_meter", default=None,
              metavar="auto|rapl|ina3221|tegrastats|rpi5-pmic|estimate|csv:FILE",
              help="Energy source; default: the target profile's meter. Without a readable meter the energy is "
                   "estimated from the target's power model and labelled 'estimated'.")
@click.option("--power-model", "power_model", default=None, metavar="IDLE_W,ACTIVE_W",
              help="Board watts idle and with all cores busy for the estimate; default: the target profile's.")
@click.option("--idle-seconds", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Plain mode: seconds of idle power measured before loading (0: skip).")
@click.option("--op-profile/--no-op-profile", default=True, show_default=True,
              help="Plain mode: add an op profile (a separate pass after the timed runs).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory for the reports (bench.json/.csv; with --compare compare.json/.csv/.md/.png).")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead of the table.")
@click.option("--compare", is_flag=True,
              help="Compare PyTorch fp32, ONNX Runtime fp32, ONNX QDQ int8, TFLite fp32 and int8 of every student "
                   "and its PyTorch teacher, interleaved in one process (host only).")
@click.option("--data", "data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="--compare: dataset whose held-out test windows give the accuracy and the timing inputs.")
@click.option("--checkpoints", "checkpoints", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="--compare: student checkpoint(s) (repeat the option); default: found from the manifest's "
                   "checkpoint record next to the bundle; matched by sha256.")
@click.option("--teacher", "teachers", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="--compare: teacher checkpoint(s) (repeat the option), matched to students by modality; "
                   "default: the teacher recorded in the student checkpoint.")
@click.option("--eval-windows", type=click.IntRange(min=1), default=300, show_default=True,
              help="--compare: held-out test windows (evenly spread) for accuracy and timing.")
@click.option("--block", type=click.IntRange(min=1), default=10, show_default=True,
              help="--compare: back-to-back timed calls per format per interleaved round (after one untimed-for-"
                   "the-headline switch call, reported apart as the cold-cache latency).")
@click.option("--energy-seconds", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="--compare: seconds of metered runs per format for energy (0: skip energy).")
def bench(bundle: Path, target: str | None, student: str | None, runs: int | None, seconds: float | None,
          warmup: int, threads: int | None, backend: str | None, artifact: str | None, providers: str | None,
          power_meter: str | None, power_model: str | None, idle_seconds: float, op_profile: bool,
          out: Path | None, as_json: bool, compare: bool, data: Path | None, checkpoints: tuple[Path, ...],
          teachers: tuple[Path, ...], eval_windows: int, block: int, energy_seconds: float) -> None:
    """Benchmark latency, memory and energy of BUNDLE for a target board, or compare formats.

    \b
    edgekd bench --target rpi5 --bundle B [--student image] [--runs N | --seconds S]
    edgekd bench --compare --bundle B --data D [--checkpoints s.pt ...] [--teacher t.pt ...]

    Energy always carries its method: measured:<meter>, estimated or unavailable.
    """
    from firmware_bench.power import parse_power_model

    model = parse_power_model(power_model) if power_model else None
    if compare:
        report = _compare(bundle, target, student, runs, warmup, threads, providers, power_meter, model, out,
                          data, checkpoints, teachers, eval_windows, block, energy_seconds)
        from edgekd.host.compare import to_markdown

        click.echo(json.dumps(report, indent=2, default=str) if as_json else to_markdown(report), nl=as_json)
        return
    if target is None:
        raise EdgekdError("no target profile given", field="--target",
                          fix="pass --target NAME (see `edgekd targets list`), or --compare")
    for flag, value in (("--data", data), ("--checkpoints", checkpoints), ("--teacher", teachers)):
        if value:
            raise EdgekdError(f"{flag} only applies to --compare", field=flag, fix=f"add --compare or drop {flag}")
    from edgekd.device.targets import load_target
    from firmware_bench.harness import run_benchmark
    from firmware_bench.report import to_text

    profile = load_target(target)
    settings = settings_from_target(profile, threads=threads, backend=backend, providers=_providers(providers),
                                    power_meter=power_meter, power_model=model, artifact=artifact, runs=runs,
                                    seconds=seconds, warmup=warmup, idle_seconds=idle_seconds,
                                    op_profile=op_profile)
    report = run_benchmark(bundle, student, settings=settings)
    report["target_profile"] = profile.name  # where the settings came from (the bundle may record another)
    if out is not None:
        from firmware_bench.report import write_report

        write_report(report, out)
    click.echo(json.dumps(report, indent=2, default=str) if as_json else to_text(report), nl=not as_json)


def _compare(bundle, target, student, runs, warmup, threads, providers, power_meter, power_model, out, data,
             checkpoints, teachers, eval_windows, block, energy_seconds) -> dict:
    from edgekd.host.compare import CompareSettings, compare_bundle

    if data is None:
        raise EdgekdError("--compare needs a dataset", field="--data",
                          fix="pass --data DIR (its test split gives accuracy and inputs)")
    settings = CompareSettings(runs=runs or CompareSettings.runs, warmup=warmup, eval_windows=eval_windows,
                               block=block, threads=threads, providers=_providers(providers),
                               power_meter=power_meter,
                               power_model=power_model, energy_seconds=energy_seconds, target=target)
    return compare_bundle(bundle, data, checkpoints=checkpoints, teachers=teachers, student=student,
                          settings=settings, out=out)

