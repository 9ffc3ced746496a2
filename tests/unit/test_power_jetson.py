"""Jetson meters: INA3221 through hwmon (fake sysfs trees) and tegrastats (fixture lines, a real subprocess)."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from firmware_bench.power import MeterOptions
from firmware_bench.power.ina3221 import Ina3221Reader
from firmware_bench.power.tegrastats import (
    TegrastatsReader,
    board_power_w,
    parse_tegrastats_line,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "power"
HWMON = "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"


def _tree(tmp_path: Path, name: str) -> Path:
    root = tmp_path / name
    shutil.copytree(FIXTURES / name, root)
    return root


def _write(path: Path, value: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{value}\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- INA3221 (hwmon)

def test_ina3221_uses_board_input_rail_only(tmp_path):
    reader = Ina3221Reader(MeterOptions(sysfs_root=_tree(tmp_path, "ina3221_orin")))
    ok, reason = reader.available()
    assert ok, reason
    assert [c.rail for c in reader.channels] == ["VDD_IN"]
    assert "VDD_IN" in reader.scope
    assert reader.watts() == pytest.approx(5.080 * 1.020)  # mV x mA


def test_ina3221_constant_power_integrates_to_p_times_t(tmp_path):
    reader = Ina3221Reader(MeterOptions(sysfs_root=_tree(tmp_path, "ina3221_orin"), interval_s=0.01))
    assert reader.available()[0]
    reader.start()
    time.sleep(0.15)
    joules = reader.stop()
    window = reader._sampler.t1 - reader._sampler.t0
    assert joules == pytest.approx(5.080 * 1.020 * window, rel=1e-9)
    assert reader.samples >= 3
    assert reader.method == "measured:ina3221"


def test_ina3221_follows_a_power_step(tmp_path):
    root = _tree(tmp_path, "ina3221_orin")
    reader = Ina3221Reader(MeterOptions(sysfs_root=root, interval_s=0.01))
    assert reader.available()[0]
    reader.start()
    time.sleep(0.15)
    _write(root / HWMON / "curr1_input", 2040)  # the load doubles the input current
    time.sleep(0.15)
    joules = reader.stop()
    window = reader._sampler.t1 - reader._sampler.t0
    low, high = 5.080 * 1.020, 5.080 * 2.040
    assert low * window < joules < high * window
    assert joules / window == pytest.approx((low + high) / 2, rel=0.25)


def test_ina3221_through_class_hwmon_sums_rails_without_board_input(tmp_path):
    reader = Ina3221Reader(MeterOptions(sysfs_root=_tree(tmp_path, "ina3221_classhwmon")))
    ok, reason = reader.available()
    assert ok, reason
    assert [c.rail for c in reader.channels] == ["VDD_GPU_SOC", "VDD_CPU_CV"]  # NC channel dropped
    assert "no board input rail" in reader.scope
    assert reader.watts() == pytest.approx(5.0 * 0.8 + 5.0 * 0.4)


def test_ina3221_absent(tmp_path):
    ok, reason = Ina3221Reader(MeterOptions(sysfs_root=tmp_path)).available()
    assert not ok and "not a Jetson" in reason


def test_ina3221_unreadable(tmp_path):
    def denied(path: Path) -> str:
        if path.name.endswith("_input"):
            raise PermissionError(13, "Permission denied", str(path))
        return path.read_text()

    reader = Ina3221Reader(MeterOptions(sysfs_root=_tree(tmp_path, "ina3221_orin"), read_text=denied))
    ok, reason = reader.available()
    assert not ok and "permission denied" in reason


# ----------------------------------------------------------------------------- tegrastats

def _lines(name: str) -> list[str]:
    return [ln for ln in (FIXTURES / name).read_text().splitlines() if ln.strip()]


def test_parse_orin_jetpack6_lines():
    rails = [parse_tegrastats_line(ln) for ln in _lines("tegrastats_orin_nano_jp6.txt")]
    assert rails[0] == {"VDD_IN": (4884, 4884), "VDD_CPU_GPU_CV": (481, 481), "VDD_SOC": (1443, 1443)}
    assert rails[1]["VDD_IN"] == (7212, 6048)
    # RAM 2447/7620MB and SWAP 0/3810MB are not rails
    assert all(set(r) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"} for r in rails)
    watts, how = board_power_w(rails[2])
    assert watts == pytest.approx(7.290) and "VDD_IN" in how


def test_parse_nano_jetpack4_lines_without_units():
    rails = [parse_tegrastats_line(ln) for ln in _lines("tegrastats_nano_jp4.txt")]
    assert rails[0] == {"POM_5V_IN": (2198, 2198), "POM_5V_GPU": (0, 0), "POM_5V_CPU": (478, 478)}
    watts, how = board_power_w(rails[1])
    assert watts == pytest.approx(4.312) and "POM_5V_IN" in how


def test_parse_line_without_rails():
    assert parse_tegrastats_line(_lines("tegrastats_no_rails.txt")[0]) == {}
    watts, how = board_power_w({"VDD_CPU": (1000, 1000), "VDD_GPU": (500, 500)})
    assert watts == pytest.approx(1.5) and "no board input rail" in how


def _fake_tegrastats(fixture: str) -> tuple[str, ...]:
    return (sys.executable, str(FIXTURES / "fake_tegrastats.py"), str(FIXTURES / fixture))


def test_tegrastats_subprocess_constant_power():
    reader = TegrastatsReader(MeterOptions(tegrastats_cmd=_fake_tegrastats("tegrastats_constant.txt"),
                                           interval_s=0.1))
    ok, reason = reader.available()
    assert ok, reason
    reader.start()
    time.sleep(0.35)
    joules = reader.stop()
    assert joules == pytest.approx(6.0 * (reader.t1 - reader.t0), rel=1e-9)
    assert reader.samples >= 2
    assert reader.method == "measured:tegrastats" and "VDD_IN" in reader.scope


def test_tegrastats_subprocess_varying_power_is_bounded():
    reader = TegrastatsReader(MeterOptions(tegrastats_cmd=_fake_tegrastats("tegrastats_orin_nano_jp6.txt"),
                                           interval_s=0.1))
    reader.start()
    time.sleep(0.45)
    joules = reader.stop()
    window = reader.t1 - reader.t0
    assert 4.884 * window <= joules <= 7.290 * window


def test_tegrastats_without_rails_is_not_available():
    reader = TegrastatsReader(MeterOptions(tegrastats_cmd=_fake_tegrastats("tegrastats_no_rails.txt"),
                                           interval_s=0.1))
    reader._first_wait_s = lambda: 0.6  # the fake prints every 0.1 s; do not wait the real tool's 2 s
    ok, reason = reader.available()
    assert not ok and "no power rails" in reason


def test_tegrastats_missing_binary():
    ok, reason = TegrastatsReader(MeterOptions(tegrastats_cmd=("no-such-tegrastats",))).available()
    assert not ok and "not found on PATH" in reason
