"""``edgekd export`` and ``edgekd bundle verify|show``: thin over edgekd.host.export and edgekd.device.bundle."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import click

from edgekd.host.boardcheck.cli import check as board_check

log = logging.getLogger(__name__)


@click.command("export")
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target", "-t", required=True,
              help="Target profile: a name or alias (rpi4, rpi5, jetson, x86-ap; see `edgekd targets list`) "
                   "or a YAML path.")
@click.option("--data", "-d", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Dataset directory: train split for calibration, test split for the parity gate.")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path),
              help="Bundle directory to write (written atomically).")
@click.option("--allow-degraded", is_flag=True,
              help="Write the bundle even if the parity gate fails; the manifest records degraded: true.")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle directory.")
@click.option("--calibration-size", type=click.IntRange(min=1), default=None,
              help="Calibration windows per student (default: the recipe's size, calibration/<student>.yaml).")
@click.option("--eval-windows", type=click.IntRange(min=1), default=None,
              help="Held-out test windows each artifact is scored on by the parity gate, spread evenly over the "
                   "split [default: every test window, as `edgekd demo`: one gate, one evaluation set].")
@click.option("--explain", is_flag=True,
              help="Per tensor of each int8 TFLite file: the int8-vs-float error on the calibration windows "
                   "(RMS and max as a share of the range), ranked, named by the student's layer; printed and "
                   "stored in the manifest's parity entry.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Threads for torch and the interpreters during export.")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Students exported side by side: one's TFLite conversion (a child process) overlaps another's "
                   "[default: as many as students and CPUs; 1: one after another].")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar per student.")
def export(checkpoints, target, data, out, allow_degraded, overwrite, calibration_size, eval_windows, explain,
           threads, jobs, progress):
    """Export CHECKPOINTS (one per student) into a verified int8 deployment bundle for a target."""
    from edgekd.host.data.reader import check_split_finite
    from edgekd.host.export.pipeline import export_bundle

    start = time.perf_counter()
    for split in ("train", "test"):   # calibration and parity windows: NaN must be named, not crash a converter
        check_split_finite(data, split)
    manifest = export_bundle(checkpoints, target, data, out, allow_degraded=allow_degraded, overwrite=overwrite,
                             calibration_size=calibration_size, eval_windows=eval_windows, threads=threads,
                             progress=progress, explain=explain, jobs=jobs)
    click.echo(format_summary(manifest))
    if explain:
        from edgekd.host.export.explain import format_explain

        for name, student in manifest["students"].items():
            report = student["parity"].get("explain", {}).get("tflite_int8")
            if report:
                click.echo(format_explain(name, report))
    if manifest.get("degraded"):
        click.echo("DEGRADED: " + "; ".join(manifest["degraded_reasons"]), err=True)
    click.echo(f"bundle written to {out} in {time.perf_counter() - start:.0f} s")


def format_summary(manifest: dict) -> str:
    """Format / Size / Accuracy table of every artifact (one line each)."""
    lines = [f"{'student':<7} {'artifact':<14} {'size KiB':>9} {'top1':>6} {'top2':>6} {'DBA':>6}  in/out dtypes"]
    for name, student in manifest["students"].items():
        for kind, art in student["artifacts"].items():
            acc = art["accuracy"]
            top1 = sum(acc["top1"]) / len(acc["top1"])
            dtypes = f"{art['inputs'][0]['dtype']}/{art['outputs'][0]['dtype']}"
            lines.append(f"{name:<7} {kind:<14} {art['size'] / 1024:>9.1f} {top1:>6.3f} {acc['top2_mean']:>6.3f} "
                         f"{acc['dba']:>6.3f}  {dtypes}")
    return f"target: {manifest['target']['name']}\n" + "\n".join(lines)


@click.group()
def bundle() -> None:
    """Inspect and verify deployment bundles written by `edgekd export`."""


@bundle.command("verify")
@click.argument("bundle_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--key", "key", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Trusted public key (.pub from `edgekd bundle keygen`): the bundle must be signed with it "
                   "[default: $EDGEKD_TRUSTED_KEY; none: the signature is not checked].")
@click.option("--allow-degraded", is_flag=True,
              help="Accept a bundle written past a failed parity gate (degraded: true) instead of exit 2.")
def verify(bundle_dir: Path, key: Path | None, allow_degraded: bool) -> None:
    """Check the signature, the manifest schema and the sha256 of every file (exit 2 naming a bad one)."""
    from edgekd.device.bundle import degraded_note, verify_bundle
    from edgekd.device.signing import read_signature, trusted_key_path

    manifest = verify_bundle(bundle_dir, trusted_key=key, allow_degraded=allow_degraded)
    count = sum(len(s["artifacts"]) for s in manifest["students"].values())
    trusted = trusted_key_path(key)
    if trusted is not None:
        signed = f", signature verified with {trusted}"
    else:
        signed = ", signed (no --key given: signature not checked)" if read_signature(bundle_dir) else ", unsigned"
    click.echo(f"OK: {bundle_dir}: {len(manifest['students'])} student(s), {count} artifact(s), "
               f"all hashes match{signed}")
    note = degraded_note(manifest)
    if note:
        click.echo(f"WARNING: {note}", err=True)


@bundle.command("keygen")
@click.option("--out", "-o", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Key name: writes OUT.key (private, mode 0600; keep it on the host) and OUT.pub (for boards).")
def keygen(out: Path) -> None:
    """Make an Ed25519 key pair for signing bundles (never overwrites a key)."""
    from edgekd.device.signing import generate_key_pair

    private, public = out.with_name(out.name + ".key"), out.with_name(out.name + ".pub")
    fingerprint = generate_key_pair(private, public)
    click.echo(f"key {fingerprint}: private {private} (sign with it, keep it secret), public {public} "
               "(give it to boards: --key, a target's trusted_key, or EDGEKD_TRUSTED_KEY)")


@bundle.command("sign")
@click.argument("bundle_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--key", "key", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Private key (.key from `edgekd bundle keygen`).")
def sign(bundle_dir: Path, key: Path) -> None:
    """Sign BUNDLE_DIR's manifest (which holds every file's sha256) after verifying every hash."""
    from edgekd.device.bundle import MANIFEST_NAME, parse_manifest, read_manifest_bytes, verify_files
    from edgekd.device.errors import EdgekdError
    from edgekd.device.signing import sign_manifest_bytes, write_signature

    data = read_manifest_bytes(bundle_dir)
    record = sign_manifest_bytes(data, key)          # the key first: a bad key changes nothing
    verify_files(bundle_dir, parse_manifest(data, bundle_dir / MANIFEST_NAME))  # sign only an intact bundle
    if read_manifest_bytes(bundle_dir) != data:
        raise EdgekdError("manifest.json changed while it was being signed", file=bundle_dir / MANIFEST_NAME,
                          fix="sign again once nothing writes the bundle")
    write_signature(bundle_dir, record)
    click.echo(f"signed {bundle_dir} with key {record['key_id']} (signature.json)")


@bundle.command("show")
@click.argument("bundle_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
def show(bundle_dir: Path, as_json: bool) -> None:
    """Summarise a bundle: target, students, artifacts with size, dtypes and accuracy."""
    from edgekd.device.bundle import read_manifest

    manifest = read_manifest(bundle_dir)
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
        return
    from edgekd.device.signing import read_signature

    click.echo(format_summary(manifest))
    signature = read_signature(bundle_dir)
    click.echo(f"signed by key {signature.get('key_id')} (check it: bundle verify --key PUB)" if signature
               else "unsigned (sign it: edgekd bundle sign BUNDLE --key KEY)")
    if manifest.get("degraded"):
        click.echo("DEGRADED: " + "; ".join(manifest.get("degraded_reasons", [])))


bundle.add_command(board_check)  # edgekd bundle check: the artifacts on the board's instruction set
