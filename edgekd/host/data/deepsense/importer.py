"""The folder walk: CSV rows -> labels, drives, times and conditions -> converted frames -> a dataset."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.device.contracts import LIGHTING, WEATHER
from edgekd.device.errors import EdgekdError
from edgekd.host.data.deepsense.convert import read_modalities
from edgekd.host.data.deepsense.files import read_vector_txt
from edgekd.host.data.deepsense.scenario import (
    DOWNLOAD_FIX,
    ImportConfig,
    Problems,
    find_csv,
    read_csv_rows,
    read_or_record,
    resolve,
)
from edgekd.host.data.deepsense.timing import timeline
from edgekd.host.data.store import UNKNOWN, check_output, write_dataset

log = logging.getLogger(__name__)

MAX_DROPPED_LISTED = 100


def _condition_code(text: str, names: tuple[str, ...], aliases: dict[str, str]) -> int:
    key = text.strip().lower()
    key = aliases.get(key, key)
    if key in names:
        return names.index(key)
    try:
        code = int(float(key))
    except ValueError:
        return UNKNOWN
    return code if 0 <= code < len(names) else UNKNOWN


_LIGHTING_ALIASES = {"daytime": "day", "evening": "dusk", "twilight": "dusk", "nighttime": "night"}
_WEATHER_ALIASES = {"sunny": "clear", "cloudy": "clear", "rainy": "rain", "foggy": "fog"}


def import_deepsense(scenario_dir: str | os.PathLike, out: str | os.PathLike, *,
                     config: ImportConfig | None = None, csv_name: str | os.PathLike | None = None,
                     overwrite: bool = False, progress: bool = False) -> Path:
    """Read a DeepSense 6G scenario folder and write an edgekd dataset at ``out``.

    Raises one EdgekdError for the layout as a whole (missing/unreadable files
    grouped by column and kind; nothing is written then). meta.json records the
    rows dropped for NaN power (``dropped``), the columns used, the segment
    breaks and the conditions that real data lacks.
    """
    cfg = config or ImportConfig()
    scenario_dir = Path(scenario_dir)
    if not scenario_dir.is_dir():
        raise EdgekdError("scenario folder not found", file=scenario_dir,
                          fix="pass the DeepSense scenario folder (the one holding scenarioN.csv)")
    check_output(out, overwrite=overwrite)
    csv_path = find_csv(scenario_dir, csv_name)
    roles, rows = read_csv_rows(csv_path)
    _check_columns(roles, csv_path, len(rows))
    problems = Problems(csv_path, rows=len(rows))
    line_of = [i + 2 for i in range(len(rows))]  # header is line 1

    power, beams, keep, dropped = _read_labels(scenario_dir, roles, rows, line_of, cfg, problems)
    rows = [rows[i] for i in keep]
    lines = [line_of[i] for i in keep]
    if not rows:
        problems.raise_if_any()
        raise EdgekdError("no rows left to import (every power vector had NaN)", file=csv_path,
                          field=roles.get("power"), fix="check the power files")
    if not problems.items:
        problems.rows = len(rows)  # "every row" of the sensor files means every kept row
    seq = _int_column(roles, rows, lines, csv_path, "seq")
    frames, preprocessing = read_modalities(scenario_dir, roles, rows, lines, cfg, problems, progress)
    problems.raise_if_any()
    kept = _KeptRows(power, beams, seq, keep, rows, lines, frames)
    nan_sensor = kept.drop_non_finite(csv_path)
    power, beams, seq, keep, rows, lines, frames = (kept.power, kept.beams, kept.seq, kept.keep, kept.rows,
                                                    kept.lines, kept.frames)   # (astuple would deep-copy)

    # group by drive in order of id, keeping CSV (time) order inside a drive
    order = np.argsort(seq, kind="stable")
    info, found = _frame_info(roles, rows, lines, np.asarray(keep, dtype=np.int64), seq, order, cfg, csv_path)
    unknown = ["los_blocked"] + [key for key in ("lighting", "weather") if np.all(info[key] == UNKNOWN)]
    mismatch = _beam_mismatch(roles, rows, beams, power is not None)
    if mismatch:
        found["warnings"].append(f"column {roles['beam']}: {mismatch} of {len(rows)} row(s) disagree with the "
                                 "argmax of the power file + 1; the labels come from the power files")
        log.warning(found["warnings"][-1])
    extra: dict[str, Any] = {
        "dropped": {"nan_power": len(dropped), "csv_lines": dropped[:MAX_DROPPED_LISTED],
                    "nan_sensor": len(nan_sensor), "nan_sensor_csv_lines": nan_sensor[:MAX_DROPPED_LISTED]},
        "unknown_conditions": unknown,
        "deepsense": {"scenario_dir": str(scenario_dir.resolve()), "csv": csv_path.name,
                      "rows": len(line_of), "imported": len(rows), "columns": roles, **found,
                      "beam_column_mismatch": mismatch},
    }
    if power is None:
        power = np.eye(cfg.num_beams, dtype=np.float32)[beams]
        extra["deepsense"]["power"] = f"one-hot of {roles['beam']} (no power column)"
    config_dict = {"scenario": scenario_dir.name, **dataclasses.asdict(cfg)}
    return write_dataset(out, frames={k: v[order] for k, v in frames.items()}, power=power[order],
                         beams=beams[order], frame_info=info, source="deepsense", config=config_dict, seed=None,
                         window=cfg.window, horizons=cfg.horizons, split=cfg.split, overwrite=overwrite,
                         preprocessing=preprocessing, extra_meta=extra)


def _frame_info(roles: dict[str, str], rows: list[dict[str, str]], lines: list[int], keep: np.ndarray,
                seq: np.ndarray, order: np.ndarray, cfg: ImportConfig,
                csv_path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Per-frame info in drive order (drive, segment, time, conditions, source row), and what was found."""
    drive = seq[order]
    index = (_int_column(roles, rows, lines, csv_path, "index") if "index" in roles else keep)[order]
    stamps = [rows[i]["time"] for i in order] if "time" in roles else None
    line = timeline(drive, index, stamps, roles.get("time"), cfg.frame_rate_hz, cfg.time_gap_factor)
    info = {
        "drive": drive,
        "segment": line.segment,
        "time_s": line.time_s,
        "lighting": np.array([_condition_code(rows[i].get("lighting", ""), LIGHTING, _LIGHTING_ALIASES)
                              for i in order], dtype=np.int8),
        "weather": np.array([_condition_code(rows[i].get("weather", ""), WEATHER, _WEATHER_ALIASES)
                             for i in order], dtype=np.int8),
        "los_blocked": np.zeros(len(order), dtype=bool),
        "source_row": keep[order],
    }
    found = {"segment_breaks": {"index_gaps": line.index_gaps, "time_gaps": line.time_gaps,
                                "segments": int(line.segment.max(initial=-1)) + 1},
             "warnings": line.warnings}
    return info, found


