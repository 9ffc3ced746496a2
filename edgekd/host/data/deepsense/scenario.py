"""The scenario folder: its CSV and columns, the import settings, and the problems collected on the way.

Layouts read (see the README, "Real DeepSense 6G data"): the scenario folders
as DeepSense 6G publishes them, one row per frame with a ``seq_index`` column
(``scenarioN/scenarioN.csv`` for scenarios 8 and 9, ``scenarioNN/scenarioNN_dev.csv``
for 31-34). The ML-challenge packaging (one 5-frame window per row) and the
per-task CSVs (``unit1_pwr_1``, ``beam_index_1``, ...) are other packagings of
the same data; they are refused with an error naming what to download instead.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekd.device.errors import EdgekdError
from edgekd.host.data.store import normalise_split

MAX_LISTED = 3       # examples listed per kind of problem in the one error
MAX_KINDS = 8        # kinds of problem listed; the rest are counted

# role -> accepted column names (lower case, first present wins)
COLUMNS: dict[str, tuple[str, ...]] = {
    "index": ("index",),
    "image": ("unit1_rgb", "unit1_rgb_image"),
    "radar": ("unit1_radar",),
    "lidar_scr": ("unit1_lidar_scr",),
    "lidar_raw": ("unit1_lidar",),
    "power": ("unit1_pwr_60ghz", "unit1_pwr"),
    "beam": ("unit1_beam", "unit1_beam_index"),
    "bs_loc": ("unit1_loc",),
    "ue_loc": ("unit2_loc_cal", "unit2_loc"),
    "seq": ("seq_index",),
    "time": ("time_stamp[utc]", "time_stamp", "timestamp"),
    "lighting": ("time_of_day", "lighting"),
    "weather": ("weather",),
}

DOWNLOAD_FIX = ("download the scenario's full development folder from https://www.deepsense6g.net "
                "(scenarioN/scenarioN.csv, or scenarioNN/scenarioNN_dev.csv for 31-34: one row per frame "
                "with seq_index) and pass that folder")


@dataclasses.dataclass(frozen=True)
class ImportConfig:
    """Preprocessing of an import; defaults match the synthetic scenario's stored shapes."""

    image_size: int = 64
    range_bins: int | None = None  # None: the synthetic radar's (edgekd.host.data.radar.RadarConfig); paper: 128
    angle_bins: int | None = None  # None: the synthetic radar's; paper: 64
    num_beams: int = 64
    frame_rate_hz: float = 10.0
    window: int = 8
    horizons: int = 4
    split: tuple[float, ...] = (0.7, 0.15, 0.15)
    # radar chirp (DeepSense's radar example script for scenario 9: fs 5 MHz, slope 15.015 MHz/us,
    # i.e. ~0.195 m per range bin over 256 samples); the map rows cover 0..radar_max_range_m
    radar_sample_rate_mhz: float = 5.0
    radar_slope_mhz_per_us: float = 15.015
    radar_max_range_m: float = 40.0
    # LiDAR binning to the 216-bin contract (the synthetic scan: 180 deg, 40 m)
    lidar_fov_deg: float = 180.0
    lidar_max_range_m: float = 40.0
    lidar_heading_deg: float = 0.0  # azimuth of the field of view's centre in the sensor frame (x = 0, y = 90)
    # 3-D clouds: keep points this high above the ground (metres); the ground is the sensor
    # height below the sensor when given, else estimated per cloud (a low percentile of z)
    lidar_band_m: tuple[float, float] = (0.3, 2.5)
    lidar_sensor_height_m: float | None = None
    # a time step this many times the drive's median step starts a new segment
    time_gap_factor: float = 2.5

    def __post_init__(self) -> None:
        if self.range_bins is None or self.angle_bins is None:
            from edgekd.host.data.radar import RadarConfig

            radar = RadarConfig()
            object.__setattr__(self, "range_bins", self.range_bins or radar.range_bins)
            object.__setattr__(self, "angle_bins", self.angle_bins or radar.angle_bins)
        for name in ("image_size", "range_bins", "angle_bins", "num_beams", "frame_rate_hz", "window", "horizons",
                     "radar_sample_rate_mhz", "radar_slope_mhz_per_us", "radar_max_range_m", "lidar_fov_deg",
                     "lidar_max_range_m", "time_gap_factor"):
            value = getattr(self, name)
            if value <= 0:
                raise EdgekdError(f"must be positive, got {value!r}", field=name,
                                  fix=f"pass a {name.replace('_', '-')} greater than 0")
        low, high = self.lidar_band_m
        if not low < high:
            raise EdgekdError(f"the height band must be low < high, got {self.lidar_band_m}", field="lidar_band_m",
                              fix="e.g. 0.3,2.5 (metres above the ground)")
        object.__setattr__(self, "split", normalise_split(self.split))

    @property
    def radar_bins(self) -> tuple[int, int]:
        """(range bins, angle bins) of the stored radar maps (both resolved in ``__post_init__``)."""
        return int(self.range_bins or 0), int(self.angle_bins or 0)

    def radar_bin_m(self, samples: int) -> float:
        """Metres per range-FFT bin: c * fs / (2 * slope * samples)."""
        return 299_792_458.0 * self.radar_sample_rate_mhz * 1e6 / (
            2 * self.radar_slope_mhz_per_us * 1e12 * samples)


