"""`edgekd reproduce paper2 --profile smoke`: the whole experiment on a tiny synthesised LiDAR dataset."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from click.testing import CliRunner

from edgekd.cli import cli
from edgekd.host.data import read_meta
from edgekd.host.experiments.paper2 import PROFILES, aggregate, load_profile

torch.set_num_threads(1)


def test_smoke_profile_writes_the_report(tmp_path):
    out = tmp_path / "p2"
    runner = CliRunner()
    result = runner.invoke(cli, ["reproduce", "paper2", "--profile", "smoke", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    for name in ("report.md", "results.csv", "runs.csv", "paper2.png", "summary.json", "plan.json"):
        assert (out / name).is_file(), name
    assert (out / "paper2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the synthesised dataset stores LiDAR only
    assert set(read_meta(out / "data")["modalities"]) == {"lidar"}
    summary = json.loads((out / "summary.json").read_text())
    best = summary["best_variant"]
    rows = list(csv.DictReader((out / "results.csv").open()))
    runs = {(r["figure"], r["run"]) for r in rows}
    assert {("fig3", f"df_{v}_kl") for v in ("weighted", "metadata", "activation", "entropy")} <= runs
    assert {("fig4", f"df_{best}_kl"), ("fig4", f"df_{best}_mse")} <= runs
    assert {("fig5", k) for k in ("teacher", "student_none", "student_kd", "student_kd_mse",
                                  "df_metadata_mse")} <= runs
    assert {r["metric"] for r in rows} == {"top1", "top5"}
    assert {r["horizon"] for r in rows} == {"t0", "t1", "t2", "t3", "mean"}
    assert all(r["seeds"] == "2" and 0.0 <= float(r["mean"]) <= 1.0 for r in rows)
    seeds_per_run = {}
    for r in csv.DictReader((out / "runs.csv").open()):
        seeds_per_run.setdefault(r["run"], set()).add(r["seed"])
    assert all(s == {"42", "43"} for s in seeds_per_run.values())
    report = (out / "report.md").read_text()
    assert "## Acceptance" in report and "Fig. 3" in report and "Fig. 5" in report and "96,640" in report
    assert [c["check"] for c in summary["acceptance"]][0].startswith("DF-KD (metadata generator, MSE)")
    # data-free students were trained without training data
    ck = torch.load(out / "runs/seed42/df_metadata_mse.pt", weights_only=True)
    assert ck["data"]["train_windows"] == 0 and ck["config"]["method"] == "datafree"
    # the teacher carries the per-layer metadata the generators match; the students start from its first layer
    teacher = torch.load(out / "runs/seed42/teacher.pt", weights_only=True)
    assert set(teacher["teacher_stats"]["layers"]) == {"embedding_pre", "gru_hidden"}
    assert torch.equal(ck["state_dict"]["embed.weight"], teacher["state_dict"]["embed.weight"])
    assert ck["extra"]["datafree"]["options"]["student_init"] == "teacher_embedding"
    assert "first layer" in report

    # a rerun reuses every finished run; another profile into the same folder is refused
    again = runner.invoke(cli, ["reproduce", "paper2", "--profile", "smoke", "--out", str(out), "--no-progress"])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "summary.json").read_text())["summary"] == summary["summary"]
    other = runner.invoke(cli, ["reproduce", "paper2", "--profile", "quick", "--seeds", "1", "--out", str(out),
                                "--no-progress"])
    assert other.exit_code == 2 and "another profile" in other.output


def test_aggregate_mean_and_std_over_seeds():
    records = [{"seconds": 1.0, "top1": [0.1, 0.2, 0.3, 0.4], "top5": [0.5, 0.5, 0.5, 0.5]},
               {"seconds": 3.0, "top1": [0.3, 0.2, 0.1, 0.0], "top5": [0.7, 0.7, 0.7, 0.7]}]
    agg = aggregate(records)
    assert agg["seeds"] == 2 and agg["seconds"] == 2.0
    assert agg["top1"] == pytest.approx([0.2, 0.2, 0.2, 0.2])
    assert agg["top1_std"] == pytest.approx([0.1414214, 0.0, 0.1414214, 0.2828427])
    assert agg["top5_mean"] == pytest.approx(0.6) and agg["top5_mean_std"] == pytest.approx(0.1414214)


def test_profiles_load_and_reject_unknown_keys(tmp_path):
    assert set(PROFILES) == {"smoke", "quick", "paper"}
    assert load_profile("paper").datafree_epochs == 500
    assert load_profile("quick", seeds=5).seeds == 5
    bad = tmp_path / "p.yaml"
    bad.write_text("generator_step: 3\n")
    from edgekd.device.errors import EdgekdError

    with pytest.raises(EdgekdError, match="generator_step"):
        load_profile("quick", bad)
