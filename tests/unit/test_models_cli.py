"""`edgekd models list` / `show` through the real CLI entry point."""

from __future__ import annotations

import json

from click.testing import CliRunner

from edgekd.cli import cli


def test_models_list_json() -> None:
    result = CliRunner().invoke(cli, ["models", "list", "--json", "--image-size", "32"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["lidar_teacher"]["params"] == 96_640
    assert rows["image_student"]["input_shapes"]["image"] == [8, 1, 32, 32]
    assert rows["fusion_student"]["modalities"] == ["image", "radar"]
    assert all(r["macs"] > 0 for r in rows.values())


def test_models_show_text_and_errors() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["models", "show", "lidar_student"])
    assert result.exit_code == 0, result.output
    assert "25,408" in result.output and "last_hidden" in result.output
    bad = runner.invoke(cli, ["models", "show", "lidar_studnet"])
    assert bad.exit_code == 2 and "lidar_student" in bad.output
    bad_size = runner.invoke(cli, ["models", "list", "--image-size", "50"])
    assert bad_size.exit_code == 2 and "image_size" in bad_size.output
