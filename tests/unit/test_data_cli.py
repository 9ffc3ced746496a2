"""``edgekd data``: import-deepsense, info (table, JSON, plot) and the bad-input contract (exit 2, no traceback)."""

from __future__ import annotations

import json

import click
import numpy as np
import pytest
from click.testing import CliRunner
from test_deepsense import (
    build_scenario,  # the fabricated DeepSense folder (tests/unit is on sys.path)
)

from edgekd.cli import cli
from edgekd.host.data.cli import data as data_group


def run(*args: str):
    return CliRunner().invoke(cli, ["data", *args], catch_exceptions=True)


def assert_user_error(result, *needles: str) -> None:
    """Exit 2, the message names the problem, and no Python traceback leaked."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, (needle, result.output)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "scenario8"
    build_scenario(root, seq_lengths=(20, 16, 15, 14), parts=("lidar_scr", "power", "beam", "loc"), nan_rows=(5,))
    return root


@pytest.fixture(scope="module")
def imported(scenario, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-ds") / "ds"
    result = run("import-deepsense", str(scenario), "--out", str(out), "--split", "0.5,0.25,0.25", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "dropped 1 row(s)" in result.output and "windows: train" in result.output
    return out


def test_every_option_has_help():
    assert data_group.help
    for name, command in data_group.commands.items():
        assert command.help, name
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{name} {param.opts}"
    result = CliRunner().invoke(cli, ["data", "--help"])
    assert result.exit_code == 0
    for name in ("synth", "import-deepsense", "info"):
        assert name in result.output


def test_info_table_and_json(imported):
    result = run("info", str(imported))
    assert result.exit_code == 0, result.output
    assert "verified: sha256" in result.output
    for needle in ("train", "val", "test", "deepsense", "dropped rows with NaN power: 1", "unknown for this data"):
        assert needle in result.output
    result = run("info", str(imported), "--json")
    summary = json.loads(result.output)
    assert summary["verified"] and summary["dropped"]["nan_power"] == 1
    assert set(summary["splits"]) == {"train", "val", "test"}
    assert sum(summary["splits"]["train"]["beams_t0"]["histogram"]) == summary["splits"]["train"]["windows"]


def test_info_plot(imported, tmp_path):
    png = tmp_path / "plots" / "info.png"
    result = run("info", str(imported), "--plot", str(png), "--split", "val", "--index", "0")
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert_user_error(run("info", str(imported), "--plot", str(png), "--split", "dev"), "--split", "train")
    assert_user_error(run("info", str(imported), "--plot", str(png), "--index", "99999"), "--index")


def test_info_catches_tampering(imported, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(imported, copy)
    gps = copy / "frames/gps.npy"
    raw = bytearray(gps.read_bytes())
    raw[-1] ^= 0x01
    gps.write_bytes(bytes(raw))
    assert_user_error(run("info", str(copy)), "frames/gps.npy", "sha256", "fix:", "import-deepsense")
    assert_user_error(run("info", str(tmp_path / "nothing")), "dataset not found", "fix:")


def test_import_bad_input(scenario, imported, tmp_path):
    out = tmp_path / "new"
    assert_user_error(run("import-deepsense", str(scenario), "--out", str(out), "--image-size", "-1"),
                      "--image-size", "fix:")
    assert_user_error(run("import-deepsense", str(scenario), "--out", str(out), "--image-size", "0"), "--image-size")
    assert_user_error(run("import-deepsense", str(scenario), "--out", str(out), "--split", "0.9,0.3"),
                      "split", "sum to 1")
    assert_user_error(run("import-deepsense", str(scenario), "--out", str(imported)),
                      "already exists", "--overwrite")
    assert_user_error(run("import-deepsense", str(tmp_path / "missing"), "--out", str(out)),
                      "scenario folder not found")
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no half-written dataset or temporary folder


def test_import_missing_files_one_error(scenario, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(scenario, broken)
    (broken / "unit1/lidar_SCR/lidar_2.mat").unlink()
    (broken / "unit2/GPS_data/gps_7.txt").unlink()
    result = run("import-deepsense", str(broken), "--out", str(tmp_path / "ds"), "--no-progress")
    assert_user_error(result, "2 missing or unreadable", "lidar_2.mat: missing", "gps_7.txt: missing",
                      "unit1_lidar_SCR", "fix:")
    assert not (tmp_path / "ds").exists()


def test_import_overwrite(scenario, imported, tmp_path):
    import shutil

    out = tmp_path / "ds"
    shutil.copytree(imported, out)
    result = run("import-deepsense", str(scenario), "--out", str(out), "--overwrite", "--split", "0.8,0.2",
                 "--no-progress")
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "meta.json").read_text())
    assert set(meta["splits"]) == {"train", "test"}
    assert np.load(out / "frames/lidar.npy").shape[1] == 216


# ------------------------------------------------------------------ synth (the simulator of edgekd.host.data.synth)

SMALL = ("--windows", "40", "--image-size", "16", "--no-progress")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "ds"
    result = run("synth", "--out", str(out), "--seed", "3", *SMALL)
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "windows: train" in result.output
    return out


def test_synth_dataset_follows_the_contract(synthetic):
    from edgekd.host.data import load_dataset

    meta = json.loads((synthetic / "meta.json").read_text())
    assert meta["source"] == "synthetic" and meta["seed"] == 3 and meta["requested_windows"] == 40
    assert meta["config"]["camera"]["image_size"] == 16  # the scene config is stored whole
    assert meta["modalities"]["radar"]["preprocessing"]["scale"] == meta["config"]["radar"]["map_scale"]
    drives = {}
    for split in ("train", "val", "test"):
        ds = load_dataset(synthetic, split)
        assert len(ds) > 0
        item = ds[len(ds) // 2]
        assert item["image"].shape == (8, 1, 16, 16) and item["lidar"].shape == (8, 216)
        assert item["gps"].shape == (8, 2) and item["radar"].shape[:2] == (8, 2)
        assert item["beams"].shape == (4,) and item["power"].shape == (4, 64)
        np.testing.assert_array_equal(item["beams"], item["power"].argmax(axis=1))
        cond = ds.conditions
        assert {"lighting", "weather", "los_blocked", "drive", "available_image"} <= set(cond)
        drives[split] = set(cond["drive"].tolist())
    assert max(drives["train"]) < min(drives["val"]) <= max(drives["val"]) < min(drives["test"])


def test_synth_same_seed_same_bytes(synthetic, tmp_path):
    again = tmp_path / "again"
    assert run("synth", "--out", str(again), "--seed", "3", *SMALL).exit_code == 0
    first = json.loads((synthetic / "meta.json").read_text())
    second = json.loads((again / "meta.json").read_text())
    assert first["arrays"] == second["arrays"] and first["fingerprint"] == second["fingerprint"]
    for rel in first["arrays"]:
        assert (synthetic / rel).read_bytes() == (again / rel).read_bytes()


def test_synth_bad_input(synthetic, tmp_path):
    out = tmp_path / "ds"
    assert_user_error(run("synth", "--out", str(out), "--windows", "0"), "--windows", "fix:")
    assert_user_error(run("synth", "--out", str(out), "--windows", "-5"), "--windows")
    assert_user_error(run("synth", "--out", str(out), "--image-size", "-1"), "--image-size", "fix:")
    assert_user_error(run("synth", "--out", str(out), "--image-size", "0"), "--image-size")
    assert_user_error(run("synth", "--out", str(out), "--image-size", "8", *SMALL[:2]), "image_size")
    assert_user_error(run("synth", "--out", str(out), "--split", "0.7,0.7"), "split")
    assert_user_error(run("synth", "--out", str(synthetic), *SMALL), "already exists", "--overwrite")
    bad = tmp_path / "scene.yaml"
    bad.write_text("frame_rate_hz: 10.0\ncamera:\n  image_sise: 32\n")
    assert_user_error(run("synth", "--out", str(out), "--config", str(bad), *SMALL),
                      "scene.yaml", "camera.image_sise", "allowed keys")
    assert_user_error(run("synth", "--out", str(out), "--config", str(tmp_path / "none.yaml"), *SMALL),
                      "config file not found")
    assert [p.name for p in tmp_path.iterdir()] == ["scene.yaml"]  # nothing half-written


def test_synth_overwrite_with_config(synthetic, tmp_path):
    import shutil

    out = tmp_path / "ds"
    shutil.copytree(synthetic, out)
    scene = tmp_path / "scene.yaml"
    scene.write_text("array:\n  num_beams: 32\n")
    result = run("synth", "--out", str(out), "--config", str(scene), "--overwrite", "--split", "0.8,0.2", *SMALL)
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["num_beams"] == 32 and set(meta["splits"]) == {"train", "test"}
    assert run("info", str(out)).exit_code == 0