class Problems:
    """Every missing/unreadable file of an import, reported together at the end, grouped by kind."""

    def __init__(self, csv_path: Path, rows: int = 0):
        self.csv_path = csv_path
        self.rows = rows
        self.items: list[tuple[str, str, int, str]] = []  # (column, reason, line, path)

    def add(self, line: int, column: str, path: object, reason: str) -> None:
        self.items.append((column, reason, line, str(path)))

    def raise_if_any(self) -> None:
        """One error for the layout as a whole: per (column, reason) how many rows, and a few examples."""
        if not self.items:
            return
        groups: dict[tuple[str, str], list[tuple[int, str]]] = {}
        for column, reason, line, path in self.items:
            groups.setdefault((column, _kind(reason)), []).append((line, path))
        parts = []
        for (column, kind), where in list(groups.items())[:MAX_KINDS]:
            every = f"every one of the {self.rows} rows" if self.rows and len(where) == self.rows else \
                f"{len(where)} row(s)"
            examples = "; ".join(f"line {line}: {path}: {kind}" for line, path in where[:MAX_LISTED])
            more = f"; ... and {len(where) - MAX_LISTED} more" if len(where) > MAX_LISTED else ""
            parts.append(f"{column}, {every}: {examples}{more}")
        if len(groups) > MAX_KINDS:
            parts.append(f"... and {len(groups) - MAX_KINDS} more kinds of problem")
        columns = sorted({col for col, *_ in self.items})
        raise EdgekdError(f"{len(self.items)} missing or unreadable file(s), nothing written:\n  - "
                          + "\n  - ".join(parts), file=self.csv_path, field=", ".join(columns),
                          fix="check that the folder is a complete DeepSense scenario download (paths are "
                              "relative to the scenario folder); restore the files or delete their rows from the CSV")


def _kind(reason: str) -> str:
    """A problem's reason without the per-file details (numbers, paths), so equal problems group together."""
    return re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", reason)


def find_csv(scenario_dir: Path, csv_name: str | os.PathLike | None = None) -> Path:
    """The scenario CSV: ``csv_name`` if given, else the one *.csv at the top with a power or beam column."""
    if csv_name is not None:
        path = Path(csv_name)
        path = path if path.is_absolute() or path.exists() else scenario_dir / path
        if not path.is_file():
            raise EdgekdError("scenario CSV not found", file=path, field="--csv", fix="check the file name")
        check_packaging(path, _header(path))
        return path
    headers = {p: _header(p) for p in sorted(scenario_dir.glob("*.csv"))}
    found = [p for p, header in headers.items() if _is_frame_table(header)]
    if not found:
        for path, header in headers.items():
            check_packaging(path, header)
        # some downloads put the scenario one level down (paper 2's loader reads scenario8/DEV[95%]/scenario8.csv)
        below = sorted({p.parent for p in scenario_dir.glob("*/*.csv") if _is_frame_table(_header(p))})
        raise EdgekdError("no scenario CSV with a unit1_pwr_60ghz or unit1_beam column at the top of the folder",
                          file=scenario_dir,
                          fix=(f"pass the folder that holds the CSV (its paths are relative to it): "
                               f"{', '.join(str(d) for d in below)}") if below else DOWNLOAD_FIX)
    if len(found) > 1:
        preferred = [p for p in found if re.fullmatch(r"scenario\d+(_dev)?\.csv", p.name, flags=re.I)]
        if len(preferred) == 1:
            return preferred[0]
        raise EdgekdError(f"several scenario CSVs: {', '.join(p.name for p in found)}", file=scenario_dir,
                          field="--csv", fix="name the one to import with --csv")
    check_packaging(found[0], headers[found[0]])
    return found[0]


