"""Import a DeepSense 6G scenario folder into the edgekd dataset format.

A scenario folder holds one CSV (``scenarioN.csv``) whose rows are frames and
whose columns name per-frame files relative to the folder (``./unit1/...``):

==================== ===================================================================
column               file
==================== ===================================================================
``unit1_rgb``        camera image (any format Pillow reads)
``unit1_radar``      raw FMCW cube, complex ``[4 Rx, samples, chirps]`` (.mat key ``data``, or .npy)
``unit1_lidar_SCR``  preprocessed LiDAR scan, a 216-vector in metres (.mat)
``unit1_lidar``      LiDAR point cloud (.ply, ASCII or binary), metres, sensor at the origin
``unit1_pwr_60ghz``  received power of every beam (.txt, 64 numbers)
``unit1_beam``       best beam, 1-based (used when there is no power column; checked otherwise)
``unit1_loc``        base-station GPS latitude/longitude (.txt)
``unit2_loc[_cal]``  user GPS latitude/longitude (.txt)
``seq_index``        drive (sequence) id; splits are by sequence
==================== ===================================================================

Each modality whose column is present runs through the same preprocessing as
the synthetic scenario (``edgekd.host.data.camera/radar/lidar``), so a model sees
the same kind of input from either source. Rows whose power vector holds NaN
are dropped and counted; every missing or unreadable file is collected and
reported in one error before anything is written.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.device.errors import EdgekdError
from edgekd.host.data.gps import STORAGE_SCALE_M as GPS_SCALE  # stored GPS = metres / 100
from edgekd.host.data.lidar import STORAGE_SCALE_M as LIDAR_SCALE  # stored LiDAR = metres / 10
from edgekd.host.data.store import LIGHTING, UNKNOWN, WEATHER, check_output, normalise_split, write_dataset

log = logging.getLogger(__name__)

EARTH_RADIUS_M = 6_371_000.0
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


# --------------------------------------------------------------------------- file readers


def read_vector_txt(path: Path) -> np.ndarray:
    """All numbers of a whitespace/comma separated text file, flattened."""
    text = path.read_text().replace(",", " ")
    values = np.array([float(token) for token in text.split()], dtype=np.float64)
    if values.size == 0:
        raise ValueError("no numbers in the file")
    return values


def read_latlon(path: Path) -> tuple[float, float]:
    values = read_vector_txt(path)
    if values.size < 2:
        raise ValueError(f"expected latitude and longitude, found {values.size} number(s)")
    lat, lon = float(values[0]), float(values[1])
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError(f"not a latitude/longitude: {lat}, {lon}")
    return lat, lon


def read_mat(path: Path) -> dict[str, np.ndarray]:
    import scipy.io

    try:
        data = scipy.io.loadmat(path)
    except NotImplementedError:
        raise ValueError("MATLAB v7.3 (HDF5) files are not supported; re-save with -v7") from None
    return {k: v for k, v in data.items() if not k.startswith("__")}


def read_radar_cube(path: Path) -> np.ndarray:
    """Complex radar cube ``[rx, samples, chirps]`` from .mat (key ``data``) or .npy."""
    if path.suffix.lower() == ".npy":
        cube = np.load(path, allow_pickle=False)
    else:
        arrays = read_mat(path)
        if "data" not in arrays:
            raise ValueError(f"no variable 'data' in the .mat file (found: {', '.join(arrays) or 'none'})")
        cube = arrays["data"]
    cube = np.asarray(cube)
    if cube.ndim != 3:
        raise ValueError(f"expected a 3-D cube [rx, samples, chirps], got shape {cube.shape}")
    return cube.astype(np.complex64)


def read_lidar_scr(path: Path, bins: int = 216) -> np.ndarray:
    """The preprocessed LiDAR scan (a ``bins``-vector in metres) from a .mat (or .npy/.txt)."""
    if path.suffix.lower() == ".npy":
        candidates = {"array": np.load(path, allow_pickle=False)}
    elif path.suffix.lower() == ".txt":
        candidates = {"array": read_vector_txt(path)}
    else:
        candidates = read_mat(path)
    fitting = [np.asarray(v, dtype=np.float64).ravel() for v in candidates.values()
               if isinstance(v, np.ndarray) and v.size == bins and v.dtype.kind in "iuf"]
    if len(fitting) != 1:
        raise ValueError(f"expected exactly one {bins}-value array, found "
                         f"{', '.join(f'{k} {np.shape(v)}' for k, v in candidates.items()) or 'none'}")
    return fitting[0]


_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


def read_ply_points(path: Path) -> np.ndarray:
    """``[N, 3]`` x/y/z of the vertex element of a PLY file (ascii or binary, no list properties)."""
    with open(path, "rb") as handle:
        if handle.readline().strip() != b"ply":
            raise ValueError("not a PLY file (no 'ply' magic line)")
        fmt, elements, current = None, [], None
        while True:
            line = handle.readline()
            if not line:
                raise ValueError("PLY header has no end_header")
            words = line.decode("ascii", "replace").split()
            if not words or words[0] in ("comment", "obj_info"):
                continue
            if words[0] == "end_header":
                break
            if words[0] == "format":
                fmt = words[1]
            elif words[0] == "element":
                current = {"name": words[1], "count": int(words[2]), "props": []}
                elements.append(current)
            elif words[0] == "property" and current is not None:
                if words[1] == "list":
                    raise ValueError("list properties are not supported for point clouds")
                if words[1] not in _PLY_TYPES:
                    raise ValueError(f"unknown PLY property type {words[1]!r}")
                current["props"].append((words[2], _PLY_TYPES[words[1]]))
        if not elements or elements[0]["name"] != "vertex":
            raise ValueError("the first PLY element must be 'vertex'")
        vertex = elements[0]
        names = [name for name, _ in vertex["props"]]
        if not {"x", "y", "z"} <= set(names):
            raise ValueError(f"vertex has no x/y/z properties (has {', '.join(names)})")
        count = vertex["count"]
        if fmt == "ascii":
            rows = [handle.readline() for _ in range(count)]
            values = np.array(b" ".join(rows).split(), dtype=np.float64)
            if values.size != count * len(names):
                raise ValueError(f"expected {count} vertices of {len(names)} values, file is short or ragged")
            table = values.reshape(count, len(names))
            return table[:, [names.index("x"), names.index("y"), names.index("z")]]
        if fmt in ("binary_little_endian", "binary_big_endian"):
            order = "<" if fmt == "binary_little_endian" else ">"
            dtype = np.dtype([(name, order + code) for name, code in vertex["props"]])
            data = np.frombuffer(handle.read(dtype.itemsize * count), dtype=dtype)
            if data.size != count:
                raise ValueError(f"expected {count} vertices, file is short")
            return np.stack([data["x"], data["y"], data["z"]], axis=1).astype(np.float64)
        raise ValueError(f"unknown PLY format {fmt!r}")


def read_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        return np.asarray(img.convert("L") if img.mode not in ("L", "RGB") else img)


# --------------------------------------------------------------------------- CSV


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
                          file=scenario_dir, fix="point at the DeepSense scenario folder (the one holding scenarioN.csv)")
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


# --------------------------------------------------------------------------- conversions


def latlon_to_metres(lat: np.ndarray, lon: np.ndarray, lat0: np.ndarray, lon0: np.ndarray) -> np.ndarray:
    """East/north metres of (lat, lon) from (lat0, lon0) (local tangent plane; fine over a few km)."""
    north = np.radians(lat - lat0) * EARTH_RADIUS_M
    east = np.radians(lon - lon0) * EARTH_RADIUS_M * np.cos(np.radians(lat0))
    return np.stack([east, north], axis=-1)


def parse_time_of_day(text: str) -> float | None:
    """Seconds since midnight from DeepSense time stamps such as ``11-46-30.554`` or ``11:46:30.5``."""
    match = re.search(r"(\d{1,2})[-:](\d{1,2})[-:](\d{1,2}(?:\.\d+)?)\s*$", text)
    if not match:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


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


# --------------------------------------------------------------------------- the import


def import_deepsense(scenario_dir: str | os.PathLike, out: str | os.PathLike, *,
                     config: ImportConfig | None = None, csv_name: str | os.PathLike | None = None,
                     overwrite: bool = False, progress: bool = False) -> Path:
    """Read a DeepSense 6G scenario folder and write an edgekd dataset at ``out``.

    Raises one EdgekdError listing every missing/unreadable file (nothing is
    written then). meta.json records the rows dropped for NaN power
    (``dropped``), the columns used and the conditions that real data lacks.
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
    problems = Problems(csv_path)
    line_of = [i + 2 for i in range(len(rows))]  # header is line 1

    power, beams, keep, dropped = _read_labels(scenario_dir, roles, rows, line_of, cfg, problems)
    rows = [rows[i] for i in keep]
    lines = [line_of[i] for i in keep]
    seq = _seq_ids(roles, rows, lines, csv_path)
    frames, preprocessing = _read_modalities(scenario_dir, roles, rows, lines, cfg, problems, progress)
    problems.raise_if_any()
    if not rows:
        raise EdgekdError("no rows left to import (every power vector had NaN)", file=csv_path,
                          field=roles.get("power"), fix="check the power files")

    # group by drive in order of id, keeping CSV (time) order inside a drive
    order = np.argsort(seq, kind="stable")
    source_row = np.asarray(keep, dtype=np.int64)[order]
    drive = seq[order]
    segment_break = np.r_[True, (np.diff(source_row) != 1) | (np.diff(drive) != 0)]
    info = {
        "drive": drive,
        "segment": np.cumsum(segment_break) - 1,
        "time_s": _times(roles, [rows[i] for i in order], drive, cfg),
        "lighting": np.array([_condition_code(rows[i].get("lighting", ""), LIGHTING, _LIGHTING_ALIASES)
                              for i in order], dtype=np.int8),
        "weather": np.array([_condition_code(rows[i].get("weather", ""), WEATHER, _WEATHER_ALIASES)
                             for i in order], dtype=np.int8),
        "los_blocked": np.zeros(len(order), dtype=bool),
        "source_row": source_row,
    }
    unknown = ["los_blocked"] + [key for key in ("lighting", "weather") if np.all(info[key] == UNKNOWN)]
    extra = {
        "dropped": {"nan_power": len(dropped), "csv_lines": dropped[:100]},
        "unknown_conditions": unknown,
        "deepsense": {"scenario_dir": str(scenario_dir.resolve()), "csv": csv_path.name,
                      "rows": len(line_of), "imported": len(rows), "columns": roles,
                      "beam_column_mismatch": _beam_mismatch(roles, rows, beams, power is not None)},
    }
    if power is None:
        power = np.eye(cfg.num_beams, dtype=np.float32)[beams]
        extra["deepsense"]["power"] = f"one-hot of {roles['beam']} (no power column)"
    config_dict = {"scenario": scenario_dir.name, **dataclasses.asdict(cfg)}
    return write_dataset(out, frames={k: v[order] for k, v in frames.items()}, power=power[order],
                         beams=beams[order], frame_info=info, source="deepsense", config=config_dict, seed=None,
                         window=cfg.window, horizons=cfg.horizons, split=cfg.split, overwrite=overwrite,
                         preprocessing=preprocessing, extra_meta=extra)


