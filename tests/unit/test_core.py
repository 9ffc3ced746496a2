"""Config loading, registry, atomic writes and the CLI's error contract."""

from __future__ import annotations

import dataclasses
import json
from typing import Literal

import pytest
from click.testing import CliRunner

from edgekd.cli import cli
from edgekd.device.config import config_from_dict, load_config, override
from edgekd.device.errors import EdgekdError
from edgekd.device.io import atomic_directory, atomic_write_json, sha256_file
from edgekd.device.registry import Registry


@dataclasses.dataclass
class Inner:
    size: int = 4
    kind: Literal["a", "b"] = "a"


@dataclasses.dataclass
class Outer:
    name: str = "x"
    rate: float = 0.1
    inner: Inner = dataclasses.field(default_factory=Inner)
    sizes: tuple[int, ...] = (1, 2)


def test_config_nested_and_coerced():
    cfg = config_from_dict(Outer, {"rate": 1, "inner": {"size": 8, "kind": "b"}, "sizes": [3, 4, 5]})
    assert cfg.rate == 1.0 and isinstance(cfg.rate, float)
    assert cfg.inner == Inner(8, "b")
    assert cfg.sizes == (3, 4, 5)


def test_config_rejects_unknown_key_naming_field_and_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  sise: 3\n")
    with pytest.raises(EdgekdError) as err:
        load_config(Outer, path)
    msg = str(err.value)
    assert "inner.sise" in msg and str(path) in msg and "size" in msg


def test_config_rejects_wrong_type_and_literal():
    with pytest.raises(EdgekdError, match="expected an integer"):
        config_from_dict(Outer, {"inner": {"size": "big"}})
    with pytest.raises(EdgekdError, match="choose one of"):
        config_from_dict(Outer, {"inner": {"kind": "c"}})


def test_override_ignores_none_and_checks_names():
    cfg = override(Outer(), rate=None, name="y")
    assert cfg.name == "y" and cfg.rate == 0.1
    with pytest.raises(EdgekdError, match="unknown option"):
        override(Outer(), nope=1)


def test_registry_aliases_and_unknown():
    reg: Registry[int] = Registry("widget")
    reg.add("one", 1, aliases=("uno",))
    assert reg.get("uno") == 1 and "uno" in reg and list(reg) == ["one"]
    with pytest.raises(EdgekdError, match="known widgets: one"):
        reg.get("two")
    with pytest.raises(ValueError):
        reg.add("one", 2)


def test_atomic_directory_leaves_nothing_on_failure(tmp_path):
    dest = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_directory(dest) as tmp:
            (tmp / "half.txt").write_text("x")
            raise RuntimeError("boom")
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_directory_refuses_existing_without_overwrite(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep.txt").write_text("old")
    with pytest.raises(EdgekdError, match="--overwrite"):
        with atomic_directory(dest):
            pass
    with pytest.raises(EdgekdError, match="does not look like"):  # not our kind of output: never replaced
        with atomic_directory(dest, overwrite=True, marker="manifest.json"):
            pass
    (dest / "manifest.json").write_text("{}")
    with atomic_directory(dest, overwrite=True, marker="manifest.json") as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in dest.iterdir()) == ["new.txt"]


def test_atomic_write_json_and_hash(tmp_path):
    path = atomic_write_json(tmp_path / "a" / "m.json", {"k": (1, 2)})
    assert json.loads(path.read_text()) == {"k": [1, 2]}
    assert len(sha256_file(path)) == 64


def test_cli_version_and_help():
    runner = CliRunner()
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and "edgekd" in result.output
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0 and "Usage" in result.output
