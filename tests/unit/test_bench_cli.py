"""``edgekd bench`` (plain mode) through click's CliRunner on a real bundle.

The bundle is firmware_bench's end-to-end fixture: a full-int8 TFLite model
made with TensorFlow, an ONNX model of the same network, a calibration set and
a schema-valid manifest. The target profiles are the repository's real ones;
rpi5/rpi4 meters cannot be read on a CI host, so energy must say "estimated".
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from support.bundles import build_bundle

from edgekd.cli import cli
from edgekd.device.bench import settings_from_target
from edgekd.device.errors import EdgekdError
from edgekd.device.targets import list_targets, load_target
from firmware_bench.power import PowerModel

QUICK = ["--runs", "12", "--warmup", "1", "--idle-seconds", "0", "--no-op-profile"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("bench-cli") / "bundle")


def invoke(*args: str):
    return CliRunner().invoke(cli, ["bench", *args], catch_exceptions=False)


@pytest.mark.parametrize("name", list_targets())
def test_every_target_profile_flows_into_the_settings(name):
    profile = load_target(name)
    s = settings_from_target(profile)
    assert s.threads == profile.threads and s.backend == profile.backend
    assert s.providers == (tuple(profile.execution_providers) or None)
    assert s.power_meter == ("auto" if profile.power_meter == "csv" else profile.power_meter)
    assert (s.power_model.idle_w, s.power_model.active_w) == (profile.power_model.idle_w, profile.power_model.active_w)
    assert name in s.power_model.source


def test_flags_override_the_profile():
    profile = load_target("jetson")
    model = PowerModel(1.0, 2.0)
    s = settings_from_target(profile, threads=1, backend="tflite", providers=("CPUExecutionProvider",),
                             power_meter="estimate", power_model=model, runs=7)
    assert (s.threads, s.backend, s.providers, s.power_meter, s.power_model, s.runs) == \
        (1, "tflite", ("CPUExecutionProvider",), "estimate", model, 7)
    with pytest.raises(EdgekdError, match="backend"):
        settings_from_target(profile, backend="gpu")


def test_target_settings_reach_the_benchmark_and_every_output_says_estimated(bundle, tmp_path):
    out = tmp_path / "out"
    profile = load_target("rpi5")
    result = invoke("--target", "rpi5", "--bundle", str(bundle), "--out", str(out), *QUICK)
    assert result.exit_code == 0, result.output
    assert "mJ (estimated)" in result.output and "below MLPerf minimum" in result.output

    report = json.loads((out / "bench.json").read_text())
    assert report["target_profile"] == "rpi5"
    (row,) = report["results"]
    assert row["threads"] == profile.threads and row["backend"] == "tflite" and row["artifact"] == "tflite_int8"
    energy = row["energy"]
    assert energy["requested"] == "rpi5-pmic" and energy["method"] == "estimated"
    assert energy["idle_power_w"] == profile.power_model.idle_w  # the profile's model, not the bundle's
    assert energy["skipped"][0]["meter"] == "rpi5-pmic" and energy["per_inference_mj"] > 0
    assert any("estimated" in flag for flag in row["flags"])
    (csv_row,) = csv.DictReader((out / "bench.csv").open())
    assert csv_row["energy_method"] == "estimated" and csv_row["threads"] == str(profile.threads)


def test_flags_override_target_in_the_command(bundle):
    result = invoke("--target", "x86-ap", "--bundle", str(bundle), "--threads", "1", "--backend", "tflite",
                    "--power-meter", "estimate", "--power-model", "2,3", "--json", *QUICK)
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)["results"]
    assert row["threads"] == 1 and row["backend"] == "tflite" and row["energy"]["method"] == "estimated"
    assert row["energy"]["idle_power_w"] == 2.0 and 2.0 <= row["energy"]["mean_power_w"] <= 3.0


def test_onnx_runtime_takes_the_profiles_execution_providers(bundle):
    profile = load_target("x86-ap")
    result = invoke("--target", "x86-ap", "--bundle", str(bundle), "--backend", "ort", "--power-meter", "estimate",
                    "--json", *QUICK)
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)["results"]
    assert row["backend"] == "ort" and row["artifact"] == "onnx_fp32"
    assert row["interpreter"]["providers"] == [p for p in profile.execution_providers if p == "CPUExecutionProvider"]
    assert row["threads"] == profile.threads


def test_unknown_target_exits_2_listing_the_known_ones(bundle):
    result = invoke("--target", "pdp11", "--bundle", str(bundle))
    assert result.exit_code == 2
    assert "unknown target 'pdp11'" in result.output
    for name in list_targets():
        assert name in result.output


@pytest.mark.parametrize("args, message", [
    ([], "no target profile given"),
    (["--target", "rpi5", "--data", "somewhere"], "--data only applies to --compare"),
    (["--compare"], "--compare needs a dataset"),
    (["--compare", "--data", "somewhere", "--block", "0"], "Invalid value for '--block'"),
    (["--target", "rpi5", "--power-model", "9,1"], "power model"),
])
def test_user_errors_exit_2(bundle, args, message):
    result = invoke("--bundle", str(bundle), *args)
    assert result.exit_code == 2 and message in result.output, result.output


def test_help_lists_every_option_with_help():
    result = invoke("--help")
    assert result.exit_code == 0
    from edgekd.device.bench import bench

    for param in bench.params:
        if isinstance(param, click.Option):
            assert param.help, f"--{param.name} has no help text"


HYGIENE = r"""
import sys
from edgekd.cli import cli
try:
    cli.main(["bench", *sys.argv[1:]], standalone_mode=False)