def _check_columns(roles: dict[str, str], csv_path: Path, num_rows: int) -> None:
    if num_rows == 0:
        raise EdgekdError("the scenario CSV has no rows", file=csv_path, fix="point at a complete scenario CSV")
    if "power" not in roles and "beam" not in roles:
        raise EdgekdError("no label column", file=csv_path, field="unit1_pwr_60ghz",
                          fix="the CSV needs unit1_pwr_60ghz (64 powers per row) or unit1_beam (1-based)")
    if "seq" not in roles:
        raise EdgekdError("no sequence column; splits are by sequence", file=csv_path, field="seq_index",
                          fix="add a seq_index column giving the drive of each row")
    if not any(role in roles for role in ("image", "radar", "lidar_scr", "lidar_ply", "ue_loc")):
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
        vector = _read(problems, lines[i], roles["power"], resolve(scenario_dir, row["power"]), read_vector_txt)
        if vector is None:
            continue
        if vector.size != cfg.num_beams:
            problems.add(lines[i], roles["power"], row["power"],
                         f"expected {cfg.num_beams} powers, found {vector.size}")
            continue
        power[i], readable[i] = vector, True
    nan_rows = readable & ~np.all(np.isfinite(power), axis=1)
    keep = np.flatnonzero(readable & ~nan_rows)
    dropped = [lines[i] for i in np.flatnonzero(nan_rows)]
    if dropped:
        log.warning("dropped %d row(s) whose power vector has NaN", len(dropped))
    power = np.clip(power[keep], 0.0, None)
    return power, power.argmax(axis=1).astype(np.int64), keep.tolist(), dropped


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


