"""Miniature DeepSense 6G scenario folders in the layouts DeepSense publishes (no tests here).

Built from published facts, never from edgekd's own writer. Sources:

[S9]  WillysMa/Sensing-Assisted-Beam-Tracking, file ``scenario9.csv`` (the paper-1
      reference code's verbatim copy of the scenario 9 CSV: 5964 rows, 136 sequences):
      the header (with its empty-named column), the ``./unit1/...`` path style and
      file names, ``time_stamp[UTC]`` written as ``['16-45-05-799']`` ~0.111 s apart,
      ``seq_index`` per drive, ``unit1_beam_index``.
[DF]  AZakeri94/DF-KD-for-LiDAR-aided-Beam-Tracking (paper 2's code): utils/data_feed.py
      reads ``loadmat(path)['data'][:, 0] / 10`` from ``./unit1/lidar_SCR_data/Lidar_data_N.mat``
      and the best beam as ``argmax(np.loadtxt(unit1_pwr_60ghz))``; utils/gen_data_seq.py
      reads scenario 8's ``unit1_pwr_60ghz``, ``unit1_lidar_SCR`` and ``seq_index``.
[I14] issue 14 of this project (filed from DeepSense's scenario pages and example
      scripts, not re-checked here): radar ``.mat`` key ``data`` complex [4, 256, 128]
      with fs 5 MHz / slope 15.015 MHz/us; SCR LiDAR ``data`` [216, 2]; raw 2-D LiDAR
      ``data`` [460, 2]; power ``.txt`` 64 values; 960x540 JPEG; scenarios 31-34:
      ``scenarioNN_dev.csv`` with header ``index,unit1_rgb,unit1_pwr_60ghz,unit1_lidar,
      unit1_radar,unit1_loc,unit2_loc,unit1_beam,unit1_max_pwr,time_stamp,seq_index``,
      ``unit1_beam`` 1-based, ``time_stamp`` ``HH:MM:SS-microseconds`` ~92 ms apart,
      ``index`` with gaps, radar ``.npy`` complex64 (4, 256, 250), LiDAR ASCII ``.ply``
      (double x, y, z + ushort intensity, ~16-18k points out to ~200 m, sensor above
      the road), power files with literal ``nan`` whose label points at the first NaN.

Scenario 8's full header is not in a public copy we could check: it is taken as
scenario 9's without ``unit1_radar`` (the columns [DF] reads are all there).

The content is fabricated but coherent: one user passes the base station per
sequence; the best beam follows the user's azimuth, and the LiDAR, radar, image
and GPS all see the user there, so a model (and the importer's sanity report)
can tell the beam from the inputs.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NUM_BEAMS = 64
BS_LATLON = (33.4200, -111.9300)
EARTH_RADIUS_M = 6_371_000.0

# [S9] verbatim
SCENARIO9_HEADER = ("index,unit1_rgb,unit1_pwr_60ghz,unit1_loc,unit1_lidar,unit1_lidar_SCR,unit1_radar,unit2_loc,"
                    "unit2_loc_cal,,unit1_beam_index,seq_index,time_stamp[UTC],unit2_direction,unit2_num_sat,"
                    "unit2_sat_used,unit2_fix_type,unit2_DGPS,unit2_PDOP,unit2_HDOP").split(",")
# scenario 9's without the radar column (see the module doc)
SCENARIO8_HEADER = [h for h in SCENARIO9_HEADER if h != "unit1_radar"]
# [I14] (the columns after seq_index are not given there; none are written)
SCENARIO3X_HEADER = ("index,unit1_rgb,unit1_pwr_60ghz,unit1_lidar,unit1_radar,unit1_loc,unit2_loc,unit1_beam,"
                     "unit1_max_pwr,time_stamp,seq_index").split(",")

RADAR_BIN_M = 299_792_458.0 * 5e6 / (2 * 15.015e12 * 256)  # [I14]: ~0.195 m per range bin


@dataclass
class Truth:
    """What the folder was made from, per CSV row (in CSV order)."""

    best: list[int] = field(default_factory=list)       # 0-based argmax of the power file
    label: list[int] = field(default_factory=list)      # the published label column's value
    seq: list[int] = field(default_factory=list)
    index: list[int] = field(default_factory=list)
    nan_lines: list[int] = field(default_factory=list)  # CSV lines (header = 1) whose power has NaN
    scr: list[np.ndarray] = field(default_factory=list)  # SCR column 0, metres

    def kept(self, name: str) -> np.ndarray:
        """A per-row list without the NaN rows."""
        lines = [i + 2 for i in range(len(self.seq))]
        return np.asarray([v for v, line in zip(getattr(self, name), lines) if line not in self.nan_lines])


def user_azimuth(k: int, length: int) -> float:
    """Azimuth (rad, sensor frame, 0 = straight ahead) of the user at frame k of a pass: -60..+60 deg."""
    return math.radians(-60.0 + 120.0 * k / max(1, length - 1))


def beam_of(azimuth: float) -> int:
    return int(np.clip(round((math.degrees(azimuth) + 60.0) / 120.0 * (NUM_BEAMS - 1)), 0, NUM_BEAMS - 1))


def power_vector(best: int, rng: np.random.Generator) -> np.ndarray:
    beams = np.arange(NUM_BEAMS)
    return (0.02 + 0.3 * np.exp(-0.5 * ((beams - best) / 2.0) ** 2) * (1 + 0.1 * rng.random(NUM_BEAMS))
            + np.where(beams == best, 0.5, 0.0)) * 1e-3


def write_power(path: Path, power: np.ndarray) -> None:
    """[I14]: one value per line; a NaN is written literally as ``nan``."""
    path.write_text("".join("nan\n" if np.isnan(v) else f"{v:.8e}\n" for v in power))


def write_jpeg(path: Path, azimuth: float, size: tuple[int, int] = (960, 540)) -> None:
    """A 960x540 JPEG ([I14]) with a bright block where the user is."""
    from PIL import Image

    width, height = size
    pixels = np.full((height, width, 3), 60, dtype=np.uint8)
    col = int((azimuth / math.radians(120) + 0.5) * (width - 1))
    pixels[height // 3: 2 * height // 3, max(0, col - width // 16): col + width // 16] = 230
    Image.fromarray(pixels).save(path, quality=80)


def write_latlon(path: Path, east: float, north: float) -> None:
    lat = BS_LATLON[0] + math.degrees(north / EARTH_RADIUS_M)
    lon = BS_LATLON[1] + math.degrees(east / (EARTH_RADIUS_M * math.cos(math.radians(BS_LATLON[0]))))
    path.write_text(f"{lat:.10f}\n{lon:.10f}\n")


def scr_scan(azimuth: float, distance: float, rng: np.random.Generator) -> np.ndarray:
    """[216, 2] SCR data ([I14], [DF]): column 0 = range in metres (a wall at ~30 m, the user nearer)."""
    ranges = 30.0 + rng.normal(0, 0.2, 216)
    centre = int((math.degrees(azimuth) + 90.0) / 180.0 * 216)
    ranges[max(0, centre - 4): centre + 4] = distance
    return np.stack([ranges, np.linspace(-90, 90, 216)], axis=1)


def radar_cube(azimuth: float, distance: float, shape: tuple[int, int, int], rng: np.random.Generator | None,
               dtype=np.complex64) -> np.ndarray:
    """A moving point target at (distance, azimuth): complex [rx, samples, chirps], with noise unless rng is None."""
    rx, samples, chirps = shape
    k = distance / RADAR_BIN_M  # range bin
    phase = (2 * np.pi * k * np.arange(samples)[None, :, None] / samples
             + np.pi * math.sin(azimuth) * np.arange(rx)[:, None, None]
             + 2 * np.pi * 0.1 * np.arange(chirps)[None, None, :])
    signal = (20 * np.exp(1j * phase)).astype(dtype)
    if rng is None:
        return signal
    noise = rng.normal(0, 0.5, (2, *shape))
    return (signal + noise[0] + 1j * noise[1]).astype(dtype)


def _row_files(root: Path) -> None:
    for sub in ("unit1/camera_data", "unit1/mmWave_data", "unit1/GPS_data", "unit1/lidar_data",
                "unit1/lidar_SCR_data", "unit1/radar_data", "unit2/GPS_data", "unit2/GPS_data_calibrated"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    write_latlon(root / "unit1/GPS_data/gps_location.txt", 0.0, 0.0)


def build_scenario9(root: Path, seq_lengths=(12, 12, 12), *, nan_rows=(),
                    radar_shape=(4, 256, 128), image_size=(960, 540), seed=0, scenario8=False) -> Truth:
    """``scenario9/scenario9.csv`` as [S9] (or scenario 8's, ``scenario8=True``: no radar); returns the truth.

    ``nan_rows``: 1-based CSV row numbers whose power file holds a literal ``nan``.
    """

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    _row_files(root)
    header = SCENARIO8_HEADER if scenario8 else SCENARIO9_HEADER
    truth, rows, n = Truth(), [], 0
    clock = 16 * 3600 + 45 * 60 + 5.799  # [S9] first stamp 16-45-05-799
    for seq, length in enumerate(seq_lengths, start=1):
        clock += 30.0  # the next pass starts later
        for k in range(length):
            n += 1
            hh, mm, ss = _hms(clock + 0.111 * k)  # [S9] ~0.111 s apart
            ms = int(round((ss - int(ss)) * 1000)) % 1000
            azimuth, distance = user_azimuth(k, length), 8.0 + 4.0 * abs(math.sin(user_azimuth(k, length)))
            best = beam_of(azimuth)
            power = power_vector(best, rng)
            label = best + 1  # the published label: argmax + 1 ([DF]'s "- 1" undoes it)
            if n in nan_rows:
                power[7] = np.nan
                label = 8  # the label points at the first NaN
            i = n - 1  # [S9]: mmWave_power_0.txt and gps_location_0.txt for the first row
            cam, lid, rad = 2679 + n, 2679 + n, 4588 + n
            row = {"index": n, "unit1_pwr_60ghz": f"./unit1/mmWave_data/mmWave_power_{i}.txt",
                   "unit1_loc": "./unit1/GPS_data/gps_location.txt",
                   "unit1_lidar": f"./unit1/lidar_data/Lidar_data_{lid}.mat",
                   "unit1_lidar_SCR": f"./unit1/lidar_SCR_data/Lidar_data_{lid}.mat",
                   "unit2_loc": f"./unit2/GPS_data/gps_location_{i}.txt",
                   "unit2_loc_cal": f"./unit2/GPS_data_calibrated/gps_location_{i}.txt",
                   "": "", "unit1_beam_index": label, "seq_index": seq,
                   "time_stamp[UTC]": f"['{hh:02d}-{mm:02d}-{int(ss):02d}-{ms:03d}']",
                   "unit2_direction": 0, "unit2_num_sat": 13, "unit2_sat_used": "G8 G10 G18 G23",
                   "unit2_fix_type": "3D", "unit2_DGPS": "Yes", "unit2_PDOP": 3.3, "unit2_HDOP": 1.2}
            write_power(root / row["unit1_pwr_60ghz"], power)
            scan = _scenario9_sensors(root, row, azimuth, distance, rng, radar_shape, image_size,
                                      names=(cam, rad, hh, mm, int(ss)), radar=not scenario8)
            rows.append(row)
            truth.best.append(best), truth.label.append(label), truth.seq.append(seq), truth.index.append(n)
            truth.scr.append(scan[:, 0])
            if n in nan_rows:
                truth.nan_lines.append(n + 1)
    name = "scenario8" if scenario8 else "scenario9"
    _write_csv(root / f"{name}.csv", header, rows)
    return truth


def _scenario9_sensors(root: Path, row: dict, azimuth: float, distance: float, rng: np.random.Generator,
                       radar_shape, image_size, *, names: tuple[int, ...], radar: bool) -> np.ndarray:
    """GPS, LiDAR (SCR and raw), camera and radar files of one scenario 8/9 row; returns the SCR data."""
    import scipy.io

    cam, rad, hh, mm, ss = names
    east, north = distance * math.sin(azimuth), distance * math.cos(azimuth)
    write_latlon(root / row["unit2_loc"], east + 0.5, north + 0.5)
    write_latlon(root / row["unit2_loc_cal"], east, north)
    scan = scr_scan(azimuth, distance, rng)
    scipy.io.savemat(root / row["unit1_lidar_SCR"], {"data": scan})
    raw = np.stack([np.full(460, 30.0), np.linspace(-90, 90, 460)], axis=1)  # [I14]: data [460, 2]
    scipy.io.savemat(root / row["unit1_lidar"], {"data": raw})
    row["unit1_rgb"] = f"./unit1/camera_data/image_BS2_{cam}_{hh:02d}_{mm:02d}_{ss:02d}.jpg"  # [S9]
    write_jpeg(root / row["unit1_rgb"], azimuth, image_size)
    if radar:
        row["unit1_radar"] = f"./unit1/radar_data/data_{rad}_{hh:02d}_{mm:02d}_{ss:02d}.mat"  # [S9]
        scipy.io.savemat(root / row["unit1_radar"],
                         {"data": radar_cube(azimuth, distance, radar_shape, rng, np.complex128)})
    return scan


def _hms(stamp: float) -> tuple[int, int, float]:
    return int(stamp // 3600), int(stamp // 60 % 60), stamp % 60


def _write_csv(path: Path, header: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow([row.get(column, "") for column in header])


# --- scenarios 31-34: 3-D point clouds from a sensor above a road -------------------------------------

SENSOR_HEIGHT_M = 4.0   # the ground is 4 m below the sensor
LANES_Y_M = (7.0, 11.0)  # the road runs along x, in front of the sensor


def point_cloud(cars: list[tuple[float, float]], rng: np.random.Generator, points: int = 16_000) -> np.ndarray:
    """[N, 3] x, y, z (sensor at the origin, z up): ground out to ~200 m, two poles and a gantry above the road
    users, and one box of returns per car at (x, y) (4.5 x 1.8 x 1.5 m)."""
    n_cars = 500 * len(cars)
    n_struct = 1200
    n_ground = max(1000, points - n_cars - n_struct)
    # ground: scan rings that hit the road at growing distances, all around
    radius = SENSOR_HEIGHT_M / np.tan(np.radians(rng.uniform(1.2, 60.0, n_ground)))
    radius = np.clip(radius, 2.0, 200.0)
    phi = rng.uniform(-np.pi, np.pi, n_ground)
    ground = np.stack([radius * np.cos(phi), radius * np.sin(phi), np.full(n_ground, -SENSOR_HEIGHT_M)], 1)
    ground[:, 2] += rng.normal(0, 0.03, n_ground)
    # structure above the users (a sign gantry across the road at 3 m above the sensor and poles to 10 m)
    gantry = np.stack([rng.uniform(-20, 20, n_struct // 2), np.full(n_struct // 2, 15.0),
                       rng.uniform(2.5, 3.5, n_struct // 2)], 1)
    poles = np.stack([np.repeat([-25.0, 25.0], n_struct // 4), np.full(n_struct // 2, 16.0),
                      rng.uniform(-0.5, 6.0, n_struct // 2)], 1)
    parts = [ground, gantry, poles]
    for x, y in cars:
        # the side facing the sensor (y - 0.9) and the top
        u = rng.uniform(-2.25, 2.25, 500)
        z = rng.uniform(-SENSOR_HEIGHT_M + 0.3, -SENSOR_HEIGHT_M + 1.5, 500)
        parts.append(np.stack([x + u, np.full(500, y - 0.9) + rng.normal(0, 0.02, 500), z], 1))
    return np.concatenate(parts)


def write_ascii_ply(path: Path, xyz: np.ndarray, rng: np.random.Generator) -> None:
    """[I14]: ASCII PLY, double x, y, z + ushort intensity."""
    intensity = rng.integers(0, 4096, len(xyz))
    header = (f"ply\nformat ascii 1.0\nelement vertex {len(xyz)}\nproperty double x\nproperty double y\n"
              "property double z\nproperty ushort intensity\nend_header\n")
    body = np.column_stack([xyz, intensity])
    with open(path, "w") as handle:
        handle.write(header)
        np.savetxt(handle, body, fmt=["%.6f", "%.6f", "%.6f", "%d"])


def build_scenario3x(root: Path, seq_lengths=(12, 12, 12), *, number=32, nan_rows=(), index_gaps=(),
                     radar_shape=(4, 256, 250), image_size=(960, 540), points=16_000, seed=0,
                     cloud_pool: int | None = None) -> Truth:
    """``scenarioNN/scenarioNN_dev.csv`` as [I14]; returns the truth.

    ``index_gaps``: 1-based row numbers after which ``index`` skips 3 (frames
    removed, as published). ``cloud_pool``: write only this many distinct point
    clouds and hard-link the others (a large fixture for the memory check;
    the importer reads every row's file either way).
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    _row_files(root)
    truth, rows, n, index = Truth(), [], 0, 0
    clock = 11 * 3600 + 46 * 60 + 30.0
    base_noise = (rng.normal(0, 0.5, radar_shape) + 1j * rng.normal(0, 0.5, radar_shape)).astype(np.complex64)
    for seq, length in enumerate(seq_lengths, start=1):
        clock += 40.0
        late = 0.0
        for k in range(length):
            n += 1
            index += 1
            hh, mm, ss = _hms(clock + 0.092 * k + late)  # [I14] ~92 ms apart; `late`: removed frames
            us = int(round((ss - int(ss)) * 1e6)) % 1_000_000
            x = -30.0 + 60.0 * k / max(1, length - 1)
            user = (x, LANES_Y_M[0])  # the user's car in the near lane, another car in the far one
            other = (25.0 - 50.0 * k / max(1, length - 1), LANES_Y_M[1])
            azimuth = math.atan2(-user[0], user[1])  # in the LiDAR's frame (see below)
            best = beam_of(azimuth)
            power = power_vector(best, rng)
            label = best + 1
            if n in nan_rows:
                power[3:] = np.nan
                label = 4  # the published label points at the first NaN
            row = {"index": index, "unit1_rgb": f"./unit1/camera_data/image_{index}.jpg",
                   "unit1_pwr_60ghz": f"./unit1/mmWave_data/mmWave_power_{index}.txt",
                   "unit1_lidar": f"./unit1/lidar_data/lidar_{index}.ply",
                   "unit1_radar": f"./unit1/radar_data/radar_{index}.npy",
                   "unit1_loc": "./unit1/GPS_data/gps_location.txt",
                   "unit2_loc": f"./unit2/GPS_data/gps_location_{index}.txt",
                   "unit1_beam": label, "unit1_max_pwr": f"{np.nanmax(power):.6e}",
                   "time_stamp": f"{hh:02d}:{mm:02d}:{int(ss):02d}-{us:06d}", "seq_index": seq}
            write_power(root / row["unit1_pwr_60ghz"], power)
            write_latlon(root / row["unit2_loc"], user[0], user[1])
            write_jpeg(root / row["unit1_rgb"], azimuth, image_size)
            np.save(root / row["unit1_radar"], base_noise + radar_cube(azimuth, math.hypot(*user), radar_shape,
                                                                       None))
            pooled = rows[(n - 1) % cloud_pool]["unit1_lidar"] if cloud_pool is not None and n > cloud_pool else None
            _write_cloud(root, row["unit1_lidar"], pooled, [user, other], rng, points)
            rows.append(row)
            truth.best.append(best), truth.label.append(label), truth.seq.append(seq), truth.index.append(index)
            if n in nan_rows:
                truth.nan_lines.append(n + 1)
            if n in index_gaps:
                index += 3  # frames removed here
                late += 3 * 0.092
    _write_csv(root / f"scenario{number}_dev.csv", SCENARIO3X_HEADER, rows)
    return truth


def _write_cloud(root: Path, name: str, pooled: str | None, cars: list[tuple[float, float]],
                 rng: np.random.Generator, points: int) -> None:
    """One row's point cloud, or a hard link to ``pooled`` (an earlier row's)."""
    if pooled is not None:
        (root / name).hardlink_to(root / pooled)
        return
    # the road runs along x; the LiDAR looks along +y, so its frame (x ahead, y left) is (y, -x, z)
    cloud = point_cloud(cars, rng, points)
    write_ascii_ply(root / name, cloud[:, [1, 0, 2]] * np.array([1.0, -1.0, 1.0]), rng)
