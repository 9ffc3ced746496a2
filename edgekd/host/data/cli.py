"""``edgekd data``: synthesise, import and inspect datasets (thin over edgekd.host.data)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from edgekd.device.contracts import LIGHTING, WEATHER
from edgekd.device.errors import EdgekdError

SPLIT_HELP = "Train/val/test fractions of the drives, in order of drive id: 0.7,0.15,0.15 (or train,test: 0.8,0.2)."


def _positive(value: int | None, option: str, hint: str) -> None:
    if value is not None and value <= 0:
        raise EdgekdError(f"must be a positive integer, got {value}", field=option, fix=hint)


@click.group("data")
def data() -> None:
    """Synthesise, import and inspect datasets.

    A dataset directory holds meta.json, every frame once per drive
    (frames/<modality>.npy, memory-mapped) and the windows of each split as
    index arrays (splits/<split>.npy).
    """


@data.command("synth", short_help="Simulate the synthetic scenario into a dataset.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Dataset directory to create.")
@click.option("--windows", type=int, default=10_000, show_default=True,
              help="Windows (T observed frames + future labels) to simulate; whole drives, so a few more may come.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed; same seed, byte-identical arrays.")
@click.option("--image-size", type=int, default=64, show_default=True, help="Camera image side in pixels (paper: 224).")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="Scene YAML (keys of edgekd.host.data.synth.SceneConfig) [default: the embedded scenario].")
@click.option("--split", default="0.7,0.15,0.15", show_default=True, help=SPLIT_HELP)
@click.option("--overwrite", is_flag=True, help="Replace --out if it is an existing dataset.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@click.option("--force", is_flag=True,
              help="Simulate even when the estimated size, time or memory is beyond the sane limits.")
def synth(out: Path, windows: int, seed: int, image_size: int, config_path: Path | None, split: str,
          overwrite: bool, progress: bool, force: bool) -> None:
    """Simulate the synthetic V2I scenario and store it as a dataset (refuses a huge request unless --force)."""
    from edgekd.host.data.writer import synthesize_dataset

    _positive(windows, "--windows", "ask for at least 1 window, e.g. --windows 10000")
    _positive(image_size, "--image-size", "use a positive image side, e.g. --image-size 64 (paper: 224)")
    started = time.perf_counter()
    path = synthesize_dataset(out, windows=windows, seed=seed, image_size=image_size, config_path=config_path,
                              split=split, overwrite=overwrite, progress=progress, force=force)
    _echo_written(path, time.perf_counter() - started)


@data.command("import-deepsense", short_help="Import a DeepSense 6G scenario folder.")
@click.argument("scenario_dir", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Dataset directory to create.")
@click.option("--image-size", type=int, default=64, show_default=True, help="Camera image side after resizing.")
@click.option("--split", default="0.7,0.15,0.15", show_default=True, help=SPLIT_HELP)
@click.option("--range-bins", type=int, default=None,
              help="Radar map rows (max-pooled over the kept range) [default: the synthetic radar's; paper: 128].")
@click.option("--angle-bins", type=int, default=None,
              help="Radar map columns (zero-padded angle FFT) [default: the synthetic radar's; paper: 64].")
@click.option("--radar-max-range", type=float, default=40.0, show_default=True,
              help="Metres of range the radar maps cover (cropped at the radar's real bin size).")
@click.option("--radar-sample-rate", type=float, default=5.0, show_default=True,
              help="Radar ADC sample rate in MHz (DeepSense scenario 9's example script: 5).")
@click.option("--radar-slope", type=float, default=15.015, show_default=True,
              help="Radar chirp slope in MHz/us (DeepSense scenario 9's example script: 15.015).")
@click.option("--lidar-band", default="0.3,2.5", show_default=True,
              help="3-D clouds: keep points LOW,HIGH metres above the ground (removes the ground and what is "
                   "above the road users).")
@click.option("--lidar-sensor-height", type=float, default=None,
              help="3-D clouds: metres from the ground up to the sensor [default: estimated per cloud].")
@click.option("--lidar-heading", type=float, default=0.0, show_default=True,
              help="Raw LiDAR: azimuth in degrees (sensor frame, x = 0, y = 90) of the centre of the 180 deg "
                   "field of view binned.")
@click.option("--csv", "csv_name", default=None,
              help="Scenario CSV inside SCENARIO_DIR [default: the one *.csv with power/beam columns].")
@click.option("--overwrite", is_flag=True, help="Replace --out if it is an existing dataset.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")
def import_deepsense_cmd(scenario_dir: Path, out: Path, image_size: int, split: str, range_bins: int | None,
                         angle_bins: int | None, radar_max_range: float, radar_sample_rate: float,
                         radar_slope: float, lidar_band: str, lidar_sensor_height: float | None,
                         lidar_heading: float, csv_name: str | None, overwrite: bool, progress: bool) -> None:
    """Import a DeepSense 6G scenario folder (scenarioN.csv or scenarioNN_dev.csv + unit folders) as a dataset.

    Reads the scenario folders as DeepSense publishes them (scenarios 8, 9 and
    31-34); the ML-challenge and per-task packagings are refused. Ends with a
    sanity report: how much each modality varies and whether the beam can be
    told from it.
    """
    from edgekd.host.data.deepsense import ImportConfig, import_deepsense
    from edgekd.host.data.store import normalise_split

    _positive(image_size, "--image-size", "use a positive image side, e.g. --image-size 64 (paper: 224)")
    _positive(range_bins, "--range-bins", "use a positive number of range bins, e.g. 64 (paper: 128)")
    _positive(angle_bins, "--angle-bins", "use a positive number of angle bins, e.g. 32 (paper: 64)")
    config = ImportConfig(image_size=image_size, range_bins=range_bins, angle_bins=angle_bins,
                          split=normalise_split(split), radar_max_range_m=radar_max_range,
                          radar_sample_rate_mhz=radar_sample_rate, radar_slope_mhz_per_us=radar_slope,
                          lidar_band_m=_pair(lidar_band, "--lidar-band"), lidar_sensor_height_m=lidar_sensor_height,
                          lidar_heading_deg=lidar_heading)
    started = time.perf_counter()
    path = import_deepsense(scenario_dir, out, config=config, csv_name=csv_name, overwrite=overwrite,
                            progress=progress)
    _echo_written(path, time.perf_counter() - started)
    from edgekd.host.data.reader import sanity_report

    click.echo(format_sanity(sanity_report(path)))


def _pair(text: str, option: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise EdgekdError(f"expected two numbers LOW,HIGH, got {text!r}", field=option, fix="e.g. 0.3,2.5") from None
    return low, high


def format_sanity(report: dict) -> str:
    """The sanity report's lines: per modality, variation between frames and the beam's predictability."""
    lines = [f"sanity ({report['frames_sampled']} frames; 1-NN beam within 2 on held-out drives vs the most "
             "frequent beam):"]
    for name, entry in report.items():
        if not isinstance(entry, dict):
            continue
        text = (f"  {name:<6} spread {entry['spread']:.4g}, frame-to-frame change {entry['frame_change']:.2f} of it; "
                f"beam {entry['beam_1nn_within2']:.2f} vs {entry['baseline_within2']:.2f}")
        if "peak_range_row" in entry:
            peak = entry["peak_range_row"]
            text += f"; radar peak at range row {peak['mean']:.1f} +- {peak['std']:.1f} of {peak['rows']}"
        if "bins_with_return" in entry:
            text += f"; {entry['bins_with_return']:.0%} of bins with a return"
        if entry["constant"]:
            text += "  <- CONSTANT: this modality carries no information"
        elif entry["uninformative"]:
            text += "  <- the beam is no easier to tell from it than by guessing"
        lines.append(text)
    return "\n".join(lines)


def _echo_written(path: Path, elapsed: float) -> None:
    from edgekd.host.data.store import read_meta

    meta = read_meta(path)
    size = sum(entry["bytes"] for entry in meta["arrays"].values())
    splits = ", ".join(f"{name} {info['windows']}" for name, info in meta["splits"].items())
    click.echo(f"wrote {path}: {meta['num_frames']} frames in {meta['num_drives']} drives; windows: {splits}; "
               f"{size / 1e6:.1f} MB; {elapsed:.1f} s")
    dropped = meta.get("dropped", {})
    if dropped.get("nan_power"):
        lines = dropped.get("csv_lines", [])
        click.echo(f"dropped {dropped['nan_power']} row(s) whose power vector has NaN (CSV lines "
                   f"{', '.join(map(str, lines))}{' ...' if len(lines) < dropped['nan_power'] else ''})")
    for warning in meta.get("deepsense", {}).get("warnings", []):
        click.echo(f"warning: {warning}")


@data.command("info", short_help="Verify and summarise a dataset; --plot draws it.")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), default=None,
              help="Write a PNG: one window across all modalities, and the beam histograms.")
@click.option("--split", default="train", show_default=True, help="Split whose window --plot shows.")
@click.option("--index", type=int, default=None, help="Window of --split that --plot shows [default: the middle one].")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON instead of a table.")
def info(dataset: Path, plot_path: Path | None, split: str, index: int | None, as_json: bool) -> None:
    """Verify a dataset's hashes and summarise it: counts per split, beams, condition mix."""
    from edgekd.host.data.reader import sanity_report
    from edgekd.host.data.store import summarize_dataset

    summary = summarize_dataset(dataset, verify=True)
    summary["sanity"] = sanity_report(dataset)
    if plot_path is not None:
        from edgekd.host.data.plot import plot_dataset

        if split not in summary["splits"]:
            raise EdgekdError(f"split {split!r} is not in this dataset", file=dataset, field="--split",
                              fix=f"use one of: {', '.join(summary['splits'])}")
        windows = summary["splits"][split]["windows"]
        if index is not None and not 0 <= index < windows:
            raise EdgekdError(f"window {index} out of range (0..{windows - 1})", field="--index",
                              fix=f"pick a window index below {windows}")
        plot_dataset(dataset, plot_path, split=split, index=index)
        summary["plot"] = str(plot_path)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(format_summary(summary))


