"""edgekd fleet: the world, the topologies' ledger, the engines (in-process vs Flower), bad input.

The engine test runs the real Flower simulation engine (Ray backend) and the in-process engine
on the same 8-AP world with a fixed seed and asserts the very same ledger and metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekd.cli import cli
from edgekd.device.errors import EdgekdError
from edgekd.host.fleet import learn
from edgekd.host.fleet.config import load_fleet_config
from edgekd.host.fleet.ledger import TRAIN_MACS_FACTOR, Ledger, payload_bytes
from edgekd.host.fleet.report import worst_decile
from edgekd.host.fleet.scenario import World, build_world, derive_seed, heterogeneity, js_divergence, plan_sites
from edgekd.host.fleet.topologies import TOPOLOGIES, label_stats, split_label_stats

TINY = dict(aps=8)


@pytest.fixture(autouse=True)
def tensorflow_importable_after():
    """The Flower engine blocks `import tensorflow` for its process (Flower's actors would load it for
    nothing); in the test process that must not outlive the test, as later tests export with TensorFlow."""
    import sys

    blocked_before = "tensorflow" in sys.modules and sys.modules["tensorflow"] is None
    yield
    if not blocked_before and "tensorflow" in sys.modules and sys.modules["tensorflow"] is None:
        del sys.modules["tensorflow"]


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    cfg = load_fleet_config("tiny", **TINY)
    folder = build_world(cfg, tmp_path_factory.mktemp("fleet") / "world", progress=False)
    return cfg, World(folder)


# ---------------------------------------------------------------- pure parts


def test_js_divergence_golden() -> None:
    assert js_divergence(np.array([1, 0]), np.array([1, 0])) == 0.0
    assert js_divergence(np.array([1, 0]), np.array([0, 1])) == pytest.approx(1.0)
    assert js_divergence(np.array([3, 1]), np.array([1, 3])) == pytest.approx(0.18872, abs=1e-4)


def test_seeds_are_independent_streams() -> None:
    seeds = {derive_seed(0, ap, r) for ap in range(50) for r in range(4)}
    assert len(seeds) == 200
    assert derive_seed(1, 2, 3) == derive_seed(1, 2, 3)


def test_worst_decile_and_label_stats() -> None:
    assert worst_decile(list(range(20))) == pytest.approx(0.5)
    avg, counts = np.arange(6.0).reshape(2, 3), np.array([4.0, 0.0])
    back = split_label_stats(label_stats(avg, counts))
    np.testing.assert_allclose(back[0], avg)
    np.testing.assert_allclose(back[1], counts)
    logits = np.zeros((2, 4, 64), dtype=np.float32)
    logits[..., 5] = 1.0
    sums, n = learn.label_logit_sums(logits, np.full((2, 4), 7))
    assert n[7] == 8 and sums[7, 5] == 8 and sums.sum() == 8


def test_labelled_cross_entropy_counts_only_labelled_rows() -> None:
    """CE with unlabelled rows = the per-row losses of the labelled rows summed, over the whole batch size."""
    import torch

    from edgekd.host.distill.losses import cross_entropy_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, 64, generator=g)
    beams = torch.randint(0, 64, (6, 4), generator=g)
    mask = torch.tensor([True, False, True, True, False, False])
    per_row = torch.stack([cross_entropy_loss(logits[i:i + 1], beams[i:i + 1]) for i in range(6)])
    expected = per_row[mask].sum() / 6
    assert learn._labelled_ce(logits, beams, mask).item() == pytest.approx(expected.item(), rel=1e-6)
    assert learn._labelled_ce(logits, beams, torch.ones(6, dtype=torch.bool)).item() == \
        pytest.approx(cross_entropy_loss(logits, beams).item(), rel=1e-6)
    none = learn._labelled_ce(logits.requires_grad_(), beams, torch.zeros(6, dtype=torch.bool))
    assert none.item() == 0.0 and none.requires_grad


def test_sites_differ_and_are_reproducible() -> None:
    cfg = load_fleet_config("tiny", aps=20)
    aps, server = plan_sites(cfg)
    assert plan_sites(cfg) == (aps, server)
    assert len({s.curb_offset_m for s in aps}) == 20
    assert len({s.board for s in aps}) >= 3
    # the server's older sites are a narrower mix
    assert max(s.curb_offset_m for s in server) <= cfg.server_mix.curb_offset_m[1]


def test_payload_bytes_is_flowers_count_bytes() -> None:
    flwr_app = pytest.importorskip("flwr.app")
    arrays = {"student_params": np.arange(1000, dtype=np.float32), "x": np.zeros((3, 4), dtype=np.float16),
              "starts": np.arange(7, dtype=np.int32)}
    record = flwr_app.ArrayRecord({k: flwr_app.Array(v) for k, v in arrays.items()})
    assert payload_bytes(arrays) == record.count_bytes()


# ---------------------------------------------------------------- the topologies on a tiny world


def test_world_heterogeneity(tiny_world: tuple) -> None:
    cfg, world = tiny_world
    assert world.ap_ids == list(range(8))
    het = heterogeneity(world)
    assert 0 < het["mean_js"] < 1 and len(het["per_ap_js"]) == 8
    site = world.site(0)
    assert site.count("train") == cfg.train_windows and site.count("test") == cfg.test_windows
    xs, beams = site.batch("train", np.arange(4))
    assert xs[0].shape == (4, 8, 216) and beams.shape == (4, 4)


@pytest.mark.slow
def test_inproc_and_flower_agree_on_ledger_and_metrics(tiny_world: tuple) -> None:
    pytest.importorskip("flwr")
    from edgekd.host.fleet.engine_flower import run_flower
    from edgekd.host.fleet.engine_inproc import run_inproc

    cfg, world = tiny_world
    names = TOPOLOGIES.names()
    a, b = Ledger(), Ledger()
    ra = run_inproc(cfg, world, names, a, progress=False)
    rb = run_flower(cfg, world, names, b, workers=2, progress=False)
    assert ra == rb
    assert json.dumps(a.to_json(), sort_keys=True) == json.dumps(b.to_json(), sort_keys=True)
    for name in names:
        assert len(ra[name]) == 8, name
        t = a.totals(name, 8)
        for d in ("down", "up"):
            assert t[f"{d}_closed_rel_err"] <= 0.01, (name, d, t)
    # closed form: the decentralized downlink's weights / the centralized one's = teacher / student params
    tc, sc = learn.model_cost(cfg.teacher), learn.model_cost(cfg.student)
    dec = sum(e.closed for e in a.entries if e.topology == "decentralized" and e.direction == "down")
    cen = sum(e.closed for e in a.entries if e.topology == "centralized" and e.direction == "down")
    assert dec / cen == pytest.approx((tc["params"] + tc["buffers"]) / (sc["params"] + sc["buffers"]), rel=1e-12)
    # who moves what
    totals = {n: a.totals(n, 8) for n in names}
    assert totals["local"]["down_bytes"] == totals["local"]["up_bytes"] == 0
    assert totals["decentralized"]["edge_teacher_macs_per_ap"] > 0
    assert totals["semi-centralized"]["edge_teacher_macs_per_ap"] == 0
    assert totals["oracle"]["up_bytes"] > 0 and totals["fedavg"]["up_bytes"] > totals["fd"]["up_bytes"]
    assert totals["semi-centralized"]["down_bytes"] > totals["semi-norehearsal"]["down_bytes"]
    # the teacher's own top-2 that decentralized reports per AP is the server teacher's score on that AP's test
    # windows (recomputed here from a fresh server cache: same seeds, so the same teacher)
    from edgekd.host.fleet.topology_base import ServerCache

    teacher, _ = ServerCache(cfg, world).teacher()
    for ap, m in ra["decentralized"].items():
        site = world.site(ap)
        assert m["teacher_top2"] == learn.topk_accuracy(learn.predict(teacher, site, "test"), site.batch("test")[1], 2)
    assert all("teacher_top2" not in m for m in ra["local"].values())
    # decentralized-adapted ships the same teacher and also trains it at the AP: teacher_adapt_epochs x 3 x
    # forward MACs of every local window, beside the forward pass that labels them
    adapted, plain = totals["decentralized-adapted"], totals["decentralized"]
    assert adapted["down_bytes"] == plain["down_bytes"]
    assert adapted["edge_teacher_macs_per_ap"] - plain["edge_teacher_macs_per_ap"] == \
        TRAIN_MACS_FACTOR * tc["macs"] * cfg.train_windows * cfg.teacher_adapt_epochs


def test_cli_compare_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["fleet", "simulate", "--topology", "local", "--topology", "decentralized",
                                   "--topology", "fd", "--config", "tiny", "--aps", "3", "--engine", "inproc",
                                   "--unlabelled-windows", "16", "--cache", str(tmp_path / "cache"), "--out",
                                   str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    for name in ("report.md", "summary.json", "per_ap.csv", "ledger.json", "accuracy_vs_mb.png", "per_ap_accuracy.png"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["rows"]) == {"local", "decentralized", "fd"}
    assert "| decentralized |" in (out / "report.md").read_text()
    assert 0 <= summary["rows"]["decentralized"]["teacher_top2_at_aps"] <= 1
    assert summary["rows"]["local"]["teacher_top2_at_aps"] is None
    assert "decentralized: teacher" in (out / "report.md").read_text()
    assert "and 16 unlabelled ones" in (out / "report.md").read_text()
    assert json.loads((out / "run.json").read_text())["config"]["unlabelled_windows"] == 16
    assert len((out / "per_ap.csv").read_text().splitlines()) == 1 + 3 * 3
    # --overwrite is required the second time
    again = CliRunner().invoke(cli, ["fleet", "simulate", "--topology", "local", "--config", "tiny", "--aps", "3",
                                     "--engine", "inproc", "--cache", str(tmp_path / "cache"), "--out", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_unlabelled_windows_reach_only_the_teacher(tmp_path: Path) -> None:
    """An AP's unlabelled windows: rendered after its labelled splits (which stay as they were), stored with no
    label, learnt from by decentralized alone (through the teacher), and charged to its edge MACs."""
    from edgekd.host.fleet.engine_inproc import run_inproc
    from edgekd.host.fleet.scenario import NO_LABEL, UNLABELLED
    from edgekd.host.fleet.topologies import Decentralized, ServerCache

    plain_cfg = load_fleet_config("tiny", aps=3)
    cfg = load_fleet_config("tiny", aps=3, unlabelled_windows=24)
    plain = World(build_world(plain_cfg, tmp_path / "plain", progress=False))
    world = World(build_world(cfg, tmp_path / "unlabelled", progress=False))
    for ap in world.ap_ids:
        with_u, without = world.site(ap), plain.site(ap)
        assert with_u.count(UNLABELLED) == 24 and UNLABELLED not in without.starts
        for split in ("train", "test"):
            xs_u, beams_u = with_u.batch(split)
            xs, beams = without.batch(split)
            np.testing.assert_array_equal(beams_u, beams)
            np.testing.assert_array_equal(xs_u[0], xs[0])
        assert (with_u.batch(UNLABELLED)[1] == NO_LABEL).all()
    # a label read off an unlabelled window fails instead of training on the synthesiser's ground truth
    model = learn.seeded_model(cfg.student, 0)
    with pytest.raises(IndexError):
        learn.fit(model, world.site(0), UNLABELLED, epochs=1, seed=0, lr=cfg.lr, batch_size=8)
    with pytest.raises(ValueError, match="teacher_logits"):
        learn.fit(model, world.site(0), "train", epochs=1, seed=0, lr=cfg.lr, batch_size=8,
                  labelled=np.ones(cfg.train_windows, bool))

    names = ["local", "decentralized"]
    a, b = Ledger(), Ledger()
    with_u_metrics = run_inproc(cfg, world, names, a, progress=False)
    plain_metrics = run_inproc(plain_cfg, plain, names, b, progress=False)
    assert with_u_metrics["local"] == plain_metrics["local"]                 # labels only: the same students
    assert with_u_metrics["decentralized"] != plain_metrics["decentralized"]
    teacher_macs, student_macs = learn.model_cost(cfg.teacher)["macs"], learn.model_cost(cfg.student)["macs"]
    n = cfg.train_windows + cfg.unlabelled_windows
    got = a.totals("decentralized", 3)
    assert got["edge_teacher_macs_per_ap"] == teacher_macs * n
    assert got["edge_train_macs_per_ap"] == TRAIN_MACS_FACTOR * student_macs * n * cfg.local_epochs
    assert b.totals("decentralized", 3)["edge_teacher_macs_per_ap"] == teacher_macs * cfg.train_windows
    # the straggler deadline predicts what the AP then spends
    topo = Decentralized(cfg, world, world.ap_ids, ServerCache(cfg, world))
    assert topo.expected_macs(0, 1) == got["edge_teacher_macs_per_ap"] + got["edge_train_macs_per_ap"]


def test_compare_runs_the_issue_topologies() -> None:
    from edgekd.host.fleet.topologies import compared

    assert set(compared()) == {"centralized", "decentralized", "semi-centralized", "semi-norehearsal", "local",
                               "oracle", "fedavg", "fd"}
    assert "decentralized-adapted" in TOPOLOGIES.names()     # runs by name: `simulate --topology ...`


# ---------------------------------------------------------------- bad input: exit 2, a fix, nothing written


def _no_lidar(tmp: Path) -> list[str]:
    path = tmp / "nolidar.yaml"
    path.write_text("sensor_probs: {image: 1.0, radar: 1.0, lidar: 0.0, gps: 1.0}\n")
    return ["--config", str(path), "--modality", "lidar"]


BAD = [
    ("zero APs", lambda tmp: ["--aps", "0"], "at least one access point"),
    ("unknown topology", lambda tmp: ["--topology", "star"], "unknown topology 'star'"),
    ("unknown modality", lambda tmp: ["--modality", "sonar"], "unknown modality"),
    ("modality no AP has", _no_lidar, "no access point has lidar"),
    ("impossible deadline", lambda tmp: ["--deadline-s", "1e-9"], "no access point can meet"),
    ("zero seeds", lambda tmp: ["--seeds", "0"], "--seeds must be at least 1"),
    ("negative unlabelled windows", lambda tmp: ["--unlabelled-windows", "-1"], "unlabelled_windows must be >= 0"),
    ("unknown config key", lambda tmp: ["--config", str(_write(tmp / "bad.yaml", "apz: 3\n"))], "unknown key 'apz'"),
]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_exit_2(case: tuple, tmp_path: Path) -> None:
    _, extra, message = case
    args = extra(tmp_path)
    base = ["fleet", "simulate", "--engine", "inproc", "--cache", str(tmp_path / "cache"), "--out",
            str(tmp_path / "out"), "--quiet"]
    if "--topology" not in args:
        base += ["--topology", "local"]
    if "--config" not in args:
        base += ["--config", "tiny"]
    res = CliRunner().invoke(cli, base + args)
    assert res.exit_code == 2, res.output
    assert message in res.output and "fix:" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_library_errors_are_edgekd_errors() -> None:
    with pytest.raises(EdgekdError):
        load_fleet_config("tiny", aps=0)
    with pytest.raises(EdgekdError):
        TOPOLOGIES.resolve("ring")
