"""`edgekd data drive`: a real simulated drive with the planned conditions, stored as the replay reads it."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from edgekd.cli import cli
from edgekd.device.runtime.replay import load_drive
from edgekd.host.data.drive import DEFAULT_PLAN

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def drive_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("drive") / "drive.npz"
    res = CliRunner().invoke(cli, ["data", "drive", "--out", str(path), "--minutes", "0.6", "--seed", "1"])
    assert res.exit_code == 0, res.output
    return path


def test_drive_follows_the_plan(drive_file):
    drive = load_drive(drive_file)
    n = drive.num_frames
    assert n == 360 and np.allclose(np.diff(drive.time_s), 0.1)
    assert drive.segment_names == [seg.name for seg in DEFAULT_PLAN]
    assert np.all(np.diff(drive.segment) >= 0) and set(np.unique(drive.segment)) == set(range(len(DEFAULT_PLAN)))
    for i, seg in enumerate(DEFAULT_PLAN):
        here = drive.segment == i
        assert np.all(drive.lighting[here] == seg.lighting) and np.all(drive.weather[here] == seg.weather)
        for sensor in seg.unavailable:
            assert not drive.available[sensor][here].any()
            assert not drive.frames[sensor][here].any()          # a dead sensor delivers zeros
    assert drive.available["lidar"][drive.segment == 0].mean() > 0.9


def test_drive_frames_match_the_dataset_store_scales(drive_file):
    drive = load_drive(drive_file)
    assert drive.frames["image"].dtype == np.uint8 and drive.frames["image"].shape[1:] == (1, 64, 64)
    assert drive.frames["radar"].dtype == np.float32 and drive.frames["radar"].shape[1:] == (2, 64, 32)
    assert drive.frames["lidar"].shape[1:] == (216,) and drive.frames["lidar"].max() < 20  # metres / 10
    day, night = drive.lighting == 0, drive.lighting == 2
    lum = drive.frames["image"].reshape(drive.num_frames, -1).mean(axis=1) / 255
    ok = drive.available["image"]
    assert lum[day & ok].mean() > 0.4 > 0.1 > lum[night & ok].mean()
    up = drive.available["radar"]
    assert 0 < drive.frames["radar"][up].mean() < 1


def test_ground_truth_beams_are_shifted_per_horizon_within_each_track(drive_file):
    drive = load_drive(drive_file)
    b, track = drive.beams, drive.track
    assert b.shape == (drive.num_frames, 4) and b.dtype == np.int64
    # a 0.6-minute drive is many passes of the user through the base station's view, one track each
    assert len(np.unique(track)) > 3 and np.all(np.diff(track) >= 0)
    for h in (1, 3):
        same = track[h:] == track[:-h]
        assert np.array_equal(b[h:, 0][same], b[:-h, h][same])
        assert np.all(b[:-h, h][~same] == -1)   # the next pass is not this one's future
    assert np.all(b[-3:, 3] == -1) and np.all(b[:, 0] >= 0)


def test_existing_output_needs_overwrite(drive_file):
    res = CliRunner().invoke(cli, ["data", "drive", "--out", str(drive_file), "--minutes", "0.1"])
    assert res.exit_code == 2 and "--overwrite" in res.output
    res = CliRunner().invoke(cli, ["data", "drive", "--out", str(drive_file) + "x", "--minutes", "0"])
    assert res.exit_code == 2 and "minutes" in res.output


@pytest.mark.parametrize("key", ["track", "beams", "available_image"])
def test_a_per_frame_array_of_the_wrong_length_is_named(drive_file, tmp_path, key):
    from edgekd.device.errors import EdgekdError

    with np.load(drive_file, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays[key] = arrays[key][:-5]
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    with pytest.raises(EdgekdError) as info:
        load_drive(bad)
    assert info.value.field == key and "rows" in info.value.what and str(bad) in str(info.value)
