"""``edgekd bench``: benchmark a bundle for a target board, or compare every format (``--compare``).

Plain mode takes threads, backend, execution providers and the power meter
from the target profile (flags override; ``firmware_bench.settings.resolve_target``
is the one resolver), runs firmware_bench's ``run_benchmark`` and prints its
table. It stays light (no torch/tensorflow): it runs on a board with
``edgekd[device]``. The options it shares with ``python -m firmware_bench``
are defined once, in ``firmware_bench.options``.

``--compare`` runs PyTorch too, so it lives on the host side
(``edgekd.host.compare.cli.run``). This device module never imports the host
packages (an import-linter contract forbids it): it looks the host command up
by name with importlib and, on a device-only install, exits 2 saying which
extra to install.
"""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from typing import Any

import click

from edgekd.device.errors import EdgekdError
from firmware_bench.options import bench_options, settings_from_options
from firmware_bench.settings import BenchSettings, resolve_target

log = logging.getLogger(__name__)

HOST_COMPARE = "edgekd.host.compare.cli"   # the host side of --compare, imported by name only
COMPARE_ONLY = ("data", "checkpoints", "teachers")


def settings_from_target(profile: Any, *, threads: int | None = None, backend: str | None = None,
                         providers: Any = None, power_meter: str | None = None,
                         power_model: Any = None, **fields: Any) -> BenchSettings:
    """firmware_bench settings for ``profile`` (a ``TargetProfile``); any given flag overrides the profile."""
    resolved = resolve_target(profile, threads=threads, backend=backend, providers=providers,
                              power_meter=power_meter, power_model=power_model)
    return BenchSettings(threads=resolved.threads, backend=resolved.backend, providers=resolved.providers,
                         power_meter=resolved.power_meter, power_model=resolved.power_model, **fields)


def host_compare() -> Any:
    """The host side's ``run`` of ``--compare``; a clear error on a device-only install."""
    try:
        module = importlib.import_module(HOST_COMPARE)
    except ImportError as exc:
        raise EdgekdError(f"--compare needs the host side of edgekd (PyTorch and the exporters): {exc}",
                          field="--compare",
                          fix="pip install 'edgekd[host]' on a host machine; on a board run `edgekd bench "
                              "--target NAME` (plain mode)") from None
    return module.run


@click.command("bench", context_settings={"help_option_names": ["-h", "--help"]})
@bench_options
@click.option("--target", "-t", default=None,
              help="Target profile (name, alias or YAML; see `edgekd targets list`): threads, backend, execution "
                   "providers and power meter come from it. Required without --compare; with --compare the "
                   "default is the target recorded in the bundle.")
@click.option("--compare", is_flag=True,
              help="Compare PyTorch fp32, ONNX Runtime fp32, ONNX QDQ int8, TFLite fp32 and int8 of every student "
                   "and its PyTorch teacher, interleaved in one process (host only: needs edgekd[host]).")
@click.option("--data", "data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="--compare: dataset whose held-out test windows give the accuracy and the timing inputs; "
                   "default: DEMO/data/dataset when the bundle is DEMO/bundle of `edgekd demo`.")
@click.option("--checkpoints", "checkpoints", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="--compare: student checkpoint(s) (repeat the option); default: found from the manifest's "
                   "checkpoint record next to the bundle (or in DEMO/students); matched by sha256.")
@click.option("--teacher", "teachers", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="--compare: teacher checkpoint(s) (repeat the option), matched to students by modality; "
                   "default: DEMO/teachers/*.pt of a demo, else the teacher recorded in the student checkpoint.")
@click.option("--eval-windows", type=click.IntRange(min=1), default=300, show_default=True,
              help="--compare: held-out test windows (evenly spread) for accuracy and timing.")
@click.option("--block", type=click.IntRange(min=1), default=10, show_default=True,
              help="--compare: back-to-back timed calls per format per interleaved round (after one untimed-for-"
                   "the-headline switch call, reported apart as the cold-cache latency).")
@click.option("--energy-seconds", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="--compare: seconds of metered runs per format for energy (0: skip energy).")
@click.option("--min-speedup", type=click.FloatRange(min=0), default=None,
              help="--compare: the acceptance rule's speed-up: TFLite int8 at least this many times faster (p50) "
                   "than the PyTorch teacher. Default 10 (issue 7's deployment target); the rule used is recorded "
                   "next to each PASS/FAIL in every output.")
@click.option("--max-top2-drop", type=click.FloatRange(min=0), default=None,
              help="--compare: the acceptance rule's accuracy: TFLite int8's top-2 at most this many points below "
                   "the teacher's. Default 3 (issue 7's deployment target).")
def bench(bundle: Path, target: str | None, student: str | None, out: Path | None, as_json: bool, compare: bool,
          **options: Any) -> None:
    """Benchmark latency, memory and energy of BUNDLE for a target board, or compare formats.

    \b
    edgekd bench --target rpi5 --bundle B [--student image] [--runs N | --seconds S]
    edgekd bench --compare --bundle B [--data D] [--checkpoints s.pt ...] [--teacher t.pt ...]

    Energy always carries its method: measured:<meter>, estimated or unavailable.
    """
    if compare:
        report, text = host_compare()(bundle, target=target, student=student, out=out, as_json=as_json, **options)
        click.echo(text, nl=as_json)
        return
    click.echo(_plain(bundle, target, student, out, as_json, options), nl=not as_json)


def _plain(bundle: Path, target: str | None, student: str | None, out: Path | None, as_json: bool,
           options: dict[str, Any]) -> str:
    if target is None:
        raise EdgekdError("no target profile given", field="--target",
                          fix="pass --target NAME (see `edgekd targets list`), or --compare")
    for name in (*COMPARE_ONLY, "min_speedup", "max_top2_drop"):
        if options.get(name):
            flag = "--teacher" if name == "teachers" else "--" + name.replace("_", "-")
            raise EdgekdError(f"{flag} only applies to --compare", field=flag, fix=f"add --compare or drop {flag}")
    from edgekd.device.targets import load_target
    from firmware_bench.harness import run_benchmark
    from firmware_bench.report import to_text

    profile = load_target(target)
    flags = settings_from_options(**options)
    settings = settings_from_target(
        profile, threads=flags.threads, backend=flags.backend, providers=flags.providers,
        power_meter=flags.power_meter, power_model=flags.power_model, artifact=flags.artifact, runs=flags.runs,
        seconds=flags.seconds, warmup=flags.warmup, idle_seconds=flags.idle_seconds, op_profile=flags.op_profile,
        op_profile_tool=flags.op_profile_tool, verify=flags.verify,
        trusted_key=flags.trusted_key or profile.trusted_key)
    report = run_benchmark(bundle, student, settings=settings)
    report["target_profile"] = profile.name  # where the settings came from (the bundle may record another)
    if out is not None:
        from firmware_bench.report import write_report

        write_report(report, out)
    return json.dumps(report, indent=2, default=str) if as_json else to_text(report)
