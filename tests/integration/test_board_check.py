"""`edgekd bundle check`: a real full-int8 bundle run under qemu-user on the Pi 5's core vs the host.

Needs qemu-aarch64-static (`apt-get install qemu-user-static`) and, the first time, network access for the
board environment (Debian arm64 python3.11 + aarch64 wheels, cached in $EDGEKD_CACHE/boardenv or
~/.cache/edgekd/boardenv); skipped, saying which, only when those are missing. ~15 s with the cache warm.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.bundles import build_bundle
from support.export import make_dataset

from edgekd.cli import cli
from edgekd.device.bundle import read_manifest
from edgekd.device.targets import load_target
from edgekd.host.boardcheck import env as env_module
from edgekd.host.boardcheck.check import check_bundle, record_checks
from edgekd.host.boardcheck.env import EmulationUnavailable, cpuinfo_text, ensure_env
from edgekd.host.boardcheck.runner import PERTURB_ENV

TARGET = "rpi5"
KEY = ("lidar", "tflite_int8")


@pytest.fixture(scope="module")
def board_env():
    profile = load_target(TARGET)
    assert profile.core is not None
    try:
        return ensure_env(profile.cpu.arch, profile.core, profile.cpu.cores)
    except EmulationUnavailable as exc:  # no qemu-user-static, or no network for the packages
        pytest.skip(f"board emulation unavailable: {exc.format()}")


@pytest.fixture(scope="module")
def built_bundle(tmp_path_factory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("board") / "bundle")


@pytest.fixture
def bundle(built_bundle, tmp_path) -> Path:
    return Path(shutil.copytree(built_bundle, tmp_path / "bundle"))


def _board_checks(bundle: Path) -> list[dict]:
    student, kind = KEY
    return read_manifest(bundle)["students"][student]["artifacts"][kind].get("board_checks") or []


def test_rpi5_outputs_are_bit_identical_and_recorded(board_env, bundle):
    report = check_bundle(bundle, TARGET)
    assert report.passed
    [check] = report.checks
    assert (check.student, check.kind) == KEY
    assert check.status == "identical" and check.max_abs_diff == 0 and check.mismatched == 0
    assert check.top1_agreement == check.top2_agreement == 1.0
    assert check.board_xnnpack, "XNNPACK was not used on the emulated board: the check ran other kernels"
    assert [(s, k) for s, k, _ in report.skipped] == [("lidar", "onnx_fp32")]  # rpi5 does not use ONNX
    [entry] = _board_checks(bundle)
    assert entry["target"] == TARGET and entry["arch"] == "aarch64" and entry["core"] == "cortex-a76"
    assert entry["qemu_cpu"] == "cortex-a76" and entry["interpreter"].startswith("ai-edge-litert ")
    assert entry["status"] == "identical" and entry["windows"] == check.windows > 0

    check.inputs = "again"
    record_checks(bundle, report, tolerance="same")  # a re-check replaces this target's entry
    assert [e["inputs"] for e in _board_checks(bundle)] == ["again"]


def test_held_out_windows_of_a_dataset(board_env, bundle, tmp_path):
    data = make_dataset(tmp_path / "data", drives=6, frames_per_drive=30)
    report = check_bundle(bundle, TARGET, data=data, windows=8)
    [check] = report.checks
    assert check.status == "identical" and check.windows == 8
    assert _board_checks(bundle)[0]["inputs"].startswith("held-out test windows of")


def test_a_board_side_change_is_caught(board_env, bundle, monkeypatch):
    """One LSB changed in one output on the board side only: the CLI reports a mismatch and exits 1."""
    monkeypatch.setenv(PERTURB_ENV, "/".join(KEY))
    result = CliRunner().invoke(cli, ["bundle", "check", str(bundle), "--target", TARGET,
                                      "--tolerance-lsb", "0"])
    assert result.exit_code == 1, result.output
    assert "mismatch" in result.output and "FAIL" in result.output
    [entry] = _board_checks(bundle)
    assert entry["status"] == "mismatch" and entry["max_abs_diff"] == 1 and entry["mismatched_values"] == 1


def test_without_qemu_nothing_is_claimed(bundle, monkeypatch, tmp_path):
    """No emulator on PATH: exit 2 naming the package to install, and the manifest is left as it was."""
    before = (bundle / "manifest.json").read_bytes()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = CliRunner().invoke(cli, ["bundle", "check", str(bundle), "--target", TARGET])
    assert result.exit_code == 2
    assert "apt-get install qemu-user-static" in result.output
    assert (bundle / "manifest.json").read_bytes() == before


def test_without_network_nothing_is_claimed(bundle, monkeypatch, tmp_path):
    """A cold cache and an unreachable package mirror: exit 2 saying what is needed; manifest untouched."""
    if shutil.which("qemu-aarch64-static") is None:
        pytest.skip("qemu-aarch64-static is not installed (apt-get install qemu-user-static)")
    before = (bundle / "manifest.json").read_bytes()
    monkeypatch.setattr(env_module, "DEBIAN_MIRROR", "http://127.0.0.1:9/debian")  # nothing listens on port 9
    result = CliRunner().invoke(cli, ["bundle", "check", str(bundle), "--target", TARGET,
                                      "--cache", str(tmp_path / "cold")])
    assert result.exit_code == 2, result.output
    assert "network access" in result.output
    assert (bundle / "manifest.json").read_bytes() == before
    assert list((tmp_path / "cold").iterdir()) == []  # no half-built environment left behind


def test_target_without_a_core_is_refused(bundle):
    result = CliRunner().invoke(cli, ["bundle", "check", str(bundle), "--target", "x86-ap"])
    assert result.exit_code == 2 and "no board core" in result.output


def test_cpuinfo_is_the_boards():
    core = load_target("rpi4").core
    assert core is not None
    text = cpuinfo_text(core, 4)
    assert text.count("processor\t:") == 4 and "CPU part\t: 0xd08" in text
    assert "Features\t: fp asimd evtstrm crc32 cpuid\n" in text  # an A72: no asimddp, which would crash XNNPACK
