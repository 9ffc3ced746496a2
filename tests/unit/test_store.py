"""The dataset store: layout, windows, split by drive, hashes, atomic writes, the loader."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekd.device.errors import EdgekdError
from edgekd.host.data import MODALITIES, load_dataset, verify_dataset, write_dataset
from edgekd.host.data.store import (
    DATASET_FORMAT,
    normalise_split,
    split_drives,
    summarize_dataset,
    window_starts,
)

T, H = 8, 4


def make_recording(lengths, seed=0, *, size=8, beams=64):
    """Arrays shaped like the simulator's output, for drives of the given lengths."""
    rng = np.random.default_rng(seed)
    frames_total = sum(lengths)
    drive = np.repeat(np.arange(len(lengths)) * 3 + 1, lengths)  # ids need not be 0..n-1
    frames = {
        "image": rng.integers(0, 256, (frames_total, 1, size, size), dtype=np.uint8),
        "radar": rng.random((frames_total, 2, 6, 4)).astype(np.float16),
        "lidar": rng.random((frames_total, 216)).astype(np.float32),
        "gps": rng.normal(size=(frames_total, 2)).astype(np.float32),
    }
    power = (rng.random((frames_total, beams)) * 1e-9).astype(np.float32)
    info = {
        "drive": drive,
        "time_s": (np.arange(frames_total) / 10).astype(np.float32),
        "lighting": rng.integers(0, 3, frames_total).astype(np.int8),
        "weather": rng.integers(0, 3, frames_total).astype(np.int8),
        "los_blocked": rng.random(frames_total) < 0.3,
        "available_image": rng.random(frames_total) < 0.9,
    }
    return dict(frames=frames, power=power, frame_info=info)


LENGTHS = [30, 25, 40, 12, 33, 28, 20, 35, 30, 22]


@pytest.fixture(scope="module")
def recording():
    return make_recording(LENGTHS)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, recording):
    out = tmp_path_factory.mktemp("store") / "ds"
    return write_dataset(out, **recording, source="synthetic", config={"scene": "test"}, seed=7)


def test_layout_and_meta(dataset, recording):
    meta = json.loads((dataset / "meta.json").read_text())
    assert meta["format"] == DATASET_FORMAT
    assert meta["source"] == "synthetic" and meta["seed"] == 7 and meta["config"] == {"scene": "test"}
    assert meta["window"] == T and meta["horizons"] == H and meta["num_beams"] == 64
    assert meta["num_frames"] == sum(LENGTHS) and meta["num_drives"] == len(LENGTHS)
    for name in MODALITIES:
        entry = meta["modalities"][name]
        assert (dataset / entry["file"]).is_file()
        assert entry["frame_shape"] == list(recording["frames"][name].shape[1:])
        assert entry["window_shape"] == [T, *entry["frame_shape"]]
        assert entry["preprocessing"]["stored"]
    assert meta["modalities"]["image"]["dtype"] == "uint8"
    assert meta["modalities"]["radar"]["dtype"] == "float16"
    # every file on disk is listed with its hash, and nothing else is there
    on_disk = {str(p.relative_to(dataset)) for p in dataset.rglob("*.npy")}
    assert on_disk == set(meta["arrays"])
    assert {"frames/power.npy", "frames/beams.npy", "info/drive.npy", "splits/train.npy"} <= on_disk
    # frames are stored once, not once per window
    assert np.load(dataset / "frames/lidar.npy").shape[0] == sum(LENGTHS)
    assert sum(s["windows"] for s in meta["splits"].values()) == sum(n - (T + H - 1) + 1 for n in LENGTHS)
    mix = meta["conditions"]
    assert sum(mix["lighting"].values()) == sum(LENGTHS)
    assert 0 < mix["available_image"] < 1 and mix["available_lidar"] == 1.0


