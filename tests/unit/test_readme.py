"""The README's two commands stay true: the test command is .ci/run's, the main job is `edgekd demo`."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    block = re.search(r"## The two commands.*?```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_has_exactly_two_commands_and_ci_runs_the_second():
    main_job, tests = readme_commands()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert tests in ci_lines, ".ci/run must run the README's test command verbatim"
    # the house rules run after it: import boundary, lint, types
    for rule in (".venv/bin/lint-imports", ".venv/bin/ruff check edgekd firmware_bench tests", ".venv/bin/mypy"):
        assert rule in ci_lines
    assert "pytest" in tests and '".[all,fleet,test]"' in tests


def test_readme_main_job_installs_and_runs_the_demo():
    main_job, _ = readme_commands()
    assert main_job.startswith("python3 -m venv .venv && .venv/bin/pip install")
    assert ".venv/bin/edgekd demo" in main_job


def test_readme_tours_every_cli_command():
    from edgekd.cli import COMMANDS

    text = (ROOT / "README.md").read_text()
    missing = [name for name in COMMANDS if f"edgekd {name}" not in text]
    assert not missing, f"README tour lacks: {missing}"
