"""The on-board runtime imports neither torch nor tensorflow (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "tensorflow", "onnx2tf", "tf_keras", "keras")


def loaded_after(code: str) -> list[str]:
    probe = code + f"\nimport json, sys\nprint(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_every_runtime_module_pulls_no_torch_or_tensorflow():
    assert loaded_after("import edgekd.device.runtime, edgekd.device.runtime.hub, edgekd.device.runtime.policy, "
                        "edgekd.device.runtime.engine, edgekd.device.runtime.replay, edgekd.device.runtime.cli, edgekd.device.bundle, "
                        "edgekd.device.targets") == []


def test_the_run_command_resolves_without_heavy_imports():
    assert loaded_after("from edgekd.cli import cli\nimport click\n"
                        "cmd = cli.get_command(click.Context(cli), 'run')\nassert cmd is not None") == []
