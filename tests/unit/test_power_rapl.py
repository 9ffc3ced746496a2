"""RAPL reader on fake powercap trees: domain choice, wraparound, and root-only counters."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from firmware_bench.power import MeterOptions, PowerModel, choose_reader
from firmware_bench.power.base import read_text
from firmware_bench.power.rapl import RaplReader, counter_delta

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "power"
MAX_RANGE = 262143328850


def _tree(tmp_path: Path, name: str) -> Path:
    root = tmp_path / name
    shutil.copytree(FIXTURES / name, root)
    return root


def _write(path: Path, value: int) -> None:
    # Replace atomically, as the kernel never shows a half-written counter.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{value}\n")
    os.replace(tmp, path)


def test_counter_delta_plain_and_wrapped():
    assert counter_delta(100, 350, MAX_RANGE) == 250
    assert counter_delta(MAX_RANGE - 1_000_000, 2_500_000, MAX_RANGE) == 3_500_000
    assert counter_delta(5, 5, MAX_RANGE) == 0


def test_picks_package_domains_not_psys_or_subdomains(tmp_path):
    reader = RaplReader(MeterOptions(sysfs_root=_tree(tmp_path, "rapl_single")))
    ok, reason = reader.available()
    assert ok, reason
    assert [d.name for d in reader.find_domains()] == ["intel-rapl:0"]
    assert "package-0" in reason
    assert reader.method == "measured:rapl"


def test_energy_across_a_wraparound(tmp_path):
    root = _tree(tmp_path, "rapl_single")
    energy = root / "sys/class/powercap/intel-rapl:0/energy_uj"
    _write(energy, MAX_RANGE - 1_000_000)
    reader = RaplReader(MeterOptions(sysfs_root=root))
    reader.start()
    _write(energy, 2_500_000)  # the counter passed max_energy_range_uj and restarted from 0
    assert reader.stop() == pytest.approx(3.5)


def test_energy_sums_both_sockets(tmp_path):
    root = _tree(tmp_path, "rapl_dual")
    reader = RaplReader(MeterOptions(sysfs_root=root))
    assert reader.available()[0]
    reader.start()
    _write(root / "sys/class/powercap/intel-rapl:0/energy_uj", 1_000_000 + 2_000_000)
    _write(root / "sys/class/powercap/intel-rapl:1/energy_uj", 1_000_000 + 500_000)
    assert reader.stop() == pytest.approx(2.5)


def test_background_poll_catches_two_wraps(tmp_path, monkeypatch):
    # A long run can wrap the counter more than once; the poll thread sees each wrap.
    monkeypatch.setattr("firmware_bench.power.rapl._POLL_S", 0.02)
    root = _tree(tmp_path, "rapl_single")
    energy = root / "sys/class/powercap/intel-rapl:0/energy_uj"
    _write(energy, MAX_RANGE - 10)
    reader = RaplReader(MeterOptions(sysfs_root=root))
    reader.start()
    _write(energy, 100)                # first wrap: +110 uJ
    time.sleep(0.2)
    _write(energy, MAX_RANGE - 50)     # nearly a full range later: +(MAX_RANGE - 150)
    time.sleep(0.2)
    _write(energy, 40)                 # second wrap: +90
    joules = reader.stop()
    assert joules == pytest.approx((110 + MAX_RANGE - 150 + 90) / 1e6)
    assert reader.samples >= 3


def _root_only(path: Path) -> str:
    # What an unprivileged read of energy_uj does since Linux 5.10 (mode 0400 root).
    if path.name == "energy_uj":
        raise PermissionError(13, "Permission denied", str(path))
    return read_text(path)


def test_unreadable_counter_says_root_only(tmp_path):
    reader = RaplReader(MeterOptions(sysfs_root=_tree(tmp_path, "rapl_single"), read_text=_root_only))
    ok, reason = reader.available()
    assert not ok
    assert "permission denied" in reason and "root" in reason and "5.10" in reason


def test_auto_falls_back_to_estimate_with_the_rapl_reason(tmp_path):
    options = MeterOptions(sysfs_root=_tree(tmp_path, "rapl_single"), read_text=_root_only,
                           tegrastats_cmd=("no-such-tegrastats",), vcgencmd_cmd=("no-such-vcgencmd",),
                           power_model=PowerModel(4.0, 9.0))
    reader, skipped = choose_reader("auto", options)
    assert reader is not None and reader.method == "estimated"
    reasons = {s["meter"]: s["reason"] for s in skipped}
    assert set(reasons) == {"ina3221", "tegrastats", "rpi5-pmic", "rapl"}
    assert "root" in reasons["rapl"]


def test_missing_powercap_is_not_available(tmp_path):
    ok, reason = RaplReader(MeterOptions(sysfs_root=tmp_path)).available()
    assert not ok and "powercap" in reason
