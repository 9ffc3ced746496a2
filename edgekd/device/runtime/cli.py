"""``edgekd run``: the multi-student runtime on a recorded drive (thin over edgekd.device.runtime). DEVICE SIDE."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("run")
@click.option("--bundle", "bundle_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Bundle directory written by `edgekd export`.")
@click.option("--replay", "drive_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Drive file recorded by `edgekd data drive` (.npz).")
@click.option("--target", "-t", default=None,
              help="Target profile (name, alias or YAML path) [default: the one the bundle was exported for].")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for frames.jsonl, segments.md/csv, switches.csv, summary.json and timeline.png "
                   "(the PNG needs the host extra: matplotlib).")
@click.option("--policy", default="auto", show_default=True,
              help="auto (switch students by the target's policy) or fixed:<student> (e.g. fixed:image, the "
                   "single-student baseline).")
@click.option("--realtime/--as-fast-as-possible", default=False, show_default=True,
              help="Replay at the recorded frame times, or as fast as the runtime goes.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Interpreter threads per student [default: the target profile's].")
@click.option("--artifact", default=None,
              help="Force one artifact kind (e.g. tflite_int8) [default: what the target's backend runs].")
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True,
              help="Beams returned per horizon.")
@click.option("--no-plot", is_flag=True, help="Skip the PNG timeline.")
@click.option("--progress/--no-progress", default=False, show_default=True,
              help="Show a one-line frame counter on stderr.")
@click.option("--key", "key", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Trusted public key: the bundle must be signed with it [default: the --target profile's "
                   "trusted_key, else $EDGEKD_TRUSTED_KEY; none: the signature is not checked].")
@click.option("--allow-degraded", is_flag=True,
              help="Run a bundle written past a failed parity gate (degraded: true) instead of exit 2.")
def run(bundle_dir, drive_path, target, report_dir, policy, realtime, threads, artifact, top_k, no_plot, progress,
        key, allow_degraded):
    """Replay a recorded drive through the runtime; print per-lighting accuracy and switches."""
    from edgekd.device.bundle import degraded_note, open_bundle
    from edgekd.device.runtime.engine import Runtime
    from edgekd.device.runtime.replay import (
        drive_problems,
        load_drive,
        rejected_summary,
        replay,
        summarize,
        timeline_plotter,
        write_report,
    )
    from edgekd.device.targets import load_target

    if key is None and target is not None:
        key = load_target(target).trusted_key
    opened = open_bundle(bundle_dir, trusted_key=key, allow_degraded=allow_degraded)
    note = degraded_note(opened.manifest)
    if note:
        click.echo(f"WARNING: {note}", err=True)
    drive = load_drive(drive_path)
    runtime = Runtime.from_bundle(bundle_dir, target, policy=policy, threads=threads, kind=artifact, top_k=top_k,
                                  trusted_key=key, allow_degraded=allow_degraded)
    for warning in drive_problems(runtime, drive):
        click.echo(f"WARNING: {warning}", err=True)
    result = replay(runtime, drive, realtime=realtime, keep_records=report_dir is not None, progress=progress)
    summary = summarize(result, drive, runtime.hub.window, policy)
    summary["runtime"] = runtime.describe()
    no_timeline = None  # why timeline.png cannot be drawn here (a device-only install has no matplotlib)
    if report_dir is not None:
        no_timeline = None if no_plot else timeline_plotter()[1]
        write_report(report_dir, result, drive, summary, plot=not no_plot and no_timeline is None)
    click.echo(f"replayed {drive.num_frames} frames in {result.wall_s:.1f} s, policy {policy}, "
               f"students: {', '.join(f'{n} ({r.kind})' for n, r in runtime.students.items())}")
    click.echo(f"{'group':<28} {'frames':>6} {'top1':>6} {'top5':>6} {'cover':>6} {'p50 ms':>7} {'p99 ms':>7}  "
               "students")
    for row in summary["rows"]:
        click.echo(f"{row['group']:<28} {row['frames']:>6} {row['top1_t0']:>6.3f} {row['top5_t0']:>6.3f} "
                   f"{row['coverage']:>6.3f} {row['latency_p50_ms']:>7.2f} {row['latency_p99_ms']:>7.2f}  "
                   f"{row['students']}")
    kinds = ", ".join(f"{k} {v}" for k, v in summary["switches_by_kind"].items())
    click.echo(f"switches: {len(result.switches)} ({kinds}; {summary['condition_changes']} condition changes); "
               f"overhead (all but invoke) p50 {summary['overhead_ms']['p50']:.3f} ms; "
               f"frames without prediction: {result.counters['no_prediction']} "
               f"({result.counters['warm_up_frames']} of them in the warm-up of {result.counters['tracks']} tracks, "
               f"not scored)")
    for sw in result.switches:
        click.echo(f"  t={sw['t']:.1f}s [{sw['segment']}] {sw['kind']}: {sw['from']} -> {sw['to']}: {sw['reason']}")
    rejected = rejected_summary(result.counters["sensors"])
    if rejected:
        click.echo(f"WARNING: sensor frames rejected (rejected/received): {rejected}", err=True)
    if report_dir is not None:
        click.echo(f"report: {report_dir}")
        if no_timeline:
            click.echo(f"note: timeline.png not written: {no_timeline}")
    else:
        click.echo(json.dumps({"top5_t0": summary["top5_t0"]}))
