"""The DeepSense 6G importer: folders in the published layouts (tests/support/deepsense.py, scenarios 9, 8
and 32, built from the public sources cited there), and a generic folder (``build_scenario`` below: the
per-file formats with simpler names, kept for the error and option tests and for tests/unit/test_data_cli.py)."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from edgekd.device.errors import EdgekdError
from edgekd.host.data import load_dataset
from edgekd.host.data.deepsense import (
    EARTH_RADIUS_M,
    ImportConfig,
    import_deepsense,
    latlon_to_metres,
    lidar_raw_to_bins,
    parse_time_of_day,
    read_ply_points,
)
from edgekd.host.data.deepsense.convert import pool_rows

BS_LATLON = (33.42, -111.93)
ALL_PARTS = ("rgb", "radar", "lidar_scr", "ply", "power", "beam", "loc")


def _write_ply(path: Path, points: np.ndarray, fmt: str = "ascii") -> None:
    header = (f"ply\nformat {fmt} 1.0\ncomment fabricated scan\nelement vertex {len(points)}\n"
              "property float x\nproperty float y\nproperty float z\nproperty uchar intensity\nend_header\n")
    with open(path, "wb") as handle:
        handle.write(header.encode())
        if fmt == "ascii":
            for x, y, z in points:
                handle.write(f"{x:.4f} {y:.4f} {z:.4f} 7\n".encode())
        else:
            dtype = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("i", "u1")])
            table = np.zeros(len(points), dtype=dtype)
            table["x"], table["y"], table["z"], table["i"] = points[:, 0], points[:, 1], points[:, 2], 7
            handle.write(table.tobytes())


def _metres_to_latlon(east: float, north: float) -> tuple[float, float]:
    lat = BS_LATLON[0] + math.degrees(north / EARTH_RADIUS_M)
    lon = BS_LATLON[1] + math.degrees(east / (EARTH_RADIUS_M * math.cos(math.radians(BS_LATLON[0]))))
    return lat, lon


def build_scenario(root: Path, seq_lengths=(14, 13, 15, 12), parts=ALL_PARTS, *, nan_rows=(), seed=0,
                   radar_shape=(4, 32, 16), csv_name="scenario8.csv", extra_columns=None) -> dict:
    """Write a DeepSense-style folder; return the ground truth used to make it."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("unit1/camera_data", "unit1/radar_data", "unit1/lidar_data", "unit1/lidar_SCR",
                "unit1/mmWave_data", "unit1/GPS_data", "unit2/GPS_data"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "unit1/GPS_data/bs_location.txt").write_text(f"{BS_LATLON[0]:.10f}\n{BS_LATLON[1]:.10f}\n")
    header = ["index"]
    names = {"rgb": "unit1_rgb", "radar": "unit1_radar", "ply": "unit1_lidar", "lidar_scr": "unit1_lidar_SCR",
             "power": "unit1_pwr_60ghz", "beam": "unit1_beam"}
    header += [names[p] for p in ("rgb", "radar", "ply", "lidar_scr", "power", "beam") if p in parts]
    if "loc" in parts:
        header += ["unit1_loc", "unit2_loc"]
    header += ["seq_index", "time_stamp[UTC]"] + list(extra_columns or {})
    rows, truth = [], {"best": [], "scr": [], "east_north": [], "seq": []}
    index = 0
    for seq, length in enumerate(seq_lengths, start=1):
        for k in range(length):
            index += 1
            row = {"index": index, "seq_index": seq, "time_stamp[UTC]": f"11-46-{30 + k // 10:02d}.{k % 10}00000"}
            best = int((seq * 7 + k) % 64)
            power = rng.random(64) * 0.2
            power[best] = 1.0 + rng.random()
            if index in nan_rows:
                power[5] = np.nan
            if "power" in parts:
                np.savetxt(root / f"unit1/mmWave_data/mmWave_power_{index}.txt", power)
                row["unit1_pwr_60ghz"] = f"./unit1/mmWave_data/mmWave_power_{index}.txt"
            if "beam" in parts:
                row["unit1_beam"] = best + 1  # DeepSense beams are 1-based
            if "rgb" in parts:
                pixels = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / f"unit1/camera_data/image_{index}.jpg", quality=90)
                row["unit1_rgb"] = f"./unit1/camera_data/image_{index}.jpg"
            if "radar" in parts:
                cube = (rng.normal(size=radar_shape) + 1j * rng.normal(size=radar_shape)).astype(np.complex64)
                scipy.io.savemat(root / f"unit1/radar_data/radar_{index}.mat", {"data": cube})
                row["unit1_radar"] = f"./unit1/radar_data/radar_{index}.mat"
            scan = rng.uniform(2.0, 40.0, 216)
            if "lidar_scr" in parts:
                scipy.io.savemat(root / f"unit1/lidar_SCR/lidar_{index}.mat", {"data": scan[None, :]})
                row["unit1_lidar_SCR"] = f"./unit1/lidar_SCR/lidar_{index}.mat"
            if "ply" in parts:
                angles = rng.uniform(-1.0, 1.0, 200)
                ranges = rng.uniform(3.0, 30.0, 200)
                points = np.stack([ranges * np.cos(angles), ranges * np.sin(angles), rng.normal(0, 0.2, 200)], 1)
                _write_ply(root / f"unit1/lidar_data/lidar_{index}.ply", points)
                row["unit1_lidar"] = f"./unit1/lidar_data/lidar_{index}.ply"
            east, north = 5.0 + 1.5 * k, 20.0 + seq
            if "loc" in parts:
                lat, lon = _metres_to_latlon(east, north)
                (root / f"unit2/GPS_data/gps_{index}.txt").write_text(f"{lat:.10f}\n{lon:.10f}\n")
                row["unit1_loc"] = "./unit1/GPS_data/bs_location.txt"
                row["unit2_loc"] = f"./unit2/GPS_data/gps_{index}.txt"
            for column, value in (extra_columns or {}).items():
                row[column] = value(seq, k)
            rows.append(row)
            if index not in nan_rows:
                truth["best"].append(best)
                truth["scr"].append(scan)
                truth["east_north"].append((east, north))
                truth["seq"].append(seq)
    with open(root / csv_name, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return {key: np.asarray(value) for key, value in truth.items()}


def _all_windows(path):
    return {s: load_dataset(path, s) for s in json.loads((path / "meta.json").read_text())["splits"]}


@pytest.fixture(scope="module")
def lidar_gps_scenario(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenario8")
    truth = build_scenario(root, seq_lengths=(20, 16, 15, 14), parts=("lidar_scr", "power", "beam", "loc"),
                           nan_rows=(5, 33))
    return root, truth


def test_import_lidar_gps(lidar_gps_scenario, tmp_path):
    root, truth = lidar_gps_scenario
    out = import_deepsense(root, tmp_path / "ds", config=ImportConfig(split=(0.5, 0.25, 0.25)))
    meta = json.loads((out / "meta.json").read_text())
    assert meta["source"] == "deepsense" and set(meta["modalities"]) == {"lidar", "gps"}
    assert meta["dropped"]["nan_power"] == 2 and meta["dropped"]["csv_lines"] == [6, 34]
    assert meta["num_frames"] == 65 - 2
    assert meta["deepsense"]["beam_column_mismatch"] == 0
    assert {"lighting", "weather", "los_blocked"} <= set(meta["unknown_conditions"])
    # frames in CSV order within each drive: compare with the ground truth
    beams = np.load(out / "frames/beams.npy")
    np.testing.assert_array_equal(beams, truth["best"])  # 0-based argmax of power = 1-based column - 1
    np.testing.assert_allclose(np.load(out / "frames/lidar.npy"), truth["scr"] / 10.0, rtol=1e-6)
    np.testing.assert_allclose(np.load(out / "frames/gps.npy"), truth["east_north"] / 100.0, atol=1e-4)
    np.testing.assert_array_equal(np.load(out / "info/drive.npy"), truth["seq"])
    assert np.all(np.load(out / "info/lighting.npy") == -1)
    power = np.load(out / "frames/power.npy")
    assert np.all(np.isfinite(power)) and np.allclose(power.max(axis=1), 1.0)
    # split by sequence, and no window spans a dropped row
    drives = {s: set(ds.conditions["drive"].tolist()) for s, ds in _all_windows(out).items()}
    assert drives == {"train": {1, 2}, "val": {3}, "test": {4}}
    source_row = np.load(out / "info/source_row.npy")
    for ds in _all_windows(out).values():
        spans = ds.indices[:, None] + np.arange(ds.window + ds.horizons - 1)
        assert np.all(np.diff(source_row[spans], axis=1) == 1)
    time_s = np.load(out / "info/time_s.npy")
    assert time_s[0] == 0.0 and time_s[1] == pytest.approx(0.1, abs=1e-5)


def test_one_error_lists_every_bad_file(tmp_path):
    """A published scenario 8 folder with four kinds of damage: one error, grouped per column and kind."""
    from support.deepsense import build_scenario9

    broken = tmp_path / "scenario8"
    build_scenario9(broken, (14, 13), scenario8=True, image_size=(48, 27))
    (broken / "unit1/lidar_SCR_data/Lidar_data_2682.mat").unlink()        # CSV line 4
    (broken / "unit2/GPS_data_calibrated/gps_location_8.txt").unlink()    # line 10
    (broken / "unit1/mmWave_data/mmWave_power_10.txt").write_text("1\n2\n3\n")  # line 12: 3 powers, not 64
    (broken / "unit1/lidar_SCR_data/Lidar_data_2699.mat").write_bytes(b"this is not a mat file")  # line 21
    with pytest.raises(EdgekdError) as err:
        import_deepsense(broken, tmp_path / "ds")
    text = str(err.value)
    assert "4 missing or unreadable" in text and text.count("\n  - ") == 4
    for needle in ("line 4: ", "Lidar_data_2682.mat: missing", "gps_location_8.txt: missing",
                   "expected 64 powers", "Lidar_data_2699.mat: unreadable"):
        assert needle in text
    assert err.value.file.endswith("scenario8.csv") and err.value.fix
    assert not (tmp_path / "ds").exists()


def test_many_problems_are_capped(tmp_path):
    from support.deepsense import build_scenario9

    root = tmp_path / "scenario8"
    build_scenario9(root, (15, 15), scenario8=True, image_size=(48, 27))
    for path in sorted((root / "unit1/lidar_SCR_data").glob("*.mat")):
        path.unlink()
    with pytest.raises(EdgekdError) as err:
        import_deepsense(root, tmp_path / "ds")
    text = str(err.value)
    assert "30 missing" in text and "every one of the 30 rows" in text and "... and 27 more" in text
    assert text.count("\n  - ") == 1 and text.count(": missing") == 3  # one kind of problem, 3 examples


def test_beam_column_only_is_one_based(tmp_path):
    root = tmp_path / "s"
    truth = build_scenario(root, parts=("lidar_scr", "beam"), seq_lengths=(12, 12, 12))
    out = import_deepsense(root, tmp_path / "ds", config=ImportConfig(split=(0.34, 0.33, 0.33)))
    np.testing.assert_array_equal(np.load(out / "frames/beams.npy"), truth["best"])
    power = np.load(out / "frames/power.npy")
    np.testing.assert_array_equal(power.argmax(axis=1), truth["best"])  # one-hot when no power column
    assert "one-hot" in json.loads((out / "meta.json").read_text())["deepsense"]["power"]
    # a 0 in a 1-based column is an error naming the line
    lines = (root / "scenario8.csv").read_text().splitlines()
    cells = lines[1].split(",")
    header = lines[0].split(",")
    cells[header.index("unit1_beam")] = "0"
    lines[1] = ",".join(cells)
    (root / "scenario8.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(EdgekdError, match="unit1_beam, 1 row.s.: line 2: 0: beam must be 1-based"):
        import_deepsense(root, tmp_path / "ds2")


def test_conditions_from_optional_column(tmp_path):
    root = tmp_path / "s"
    build_scenario(root, parts=("lidar_scr", "power"), seq_lengths=(12, 12, 12),
                   extra_columns={"time_of_day": lambda seq, k: "night" if seq == 2 else "Day"})
    out = import_deepsense(root, tmp_path / "ds", config=ImportConfig(split=(0.34, 0.33, 0.33)))
    lighting = np.load(out / "info/lighting.npy")
    drive = np.load(out / "info/drive.npy")
    assert np.all(lighting[drive == 2] == 2) and np.all(lighting[drive != 2] == 0)
    meta = json.loads((out / "meta.json").read_text())
    assert "lighting" not in meta["unknown_conditions"] and "weather" in meta["unknown_conditions"]


def test_bad_folders(tmp_path):
    with pytest.raises(EdgekdError, match="scenario folder not found"):
        import_deepsense(tmp_path / "nope", tmp_path / "ds")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgekdError, match="no scenario CSV"):
        import_deepsense(tmp_path / "empty", tmp_path / "ds")
    root = tmp_path / "noseq"
    build_scenario(root, parts=("lidar_scr", "power"), seq_lengths=(12,))
    text = (root / "scenario8.csv").read_text().replace("seq_index", "sequence")
    (root / "scenario8.csv").write_text(text)
    with pytest.raises(EdgekdError) as err:
        import_deepsense(root, tmp_path / "ds")
    assert err.value.field == "seq_index"
    with pytest.raises(EdgekdError, match="must be positive"):
        ImportConfig(image_size=-1)


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian"])
def test_ply_reader(tmp_path, fmt):
    points = np.random.default_rng(1).normal(size=(50, 3)).astype(np.float32)
    _write_ply(tmp_path / "scan.ply", points, fmt)
    np.testing.assert_allclose(read_ply_points(tmp_path / "scan.ply"), points, atol=1e-4)
    (tmp_path / "bad.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nend_header\n")
    with pytest.raises(ValueError, match="x/y/z"):
        read_ply_points(tmp_path / "bad.ply")


def test_geodesy_and_time_helpers():
    lat, lon = _metres_to_latlon(120.0, -45.0)
    east_north = latlon_to_metres(np.array(lat), np.array(lon), np.array(BS_LATLON[0]), np.array(BS_LATLON[1]))
    np.testing.assert_allclose(east_north, [120.0, -45.0], atol=0.05)
    assert parse_time_of_day("11-46-30.5") == pytest.approx(11 * 3600 + 46 * 60 + 30.5)
    assert parse_time_of_day("2021-08-25 11:46:30") == pytest.approx(11 * 3600 + 46 * 60 + 30)
    assert parse_time_of_day("") is None


def test_import_every_modality_like_the_synthetic_path(tmp_path):
    from edgekd.host.data import camera, lidar, radar

    root = tmp_path / "scenario9"
    build_scenario(root, parts=("rgb", "radar", "ply", "power", "beam", "loc"), seq_lengths=(12, 13, 12))
    cfg = ImportConfig(image_size=24, range_bins=16, angle_bins=8, split=(0.34, 0.33, 0.33))
    out = import_deepsense(root, tmp_path / "ds", config=cfg)
    meta = json.loads((out / "meta.json").read_text())
    assert set(meta["modalities"]) == {"image", "radar", "lidar", "gps"}
    assert meta["modalities"]["image"]["frame_shape"] == [1, 24, 24]
    assert meta["modalities"]["radar"]["frame_shape"] == [2, 16, 8]
    assert meta["modalities"]["radar"]["preprocessing"]["scale"] == radar.RadarConfig().map_scale
    assert meta["modalities"]["lidar"]["preprocessing"]["column"] == "unit1_lidar"
    # frame k of the dataset is CSV row k (one drive after another, no rows dropped)
    k = 17
    image = camera.preprocess_image(np.asarray(Image.open(root / f"unit1/camera_data/image_{k + 1}.jpg")), 24)
    np.testing.assert_array_equal(np.load(out / "frames/image.npy")[k], image)
    cube = scipy.io.loadmat(root / f"unit1/radar_data/radar_{k + 1}.mat")["data"]
    crop = math.ceil(40.0 / cfg.radar_bin_m(32))  # 40 m at the real bin size (32 samples: ~1.56 m per bin)
    assert meta["modalities"]["radar"]["preprocessing"]["range_bins_kept"] == crop == 26
    maps = radar.normalise_maps(pool_rows(radar.cube_to_maps(cube[None].astype(np.complex64), crop, 8), 16))[0]
    np.testing.assert_allclose(np.load(out / "frames/radar.npy")[k].astype(np.float32),
                               maps.astype(np.float32), atol=2e-3)
    points = read_ply_points(root / f"unit1/lidar_data/lidar_{k + 1}.ply")
    scan = lidar_raw_to_bins(points, cfg) / 10.0  # the height band above the estimated ground
    ground = np.percentile(points[np.hypot(points[:, 0], points[:, 1]) <= 40, 2], 5)
    band = (points[:, 2] >= ground + 0.3) & (points[:, 2] <= ground + 2.5)
    np.testing.assert_allclose(scan, lidar.points_to_bins(points[band]) / 10.0, rtol=1e-6)
    np.testing.assert_allclose(np.load(out / "frames/lidar.npy")[k], scan, rtol=1e-6)
    ds = load_dataset(out, "train")
    item = ds[0]
    assert item["image"].shape == (8, 1, 24, 24) and item["radar"].shape == (8, 2, 16, 8)
    assert 0 <= item["image"].min() and item["image"].max() <= 1


def test_radar_bins_that_do_not_fit(tmp_path):
    root = tmp_path / "s"
    build_scenario(root, parts=("radar", "power"), seq_lengths=(12, 12, 12), radar_shape=(4, 16, 8))
    with pytest.raises(EdgekdError) as err:
        import_deepsense(root, tmp_path / "ds", config=ImportConfig(range_bins=64, angle_bins=2))
    assert err.value.field == "unit1_radar" and "--angle-bins" in err.value.fix
    assert not (tmp_path / "ds").exists()


def test_scr_preferred_over_point_cloud(tmp_path):
    root = tmp_path / "s"
    truth = build_scenario(root, parts=("lidar_scr", "ply", "power"), seq_lengths=(12, 12, 12))
    out = import_deepsense(root, tmp_path / "ds", config=ImportConfig(split=(0.34, 0.33, 0.33)))
    meta = json.loads((out / "meta.json").read_text())
    assert meta["modalities"]["lidar"]["preprocessing"]["column"] == "unit1_lidar_SCR"
    np.testing.assert_allclose(np.load(out / "frames/lidar.npy"), truth["scr"] / 10.0, rtol=1e-6)


# --- the published layouts (tests/support/deepsense.py cites the source of every fact) -------------------


def _power_argmax(root: Path, csv_name: str) -> dict[int, int]:
    """CSV index -> argmax of its power file, read as paper 2's reference loader does (np.loadtxt + argmax)."""
    with open(root / csv_name, newline="") as handle:
        return {int(row["index"]): int(np.argmax(np.loadtxt(root / row["unit1_pwr_60ghz"][2:])))
                for row in csv.DictReader(handle) if not np.isnan(np.loadtxt(root / row["unit1_pwr_60ghz"])).any()}


def _assert_no_window_spans_a_gap(out: Path, csv_index: np.ndarray) -> None:
    source_row = np.load(out / "info/source_row.npy")
    index = csv_index[source_row]
    for ds in _all_windows(out).values():
        spans = ds.indices[:, None] + np.arange(ds.window + ds.horizons - 1)
        assert np.all(np.diff(index[spans], axis=1) == 1)


@pytest.fixture(scope="module")
def scenario9(tmp_path_factory):
    from support.deepsense import build_scenario9

    root = tmp_path_factory.mktemp("published") / "scenario9"
    truth = build_scenario9(root, (14, 15, 13), nan_rows=(1, 29))  # published radar [4, 256, 128], 960x540 JPEGs
    return root, truth


def test_scenario9_as_published(scenario9, tmp_path):
    from support.deepsense import SCENARIO9_HEADER

    root, truth = scenario9
    assert (root / "scenario9.csv").read_text().splitlines()[0] == ",".join(SCENARIO9_HEADER)
    out = import_deepsense(root, tmp_path / "ds", config=ImportConfig(split=(0.34, 0.33, 0.33)))
    meta = json.loads((out / "meta.json").read_text())
    assert set(meta["modalities"]) == {"image", "radar", "lidar", "gps"}
    assert meta["deepsense"]["columns"]["beam"] == "unit1_beam_index"
    assert meta["dropped"] == {"nan_power": 2, "csv_lines": [2, 30], "nan_sensor": 0, "nan_sensor_csv_lines": []}
    beams = np.load(out / "frames/beams.npy")
    index = np.asarray(truth.index)[np.load(out / "info/source_row.npy")]
    argmax = _power_argmax(root, "scenario9.csv")
    np.testing.assert_array_equal(beams, [argmax[i] for i in index])             # beams = argmax of the files
    np.testing.assert_array_equal(beams, truth.kept("label") - 1)              # published label - 1, every row
    assert meta["deepsense"]["beam_column_mismatch"] == 0
    np.testing.assert_allclose(np.load(out / "frames/lidar.npy"), truth.kept("scr") / 10.0, rtol=1e-6)  # [DF]
    radar = meta["modalities"]["radar"]["preprocessing"]
    assert radar["cube_shape"] == [4, 256, 128] and radar["range_bin_m"] == pytest.approx(0.195, abs=1e-3)
    assert 35 <= radar["max_range_m"] <= 45 and radar["slope_mhz_per_us"] == 15.015
    time_s = np.load(out / "info/time_s.npy")
    assert time_s[0] == 0.0 and time_s[1] == pytest.approx(0.111, abs=1e-3)
    assert meta["deepsense"]["warnings"] == []
    _assert_no_window_spans_a_gap(out, np.asarray(truth.index))
    from edgekd.host.data.reader import sanity_report

    report = sanity_report(out)
    assert not any(report[m]["constant"] or report[m]["uninformative"] for m in meta["modalities"])


def test_scenario8_as_published(tmp_path):
    from support.deepsense import build_scenario9

    root = tmp_path / "scenario8"
    truth = build_scenario9(root, (13, 12, 12), nan_rows=(13,), scenario8=True, image_size=(96, 54))
    out = import_deepsense(root, tmp_path / "ds", config=ImportConfig(split=(0.34, 0.33, 0.33)))
    meta = json.loads((out / "meta.json").read_text())
    assert set(meta["modalities"]) == {"image", "lidar", "gps"}
    assert meta["modalities"]["lidar"]["preprocessing"]["column"] == "unit1_lidar_SCR"
    np.testing.assert_array_equal(np.load(out / "frames/beams.npy"), truth.kept("label") - 1)
    np.testing.assert_allclose(np.load(out / "frames/lidar.npy"), truth.kept("scr") / 10.0, rtol=1e-6)
    assert meta["dropped"]["csv_lines"] == truth.nan_lines == [14]


@pytest.fixture(scope="module")
def scenario32(tmp_path_factory):
    from support.deepsense import build_scenario3x

    root = tmp_path_factory.mktemp("published") / "scenario32"
    truth = build_scenario3x(root, (16, 30, 16), nan_rows=(4, 30), index_gaps=(22, 50), image_size=(96, 54))
    return root, truth


def test_scenario32_as_published(scenario32, tmp_path):
    root, truth = scenario32
    out = import_deepsense(root, tmp_path / "ds", config=ImportConfig(split=(0.34, 0.33, 0.33)))
    meta = json.loads((out / "meta.json").read_text())
    assert meta["deepsense"]["csv"] == "scenario32_dev.csv"
    assert set(meta["modalities"]) == {"image", "radar", "lidar", "gps"}
    assert meta["dropped"]["csv_lines"] == truth.nan_lines == [5, 31]    # literal nan rows dropped and listed
    beams = np.load(out / "frames/beams.npy")
    index = np.asarray(truth.index)[np.load(out / "info/source_row.npy")]
    argmax = _power_argmax(root, "scenario32_dev.csv")
    np.testing.assert_array_equal(beams, [argmax[i] for i in index])
    np.testing.assert_array_equal(beams, truth.kept("label") - 1)           # unit1_beam is 1-based
    # two published index gaps and two dropped rows: four breaks, no window across any of them
    assert meta["deepsense"]["segment_breaks"]["index_gaps"] == 4
    _assert_no_window_spans_a_gap(out, np.asarray(truth.index))
    time_s = np.load(out / "info/time_s.npy")
    assert time_s[1] - time_s[0] == pytest.approx(0.092, abs=1e-4)         # HH:MM:SS-microseconds
    assert meta["modalities"]["radar"]["preprocessing"]["cube_shape"] == [4, 256, 250]


def test_point_cloud_bins_move_with_the_users(scenario32, tmp_path):
    """The 3-D cloud of a sensor above a road: with the ground (and what is above the users) removed the bins
    spread like the synthetic scenario's; binned as they come they are a flat ground ring."""
    from edgekd.host.data.reader import sanity_report
    from edgekd.host.data.store import synthesize_dataset

    root, _ = scenario32
    cfg = ImportConfig(split=(0.34, 0.33, 0.33))
    out = import_deepsense(root, tmp_path / "ds", config=cfg)
    lidar = sanity_report(out)["lidar"]
    synthetic = sanity_report(synthesize_dataset(tmp_path / "synth", windows=60, seed=0))["lidar"]
    assert 0.2 < lidar["spread"] / synthetic["spread"] < 5, (lidar, synthetic)
    assert not lidar["uninformative"] and lidar["beam_1nn_within2"] > 0.5
    flat = import_deepsense(root, tmp_path / "flat", config=dataclasses.replace(cfg, lidar_band_m=(-50.0, 50.0)))
    ring = sanity_report(flat)["lidar"]
    assert ring["spread"] < 0.1 * lidar["spread"] and ring["bins_with_return"] == 1.0


def test_time_stamps_of_both_published_formats(caplog, tmp_path):
    assert parse_time_of_day("['16-45-05-799']") == pytest.approx(16 * 3600 + 45 * 60 + 5.799)
    assert parse_time_of_day("11:46:30-554123") == pytest.approx(11 * 3600 + 46 * 60 + 30.554123)
    assert parse_time_of_day("11:46:30-054123") == pytest.approx(11 * 3600 + 46 * 60 + 30.054123)
    assert parse_time_of_day("['not a time']") is None
    from support.deepsense import build_scenario9

    root = tmp_path / "scenario8"
    build_scenario9(root, (12, 12), scenario8=True, image_size=(48, 27))
    text = (root / "scenario8.csv").read_text().replace("['16-4", "['16h4")
    (root / "scenario8.csv").write_text(text)
    out = import_deepsense(root, tmp_path / "ds", config=ImportConfig(split=(0.5, 0.5)))
    warnings = json.loads((out / "meta.json").read_text())["deepsense"]["warnings"]
    assert len(warnings) == 1 and "time_stamp[UTC]" in warnings[0] and "frame counts" in warnings[0]
    assert "time_stamp[UTC]" in caplog.text


def test_other_packagings_are_refused(tmp_path):
    challenge = tmp_path / "challenge"
    challenge.mkdir()
    (challenge / "ml_challenge_dev_multi_modal.csv").write_text(
        "index," + ",".join(f"unit1_rgb_{i}" for i in range(1, 6)) + ",unit1_beam\n1,a,b,c,d,e,3\n")
    with pytest.raises(EdgekdError, match="ML-challenge packaging") as err:
        import_deepsense(challenge, tmp_path / "ds")
    assert "scenarioN.csv" in err.value.fix
    task = tmp_path / "task"
    task.mkdir()
    (task / "scenario9_series_train.csv").write_text("unit1_pwr_1,unit1_pwr_2,beam_index_1\na,b,3\n")
    with pytest.raises(EdgekdError, match="per-task CSV") as err:
        import_deepsense(task, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_wrong_shape_in_every_row_is_one_message(tmp_path):
    from click.testing import CliRunner
    from support.deepsense import build_scenario9

    from edgekd.cli import cli

    root = tmp_path / "scenario8"
    build_scenario9(root, (12, 12), scenario8=True, image_size=(48, 27))
    for path in (root / "unit1/lidar_SCR_data").glob("*.mat"):
        scipy.io.savemat(path, {"data": np.zeros((100, 2))})
    result = CliRunner().invoke(cli, ["data", "import-deepsense", str(root), "--out", str(tmp_path / "ds"),
                                      "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "every one of the 24 rows" in result.output and result.output.count("expected one [216]") == 3
    assert not (tmp_path / "ds").exists()


def test_constant_modality_shows_in_the_report(tmp_path):
    from click.testing import CliRunner
    from support.deepsense import build_scenario9

    from edgekd.cli import cli

    root = tmp_path / "scenario8"
    build_scenario9(root, (12, 12, 12), scenario8=True, image_size=(48, 27))
    scans = sorted((root / "unit1/lidar_SCR_data").glob("*.mat"))
    for path in scans[1:]:
        path.write_bytes(scans[0].read_bytes())
    result = CliRunner().invoke(cli, ["data", "import-deepsense", str(root), "--out", str(tmp_path / "ds"),
                                      "--split", "0.34,0.33,0.33", "--no-progress"])
    assert result.exit_code == 0, result.output
    lidar_line = next(line for line in result.output.splitlines() if line.strip().startswith("lidar"))
    assert "CONSTANT" in lidar_line
    info = CliRunner().invoke(cli, ["data", "info", str(tmp_path / "ds")])
    assert info.exit_code == 0 and "CONSTANT" in info.output and "sanity" in info.output


def test_raw_2d_scan_binned_to_the_contract():
    scan = np.stack([np.full(460, 30.0), np.linspace(-90, 90, 460)], axis=1)  # [460, 2] (range m, angle deg)
    scan[200:210, 0] = 6.0
    bins = lidar_raw_to_bins(scan, ImportConfig())
    assert bins.shape == (216,) and np.all(bins > 0)
    near = np.flatnonzero(bins < 10)
    assert near.size and abs(near.mean() - 210 * 216 / 460) < 3


def test_heading_turns_the_field_of_view():
    """A car 10 m along the sensor's +y axis is at the edge of the default view (centred on x) and in the middle
    of a view centred on y (--lidar-heading 90)."""
    ground = np.stack([np.linspace(-30, 30, 400), np.linspace(30, -30, 400), np.full(400, -4.0)], axis=1)
    car = np.stack([np.random.default_rng(0).uniform(-1, 1, 200), np.full(200, 10.0), np.full(200, -3.0)], axis=1)
    cloud = np.concatenate([ground, car])
    bins = lidar_raw_to_bins(cloud, ImportConfig(lidar_heading_deg=90.0))
    assert np.all(np.abs(bins[102:114] - 10.0) < 0.1) and np.count_nonzero(bins) == 14  # +-1 m at 10 m
    assert np.count_nonzero(lidar_raw_to_bins(cloud, ImportConfig())[20:196]) == 0


def test_a_beam_column_that_disagrees_is_reported(tmp_path):
    from support.deepsense import build_scenario9

    root = tmp_path / "scenario8"
    truth = build_scenario9(root, (12, 12), scenario8=True, image_size=(48, 27))
    text = (root / "scenario8.csv").read_text().splitlines()
    header = text[0].split(",")
    cells = text[1].split(",")
    cells[header.index("unit1_beam_index")] = str(truth.label[0] + 5)
    text[1] = ",".join(cells)
    (root / "scenario8.csv").write_text("\n".join(text) + "\n")
    out = import_deepsense(root, tmp_path / "ds", config=ImportConfig(split=(0.5, 0.5)))
    meta = json.loads((out / "meta.json").read_text())
    assert meta["deepsense"]["beam_column_mismatch"] == 1
    assert "unit1_beam_index: 1 of 24" in meta["deepsense"]["warnings"][0]
    np.testing.assert_array_equal(np.load(out / "frames/beams.npy"), truth.kept("best"))


def test_a_lidar_file_with_nan_drops_its_row_and_says_which(scenario9, tmp_path):
    """A LiDAR no-return written as NaN: the row is dropped (named in meta.json), not a refused import."""
    import csv
    import shutil

    import scipy.io

    root = tmp_path / "scenario9"
    shutil.copytree(scenario9[0], root)
    with open(root / "scenario9.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    target = root / rows[41]["unit1_lidar_SCR"]   # CSV line 43: the last row of the last pass (power finite)
    scan = scipy.io.loadmat(target)["data"]
    scan[17, 0] = np.nan
    scipy.io.savemat(target, {"data": scan})
    out = import_deepsense(root, tmp_path / "ds", config=ImportConfig(split=(0.34, 0.33, 0.33)))
    meta = json.loads((out / "meta.json").read_text())
    assert meta["dropped"]["nan_sensor"] == 1 and meta["dropped"]["nan_sensor_csv_lines"] == [43]
    assert np.isfinite(np.load(out / "frames/lidar.npy")).all()
    assert 41 not in set(np.load(out / "info/source_row.npy").tolist())   # source_row: 0-based CSV row


def test_a_scenario_one_folder_down_is_named_in_the_error(scenario9, tmp_path):
    """Paper 2's loader reads `scenario8/DEV[95%]/scenario8.csv`: a user may pass the folder above it."""
    import shutil

    from edgekd.device.errors import EdgekdError

    inner = tmp_path / "scenario9" / "DEV[95%]"
    shutil.copytree(scenario9[0], inner)
    with pytest.raises(EdgekdError, match="at the top of the folder") as raised:
        import_deepsense(tmp_path / "scenario9", tmp_path / "ds")
    assert str(inner) in raised.value.fix and not (tmp_path / "ds").exists()