def test_window_contents_match_frames(dataset, recording):
    power = recording["power"].astype(np.float64)
    for split in ("train", "val", "test"):
        ds = load_dataset(dataset, split)
        assert len(ds) > 0
        for i in (0, len(ds) // 2, len(ds) - 1):
            s = int(ds.indices[i])
            item = ds[i]
            np.testing.assert_allclose(item["image"], recording["frames"]["image"][s:s + T] / 255.0, atol=1e-7)
            np.testing.assert_array_equal(item["radar"], recording["frames"]["radar"][s:s + T].astype(np.float32))
            np.testing.assert_array_equal(item["lidar"], recording["frames"]["lidar"][s:s + T])
            np.testing.assert_array_equal(item["gps"], recording["frames"]["gps"][s:s + T])
            labels = slice(s + T - 1, s + T - 1 + H)
            np.testing.assert_array_equal(item["beams"], power[labels].argmax(axis=1))
            np.testing.assert_allclose(item["power"], power[labels] / power[labels].max(axis=1, keepdims=True),
                                       rtol=1e-6)
            assert item["beams"].dtype == np.int64 and item["power"].shape == (H, 64)
            for name in MODALITIES:
                assert item[name].dtype == np.float32 and item[name].shape == ds.shapes[name]
        assert 0.0 <= ds[0]["image"].min() and ds[0]["image"].max() <= 1.0


def test_batch_is_the_stack_of_items(dataset):
    ds = load_dataset(dataset, "train")
    picks = np.array([3, 0, len(ds) - 1, 3])
    batch = ds.batch(picks)
    for key, value in batch.items():
        np.testing.assert_array_equal(value, np.stack([ds[int(i)][key] for i in picks]))
    assert batch["image"].shape == (4, T, 1, 8, 8) and batch["power"].shape == (4, H, 64)
    np.testing.assert_array_equal(ds.batch(slice(2, 5))["lidar"], ds.batch([2, 3, 4])["lidar"])
    np.testing.assert_array_equal(ds[-1]["gps"], ds[len(ds) - 1]["gps"])
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_windows_stay_in_one_drive_and_splits_by_drive(dataset):
    drive = np.load(dataset / "info/drive.npy")
    seen: dict[str, set[int]] = {}
    for split in ("train", "val", "test"):
        ds = load_dataset(dataset, split, modalities=())
        spans = ds.indices[:, None] + np.arange(T + H - 1)
        assert spans.max() < len(drive)
        assert np.all(drive[spans] == drive[spans[:, :1]]), "a window crosses a drive boundary"
        seen[split] = set(np.unique(drive[ds.indices]).tolist())
        np.testing.assert_array_equal(ds.conditions["drive"], drive[ds.indices + T - 1])
    assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["test"]) and not (seen["val"] & seen["test"])
    # in order of drive id
    assert max(seen["train"]) < min(seen["val"]) and max(seen["val"]) < min(seen["test"])
    # every valid window is in exactly one split
    total = sum(len(load_dataset(dataset, s, modalities=())) for s in ("train", "val", "test"))
    assert total == len(window_starts(drive, T + H - 1))


def test_conditions_per_window(dataset, recording):
    ds = load_dataset(dataset, "val")
    cond = ds.conditions
    t0 = ds.indices + T - 1
    info = recording["frame_info"]
    np.testing.assert_array_equal(cond["lighting"], info["lighting"][t0])
    np.testing.assert_array_equal(cond["weather"], info["weather"][t0])
    np.testing.assert_array_equal(cond["los_blocked"], info["los_blocked"][t0])
    observed = ds.indices[:, None] + np.arange(T)
    np.testing.assert_array_equal(cond["available_image"], info["available_image"][observed].all(axis=1))
    assert cond["available_radar"].all()
    assert all(len(v) == len(ds) for v in cond.values())


def test_modality_subset_and_fingerprint(dataset):
    ds = load_dataset(dataset, "test", modalities=["lidar"])
    assert ds.modalities == ("lidar",) and set(ds[0]) == {"lidar", "beams", "power"}
    assert len(ds.fingerprint) == 64 and ds.fingerprint == load_dataset(dataset, "train").fingerprint
    with pytest.raises(EdgekdError, match="modality 'thermal'"):
        load_dataset(dataset, "test", modalities=["thermal"])


def test_pickles_without_the_frames(dataset):
    import pickle

    ds = load_dataset(dataset, "train", modalities=["image", "lidar"])
    blob = pickle.dumps(ds)
    assert len(blob) < 20_000  # the memory-mapped frames stay on disk
    copy = pickle.loads(blob)
    assert copy.modalities == ds.modalities and len(copy) == len(ds)
    np.testing.assert_array_equal(copy.batch([1, 2])["image"], ds.batch([1, 2])["image"])


def test_same_input_same_bytes(tmp_path, recording):
    a = write_dataset(tmp_path / "a", **recording, source="synthetic", config={}, seed=1)
    b = write_dataset(tmp_path / "b", **recording, source="synthetic", config={}, seed=1)
    meta_a, meta_b = (json.loads((p / "meta.json").read_text()) for p in (a, b))
    assert meta_a["arrays"] == meta_b["arrays"] and meta_a["fingerprint"] == meta_b["fingerprint"]
    other = make_recording(LENGTHS, seed=1)
    c = write_dataset(tmp_path / "c", **other, source="synthetic", config={}, seed=2)
    assert json.loads((c / "meta.json").read_text())["fingerprint"] != meta_a["fingerprint"]


def test_verify_names_the_corrupted_file(tmp_path, recording):
    path = write_dataset(tmp_path / "ds", **recording, source="synthetic", config={}, seed=0)
    verify_dataset(path)
    lidar = path / "frames/lidar.npy"
    raw = bytearray(lidar.read_bytes())
    raw[-3] ^= 0xFF  # same size, different content: only the hash can tell
    lidar.write_bytes(bytes(raw))
    load_dataset(path, "train")  # the cheap size check passes
    with pytest.raises(EdgekdError) as err:
        verify_dataset(path)
    assert "frames/lidar.npy" in str(err.value) and "re-generate" in err.value.fix
    with pytest.raises(EdgekdError, match="frames/lidar.npy"):
        load_dataset(path, "train", verify=True)
    lidar.write_bytes(bytes(raw[:-100]))  # truncated: caught without hashing
    with pytest.raises(EdgekdError, match="size"):
        load_dataset(path, "train")