def format_summary(summary: dict) -> str:
    """The human-readable table of ``edgekd data info``."""
    lines = [
        f"dataset {summary['path']} ({summary['source']}, seed {summary['seed']}, {summary['format']})",
        f"verified: sha256 of every array matches meta.json (fingerprint {summary['fingerprint'][:16]})"
        if summary["verified"] else "not verified",
        f"{summary['num_frames']} frames in {summary['num_drives']} drives; window T={summary['window']}, "
        f"horizons {summary['horizons']}, {summary['num_beams']} beams; {summary['bytes'] / 1e6:.1f} MB",
        "modalities: " + ", ".join(f"{m} {shape}" for m, shape in summary["modalities"].items()),
        "",
        f"{'split':<6} {'windows':>8} {'drives':>6}  {'beams@t0 distinct':>17} {'top beam (share)':>16} "
        f"{'entropy':>8}  {'/'.join(LIGHTING):<16} {'/'.join(WEATHER):<16} {'LoS blocked':>11}",
    ]
    for name, split in summary["splits"].items():
        beams, cond = split["beams_t0"], split["conditions"]
        light = "/".join(str(cond["lighting"].get(k, 0)) for k in LIGHTING)
        weather = "/".join(str(cond["weather"].get(k, 0)) for k in WEATHER)
        if cond["lighting"].get("unknown"):
            light += f" ?{cond['lighting']['unknown']}"
        if cond["weather"].get("unknown"):
            weather += f" ?{cond['weather']['unknown']}"
        blocked = "unknown" if "los_blocked" in summary.get("unknown_conditions", ()) else f"{cond['los_blocked']:.3f}"
        lines.append(
            f"{name:<6} {split['windows']:>8} {split['drives']:>6}  {beams['distinct']:>17} "
            f"{beams['most_frequent']:>7} ({beams['most_frequent_share']:.3f}) {beams['entropy_bits']:>7.2f}b  "
            f"{light:<16} {weather:<16} {blocked:>11}")
        available = {k[len('available_'):]: v for k, v in cond.items() if k.startswith("available_")}
        if available and any(v < 1 for v in available.values()):
            lines.append("       windows with every frame available: "
                         + ", ".join(f"{m} {v:.3f}" for m, v in available.items()))
    if "dropped" in summary:
        lines.append(f"dropped rows with NaN power: {summary['dropped'].get('nan_power', 0)}")
    if summary.get("unknown_conditions"):
        lines.append(f"unknown for this data: {', '.join(summary['unknown_conditions'])}")
    if "sanity" in summary:
        lines.append(format_sanity(summary["sanity"]))
    if "plot" in summary:
        lines.append(f"plot: {summary['plot']}")
    return "\n".join(lines)


