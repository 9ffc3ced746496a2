"""The experiment runner under `edgekd demo` and `edgekd reproduce`: profiles, plan fingerprint + diff, stages."""

from __future__ import annotations

import dataclasses
import json

import pytest

from edgekd.device.config import load_yaml
from edgekd.device.errors import EdgekdError
from edgekd.host.experiments import runner


@dataclasses.dataclass
class Toy:
    epochs: int = 1
    lr: float = 0.1
    runs: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.epochs <= 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")


@pytest.fixture
def toy_profiles(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "PROFILE_DIR", tmp_path)
    (tmp_path / "toy-quick.yaml").write_text("epochs: 3\nlr: 0.01\nruns: {a: {x: 1, y: 2}}\n")
    return tmp_path


# ---------------------------------------------------------------------------
# profiles


def test_every_named_profile_has_its_yaml_file_and_loads():
    from edgekd.host.experiments import demo, paper1, paper2

    for module, experiment in ((paper1, "paper1"), (paper2, "paper2"), (demo, "demo")):
        for name in module.PROFILES:
            assert runner.profile_path(experiment, name).is_file(), (experiment, name)
            module.load_profile(name)
    shipped = {p.stem for p in runner.PROFILE_DIR.glob("*.yaml")}
    assert shipped == {f"paper1-{n}" for n in paper1.PROFILES} | {f"paper2-{n}" for n in paper2.PROFILES} \
        | {f"demo-{n}" for n in demo.PROFILES}


def test_profile_yaml_spells_out_every_field():
    """A named profile's file lists every key of its dataclass, so its numbers are all in one place."""
    from edgekd.host.experiments import demo, paper1, paper2

    for module, experiment, cls in ((paper1, "paper1", paper1.Paper1Profile), (paper2, "paper2", paper2.Paper2Profile),
                                    (demo, "demo", demo.DemoProfile)):
        fields = {f.name for f in dataclasses.fields(cls)}
        for name in module.PROFILES:
            assert set(load_yaml(runner.profile_path(experiment, name))) == fields, (experiment, name)


def test_config_and_flags_go_over_the_profile(toy_profiles, tmp_path):
    config = tmp_path / "over.yaml"
    config.write_text("lr: 0.5\nruns: {a: {y: 7}}\n")
    toy = runner.load_profile(Toy, "toy", "quick", ("quick",), config_path=config, overrides={"epochs": 9, "lr": None},
                              depth={"runs": 2})
    assert toy == Toy(epochs=9, lr=0.5, runs={"a": {"x": 1, "y": 7}})
    # without a merge depth a mapping replaces the profile's
    flat = runner.load_profile(Toy, "toy", "quick", ("quick",), config_path=config)
    assert flat.runs == {"a": {"y": 7}}


