"""The scenario folder: its CSV and columns, the import settings, and the problems collected on the way."""

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

MAX_LISTED = 20      # problems listed in the one error; the rest are counted

# role -> accepted column names (lower case, first present wins)
COLUMNS: dict[str, tuple[str, ...]] = {
    "image": ("unit1_rgb", "unit1_rgb_image"),
    "radar": ("unit1_radar",),
    "lidar_scr": ("unit1_lidar_scr",),
    "lidar_ply": ("unit1_lidar",),
    "power": ("unit1_pwr_60ghz", "unit1_pwr"),
    "beam": ("unit1_beam", "unit1_beam_index"),
    "bs_loc": ("unit1_loc",),
    "ue_loc": ("unit2_loc_cal", "unit2_loc"),
    "seq": ("seq_index",),
    "time": ("time_stamp[utc]", "timestamp", "time_stamp"),
    "lighting": ("time_of_day", "lighting"),
    "weather": ("weather",),
}


@dataclasses.dataclass(frozen=True)
class ImportConfig:
    """Preprocessing of an import; defaults match the synthetic scenario."""

    image_size: int = 64
    range_bins: int | None = None  # None: the synthetic radar's (edgekd.host.data.radar.RadarConfig); paper: 128
    angle_bins: int | None = None  # None: the synthetic radar's; paper: 64
    num_beams: int = 64
    frame_rate_hz: float = 10.0
    window: int = 8
    horizons: int = 4
    split: tuple[float, ...] = (0.7, 0.15, 0.15)

    def __post_init__(self) -> None:
        if self.range_bins is None or self.angle_bins is None:
            from edgekd.host.data.radar import RadarConfig

            radar = RadarConfig()
            object.__setattr__(self, "range_bins", self.range_bins or radar.range_bins)
            object.__setattr__(self, "angle_bins", self.angle_bins or radar.angle_bins)
        for name in ("image_size", "range_bins", "angle_bins", "num_beams", "frame_rate_hz", "window", "horizons"):
            value = getattr(self, name)
            if value <= 0:
                raise EdgekdError(f"must be positive, got {value!r}", field=name,
                                  fix=f"pass a {name.replace('_', '-')} greater than 0")
        object.__setattr__(self, "split", normalise_split(self.split))

    @property
    def radar_bins(self) -> tuple[int, int]:
        """(range bins, angle bins) of the stored radar maps (both resolved in ``__post_init__``)."""
        return int(self.range_bins or 0), int(self.angle_bins or 0)


class Problems:
    """Every missing/unreadable file of an import, reported together at the end."""

    def __init__(self, csv_path: Path):
        self.csv_path = csv_path
        self.items: list[tuple[str, str]] = []  # (column, message)

    def add(self, line: int, column: str, path: object, reason: str) -> None:
        self.items.append((column, f"line {line}, {column}: {path}: {reason}"))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        listed = "\n  - ".join(msg for _, msg in self.items[:MAX_LISTED])
        more = f"\n  ... and {len(self.items) - MAX_LISTED} more" if len(self.items) > MAX_LISTED else ""
        columns = sorted({col for col, _ in self.items})
        raise EdgekdError(f"{len(self.items)} missing or unreadable file(s):\n  - {listed}{more}",
                          file=self.csv_path, field=", ".join(columns),
                          fix="restore these files (paths are relative to the scenario folder) "
                              "or delete their rows from the CSV")



def find_csv(scenario_dir: Path, csv_name: str | os.PathLike | None = None) -> Path:
    """The scenario CSV: ``csv_name`` if given, else the one *.csv at the top with a power or beam column."""
    if csv_name is not None:
        path = Path(csv_name)
        path = path if path.is_absolute() or path.exists() else scenario_dir / path
        if not path.is_file():
            raise EdgekdError("scenario CSV not found", file=path, field="--csv", fix="check the file name")
        return path
    found = [p for p in sorted(scenario_dir.glob("*.csv")) if _has_label_column(p)]
    if not found:
        raise EdgekdError("no scenario CSV with a unit1_pwr_60ghz or unit1_beam column at the top of the folder",
                          file=scenario_dir,
                          fix="point at the DeepSense scenario folder (the one holding scenarioN.csv)")
    if len(found) > 1:
        preferred = [p for p in found if re.fullmatch(r"scenario\d+\.csv", p.name, flags=re.I)]
        if len(preferred) == 1:
            return preferred[0]
        raise EdgekdError(f"several scenario CSVs: {', '.join(p.name for p in found)}", file=scenario_dir,
                          field="--csv", fix="name the one to import with --csv")
    return found[0]


def _has_label_column(path: Path) -> bool:
    try:
        with open(path, newline="") as handle:
            header = {h.strip().lower() for h in next(csv.reader(handle), [])}
    except (OSError, UnicodeDecodeError):
        return False
    return bool(header & set(COLUMNS["power"] + COLUMNS["beam"]))


def read_csv_rows(path: Path) -> tuple[dict[str, str], list[dict[str, str]]]:
    """(role -> column name used, rows as dicts keyed by role) for the roles in ``COLUMNS``."""
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader, [])]
        records = [r for r in reader if any(cell.strip() for cell in r)]
    lower = {h.lower(): i for i, h in enumerate(header)}
    roles = {}
    for role, names in COLUMNS.items():
        for name in names:
            if name in lower:
                roles[role] = header[lower[name]]
                break
    rows = []
    for record in records:
        row = {}
        for role, column in roles.items():
            i = header.index(column)
            row[role] = record[i].strip() if i < len(record) else ""
        rows.append(row)
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
    except Exception as exc:  # any parse failure of a user file is reported, never a traceback
        problems.add(line, column, path, f"unreadable ({type(exc).__name__}: {exc})")
        return None