def _check_columns(roles: dict[str, str], csv_path: Path, num_rows: int) -> None:
    if num_rows == 0:
        raise EdgekdError("the scenario CSV has no rows", file=csv_path, fix="point at a complete scenario CSV")
    if "power" not in roles and "beam" not in roles:
        raise EdgekdError("no label column", file=csv_path, field="unit1_pwr_60ghz",
                          fix="the CSV needs unit1_pwr_60ghz (64 powers per row) or unit1_beam (1-based)")
    if "seq" not in roles:
        raise EdgekdError("no sequence column; splits are by sequence", file=csv_path, field="seq_index",
                          fix=DOWNLOAD_FIX)
    if not any(role in roles for role in ("image", "radar", "lidar_scr", "lidar_raw", "ue_loc")):
        raise EdgekdError("no sensor column", file=csv_path, field="unit1_rgb",
                          fix="the CSV needs at least one of unit1_rgb, unit1_radar, unit1_lidar(_SCR), unit2_loc")


def _read_labels(scenario_dir: Path, roles: dict[str, str], rows: list[dict[str, str]], lines: list[int],
                 cfg: ImportConfig, problems: Problems):
    """(power [N, B] or None, beams [N], kept row numbers, CSV lines dropped for NaN power)."""
    if "power" not in roles:
        beams = np.zeros(len(rows), dtype=np.int64)
        for i, row in enumerate(rows):
            try:
                beam = int(float(row["beam"]))
            except ValueError:
                problems.add(lines[i], roles["beam"], row["beam"], "not a beam number")
                continue
            if not 1 <= beam <= cfg.num_beams:
                problems.add(lines[i], roles["beam"], beam, f"beam must be 1-based, in 1..{cfg.num_beams}")
                continue
            beams[i] = beam - 1
        return None, beams, list(range(len(rows))), []
    power = np.full((len(rows), cfg.num_beams), np.nan)
    readable = np.zeros(len(rows), dtype=bool)
    for i, row in enumerate(rows):
        path = resolve(scenario_dir, row["power"])
        vector = read_or_record(problems, lines[i], roles["power"], path, read_vector_txt)
        if vector is None:
            continue
        if vector.size != cfg.num_beams:
            problems.add(lines[i], roles["power"], row["power"], f"expected {cfg.num_beams} powers, "
                                                                 f"found {vector.size}")
            continue
        power[i], readable[i] = vector, True
    nan_rows = readable & ~np.all(np.isfinite(power), axis=1)
    keep = np.flatnonzero(readable & ~nan_rows)
    dropped = [lines[i] for i in np.flatnonzero(nan_rows)]
    if dropped:
        log.warning("dropped %d row(s) whose power vector has NaN (CSV lines %s%s)", len(dropped),
                    ", ".join(map(str, dropped[:10])), " ..." if len(dropped) > 10 else "")
    power = np.clip(power[keep], 0.0, None)
    return power, power.argmax(axis=1).astype(np.int64), keep.tolist(), dropped