def test_unknown_key_is_rejected_naming_file_field_and_fix(toy_profiles, tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text("epochz: 3\n")
    with pytest.raises(EdgekdError) as info:
        runner.load_profile(Toy, "toy", "quick", ("quick",), config_path=config)
    err = info.value
    assert err.file == str(config) and err.field == "epochz" and "epochs" in err.fix
    # a typo in a shipped profile names that file
    (toy_profiles / "toy-quick.yaml").write_text("epochs: 3\nlrr: 0.1\n")
    with pytest.raises(EdgekdError) as info:
        runner.load_profile(Toy, "toy", "quick", ("quick",))
    assert info.value.file == str(toy_profiles / "toy-quick.yaml") and info.value.field == "lrr"


def test_bad_value_and_unknown_profile_are_errors(toy_profiles):
    with pytest.raises(EdgekdError, match="epochs must be positive") as info:
        runner.load_profile(Toy, "toy", "quick", ("quick",), overrides={"epochs": 0})
    assert "Toy" in info.value.fix
    with pytest.raises(EdgekdError, match="unknown profile 'slow'") as info:
        runner.load_profile(Toy, "toy", "slow", ("quick",))
    assert info.value.fix == "choose one of: quick"


def test_merge_mappings_depth():
    base = {"a": {"x": 1}, "runs": {"r": {"p": 1, "q": 2}}, "m": {"k": "v"}}
    merged = runner.merge_mappings(base, {"a": {"y": 2}, "runs": {"r": {"q": 3}, "s": {"p": 4}}, "m": {}},
                                   {"a": 1, "runs": 2})
    assert merged == {"a": {"x": 1, "y": 2}, "runs": {"r": {"p": 1, "q": 3}, "s": {"p": 4}}, "m": {}}
    assert base["runs"]["r"] == {"p": 1, "q": 2}   # not modified in place


# ---------------------------------------------------------------------------
# the plan


def test_plan_diff_names_every_changed_field():
    old = {"format": "f/1", "profile": {"epochs": 3, "lr": 0.1, "runs": {"a": {"x": 1}}}, "target": "x86-ap"}
    new = {"format": "f/1", "profile": {"epochs": 4, "lr": 0.1, "runs": {"a": {"x": 2}}, "extra": 1},
           "target": "rpi5"}
    assert runner.plan_diff(old, new) == ["profile.epochs", "profile.extra", "profile.runs.a.x", "target"]
    assert runner.plan_diff(old, old) == []
    # tuples and lists compare alike (the old plan comes back from JSON)
    assert runner.plan_diff({"p": {"s": [1, 2]}}, {"p": {"s": (1, 2)}}) == []
    assert runner.plan_diff({"d": {"path": "/a", "fp": "x"}}, {"d": {"path": "/b", "fp": "x"}},
                            ignore={"d.path"}) == []


def test_check_plan_writes_then_accepts_the_same_plan_and_refuses_another(tmp_path):
    out = tmp_path / "run"
    plan = {"format": "f/1", "profile": {"epochs": 3}}
    runner.check_plan(out, plan, fix="pass another --out")
    assert json.loads((out / "plan.json").read_text()) == plan
    runner.check_plan(out, plan, fix="pass another --out")   # a rerun continues
    with pytest.raises(EdgekdError) as info:
        runner.check_plan(out, {"format": "f/1", "profile": {"epochs": 4}}, fix="pass another --out")
    err = info.value
    assert "changed: profile.epochs" in err.what and err.field == "profile.epochs"
    assert err.file == str(out / "plan.json") and err.fix == "pass another --out"
    assert json.loads((out / "plan.json").read_text()) == plan   # the folder's plan is kept


def test_check_plan_with_a_resume_flag(tmp_path):
    out = tmp_path / "run"
    plan = {"format": "f/1", "target": "x86-ap"}
    runner.check_plan(out, plan, resume=False, fix="f")
    with pytest.raises(EdgekdError, match="earlier run") as info:
        runner.check_plan(out, plan, resume=False, fix="f")   # continuing needs --resume
    assert "--resume" in info.value.fix
    runner.check_plan(out, plan, resume=True, fix="f")
    with pytest.raises(EdgekdError, match="changed: target"):
        runner.check_plan(out, {**plan, "target": "rpi5"}, resume=True, fix="f")
    other = tmp_path / "other"
    other.mkdir()
    (other / "file.txt").write_text("x")
    with pytest.raises(EdgekdError, match="not empty"):
        runner.check_plan(other, plan, resume=False, fix="f")


# ---------------------------------------------------------------------------
# resumable stages


def test_markers_and_run_stage_resume(tmp_path):
    markers = runner.Markers(tmp_path / "stages")
    lines: list[str] = []
    calls: list[int] = []

    def body() -> dict:
        calls.append(1)
        return {"answer": 42}

    record = runner.run_stage(markers, "train", body, head="[1/2] train", about="training", echo=lines.append)
    assert record["answer"] == 42 and record["seconds"] >= 0 and "cpu_seconds" in record
    assert markers.done("train") == record and markers.path("train") == tmp_path / "stages" / "train.json"
    again = runner.run_stage(markers, "train", body, head="[1/2] train", about="training", echo=lines.append)
    assert again == record and calls == [1]
    assert lines[0] == "[1/2] train: training" and "done earlier" in lines[-1]
    # keys may name a sub-folder (one marker per seed and run)
    markers.mark("seed42/teacher", {"top1": [0.5]})
    assert (tmp_path / "stages" / "seed42" / "teacher.json").is_file()
    assert markers.done("seed42/teacher") == {"top1": [0.5]} and markers.done("seed43/teacher") is None


def test_a_failing_stage_is_named_and_leaves_no_marker(tmp_path):
    markers = runner.Markers(tmp_path / "stages")

    def broken() -> dict:
        raise RuntimeError("boom")

    def user_error() -> dict:
        raise EdgekdError("bad file", file="x.pt", fix="rebuild it")

    with pytest.raises(EdgekdError, match="stage 'export' failed: RuntimeError: boom") as info:
        runner.run_stage(markers, "export", broken, head="h", about="a", echo=lambda _: None)
    assert "--resume" in info.value.fix and markers.done("export") is None
    with pytest.raises(EdgekdError, match="stage 'export' failed: bad file") as info:
        runner.run_stage(markers, "export", user_error, head="h", about="a", echo=lambda _: None)
    assert info.value.file == "x.pt" and info.value.fix.startswith("rebuild it; then rerun with --resume")