def _seq_ids(roles: dict[str, str], rows: list[dict[str, str]], lines: list[int], csv_path: Path) -> np.ndarray:
    values = []
    for row, line in zip(rows, lines):
        try:
            values.append(int(float(row["seq"])))
        except ValueError:
            raise EdgekdError(f"line {line}: seq_index {row['seq']!r} is not an integer", file=csv_path,
                              field=roles["seq"], fix="give every row an integer sequence id") from None
    return np.asarray(values, dtype=np.int32)


def _times(roles: dict[str, str], rows: list[dict[str, str]], drive: np.ndarray, cfg: ImportConfig) -> np.ndarray:
    """Seconds since the start of each drive: from the time stamp column, else frame count / frame rate."""
    stamps = [parse_time_of_day(row.get("time", "")) for row in rows]
    position = np.arange(len(rows)) - np.searchsorted(drive, drive, side="left")
    fallback = position / cfg.frame_rate_hz
    if "time" not in roles or any(s is None for s in stamps):
        return fallback.astype(np.float32)
    stamps = np.asarray(stamps, dtype=np.float64)
    first = stamps[np.searchsorted(drive, drive, side="left")]
    since = stamps - first
    since[since < 0] += 86400.0  # a drive across midnight
    return since.astype(np.float32)


def _read(problems: Problems, line: int, column: str, path: Path, reader: Callable[[Path], Any]) -> Any:
    """``reader(path)``, or None with the problem recorded."""
    if not path.is_file():
        problems.add(line, column, path, "missing")
        return None
    try:
        return reader(path)
    except Exception as exc:  # any parse failure of a user file is reported, never a traceback
        problems.add(line, column, path, f"unreadable ({type(exc).__name__}: {exc})")
        return None