finally:
    heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "tensorflow", "keras", "tf_keras", "jax"})
    print("HEAVY=" + ",".join(heavy))
"""


def test_plain_bench_imports_neither_torch_nor_tensorflow(bundle):
    # `edgekd bench --target` runs on boards with edgekd[device] only
    import subprocess

    done = subprocess.run([sys.executable, "-c", HYGIENE, "--target", "rpi5", "--bundle", str(bundle), *QUICK],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "HEAVY=\n" in done.stdout, done.stdout
    assert "mJ (estimated)" in done.stdout


def test_both_bench_commands_share_every_option():
    # one option set (firmware_bench.options): `edgekd bench` and `python -m firmware_bench` cannot drift apart
    from edgekd.device.bench import bench
    from firmware_bench.__main__ import main as firmware_main

    def options(command):
        return {opt: (p.name, p.default, p.help) for p in command.params if isinstance(p, click.Option)
                for opt in p.opts}

    shared, own = options(bench), options(firmware_main)
    for name in ("--bundle", "--student", "--backend", "--artifact", "--threads", "--providers", "--runs",
                 "--seconds", "--warmup", "--power-meter", "--power-model", "--idle-seconds", "--op-profile",
                 "--op-profile-tool", "--verify", "--out", "--json"):
        assert shared[name] == own[name], name


def test_one_resolver_for_every_bench_path():
    # a profile's bare csv meter means auto, the flag wins, the profile fills the rest: the same rules for
    # `edgekd bench --target` (a TargetProfile), firmware_bench (the manifest's dict) and --compare (capped threads)
    from firmware_bench.settings import BenchSettings, resolve_settings, resolve_target

    target = {"name": "lab", "threads": 64, "backend": "ort", "power_meter": "csv",
              "execution_providers": ["CPUExecutionProvider"], "power_model": {"idle_w": 2.0, "active_w": 5.0}}
    plain = resolve_target(target)
    assert (plain.threads, plain.backend, plain.power_meter, plain.providers) == \
        (64, "ort", "auto", ("CPUExecutionProvider",))
    assert plain.power_model.idle_w == 2.0 and "lab" in plain.power_model.source
    assert resolve_target(target, cap_threads=True).threads <= 64
    assert resolve_target(target, threads=3, cap_threads=True).threads == 3
    assert resolve_target(target, power_meter="rapl").power_meter == "rapl"
    assert resolve_target({"backend": "gpu"}).backend == "tflite"
    s = resolve_settings(BenchSettings(runs=5), target)
    assert (s.threads, s.backend, s.power_meter, s.runs) == (64, "ort", "auto", 5)
    profile = load_target("x86-ap")
    assert resolve_target(profile) == resolve_target(profile.to_dict())


def test_compare_on_a_device_only_install_says_which_extra(bundle, monkeypatch):
    import importlib

    import edgekd.device.bench as bench_mod

    real = importlib.import_module

    def no_host(name, *args):
        if name.startswith("edgekd.host"):
            raise ModuleNotFoundError("No module named 'torch'")
        return real(name, *args)

    monkeypatch.setattr(bench_mod.importlib, "import_module", no_host)
    result = invoke("--compare", "--bundle", str(bundle))
    assert result.exit_code == 2 and "edgekd[host]" in result.output, result.output


def test_compare_only_flags_are_refused_in_plain_mode(bundle):
    result = invoke("--target", "rpi5", "--bundle", str(bundle), "--min-speedup", "5")
    assert result.exit_code == 2 and "--min-speedup only applies to --compare" in result.output


def test_compare_without_pytorch_names_the_extra(bundle, monkeypatch):
    # a device-only install ships edgekd.host.compare but not torch: exit 2 with the fix, not a traceback
    monkeypatch.setitem(sys.modules, "torch", None)
    result = invoke("--compare", "--bundle", str(bundle))
    assert result.exit_code == 2 and "edgekd[host]" in result.output and "PyTorch" in result.output, result.output