@dataclasses.dataclass
class _KeptRows:
    """The per-row state of an import, filtered together."""

    power: np.ndarray | None
    beams: np.ndarray
    seq: np.ndarray
    keep: list[int]
    rows: list[dict[str, str]]
    lines: list[int]
    frames: dict[str, np.ndarray]

    def drop_non_finite(self, csv_path: Path) -> list[int]:
        """Drop the rows whose sensor data has NaN/inf (a LiDAR no-return written as NaN: the frame cannot
        be used); returns their CSV lines."""
        finite = _finite_rows(self.frames)
        dropped = [self.lines[i] for i in np.flatnonzero(~finite)]
        if not dropped:
            return dropped
        log.warning("dropped %d row(s) whose sensor data has NaN/inf (CSV lines %s%s)", len(dropped),
                    ", ".join(map(str, dropped[:10])), " ..." if len(dropped) > 10 else "")
        if self.power is not None:
            self.power = self.power[finite]
        self.beams, self.seq = self.beams[finite], self.seq[finite]
        self.keep = [k for k, ok in zip(self.keep, finite) if ok]
        self.rows = [r for r, ok in zip(self.rows, finite) if ok]
        self.lines = [n for n, ok in zip(self.lines, finite) if ok]
        self.frames = {k: v[finite] for k, v in self.frames.items()}
        if not self.rows:
            raise EdgekdError("no rows left to import (every row's sensor data had NaN/inf)", file=csv_path,
                              fix="check the sensor files")
        return dropped


def _finite_rows(frames: dict[str, np.ndarray]) -> np.ndarray:
    """Per row, True when every float sensor array of the row is finite (uint8 images always are)."""
    count = len(next(iter(frames.values())))
    finite = np.ones(count, dtype=bool)
    for values in frames.values():
        if np.issubdtype(values.dtype, np.floating):
            for start in range(0, count, 256):   # in chunks: the frames may be a large memory map
                chunk = np.asarray(values[start:start + 256]).reshape(min(256, count - start), -1)
                finite[start:start + 256] &= np.isfinite(chunk).all(axis=1)
    return finite


def _beam_mismatch(roles: dict[str, str], rows: list[dict[str, str]], beams: np.ndarray,
                   from_power: bool) -> int | None:
    """How many rows' 1-based beam column disagrees with argmax(power) (None without both columns)."""
    if not from_power or "beam" not in roles:
        return None
    given = []
    for row in rows:
        try:
            given.append(int(float(row["beam"])) - 1)
        except ValueError:
            given.append(-1)
    return int(np.count_nonzero(np.asarray(given) != beams))


def _int_column(roles: dict[str, str], rows: list[dict[str, str]], lines: list[int], csv_path: Path,
                role: str) -> np.ndarray:
    values = []
    for row, line in zip(rows, lines):
        try:
            values.append(int(float(row[role])))
        except ValueError:
            raise EdgekdError(f"line {line}: {roles[role]} {row[role]!r} is not an integer", file=csv_path,
                              field=roles[role], fix=f"give every row an integer {roles[role]}") from None
    return np.asarray(values, dtype=np.int64)