def _read_modalities(scenario_dir: Path, roles: dict[str, str], rows: list[dict[str, str]], lines: list[int],
                     cfg: ImportConfig, problems: Problems, progress: bool):
    """Per present modality the preprocessed ``[N, ...]`` frames, and how each was preprocessed."""
    from tqdm import tqdm

    frames: dict[str, np.ndarray] = {}
    preprocessing: dict[str, dict[str, Any]] = {}
    readers = _modality_readers(roles, cfg)
    for name, (column, read_one, describe) in readers.items():
        out = []
        for row, line in tqdm(list(zip(rows, lines)), desc=f"import {name}", disable=not progress,
                              unit="frame", leave=False):
            out.append(_read(problems, line, column, resolve(scenario_dir, row[_role_of(roles, column)]), read_one))
        frames[name] = _finish(name, out, cfg)
        preprocessing[name] = {**describe, "column": column}
        if name == "radar" and frames[name].size:
            # the fixed constants were tuned on the synthetic radar; record where real maps land
            low, high = np.percentile(frames[name][::max(1, len(rows) // 256)].astype(np.float32), [1, 99])
            preprocessing[name]["value_percentiles_1_99"] = [round(float(low), 4), round(float(high), 4)]
    if "ue_loc" in roles:
        frames["gps"], preprocessing["gps"] = _gps(scenario_dir, roles, rows, lines, problems)
    return frames, preprocessing


def _role_of(roles: dict[str, str], column: str) -> str:
    return next(role for role, name in roles.items() if name == column)


def _modality_readers(roles: dict[str, str], cfg: ImportConfig) -> dict[str, tuple[str, Callable, dict]]:
    readers: dict[str, tuple[str, Callable, dict]] = {}
    if "image" in roles:
        from edgekd.host.data import camera

        readers["image"] = (roles["image"], lambda p: camera.preprocess_image(read_image(p), cfg.image_size),
                            {"stored": f"grayscale uint8 resized to {cfg.image_size}x{cfg.image_size} "
                                       "(edgekd.host.data.camera.preprocess_image)", "load": "x / 255 -> [0, 1]"})
    if "radar" in roles:
        # cubes are kept raw here and turned into maps in batches by _finish
        from edgekd.host.data.radar import RadarConfig

        constants = RadarConfig()
        readers["radar"] = (roles["radar"], read_radar_cube,
                            {"stored": f"float16 log2(1+|x|) maps {cfg.range_bins}x{cfg.angle_bins} "
                                       "(edgekd.host.data.radar.cube_to_maps), (map - offset) / scale",
                             "offset": constants.map_offset, "scale": constants.map_scale,
                             "load": "float32 as stored"})
    if "lidar_scr" in roles:
        readers["lidar"] = (roles["lidar_scr"], read_lidar_scr,
                            {"stored": "DeepSense 216-bin scan (unit1_lidar_SCR) in metres / 10",
                             "load": "float32 as stored"})
    elif "lidar_ply" in roles:
        from edgekd.host.data import lidar

        readers["lidar"] = (roles["lidar_ply"], lambda p: lidar.points_to_bins(read_ply_points(p)),
                            {"stored": "point cloud -> 216 azimuth bins (edgekd.host.data.lidar.points_to_bins), "
                                       "metres / 10", "load": "float32 as stored"})
    return readers


def _finish(name: str, values: list[Any], cfg: ImportConfig) -> np.ndarray:
    """Stack per-frame results (None where a file failed; the import then stops before writing)."""
    good = [v for v in values if v is not None]
    if not good:
        return np.zeros((len(values), 1), dtype=np.float32)
    if name == "radar":
        return _radar_maps(values, cfg)
    sample = np.asarray(good[0])
    out = np.zeros((len(values), *sample.shape), dtype=sample.dtype if name == "image" else np.float32)
    for i, value in enumerate(values):
        if value is not None:
            out[i] = value
    if name == "lidar":
        out /= LIDAR_SCALE
    return out


def _radar_maps(cubes: list[np.ndarray | None], cfg: ImportConfig, batch: int = 32) -> np.ndarray:
    """Cubes -> normalised float16 maps with the synthetic path's processing and fixed constants."""
    from edgekd.host.data import radar

    out = np.zeros((len(cubes), 2, cfg.range_bins, cfg.angle_bins), dtype=np.float16)
    present = [i for i, cube in enumerate(cubes) if cube is not None]
    for lo in range(0, len(present), batch):
        idx = present[lo:lo + batch]
        try:
            maps = radar.cube_to_maps(np.stack([cubes[i] for i in idx]), cfg.range_bins, cfg.angle_bins)
        except ValueError as exc:  # e.g. fewer samples per chirp than range bins asked for
            raise EdgekdError(f"radar cubes of shape {cubes[idx[0]].shape} cannot be processed: {exc}",
                              field="unit1_radar", fix="pass --range-bins/--angle-bins that fit the cube "
                              "(range bins <= samples, angle bins >= Rx antennas)") from None
        out[idx] = radar.normalise_maps(maps)
        for i in idx:
            cubes[i] = None  # free the raw cube (about 1 MB each) as soon as it is mapped
    return out


def _gps(scenario_dir: Path, roles: dict[str, str], rows: list[dict[str, str]], lines: list[int],
         problems: Problems) -> tuple[np.ndarray, dict[str, Any]]:
    """User position east/north of the base station in metres / 100."""
    ue = np.full((len(rows), 2), np.nan)
    bs = np.full((len(rows), 2), np.nan)
    for i, (row, line) in enumerate(zip(rows, lines)):
        got = _read(problems, line, roles["ue_loc"], resolve(scenario_dir, row["ue_loc"]), read_latlon)
        if got is not None:
            ue[i] = got
        if "bs_loc" in roles:
            got = _read(problems, line, roles["bs_loc"], resolve(scenario_dir, row["bs_loc"]), read_latlon)
            if got is not None:
                bs[i] = got
    if "bs_loc" in roles:
        reference = f"base station ({roles['bs_loc']}, per row)"
    else:
        # without the base station's position the mean user position is the best fixed origin
        bs[:] = np.nanmean(ue, axis=0) if np.isfinite(ue).any() else 0.0
        reference = "mean user position (no unit1_loc column)"
        log.warning("no unit1_loc column: GPS is relative to the mean user position")
    metres = latlon_to_metres(ue[:, 0], ue[:, 1], bs[:, 0], bs[:, 1])
    gps = np.nan_to_num(metres / GPS_SCALE).astype(np.float32)
    return gps, {"stored": f"[east, north] metres / {GPS_SCALE:g} relative to the {reference}",
                 "column": roles["ue_loc"], "load": "float32 as stored"}
