"""Target profiles: the shipped YAMLs validate, aliases resolve, bad profiles are refused with the field named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from edgekd.cli import cli
from edgekd.device.errors import EdgekdError
from edgekd.device.targets import (
    ENV_TARGETS_DIR,
    list_targets,
    load_target,
    targets_dir,
)


def test_shipped_profiles_load_and_have_the_board_facts():
    assert list_targets() == ["jetson-orin-nano", "rpi4", "rpi5", "x86-ap"]
    rpi4, rpi5 = load_target("rpi4"), load_target("rpi5")
    assert rpi4.cpu.cores == 4 and "asimddp" not in rpi4.cpu.features and rpi4.backend == "tflite"
    assert "asimddp" in rpi5.cpu.features and "tflite_fp16" in rpi5.artifacts
    jetson = load_target("jetson")
    assert jetson.name == "jetson-orin-nano" and jetson.backend == "ort"
    assert jetson.execution_providers[0] == "TensorrtExecutionProvider"
    assert {"onnx_fp32", "onnx_int8_qdq", "tflite_int8"} <= set(jetson.artifacts)
    x86 = load_target("x86-ap")
    assert "avx_vnni" in x86.cpu.features and x86.power_meter == "rapl"
    for name in list_targets():
        profile = load_target(name)
        assert "tflite_int8" in profile.artifacts
        assert profile.int8_max_top2_drop == 1.0
        assert profile.policy.order("night")[0] == "radar"


def test_load_by_path(tmp_path):
    path = targets_dir() / "rpi5.yaml"
    assert load_target(str(path)).name == "rpi5"


def _write(tmp_path: Path, data: dict, name: str = "board") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _base() -> dict:
    return yaml.safe_load((targets_dir() / "rpi4.yaml").read_text()) | {"name": "board", "aliases": []}


def test_unknown_key_is_rejected_naming_file_and_field(tmp_path):
    path = _write(tmp_path, _base() | {"treads": 4})
    with pytest.raises(EdgekdError) as err:
        load_target(str(path))
    assert "treads" in str(err.value) and str(path) in str(err.value) and "threads" in str(err.value)


@pytest.mark.parametrize("change, field", [
    ({"artifacts": ["tflite_fp32"]}, "artifacts"),                       # tflite_int8 is mandatory
    ({"artifacts": ["tflite_int8", "tflite_bf16"]}, "artifacts[1]"),     # unknown artifact kind
    ({"backend": "ort", "execution_providers": ["CPUExecutionProvider"]}, "artifacts"),  # ort without ONNX
    ({"backend": "ort", "artifacts": ["onnx_fp32", "tflite_int8"]}, "execution_providers"),
    ({"execution_providers": ["FooExecutionProvider"]}, "execution_providers"),
    ({"power_meter": "multimeter"}, "power_meter"),
    ({"threads": 0}, "threads"),
    ({"students": ["image", "sonar"]}, "students"),
    ({"policy": {"night": ["radar", "thermal"]}}, "policy.night"),
    ({"policy": {"day": []}}, "policy.day"),
    ({"precision": "fp16"}, "precision"),
    ({"power_model": {"idle_w": 5.0, "active_w": 2.0}}, "power_model"),
])
def test_invalid_profiles_name_the_field(tmp_path, change, field):
    path = _write(tmp_path, _base() | change)
    with pytest.raises(EdgekdError) as err:
        load_target(str(path))
    assert err.value.field == field, str(err.value)


def test_unknown_target_lists_known_ones():
    with pytest.raises(EdgekdError) as err:
        load_target("rpi3")
    message = str(err.value)
    assert "rpi3" in message
    for name in ("rpi4", "rpi5", "jetson-orin-nano", "x86-ap", "jetson"):
        assert name in message


def test_targets_dir_override_and_name_must_match_file(tmp_path, monkeypatch):
    _write(tmp_path, _base() | {"name": "other"}, name="board")
    monkeypatch.setenv(ENV_TARGETS_DIR, str(tmp_path))
    with pytest.raises(EdgekdError, match="differs from its file name"):
        list_targets()


def test_an_installed_package_reads_the_profiles_shipped_as_data_files(tmp_path, monkeypatch):
    """Outside a checkout (no targets/ beside the package) the profiles come from <prefix>/share/edgekd/targets."""
    import tomllib

    import edgekd.device.targets as targets_mod

    data_files = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert data_files["tool"]["setuptools"]["data-files"] == {str(targets_mod.INSTALLED_TARGETS): ["targets/*.yaml"]}
    installed = tmp_path / targets_mod.INSTALLED_TARGETS
    installed.mkdir(parents=True)
    (installed / "rpi4.yaml").write_text((targets_dir() / "rpi4.yaml").read_text())
    monkeypatch.delenv(ENV_TARGETS_DIR, raising=False)
    monkeypatch.setattr(targets_mod, "__file__", str(tmp_path / "site-packages" / "edgekd" / "device" / "targets.py"))
    monkeypatch.setattr(targets_mod.sys, "prefix", str(tmp_path))
    assert targets_dir() == installed and list_targets() == ["rpi4"]


def test_cli_list_show_and_unknown():
    runner = CliRunner()
    listed = runner.invoke(cli, ["targets", "list"])
    assert listed.exit_code == 0 and "jetson-orin-nano (alias: jetson, orin-nano)" in listed.output
    shown = runner.invoke(cli, ["targets", "show", "jetson", "--json"])
    assert shown.exit_code == 0
    data = json.loads(shown.output)
    assert data["name"] == "jetson-orin-nano" and data["policy"]["quality_margin"] == 0.1
    assert "cpu:" in runner.invoke(cli, ["targets", "show", "rpi4"]).output
    unknown = runner.invoke(cli, ["targets", "show", "nope"])
    assert unknown.exit_code == 2 and "known targets" in unknown.output and "x86-ap" in unknown.output


def test_a_profile_with_more_threads_than_this_host_has_cpus_is_named(caplog):
    from edgekd.device.targets import usable_cpus, warn_if_oversubscribed

    with caplog.at_level("WARNING", logger="edgekd.device.targets"):
        warn_if_oversubscribed(usable_cpus() + 4, "jetson-orin-nano")
        warn_if_oversubscribed(usable_cpus(), "x86-ap")
    assert len(caplog.records) == 1
    assert "jetson-orin-nano" in caplog.text and f"--threads {usable_cpus()}" in caplog.text