def _header(path: Path) -> list[str]:
    try:
        with open(path, newline="") as handle:
            return [h.strip() for h in next(csv.reader(handle), [])]
    except (OSError, UnicodeDecodeError):
        return []


def _is_frame_table(header: list[str]) -> bool:
    lower = {h.lower() for h in header}
    return bool(lower & set(COLUMNS["power"] + COLUMNS["beam"]))


def check_packaging(path: Path, header: list[str]) -> None:
    """Refuse the packagings that are not one row per frame (challenge windows, per-task CSVs)."""
    lower = [h.lower() for h in header]
    if _is_frame_table(header) and "seq_index" in lower and "ml_challenge" not in path.name.lower():
        return  # one row per frame, whatever extra (numbered) columns it has
    numbered = sorted(h for h in lower if re.fullmatch(r"(unit\d_\w+?|beam_index|beam)_\d+", h))
    if "ml_challenge" in path.name.lower() or any(re.fullmatch(r"unit1_rgb_\d+", h) for h in lower):
        raise EdgekdError("this is the DeepSense ML-challenge packaging (one multi-frame window per row, "
                          "columns such as unit1_rgb_1..5, no seq_index), not a scenario folder",
                          file=path, field=", ".join(numbered[:4]) or None, fix=DOWNLOAD_FIX)
    if numbered:
        raise EdgekdError("this is a per-task CSV of a DeepSense scenario (numbered columns "
                          f"{', '.join(numbered[:4])}: one sample of several frames per row), not the scenario "
                          "CSV with one row per frame", file=path, field=numbered[0], fix=DOWNLOAD_FIX)


def read_csv_rows(path: Path) -> tuple[dict[str, str], list[dict[str, str]]]:
    """(role -> column name used, rows as dicts keyed by role) for the roles in ``COLUMNS``.

    Columns are located by position, so the empty-named column of the published
    scenario 9 CSV (``unit2_loc_cal,,unit1_beam_index``) does not shift anything.
    """
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader, [])]
        records = [r for r in reader if any(cell.strip() for cell in r)]
    lower = {h.lower(): i for i, h in enumerate(header) if h}
    roles: dict[str, str] = {}
    position: dict[str, int] = {}
    for role, names in COLUMNS.items():
        for name in names:
            if name in lower:
                roles[role], position[role] = header[lower[name]], lower[name]
                break
    rows = [{role: (record[i].strip() if i < len(record) else "") for role, i in position.items()}
            for record in records]
    return roles, rows


def resolve(scenario_dir: Path, value: str) -> Path:
    """A CSV path (DeepSense writes ``./unit1/...``) relative to the scenario folder."""
    path = Path(value.replace("\\", "/"))
    return path if path.is_absolute() else scenario_dir / path


def read_or_record(problems: Problems, line: int, column: str, path: Path, reader: Callable[[Path], Any]) -> Any:
    """``reader(path)``, or None with the problem recorded."""
    if not path.is_file():
        problems.add(line, column, path, "missing")
        return None
    try:
        return reader(path)
    except EdgekdError:
        raise  # a setting that cannot fit the data: one error for the whole import
    except Exception as exc:  # any parse failure of a user file is reported, never a traceback
        problems.add(line, column, path, f"unreadable ({type(exc).__name__}: {exc})")
        return None
