"""The real-data path end to end: DeepSense folders in their published layouts (scenario 9 for paper 1,
scenario 8 for paper 2; tests/support/deepsense.py) -> `edgekd data import-deepsense` ->
`edgekd reproduce paper1/paper2 --data` with the smallest settings. Accuracy on fabricated content means
nothing here; the point is that imported data goes through every stage."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from click.testing import CliRunner
from support.deepsense import build_scenario9

from edgekd.cli import cli

pytestmark = pytest.mark.slow
torch.set_num_threads(1)

# as tests/integration/test_reproduce_paper1.py: one epoch of everything
TINY_PAPER1 = """\
local_fraction: 0.3
teachers_per_seed: true
threads: 1
common: {epochs: 1, batch_size: 16, eval_batch_size: 64}
teacher: {epochs: 1}
self_kd: {epochs: 1}
student: {epochs: 1}
"""


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_paper1_on_imported_scenario9(tmp_path):
    folder = tmp_path / "scenario9"
    build_scenario9(folder, (16,) * 6, radar_shape=(4, 256, 32), image_size=(192, 108))  # fewer chirps, smaller JPEGs
    data = tmp_path / "ds9"
    imported = invoke("data", "import-deepsense", folder, "--out", data, "--image-size", "32",
                      "--split", "0.5,0.17,0.33", "--no-progress")
    assert "sanity" in imported.output and "CONSTANT" not in imported.output
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_PAPER1)
    out = tmp_path / "p1"
    invoke("reproduce", "paper1", "--data", data, "--config", config, "--seeds", "1", "--out", out, "--no-progress")
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert rows and all(r["seeds"] == "1" for r in rows)
    plan = json.loads((out / "plan.json").read_text())
    assert plan["data"]["fingerprint"] == json.loads((data / "meta.json").read_text())["fingerprint"]


def test_paper2_on_imported_scenario8(tmp_path):
    folder = tmp_path / "scenario8"
    build_scenario9(folder, (16,) * 6, scenario8=True, image_size=(96, 54), nan_rows=(16,))
    data = tmp_path / "ds8"
    invoke("data", "import-deepsense", folder, "--out", data, "--split", "0.5,0.17,0.33", "--no-progress")
    out = tmp_path / "p2"
    invoke("reproduce", "paper2", "--profile", "smoke", "--data", data, "--out", out, "--no-progress")
    for name in ("report.md", "results.csv", "summary.json"):
        assert (out / name).is_file(), name
    ck = torch.load(out / "runs/seed42/teacher.pt", weights_only=True)
    assert ck["data"]["fingerprint"] == json.loads((data / "meta.json").read_text())["fingerprint"]