def test_user_errors(tmp_path, recording):
    with pytest.raises(EdgekdError, match="dataset not found"):
        load_dataset(tmp_path / "nope", "train")
    (tmp_path / "plain").mkdir()
    with pytest.raises(EdgekdError, match="not an edgekd dataset"):
        load_dataset(tmp_path / "plain", "train")
    path = write_dataset(tmp_path / "ds", **recording, source="synthetic", config={}, seed=0, split=(0.8, 0.2))
    with pytest.raises(EdgekdError) as err:
        load_dataset(path, "val")
    assert err.value.field == "split" and "train, test" in err.value.what


def test_existing_output_and_overwrite(tmp_path, recording):
    out = tmp_path / "ds"
    write_dataset(out, **recording, source="synthetic", config={}, seed=0)
    with pytest.raises(EdgekdError, match="already exists"):
        write_dataset(out, **recording, source="synthetic", config={}, seed=0)
    other = make_recording([40, 40, 40], seed=3)
    write_dataset(out, **other, source="synthetic", config={}, seed=3, overwrite=True)
    assert json.loads((out / "meta.json").read_text())["num_frames"] == 120
    victim = tmp_path / "notes"
    victim.mkdir()
    (victim / "thesis.txt").write_text("precious")
    with pytest.raises(EdgekdError, match="not an edgekd dataset"):
        write_dataset(victim, **recording, source="synthetic", config={}, seed=0, overwrite=True)
    assert (victim / "thesis.txt").read_text() == "precious"


def test_failed_write_leaves_nothing(tmp_path, recording):
    info = dict(recording["frame_info"])
    # an object array cannot be saved without pickle: the write fails half way through
    info["notes"] = np.array([object()] * len(info["drive"]), dtype=object)
    with pytest.raises(ValueError):
        write_dataset(tmp_path / "ds", frames=recording["frames"], power=recording["power"], frame_info=info,
                      source="synthetic", config={}, seed=0)
    assert list(tmp_path.iterdir()) == []


def test_segments_break_windows(tmp_path):
    drive = np.zeros(30, dtype=int)
    segment = np.r_[np.zeros(14, int), np.ones(16, int)]
    starts = window_starts(drive, T + H - 1, segment)
    assert starts.tolist() == [0, 1, 2, 3] + list(range(14, 20))


def test_split_fractions():
    assert normalise_split("0.8,0.2") == (0.8, 0.0, 0.2)
    assert normalise_split([0.7, 0.15, 0.15]) == (0.7, 0.15, 0.15)
    for bad in ("0.5,0.2", "a,b", "0.5,0.2,0.2,0.1", "-0.2,0.6,0.6"):
        with pytest.raises(EdgekdError) as err:
            normalise_split(bad)
        assert err.value.field == "split" and err.value.fix
    # equal drives: boundaries land on the requested shares
    assert split_drives(list(range(20)), [10] * 20, (0.7, 0.15, 0.15)) == {
        "train": list(range(14)), "val": [14, 15, 16], "test": [17, 18, 19]}
    # too few drives for three splits
    with pytest.raises(EdgekdError, match="cannot fill 3 splits"):
        split_drives([0, 1], [5, 5], (0.7, 0.15, 0.15))


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(0, 40), min_size=3, max_size=25),
       fractions=st.sampled_from([(0.7, 0.15, 0.15), (0.8, 0.2), (0.5, 0.25, 0.25), (0.34, 0.33, 0.33)]))
def test_split_property(lengths, fractions):
    drive = np.repeat(np.arange(len(lengths)), lengths)
    starts = window_starts(drive, T + H - 1)
    ids, counts = np.unique(drive[starts], return_counts=True)
    wanted = sum(f > 0 for f in normalise_split(fractions))
    if len(ids) < wanted:
        with pytest.raises(EdgekdError):
            split_drives(ids.tolist(), counts.tolist(), fractions)
        return
    splits = split_drives(ids.tolist(), counts.tolist(), fractions)
    assert len(splits) == wanted
    flat = [d for name in ("train", "val", "test") for d in splits.get(name, [])]
    assert flat == sorted(ids.tolist())  # each drive once, in order of id
    assert all(sum(counts[np.isin(ids, d)]) > 0 for d in splits.values())
    for s in starts:
        assert len(set(drive[s:s + T + H - 1])) == 1


def test_summary(dataset):
    summary = summarize_dataset(dataset)
    assert summary["verified"] and set(summary["splits"]) == {"train", "val", "test"}
    for split in summary["splits"].values():
        hist = split["beams_t0"]["histogram"]
        assert sum(hist) == split["windows"] and len(hist) == 64
        assert 0 < split["beams_t0"]["most_frequent_share"] <= 1


def test_loader_imports_no_torch(dataset):
    code = ("import sys; from edgekd.host.data import load_dataset; "
            f"ds = load_dataset({str(dataset)!r}, 'train'); ds.batch([0, 1]); ds.conditions; "
            "assert 'torch' not in sys.modules and 'tensorflow' not in sys.modules, 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True)
