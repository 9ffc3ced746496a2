"""The command-line options ``edgekd bench`` and ``python -m firmware_bench`` share, defined once.

``@bench_options`` applies them to a click command; :func:`settings_from_options`
turns their values into :class:`~firmware_bench.settings.BenchSettings` (the
target profile fills what they leave open, see ``settings.resolve_target``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from firmware_bench.power import METERS, parse_power_model
from firmware_bench.settings import BACKEND_ARTIFACTS, BenchSettings

F = TypeVar("F", bound=Callable[..., Any])

METER_CHOICES = "auto|" + "|".join(n for n in METERS.names() if n != "csv") + "|csv:FILE"
# the option values settings_from_options reads (the rest of a command's options are its own)
SETTINGS_OPTIONS = ("backend", "artifact", "threads", "providers", "runs", "seconds", "warmup", "power_meter",
                    "power_model", "idle_seconds", "op_profile", "op_profile_tool", "verify", "trusted_key")

_OPTIONS = (
    click.option("--bundle", "bundle", required=True, type=click.Path(file_okay=False, path_type=Path),
                 help="Bundle directory written by `edgekd export` (holds manifest.json)."),
    click.option("--student", default=None, help="Only this student (image, radar, lidar, ...); default: all."),
    click.option("--backend", type=click.Choice(sorted(BACKEND_ARTIFACTS)), default=None,
                 help="Interpreter: tflite or ort (ONNX Runtime); default: the target profile's."),
    click.option("--artifact", default=None,
                 help="Manifest artifact kind (tflite_int8, tflite_fp16, tflite_fp32, onnx_int8_qdq, onnx_fp32); "
                      "default: the best one for the backend."),
    click.option("--threads", type=click.IntRange(min=1), default=None,
                 help="Interpreter threads (and torch threads with `edgekd bench --compare`); default: the target "
                      "profile's (with --compare capped at the usable CPUs)."),
    click.option("--providers", default=None, metavar="EP[,EP...]",
                 help="ONNX Runtime execution providers in order of preference; default: the target profile's."),
    click.option("--runs", type=click.IntRange(min=1), default=None,
                 help="Timed runs (at least this many). Default: the MLPerf single-stream minimum, 1024 runs and "
                      "10 s (`edgekd bench --compare`: 300 per format)."),
    click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=None,
                 help="Run the timed loop for at least this many seconds (with --runs: until both are reached)."),
    click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True,
                 help="Untimed warm-up runs after the first inference (with --compare: interleaved rounds)."),
    click.option("--power-meter", "power_meter", default=None, metavar=METER_CHOICES,
                 help="Energy source: auto tries the board meters then the estimate; csv:FILE reads an external "
                      "meter's log (time, watts). Default: the target profile's meter, else auto. Without a "
                      "readable meter the energy is estimated from the power model and labelled 'estimated'."),
    click.option("--power-model", "power_model", default=None, metavar="IDLE_W,ACTIVE_W",
                 help="Board watts idle and with all cores busy, for the estimate; default: the target profile's."),
    click.option("--idle-seconds", type=click.FloatRange(min=0), default=1.0, show_default=True,
                 help="Seconds of idle power measured before loading (0: skip); gives energy above idle."),
    click.option("--op-profile/--no-op-profile", default=True, show_default=True,
                 help="Add an op profile (a separate pass after the timed runs)."),
    click.option("--op-profile-tool", default=None, type=click.Path(dir_okay=False),
                 help="TFLite benchmark_model binary for per-op times (default: benchmark_model on PATH)."),
    click.option("--verify/--no-verify", default=True, show_default=True,
                 help="Check the artifact's and calibration set's sha256 against the manifest first."),
    click.option("--key", "trusted_key", type=click.Path(dir_okay=False), default=None,
                 help="Trusted public key (PEM, from `edgekd bundle keygen`): refuse a bundle not signed with it. "
                      "Default: the target profile's trusted_key, else $EDGEKD_TRUSTED_KEY; none: not checked."),
    click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
                 help="Directory for the reports (bench.json and bench.csv; with --compare "
                      "compare.json/.csv/.md/.png)."),
    click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead of the table."),
)


def bench_options(command: F) -> F:
    """Apply the shared benchmark options to ``command`` (listed in ``--help`` in this order)."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def parse_providers(text: str | None) -> tuple[str, ...] | None:
    return tuple(p.strip() for p in text.split(",") if p.strip()) if text else None


def settings_from_options(**values: Any) -> BenchSettings:
    """BenchSettings from the shared options' values (other keyword arguments are ignored)."""
    fields = {k: values[k] for k in SETTINGS_OPTIONS if k in values}
    fields["providers"] = parse_providers(fields.get("providers"))
    model = fields.get("power_model")
    fields["power_model"] = parse_power_model(model) if model else None
    return BenchSettings(**fields)
