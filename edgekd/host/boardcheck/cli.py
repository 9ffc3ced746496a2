"""``edgekd bundle check BUNDLE --target NAME`` (registered in the ``bundle`` group of edgekd.host.export.cli)."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("check")
@click.argument("bundle_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--target", "-t", required=True,
              help="ARM target whose core is emulated: rpi5, rpi4, jetson (a name, alias or YAML path).")
@click.option("--data", "-d", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Dataset directory: run held-out test windows (evenly spread, as the export's parity gate "
                   "draws them). Default: the bundle's recorded calibration windows.")
@click.option("--windows", type=click.IntRange(min=1), default=64, show_default=True,
              help="Input windows per artifact.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Interpreter threads on both sides (default: the target's).")
@click.option("--tolerance-lsb", type=click.IntRange(min=0), default=4, show_default=True,
              help="Largest int8 output difference (LSB) accepted when not bit-identical (the top-1 and top-2 "
                   "beams must agree everywhere); 0 demands bit-identical outputs.")
@click.option("--fp-rtol", type=click.FloatRange(min=0), default=1e-5, show_default=True,
              help="Largest float output difference accepted, as a fraction of the largest host output.")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of the cached board environments (default: $EDGEKD_CACHE/boardenv or "
                   "~/.cache/edgekd/boardenv).")
@click.option("--no-write", is_flag=True, help="Do not record the results in manifest.json.")
def check(bundle_dir: Path, target: str, data: Path | None, windows: int, threads: int | None,
          tolerance_lsb: int, fp_rtol: float, cache: Path | None, no_write: bool) -> None:
    """Run BUNDLE's TFLite artifacts on the target's instruction set (qemu-user, the board's core pinned,
    the board's Python + numpy + interpreter) and compare their outputs with the host's.

    Results go into manifest.json (per artifact: board_checks). Exit 1 when an output differs beyond the
    tolerance, 2 when emulation is unavailable (nothing is claimed then). Needs qemu-user-static and, the
    first time, network access (~30 MB of Debian arm64 packages and aarch64 wheels; ~200 MB cached).
    """
    from edgekd.host.boardcheck.check import check_bundle, format_report

    report = check_bundle(bundle_dir, target, windows=windows, data=data, threads=threads, tolerance_lsb=tolerance_lsb,
                          fp_rtol=fp_rtol, cache=cache, write_manifest=not no_write)
    click.echo(format_report(report))
    if not no_write:
        click.echo(f"recorded in {bundle_dir / 'manifest.json'} (board_checks)")
    if not report.passed:
        sys.exit(1)