MAX_DRIVE_MINUTES = 240.0  # 144k frames at 10 Hz: a few GB in memory


def _is_drive(path: Path) -> bool:
    """A drive file of `edgekd data drive` (an .npz whose meta names the drive format)."""
    import numpy as np

    from edgekd.device.runtime.replay import DRIVE_FORMATS

    try:
        with np.load(path, allow_pickle=False) as data:
            return json.loads(str(data["meta"])).get("format") in DRIVE_FORMATS
    except Exception:  # unreadable, not an .npz, no meta: not ours, never replaced
        return False


@data.command("drive",
              short_help="Record one continuous synthetic drive (day -> night) for `edgekd run --replay`.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Drive file to write (.npz).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed; same seed, same drive.")
@click.option("--image-size", type=int, default=64, show_default=True,
              help="Camera image side in pixels; must match the students' dataset.")
@click.option("--minutes", type=float, default=4.0, show_default=True,
              help="Length of the drive (10 frames per second on the default scene).")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="Scene YAML (keys of edgekd.host.data.synth.SceneConfig) [default: the embedded scenario].")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
def drive(out: Path, seed: int, image_size: int, minutes: float, config_path: Path | None, overwrite: bool) -> None:
    """Record a drive: day -> fog -> flaky camera -> dusk -> night with a LiDAR failure -> night rain."""
    import numpy as np

    from edgekd.device.io import check_replaceable_file
    from edgekd.host.data.drive import record_drive, write_drive

    _positive(image_size, "--image-size", "use a positive image side, e.g. --image-size 64")
    if not 0 < minutes <= MAX_DRIVE_MINUTES:  # False for NaN and inf too
        raise EdgekdError(f"must be a number of minutes in (0, {MAX_DRIVE_MINUTES}], got {minutes}",
                          field="--minutes", fix="e.g. --minutes 4 (a drive is held in memory while it is recorded)")
    check_replaceable_file(out, overwrite=overwrite, is_own=_is_drive, what="drive file")
    started = time.perf_counter()
    arrays, meta = record_drive(minutes=minutes, seed=seed, image_size=image_size, config_path=config_path)
    write_drive(out, arrays, meta, overwrite=overwrite)
    names = arrays["segment_names"]
    counts = np.bincount(arrays["segment"], minlength=len(names))
    click.echo(f"wrote {out}: {meta['frames']} frames ({minutes:g} min), {out.stat().st_size / 1e6:.1f} MB; "
               + ", ".join(f"{name} {int(c)}" for name, c in zip(names, counts)) + f"; "
               f"{time.perf_counter() - started:.1f} s")
