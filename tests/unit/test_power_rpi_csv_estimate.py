"""Raspberry Pi 5 PMIC (vcgencmd output), external-meter CSV logs, the estimate, integration, auto."""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgekd.device.errors import EdgekdError
from firmware_bench.power import (
    MeterOptions,
    PowerModel,
    choose_reader,
    integrate_power,
    parse_meter_spec,
    parse_power_model,
)
from firmware_bench.power.csvlog import CsvLogReader, parse_power_log
from firmware_bench.power.estimate import EstimateReader, cpu_utilisation
from firmware_bench.power.rpi5_pmic import (
    Rpi5PmicReader,
    parse_pmic_read_adc,
    rails_power_w,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "power"
PMIC = FIXTURES / "vcgencmd_pmic_read_adc_rpi5.txt"
# sum of V*I over the 12 paired rails of the fixture, worked out by hand from its lines
PMIC_WATTS = 1.7506155050448577


# ----------------------------------------------------------------------------- integration

def test_integrate_linear_ramp_is_exact():
    t = np.linspace(0.0, 10.0, 11)
    w = 2.0 + 0.5 * t
    # integral of 2 + t/2 over [2.5, 7.5] = 2*5 + (7.5^2 - 2.5^2)/4
    assert integrate_power(t, w, 2.5, 7.5) == pytest.approx(10.0 + (56.25 - 6.25) / 4)


def test_integrate_holds_edge_values_and_single_sample():
    assert integrate_power([1.0, 2.0], [3.0, 5.0], 0.0, 3.0) == pytest.approx(3.0 * 1 + 4.0 * 1 + 5.0 * 1)
    assert integrate_power([5.0], [4.0], 0.0, 2.0) == pytest.approx(8.0)
    with pytest.raises(ValueError):
        integrate_power([], [], 0.0, 1.0)


# ----------------------------------------------------------------------------- Raspberry Pi 5 PMIC

def test_parse_pmic_read_adc_pairs_rails_by_name():
    rails = parse_pmic_read_adc(PMIC.read_text())
    assert rails["VDD_CORE"] == {"A": 0.77, "V": 0.880652}
    assert rails["EXT5V"] == {"V": 5.137261}  # the 5 V input: a voltage, no current
    watts, paired, unpaired = rails_power_w(rails)
    assert len(paired) == 12 and unpaired == ["BATT", "EXT5V"]
    assert watts == pytest.approx(PMIC_WATTS, rel=1e-12)


def _fake_vcgencmd() -> tuple[str, ...]:
    return (sys.executable, str(FIXTURES / "fake_vcgencmd.py"), str(PMIC), "pmic_read_adc")


def test_rpi5_reader_runs_the_command_and_says_what_it_misses():
    reader = Rpi5PmicReader(MeterOptions(vcgencmd_cmd=_fake_vcgencmd(), interval_s=0.1))
    ok, reason = reader.available()
    assert ok, reason
    reader.start()
    time.sleep(0.3)
    joules = reader.stop()
    window = reader._sampler.t1 - reader._sampler.t0
    assert joules == pytest.approx(PMIC_WATTS * window, rel=1e-9)
    assert reader.method == "measured:rpi5-pmic"
    assert "misses the 5 V input stage" in reader.scope
    assert any("EXT5V" in note for note in reader.notes)


def test_rpi5_reader_on_a_pi4_or_without_vcgencmd():
    pi4 = (sys.executable, str(FIXTURES / "fake_vcgencmd.py"), str(PMIC), "pmic_read_adc", "extra")
    ok, reason = Rpi5PmicReader(MeterOptions(vcgencmd_cmd=pi4)).available()
    assert not ok and "Raspberry Pi 5 only" in reason
    ok, reason = Rpi5PmicReader(MeterOptions(vcgencmd_cmd=("no-such-vcgencmd", "pmic_read_adc"))).available()
    assert not ok and "not found on PATH" in reason


# ----------------------------------------------------------------------------- external meter CSV

def test_parse_epoch_iso_and_volt_amp_logs():
    t, w = parse_power_log(FIXTURES / "external_meter_epoch.csv")
    assert t[0] == 1714564800.0 and list(w[:3]) == [3.1, 3.2, 4.9]
    t_iso, w_iso = parse_power_log(FIXTURES / "external_meter_iso.csv")
    np.testing.assert_allclose(t_iso, t)  # the same instants written as ISO 8601 with +00:00
    np.testing.assert_allclose(w_iso, w)
    t_va, w_va = parse_power_log(FIXTURES / "external_meter_um25c_volts_milliamps.csv")
    np.testing.assert_allclose(w_va, [5.10 * 0.600, 5.08 * 0.980, 5.09 * 0.650])
    assert t_va[1] - t_va[0] == 1.0


def test_relative_times_are_rejected_with_a_fix():
    with pytest.raises(EdgekdError, match="not a Unix timestamp") as err:
        parse_power_log(FIXTURES / "external_meter_relative.csv")
    assert err.value.fix and "wall-clock" in err.value.fix


def test_log_without_power_column(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("time,temperature\n1714564800,40\n")
    with pytest.raises(EdgekdError, match="no power column"):
        parse_power_log(path)


def _write_log(path: Path, t0: float, t1: float, watts, step: float = 0.05, iso: bool = False) -> None:
    rows = ["timestamp,power_w" if iso else "time,watts"]
    for t in np.arange(t0, t1, step):
        stamp = dt.datetime.fromtimestamp(t).isoformat() if iso else f"{t:.6f}"  # naive = local time
        rows.append(f"{stamp},{watts(t):.9f}")
    path.write_text("\n".join(rows) + "\n")


@pytest.mark.parametrize("iso", [False, True])
def test_csv_reader_integrates_over_the_benchmark_window(tmp_path, iso):
    now = time.time()
    base = now - 5
    path = tmp_path / "meter.csv"
    _write_log(path, base, now + 20, lambda t: 3.0 + 0.25 * (t - base), iso=iso)
    reader = CsvLogReader(MeterOptions(csv_path=path))
    assert reader.available()[0]
    reader.start()
    time.sleep(0.2)
    joules = reader.stop()
    a, b = reader.t0 - base, reader.t1 - base
    expected = 3.0 * (b - a) + 0.125 * (b * b - a * a)  # exact for a linear trace
    assert joules == pytest.approx(expected, rel=1e-6)
    assert reader.samples >= 3 and reader.method == "measured:csv:meter.csv"


def test_csv_reader_refuses_a_log_that_misses_the_window(tmp_path):
    path = tmp_path / "old.csv"
    _write_log(path, time.time() - 100, time.time() - 60, lambda t: 3.0)
    reader = CsvLogReader(MeterOptions(csv_path=path))
    reader.start()
    with pytest.raises(EdgekdError, match="covers"):
        reader.stop()


def test_meter_spec_parsing():
    assert parse_meter_spec("csv:/tmp/log.csv") == ("csv", Path("/tmp/log.csv"))
    assert parse_meter_spec("rapl") == ("rapl", None)
    with pytest.raises(EdgekdError):
        parse_meter_spec("csv:")
    # a log file the user named must exist: a typo must not turn into an estimate
    with pytest.raises(EdgekdError, match="log file does not exist") as raised:
        choose_reader("csv:/no/such/log.csv", MeterOptions())
    assert raised.value.field == "--power-meter" and str(raised.value.file) == "/no/such/log.csv"


# ----------------------------------------------------------------------------- estimate and auto

def test_cpu_utilisation_bounds():
    assert cpu_utilisation(1.0, 2.0, 4) == pytest.approx(0.125)
    assert cpu_utilisation(20.0, 2.0, 4) == 1.0
    assert cpu_utilisation(1.0, 0.0, 4) == 0.0


def test_estimate_is_labelled_and_follows_the_model():
    clocks = {"cpu": iter([10.0, 11.0]), "wall": iter([100.0, 102.0])}
    reader = EstimateReader(MeterOptions(power_model=PowerModel(2.0, 6.0, "test"), cpu_count=4),
                            cpu_clock=lambda: next(clocks["cpu"]), wall_clock=lambda: next(clocks["wall"]))
    assert reader.available()[0]
    reader.start()
    joules = reader.stop()
    assert reader.utilisation == pytest.approx(0.125)        # 1 s CPU over 2 s x 4 CPUs
    assert joules == pytest.approx((2.0 + 4.0 * 0.125) * 2.0)
    assert reader.method == "estimated"
    assert "ESTIMATED" in reader.notes[0]


def test_estimate_without_model_is_unavailable():
    ok, reason = EstimateReader(MeterOptions()).available()
    assert not ok and "--power-model" in reason


def _no_meters(tmp_path: Path, model: PowerModel | None) -> MeterOptions:
    return MeterOptions(sysfs_root=tmp_path, tegrastats_cmd=("no-such-tegrastats",),
                        vcgencmd_cmd=("no-such-vcgencmd",), power_model=model)


def test_auto_order_and_reasons(tmp_path):
    reader, skipped = choose_reader("auto", _no_meters(tmp_path, PowerModel(3.0, 8.0)))
    assert reader is not None and reader.method == "estimated"
    assert [s["meter"] for s in skipped] == ["ina3221", "tegrastats", "rpi5-pmic", "rapl"]
    assert all(s["reason"] for s in skipped)
    reader, skipped = choose_reader("auto", _no_meters(tmp_path, None))
    assert reader is None and skipped[-1]["meter"] == "estimate"


def test_power_model_flag():
    model = parse_power_model("2.7,6.8")
    assert (model.idle_w, model.active_w) == (2.7, 6.8)
    for bad in ("2.7", "x,y", "7,3"):
        with pytest.raises(EdgekdError):
            parse_power_model(bad)


def test_a_named_meter_that_cannot_be_read_falls_back_to_the_estimate(tmp_path):
    reader, skipped = choose_reader("rapl", _no_meters(tmp_path, PowerModel(3.0, 8.0)))
    assert reader.method == "estimated" and skipped == [{"meter": "rapl", "reason": skipped[0]["reason"]}]
    assert "powercap" in skipped[0]["reason"]
    reader, skipped = choose_reader("estimate", _no_meters(tmp_path, None))
    assert reader is None and [s["meter"] for s in skipped] == ["estimate"]
