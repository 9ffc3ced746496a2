"""The on-board side imports no host package (checked in a fresh interpreter), and a report without the
host side is written without its PNG, saying why.

The full boundary (imports inside functions included) is ``lint-imports`` (pyproject's import-linter
contracts); ``tests/integration/test_device_venv.py`` runs the board commands in a ``.[device]``-only venv.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np

from edgekd.device.runtime import replay as replay_mod

HEAVY = ("torch", "tensorflow", "onnx2tf", "tf_keras", "keras", "matplotlib", "tqdm", "scipy")


def loaded_after(code: str) -> list[str]:
    probe = code + ("\nimport json, sys\n"
                    f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_every_device_module_pulls_no_host_package():
    assert loaded_after("import edgekd.device.runtime, edgekd.device.runtime.hub, edgekd.device.runtime.policy, "
                        "edgekd.device.runtime.engine, edgekd.device.runtime.replay, edgekd.device.runtime.cli, "
                        "edgekd.device.bundle, edgekd.device.manifest, edgekd.device.targets, "
                        "edgekd.device.metrics, edgekd.device.contracts") == []


def test_the_run_command_resolves_without_heavy_imports():
    assert loaded_after("from edgekd.cli import cli\nimport click\n"
                        "cmd = cli.get_command(click.Context(cli), 'run')\nassert cmd is not None") == []


def _tiny_report_inputs(tmp_path: Path):
    n = 4
    drive = replay_mod.Drive(path=tmp_path / "drive.npz", frames={}, available={}, time_s=np.arange(n) * 0.1,
                             beams=np.zeros((n, 4), np.int64), lighting=np.zeros(n, np.int8),
                             weather=np.zeros(n, np.int8), segment=np.zeros(n, np.int16), segment_names=["a"],
                             meta={}, track=np.zeros(n, np.int32))
    result = replay_mod.ReplayResult(student=["lidar"] * n, top_beams=np.zeros((n, 4, 5), np.int64),
                                     latency={"total": np.ones(n), "invoke": np.ones(n)}, switches=[],
                                     records=[{"frame": i} for i in range(n)], lighting_est=["day"] * n,
                                     wall_s=0.1, counters={})
    return result, drive, {"policy": "auto", "rows": [], "window": 2}


def test_a_report_without_the_host_side_has_everything_but_the_png(tmp_path, monkeypatch, caplog):
    real = replay_mod.importlib.util.find_spec
    monkeypatch.setattr(replay_mod.importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    plotter, why = replay_mod.timeline_plotter()
    assert plotter is None and "matplotlib is not installed" in why and "edgekd[host]" in why
    with caplog.at_level(logging.WARNING):
        out = replay_mod.write_report(tmp_path / "report", *_tiny_report_inputs(tmp_path))
    assert sorted(p.name for p in out.iterdir()) == ["frames.jsonl", "segments.csv", "segments.md",
                                                     "summary.json", "switches.csv"]
    assert "timeline.png not written: matplotlib is not installed" in caplog.text


def test_with_the_host_side_the_report_draws_the_timeline(tmp_path):
    plotter, why = replay_mod.timeline_plotter()
    assert why is None and plotter.__module__ == replay_mod.PLOTS_MODULE
    out = replay_mod.write_report(tmp_path / "report", *_tiny_report_inputs(tmp_path))
    assert (out / "timeline.png").read_bytes()[:4] == b"\x89PNG"
