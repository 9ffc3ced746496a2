"""Signed bundles: keygen, sign, verify with a trusted key (CLI, loader, env); tampering and re-hashing refused."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekd.cli import cli
from edgekd.device.bundle import open_bundle, verify_bundle
from edgekd.device.errors import EdgekdError
from edgekd.device.io import sha256_file
from edgekd.device.signing import ENV_TRUSTED_KEY, SIGNATURE_NAME
from edgekd.device.targets import load_target

ACCURACY = {"top1": [0.5] * 4, "top2": [0.7] * 4, "top5": [0.9] * 4, "top2_mean": 0.7, "dba": 0.8, "n": 10}


def make_fake_bundle(root: Path) -> Path:
    """A schema-complete bundle whose files hold arbitrary bytes (hashing and signing do not care)."""
    (root / "lidar").mkdir(parents=True)
    quant = {"scale": 0.01, "zero_point": -3}
    artifact = {"path": "lidar/model_int8.tflite", "format": "tflite", "precision": "int8",
                "inputs": [{"name": "lidar", "shape": [1, 8, 216], "dtype": "int8", "quantization": quant}],
                "outputs": [{"name": "logits", "shape": [1, 4, 64], "dtype": "int8", "quantization": quant}],
                "ops": {"FULLY_CONNECTED": 3}, "accuracy": dict(ACCURACY)}
    (root / artifact["path"]).write_bytes(b"\x01" * 100)
    artifact["sha256"], artifact["size"] = sha256_file(root / artifact["path"]), 100
    (root / "lidar" / "calibration.npz").write_bytes(b"calib")
    manifest = {
        "format": "edgekd-bundle/1", "created": "2025-01-01T00:00:00+00:00", "edgekd_version": "0.1.0",
        "versions": {}, "target": load_target("rpi4").to_dict(),
        "students": {"lidar": {
            "model": "lidar_student", "modalities": ["lidar"], "window": 8, "horizons": 4, "num_beams": 64,
            "input_shapes": {"lidar": [8, 216]}, "preprocessing": {},
            "checkpoint": {"sha256": "0" * 64, "metrics": {}},
            "calibration": {"recipe": "lidar", "split": "train", "indices_sha256": "1" * 64, "count": 4,
                            "file": "lidar/calibration.npz",
                            "sha256": sha256_file(root / "lidar" / "calibration.npz")},
            "artifacts": {"tflite_int8": artifact}}},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def rehash(root: Path, mutate) -> None:
    """What an attacker does: change the manifest (or a file) and recompute the recorded sha256."""
    manifest = json.loads((root / "manifest.json").read_text())
    mutate(manifest)
    art = manifest["students"]["lidar"]["artifacts"]["tflite_int8"]
    art["sha256"] = sha256_file(root / art["path"])
    (root / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture()
def keys(tmp_path):
    result = CliRunner().invoke(cli, ["bundle", "keygen", "--out", str(tmp_path / "keys" / "site")])
    assert result.exit_code == 0, result.output
    return tmp_path / "keys" / "site.key", tmp_path / "keys" / "site.pub"


@pytest.fixture()
def signed(tmp_path, keys):
    root = make_fake_bundle(tmp_path / "bundle")
    result = CliRunner().invoke(cli, ["bundle", "sign", str(root), "--key", str(keys[0])])
    assert result.exit_code == 0, result.output
    assert (root / SIGNATURE_NAME).is_file()
    return root


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch):
    monkeypatch.delenv(ENV_TRUSTED_KEY, raising=False)


def test_keygen_private_key_is_private_and_never_overwritten(tmp_path, keys):
    assert stat.S_IMODE(os.stat(keys[0]).st_mode) == 0o600
    again = CliRunner().invoke(cli, ["bundle", "keygen", "--out", str(tmp_path / "keys" / "site")])
    assert again.exit_code == 2 and "already exists" in again.output


def test_signed_bundle_verifies_with_its_key(signed, keys):
    result = CliRunner().invoke(cli, ["bundle", "verify", str(signed), "--key", str(keys[1])])
    assert result.exit_code == 0, result.output
    assert "signature verified" in result.output
    assert open_bundle(signed, trusted_key=keys[1]).students["lidar"]["window"] == 8
    unchecked = CliRunner().invoke(cli, ["bundle", "verify", str(signed)])
    assert unchecked.exit_code == 0 and "signature not checked" in unchecked.output
    shown = CliRunner().invoke(cli, ["bundle", "show", str(signed)])
    assert shown.exit_code == 0 and "signed by key" in shown.output


def test_rehashed_tampered_bundle_is_refused(signed, keys):
    (signed / "lidar/model_int8.tflite").write_bytes(b"\x02" * 100)   # a swapped model...
    rehash(signed, lambda m: None)                                     # ...with its hash recomputed
    verify_bundle(signed)  # without a key only the hashes are checked: they match
    result = CliRunner().invoke(cli, ["bundle", "verify", str(signed), "--key", str(keys[1])])
    assert result.exit_code == 2
    assert "signature does not verify" in result.output and "fix:" in result.output
    assert "Traceback" not in result.output
    with pytest.raises(EdgekdError, match="changed after it was signed"):
        open_bundle(signed, trusted_key=keys[1])
    with pytest.raises(EdgekdError, match="changed after it was signed"):
        open_bundle(signed, trusted_key=keys[1], verify=False)  # a configured key is never skipped


def test_unsigned_bundle_refused_where_a_key_is_configured(tmp_path, keys, monkeypatch):
    root = make_fake_bundle(tmp_path / "plain")
    with pytest.raises(EdgekdError, match="not signed"):
        open_bundle(root, trusted_key=keys[1])
    monkeypatch.setenv(ENV_TRUSTED_KEY, str(keys[1]))  # the board's configuration, no flag needed
    with pytest.raises(EdgekdError, match="not signed"):
        open_bundle(root)
    result = CliRunner().invoke(cli, ["bundle", "verify", str(root)])
    assert result.exit_code == 2 and "not signed" in result.output


def test_signature_by_another_key_is_refused(signed, tmp_path):
    CliRunner().invoke(cli, ["bundle", "keygen", "--out", str(tmp_path / "other")])
    with pytest.raises(EdgekdError, match="signed by another key"):
        open_bundle(signed, trusted_key=tmp_path / "other.pub")


def test_target_profile_names_the_trusted_key(signed, keys, tmp_path):
    profile = (Path(__file__).resolve().parents[2] / "targets" / "rpi4.yaml").read_text()
    yaml_path = keys[1].parent / "board.yaml"
    yaml_path.write_text(profile + "\ntrusted_key: site.pub\n")   # relative to the YAML
    assert load_target(str(yaml_path)).trusted_key == str(keys[1])


def test_sign_refuses_a_broken_bundle_and_a_wrong_key(tmp_path, keys):
    root = make_fake_bundle(tmp_path / "bundle")
    (root / "lidar/model_int8.tflite").write_bytes(b"\x03" * 100)
    result = CliRunner().invoke(cli, ["bundle", "sign", str(root), "--key", str(keys[0])])
    assert result.exit_code == 2 and "was modified" in result.output
    assert not (root / SIGNATURE_NAME).exists()
    wrong = CliRunner().invoke(cli, ["bundle", "sign", str(root), "--key", str(keys[1])])  # the public key
    assert wrong.exit_code == 2 and "private key" in wrong.output


def test_sign_and_verify_take_under_a_second(signed, keys):
    import time

    start = time.perf_counter()
    verify_bundle(signed, trusted_key=keys[1])
    assert time.perf_counter() - start < 1.0


def test_edgekd_run_with_a_key_runs_a_signed_bundle_and_refuses_a_rehashed_one(tmp_path, keys):
    import shutil

    import numpy as np
    from support.runtime import runtime_bundle, short_drive

    bundle = tmp_path / "rb"
    shutil.copytree(runtime_bundle(), bundle, copy_function=os.link)   # hard links: cheap, never written through
    manifest_text = (bundle / "manifest.json").read_text()
    (bundle / "manifest.json").unlink()
    (bundle / "manifest.json").write_text(manifest_text)
    assert CliRunner().invoke(cli, ["bundle", "sign", str(bundle), "--key", str(keys[0])]).exit_code == 0
    with np.load(short_drive(), allow_pickle=False) as data:
        arrays = {k: data[k] if k in ("meta", "segment_names") else data[k][:30] for k in data.files}
    np.savez(tmp_path / "drive.npz", **arrays)
    argv = ["run", "--bundle", str(bundle), "--replay", str(tmp_path / "drive.npz"), "--key", str(keys[1])]
    ok = CliRunner().invoke(cli, argv)
    assert ok.exit_code == 0, ok.output
    # swap in another valid model (the image student's int8 file as the LiDAR one) and re-hash the manifest
    manifest = json.loads(manifest_text)
    lidar = manifest["students"]["lidar"]["artifacts"]["tflite_int8"]
    (bundle / lidar["path"]).unlink()
    shutil.copyfile(bundle / manifest["students"]["image"]["artifacts"]["tflite_int8"]["path"], bundle / lidar["path"])
    lidar["sha256"] = sha256_file(bundle / lidar["path"])
    (bundle / "manifest.json").unlink()
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    refused = CliRunner().invoke(cli, argv)
    assert refused.exit_code == 2 and "signature does not verify" in refused.output


def test_firmware_bench_refuses_an_unsigned_bundle_where_a_key_is_configured(tmp_path, keys, monkeypatch):
    from firmware_bench import run_benchmark

    root = make_fake_bundle(tmp_path / "plain")
    monkeypatch.setenv(ENV_TRUSTED_KEY, str(keys[1]))
    with pytest.raises(EdgekdError, match="not signed"):
        run_benchmark(root, runs=1)
    (root / "lidar/model_int8.tflite").write_bytes(b"\x05" * 100)
    rehash(root, lambda m: None)
    CliRunner().invoke(cli, ["bundle", "sign", str(root), "--key", str(keys[0])])
    (root / "lidar/model_int8.tflite").write_bytes(b"\x06" * 100)     # tampered after signing...
    rehash(root, lambda m: None)                                         # ...and re-hashed
    with pytest.raises(EdgekdError, match="changed after it was signed"):
        run_benchmark(root, runs=1)
