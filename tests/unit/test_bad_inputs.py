"""The bad-input suite: what a careless user, a faulty sensor and an attacker feed edgekd.

Every CLI case runs the real command (click's CliRunner) and asserts: exit 2, a message naming
the file or field and a fix, no traceback, and nothing written or changed on disk (the whole
temporary folder is snapshotted before and after). A new kind of bad input gets a row here.
The runtime hub is driven by a hypothesis property test with random push sequences.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_signing import make_fake_bundle, rehash

from edgekd.cli import cli
from edgekd.device.errors import EdgekdError
from edgekd.device.io import sha256_file
from edgekd.device.runtime.hub import RANGE_MARGIN, SensorHub, input_ranges
from edgekd.device.runtime.runner import QuantSpec, quantize
from edgekd.device.signing import ENV_TRUSTED_KEY

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- the places a case is built in


class Ctx:
    """Lazily built inputs of one case, all under ``root`` (the snapshotted folder)."""

    def __init__(self, root: Path, dataset: Path):
        self.root = root
        self._dataset = dataset

    def path(self, name: str) -> Path:
        return self.root / name

    def bundle(self) -> Path:
        return make_fake_bundle(self.root / "bundle") if not (self.root / "bundle").exists() else self.root / "bundle"

    def manifest(self, mutate: Callable[[dict], None]) -> Path:
        root = self.bundle()
        manifest = json.loads((root / "manifest.json").read_text())
        mutate(manifest)
        (root / "manifest.json").write_text(json.dumps(manifest))
        return root

    def keys(self) -> tuple[Path, Path]:
        private, public = self.root / "keys" / "k.key", self.root / "keys" / "k.pub"
        if not private.exists():
            result = CliRunner().invoke(cli, ["bundle", "keygen", "--out", str(self.root / "keys" / "k")])
            assert result.exit_code == 0, result.output
        return private, public

    def signed(self) -> Path:
        root = self.bundle()
        result = CliRunner().invoke(cli, ["bundle", "sign", str(root), "--key", str(self.keys()[0])])
        assert result.exit_code == 0, result.output
        return root

    def dataset(self, mutate: Callable[[dict, Path], None] | None = None, *, rehash: bool = False) -> Path:
        root = self.root / "data"
        if not root.exists():
            shutil.copytree(self._dataset, root)
        meta = json.loads((root / "meta.json").read_text())
        if mutate is not None:
            mutate(meta, root)
        if rehash:  # what a careful forger (or a buggy importer) does: the hashes match the bad values
            from edgekd.host.data.layout import fingerprint_of

            for rel, entry in meta["arrays"].items():
                entry["sha256"], entry["bytes"] = sha256_file(root / rel), (root / rel).stat().st_size
                entry["shape"] = list(np.load(root / rel, mmap_mode="r").shape)
            meta["fingerprint"] = fingerprint_of(meta["arrays"])
        (root / "meta.json").write_text(json.dumps(meta))
        return root

    def target(self, old: str, new: str) -> Path:
        text = (REPO / "targets" / "rpi4.yaml").read_text()
        assert old in text, old
        path = self.root / "board.yaml"
        path.write_text(text.replace(old, new))
        return path

    def file(self, name: str, data: bytes = b"my thesis, chapter 3\n") -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path


def _edit_array(rel: str, edit: Callable[[np.ndarray], None]) -> Callable[[dict, Path], None]:
    def mutate(meta: dict, root: Path) -> None:
        values = np.load(root / rel).copy()
        edit(values)
        np.save(root / rel, values, allow_pickle=False)
    return mutate


def _set(path: str, value) -> Callable[[dict], None]:
    def mutate(manifest: dict) -> None:
        *parents, last = path.split(".")
        node = manifest
        for key in parents:
            node = node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
    return mutate


_DELETE = object()
_S = "students.lidar"
_A = f"{_S}.artifacts.tflite_int8"


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    argv: Callable[[Ctx], list[str]]
    needles: tuple[str, ...]        # each must appear in the output (file/field/what)


def _b(extra: Callable[[Ctx], None] | None = None, *flags: str) -> Callable[[Ctx], list[str]]:
    """``bundle verify`` on the fake bundle after ``extra`` changed it."""
    def argv(ctx: Ctx) -> list[str]:
        root = ctx.bundle()
        if extra is not None:
            extra(ctx)
        return ["bundle", "verify", str(root), *[f.format(pub=ctx.keys()[1], key=ctx.keys()[0], root=ctx.root)
                                                    for f in flags]]
    return argv


def _m(path: str, value) -> Callable[[Ctx], None]:
    return lambda ctx: ctx.manifest(_set(path, value)) and None


def _tamper(ctx: Ctx) -> None:
    ctx.signed()
    (ctx.bundle() / "lidar/model_int8.tflite").write_bytes(b"\x07" * 100)
    rehash(ctx.bundle(), lambda m: None)


def _outside_symlink(ctx: Ctx) -> None:
    outside = ctx.file("secret.npz", b"outside")
    calib = ctx.bundle() / "lidar" / "calibration.npz"
    calib.unlink()
    calib.symlink_to(outside)
    ctx.manifest(_set(f"{_S}.calibration.sha256", sha256_file(outside)))


BUNDLE_CASES = [
    Case("bundle-artifact-absolute-path", _b(_m(f"{_A}.path", "/etc/passwd")), ("path", "inside the bundle")),
    Case("bundle-artifact-dotdot-path", _b(_m(f"{_A}.path", "../../x.tflite")), ("path", "inside the bundle")),
    Case("bundle-calibration-dotdot", _b(_m(f"{_S}.calibration.file", "../../../../etc/passwd")),
         ("calibration.file", "inside the bundle")),
    Case("bundle-calibration-absolute", _b(_m(f"{_S}.calibration.file", "/etc/passwd")),
         ("calibration.file", "inside the bundle")),
    Case("bundle-calibration-unhashed", _b(_m(f"{_S}.calibration.sha256", _DELETE)), ("calibration.sha256",)),
    Case("bundle-calibration-bad-hash", _b(_m(f"{_S}.calibration.sha256", "abc")), ("calibration.sha256", "hex")),
    Case("bundle-calibration-symlink-outside", _b(_outside_symlink), ("outside the bundle",)),
    Case("bundle-artifact-bad-hash-format", _b(_m(f"{_A}.sha256", "XYZ")), ("sha256", "hex")),
    Case("bundle-artifact-flipped-byte",
         _b(lambda ctx: (ctx.bundle() / "lidar/model_int8.tflite").write_bytes(b"\x01" * 99 + b"\x02")),
         ("was modified", "sha256")),
    Case("bundle-artifact-missing", _b(lambda ctx: (ctx.bundle() / "lidar/model_int8.tflite").unlink()),
         ("missing",)),
    Case("bundle-manifest-not-json", _b(lambda ctx: (ctx.bundle() / "manifest.json").write_text("{oops")),
         ("manifest.json", "not valid JSON")),
    Case("bundle-manifest-missing", _b(lambda ctx: (ctx.bundle() / "manifest.json").unlink()),
         ("manifest.json is missing",)),
    Case("bundle-no-such-folder", lambda ctx: ["bundle", "verify", str(ctx.path("nowhere"))],
         ("no such bundle folder",)),
    Case("bundle-unknown-key", _b(_m("students.lidar.surprise", 1)), ("surprise", "unknown key")),
    Case("bundle-window-zero", _b(_m(f"{_S}.window", 0)), ("window", "positive")),
    Case("bundle-checkpoint-path", _b(_m(f"{_S}.checkpoint.file", "../../teacher.pt")), ("checkpoint.file",)),
    Case("bundle-degraded", _b(lambda ctx: ctx.manifest(lambda m: m.update(degraded=True,
                                                                           degraded_reasons=["lidar: top-2 drop"])))
         , ("DEGRADED", "lidar: top-2 drop", "--allow-degraded")),
    Case("bundle-unsigned-with-key", _b(None, "--key", "{pub}"), ("not signed", "bundle sign")),
    Case("bundle-rehashed-tamper-with-key", _b(_tamper, "--key", "{pub}"), ("signature does not verify",)),
    Case("bundle-signature-garbage", _b(lambda ctx: (ctx.signed() / "signature.json").write_text("[1"),
                                        "--key", "{pub}"), ("signature.json", "not valid JSON")),
    Case("bundle-signature-wrong-algorithm",
         _b(lambda ctx: (ctx.signed() / "signature.json").write_text('{"algorithm": "md5", "signature": "x"}'),
            "--key", "{pub}"), ("algorithm", "unsupported")),
    Case("bundle-signature-other-key",
         _b(lambda ctx: (ctx.signed(), CliRunner().invoke(cli, ["bundle", "keygen", "--out", str(ctx.path("o"))])),
            "--key", "{root}/o.pub"), ("another key",)),
    Case("bundle-key-missing", _b(None, "--key", "{pub}.nope"), ("no such public key",)),
    Case("bundle-key-is-private", _b(None, "--key", "{key}"), ("not a PEM public key",)),
    Case("bundle-key-not-a-key", _b(lambda ctx: ctx.file("notes.pub"), "--key", "{root}/notes.pub"),
         ("not a PEM public key",)),
    Case("sign-missing-key", lambda ctx: ["bundle", "sign", str(ctx.bundle()), "--key", str(ctx.path("none.key"))],
         ("no such private key",)),
    Case("sign-with-public-key", lambda ctx: ["bundle", "sign", str(ctx.bundle()), "--key", str(ctx.keys()[1])],
         ("private key",)),
    Case("sign-tampered-bundle",
         lambda ctx: [(ctx.bundle() / "lidar/model_int8.tflite").write_bytes(b"\x09" * 100) and "bundle", "sign",
                      str(ctx.bundle()), "--key", str(ctx.keys()[0])], ("was modified",)),
    Case("keygen-over-existing", lambda ctx: [ctx.keys() and "bundle", "keygen", "--out", str(ctx.path("keys/k"))],
         ("already exists",)),
]


def _t(old: str, new: str) -> Callable[[Ctx], list[str]]:
    return lambda ctx: ["targets", "show", str(ctx.target(old, new))]


TARGET_CASES = [
    Case("target-staleness-nan", _t("staleness_s: 0.35", "staleness_s: .nan"), ("policy.staleness_s", "finite")),
    Case("target-staleness-inf", _t("staleness_s: 0.35", "staleness_s: .inf"), ("policy.staleness_s", "finite")),
    Case("target-staleness-huge", _t("staleness_s: 0.35", "staleness_s: 100000"), ("policy.staleness_s",)),
    Case("target-latency-nan", _t("latency_budget_ms: ", "latency_budget_ms: .nan #"), ("latency_budget_ms",)),
    Case("target-latency-inf", _t("latency_budget_ms: ", "latency_budget_ms: .inf #"), ("latency_budget_ms",)),
    Case("target-memory-negative", _t("memory_budget_mb: ", "memory_budget_mb: -1 #"), ("memory_budget_mb",)),
    Case("target-power-idle-nan", _t("power_model: {idle_w: ", "power_model: {idle_w: .nan, x: "),
         ("power_model",)),
    Case("target-power-nan", _t("power_model: ", "power_model: {idle_w: .nan, active_w: 5} #"),
         ("power_model.idle_w", "finite")),
    Case("target-power-active-inf", _t("power_model: ", "power_model: {idle_w: 2, active_w: .inf} #"),
         ("power_model.active_w", "finite")),
    Case("target-power-huge", _t("power_model: ", "power_model: {idle_w: 2, active_w: 1.0e+9} #"),
         ("power_model.active_w",)),
    Case("target-int8-drop-nan", _t("int8_max_top2_drop: ", "int8_max_top2_drop: .nan #"), ("int8_max_top2_drop",)),
    Case("target-quality-margin-nan", _t("quality_margin: ", "quality_margin: .nan #"), ("policy.quality_margin",)),
]


def _d(mutate=None, *, rehash: bool = False) -> Callable[[Ctx], list[str]]:
    """``data info`` (the verifying reader) on a copy of the small dataset after ``mutate``."""
    return lambda ctx: ["data", "info", str(ctx.dataset(mutate, rehash=rehash))]


def _drop(key: str):
    return lambda meta, root: meta.pop(key)


def _meta(key: str, value):
    return lambda meta, root: meta.__setitem__(key, value)


def _split_file(meta: dict, root: Path) -> None:
    meta["splits"]["train"]["file"] = "../../../etc/passwd"


DATA_CASES = [
    Case("data-meta-no-window", _d(_drop("window")), ("meta.json", "window")),
    Case("data-meta-no-horizons", _d(_drop("horizons")), ("meta.json", "horizons")),
    Case("data-meta-no-num-beams", _d(_drop("num_beams")), ("meta.json", "num_beams")),
    Case("data-meta-no-modalities", _d(_drop("modalities")), ("meta.json", "modalities")),
    Case("data-meta-no-splits", _d(_drop("splits")), ("meta.json", "splits")),
    Case("data-meta-window-string", _d(_meta("window", "eight")), ("window", "int")),
    Case("data-meta-window-zero", _d(_meta("window", 0)), ("window", "positive")),
    Case("data-num-beams-mismatch", _d(_meta("num_beams", 32)), ("num_beams", "frames/power.npy")),
    Case("data-window-shape-mismatch", _d(lambda m, r: m["modalities"]["lidar"].__setitem__("window_shape", [8, 9])),
         ("modalities.lidar",)),
    Case("data-beam-label-64", _d(_edit_array("frames/beams.npy", lambda a: a.__setitem__(5, 64)), rehash=True),
         ("frames/beams", "rows [5]")),
    Case("data-beam-label-minus-1", _d(_edit_array("frames/beams.npy", lambda a: a.__setitem__(7, -1)),
                                       rehash=True), ("frames/beams", "rows [7]")),
    Case("data-lidar-nan", _d(_edit_array("frames/lidar.npy", lambda a: a.__setitem__((3, 10), np.nan)),
                              rehash=True), ("frames/lidar", "NaN", "rows [3]")),
    Case("data-radar-inf", _d(_edit_array("frames/radar.npy", lambda a: a.__setitem__((4, 1, 0, 0), np.inf)),
                              rehash=True), ("frames/radar", "rows [4]")),
    Case("data-split-file-outside", _d(_split_file), ("splits.train.file", "splits/")),
    Case("data-split-index-outside", _d(_edit_array("splits/test.npy", lambda a: a.__setitem__(0, 10**6)),
                                        rehash=True), ("splits.test", "outside")),
    Case("data-array-path-outside", _d(lambda m, r: m["arrays"].__setitem__("../x.npy", {
        "sha256": "0", "bytes": 1, "shape": [1]})), ("arrays", "inside the dataset")),
    Case("data-meta-not-json", lambda ctx: [ctx.dataset() and (ctx.root / "data/meta.json").write_text("{")
                                            and "data", "info", str(ctx.root / "data")], ("meta.json",)),
    Case("data-array-truncated", lambda ctx: [ctx.dataset() and _truncate(ctx.root / "data/frames/lidar.npy")
                                              and "data", "info", str(ctx.root / "data")],
         ("frames/lidar.npy", "size")),
    Case("data-array-entry-broken", _d(lambda m, r: m["arrays"].__setitem__("frames/beams.npy", 3)),
         ("arrays.frames/beams.npy",)),
]


def _truncate(path: Path) -> bool:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return True


_NAN_LIDAR = _edit_array("frames/lidar.npy", lambda a: a.__setitem__((3, 10), np.nan))

COMMAND_CASES = [
    Case("synth-huge-windows", lambda ctx: ["data", "synth", "--windows", "100000000", "--out", str(ctx.path("ds")),
                                            "--no-progress"], ("--windows", "--force", "GB")),
    Case("synth-zero-windows", lambda ctx: ["data", "synth", "--windows", "0", "--out", str(ctx.path("ds"))],
         ("--windows",)),
    Case("synth-bad-split", lambda ctx: ["data", "synth", "--windows", "50", "--split", "0.5,0.6",
                                         "--out", str(ctx.path("ds"))], ("split", "sum to 1")),
    Case("synth-overwrite-unrelated", lambda ctx: [ctx.file("thesis/ch1.txt") and "data", "synth", "--windows", "50",
                                                   "--out", str(ctx.path("thesis")), "--overwrite"],
         ("thesis", "not an edgekd dataset")),
    Case("drive-minutes-inf", lambda ctx: ["data", "drive", "--minutes", "inf", "--out", str(ctx.path("d.npz"))],
         ("--minutes",)),
    Case("drive-minutes-nan", lambda ctx: ["data", "drive", "--minutes", "nan", "--out", str(ctx.path("d.npz"))],
         ("--minutes",)),
    Case("drive-minutes-negative", lambda ctx: ["data", "drive", "--minutes", "-1", "--out", str(ctx.path("d.npz"))],
         ("--minutes",)),
    Case("drive-overwrite-unrelated", lambda ctx: ["data", "drive", "--minutes", "1", "--overwrite",
                                                   "--out", str(ctx.file("notes.npz"))],
         ("notes.npz", "not an edgekd")),
    Case("drive-out-exists", lambda ctx: ["data", "drive", "--minutes", "1", "--out", str(ctx.file("x.npz"))],
         ("x.npz", "already exists")),
    Case("train-overwrite-unrelated", lambda ctx: ["train", "--model", "lidar_student", "--data", str(ctx.dataset()),
                                                   "--out", str(ctx.file("thesis.pt")), "--overwrite"],
         ("thesis.pt", "not an edgekd checkpoint")),
    Case("train-out-exists", lambda ctx: ["train", "--model", "lidar_student", "--data", str(ctx.dataset()),
                                          "--out", str(ctx.file("old.pt"))], ("old.pt", "already exists")),
    Case("train-out-is-folder", lambda ctx: [ctx.file("runs/a.txt") and "train", "--model", "lidar_student", "--data",
                                             str(ctx.dataset()), "--out", str(ctx.path("runs"))],
         ("runs", "directory")),
    Case("evaluate-nan-frames", lambda ctx: ["evaluate", str(ctx.file("s.pt")), "--split", "train", "--data",
                                             str(ctx.dataset(_NAN_LIDAR, rehash=True))],
         ("frames/lidar", "NaN", "rows [3")),
    Case("export-nan-frames", lambda ctx: ["export", str(ctx.file("s.pt")), "--target", "rpi4", "--data",
                                           str(ctx.dataset(_NAN_LIDAR, rehash=True)), "--out", str(ctx.path("b"))],
         ("frames/lidar", "NaN", "rows [3")),
    Case("export-teacher-checkpoint", lambda ctx: ["export", str(_teacher_checkpoint(ctx)), "--target", "rpi4",
                                                   "--data", str(ctx.dataset()), "--out", str(ctx.path("b"))],
         ("t.pt", "teacher checkpoint", "lidar_teacher", "distill")),
    Case("export-notes-as-checkpoint", lambda ctx: ["export", str(ctx.file("notes.pt")), "--target", "rpi4",
                                                    "--data", str(ctx.dataset()), "--out", str(ctx.path("b"))],
         ("notes.pt", "not a readable PyTorch checkpoint")),
    Case("train-nan-frames", lambda ctx: ["train", "--model", "lidar_student", "--out", str(ctx.path("s.pt")),
                                          "--data", str(ctx.dataset(_NAN_LIDAR, rehash=True))],
         ("frames/lidar", "NaN", "rows [3")),
    Case("distill-overwrite-unrelated", lambda ctx: ["distill", "--method", "kd", "--student", "lidar_student",
                                                     "--teacher", str(ctx.file("t.pt")), "--data", str(ctx.dataset()),
                                                     "--out", str(ctx.file("notes.pt")), "--overwrite"],
         ("notes.pt", "not an edgekd checkpoint")),
]


# ---------------------------------------------------------------- `edgekd run` on a real bundle and drive


def _drive_variant(ctx: Ctx, edit: Callable[[dict], None]) -> Path:
    from support.runtime import short_drive

    with np.load(short_drive(), allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    edit(arrays)
    path = ctx.path("drive.npz")
    np.savez(path, **arrays)
    return path


def _run(drive: Callable[[Ctx], Path] | None = None, *flags: str, bundle: Callable[[Ctx], Path] | None = None):
    def argv(ctx: Ctx) -> list[str]:
        from support.runtime import runtime_bundle, short_drive

        b = bundle(ctx) if bundle is not None else runtime_bundle()
        d = drive(ctx) if drive is not None else short_drive()
        return ["run", "--bundle", str(b), "--replay", str(d), *[f.format(pub=ctx.keys()[1]) for f in flags]]
    return argv


def _degraded_runtime_bundle(ctx: Ctx) -> Path:
    from support.runtime import runtime_bundle

    copy = ctx.path("rb")
    shutil.copytree(runtime_bundle(), copy, copy_function=os.link)  # hard links: no 69 MB copy
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest.update(degraded=True, degraded_reasons=["image: int8 top-2 drop 3.1 points, the target allows 1.0"])
    (copy / "manifest.json").unlink()  # a new file, never written through the hard link
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def _small_images(arrays: dict) -> None:
    arrays["image"] = arrays["image"][:, :, ::2, ::2].copy()


RUN_CASES = [
    Case("run-truncated-drive", _run(lambda ctx: ctx.file("d.npz", b"PK\x03\x04" + b"\x00" * 50)),
         ("d.npz", "not a readable .npz")),
    Case("run-notes-as-drive", _run(lambda ctx: ctx.file("notes.txt")), ("notes.txt", "not an .npz drive")),
    Case("run-pickled-drive", _run(lambda ctx: ctx.file("p.npz", b"\x80\x04K\x01.")), ("p.npz", "not an .npz")),
    Case("run-half-a-drive", _run(lambda ctx: ctx.file("half.npz", _half(ctx))), ("half.npz", "not a readable")),
    Case("run-images-wrong-size", _run(lambda ctx: _drive_variant(ctx, _small_images)),
         ("drive.npz", "image", "(1, 32, 32)")),
    Case("run-time-nan", _run(lambda ctx: _drive_variant(ctx, lambda a: a["time_s"].__setitem__(9, np.nan))),
         ("time_s", "NaN")),
    Case("run-unsigned-with-key", _run(None, "--key", "{pub}"), ("not signed",)),
    Case("run-degraded", _run(None, bundle=_degraded_runtime_bundle), ("DEGRADED", "the target allows 1.0",
                                                                       "--allow-degraded")),
    Case("run-target-nan-staleness", lambda ctx: [*_run()(ctx), "--target", str(ctx.target("staleness_s: 0.35",
                                                                                            "staleness_s: .nan"))],
         ("policy.staleness_s",)),
]


def _pickled_calibration(ctx: Ctx) -> None:
    """A calibration set holding an object array (unpickling it could run code) with its sha256 re-recorded."""
    root = ctx.bundle()
    calib = root / "lidar" / "calibration.npz"
    np.savez(calib, lidar=np.array([{"a": 1}], dtype=object), allow_pickle=True)
    ctx.manifest(_set(f"{_S}.calibration.sha256", sha256_file(calib)))


def _bench(prepare: Callable[[Ctx], None] | None, *flags: str) -> Callable[[Ctx], list[str]]:
    def argv(ctx: Ctx) -> list[str]:
        root = ctx.bundle()
        if prepare is not None:
            prepare(ctx)
        return ["bench", "--target", "x86-ap", "--bundle", str(root), "--no-op-profile", "--idle-seconds", "0",
                *[f.format(pub=ctx.keys()[1], root=ctx.root) for f in flags]]
    return argv


BENCH_CASES = [
    Case("bench-pickled-calibration", _bench(_pickled_calibration), ("calibration.npz", "plain numeric arrays")),
    Case("bench-unsigned-with-key", _bench(None, "--key", "{pub}"), ("not signed", "bundle sign")),
    Case("bench-power-log-missing", _bench(None, "--power-meter", "csv:{root}/no-such-log.csv"),
         ("no-such-log.csv", "--power-meter", "does not exist")),
    Case("bench-no-such-bundle", lambda ctx: ["bench", "--target", "x86-ap", "--bundle", str(ctx.path("nowhere"))],
         ("nowhere", "no such bundle folder")),
]


def _teacher_checkpoint(ctx: Ctx) -> Path:
    """A real (untrained) LiDAR teacher checkpoint, written by edgekd's own writer: the format is ours."""
    from edgekd.host.checkpoint import save_checkpoint
    from edgekd.host.models import create_model

    return save_checkpoint(ctx.path("t.pt"), create_model("lidar_teacher"))


def _half(ctx: Ctx) -> bytes:
    from support.runtime import short_drive

    data = short_drive().read_bytes()
    return data[: len(data) // 2]


ALL_CASES = BUNDLE_CASES + TARGET_CASES + DATA_CASES + COMMAND_CASES + RUN_CASES + BENCH_CASES


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    from support.export import make_dataset

    return make_dataset(tmp_path_factory.mktemp("bad-inputs") / "data", drives=5, frames_per_drive=24)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")}


@pytest.mark.parametrize("case", ALL_CASES, ids=[c.id for c in ALL_CASES])
def test_bad_input_exits_2_naming_the_data(case, tmp_path, small_dataset, monkeypatch):
    monkeypatch.delenv(ENV_TRUSTED_KEY, raising=False)
    root = tmp_path / "case"
    root.mkdir()
    argv = case.argv(Ctx(root, small_dataset))
    before = _snapshot(root)
    result = CliRunner().invoke(cli, argv)
    output = result.output
    assert result.exit_code == 2, f"exit {result.exit_code}: {output}\n{result.exception!r}"
    assert "Traceback" not in output and not isinstance(result.exception, (AssertionError, TypeError, KeyError))
    for needle in case.needles:
        assert needle in output, f"{needle!r} not in: {output}"
    assert "fix:" in output or "Try 'edgekd" in output or "--force" in output, output
    assert _snapshot(root) == before, "a refused command wrote or changed files"


def test_the_suite_covers_60_cases():
    assert len(ALL_CASES) >= 60


# ---------------------------------------------------------------- library-level bad inputs


def test_nan_frames_are_refused_at_write_even_in_the_stored_dtype(tmp_path):
    from edgekd.host.data import write_dataset

    n = 40
    lidar = np.ones((n, 16), np.float32)   # already the stored dtype: the old check was skipped
    lidar[[3, 17]] = np.nan
    power = np.tile(np.linspace(0.1, 1, 8), (n, 1))
    with pytest.raises(EdgekdError, match=r"frames\['lidar'\]: 2 frame\(s\) hold NaN/inf values \(rows \[3, 17\]\)"):
        write_dataset(tmp_path / "ds", frames={"lidar": lidar}, power=power,
                      frame_info={"drive": np.repeat(np.arange(4), 10)}, source="synthetic", config=None, seed=0,
                      window=2, horizons=1)
    assert not (tmp_path / "ds").exists()


def test_run_warns_when_time_runs_backwards(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_TRUSTED_KEY, raising=False)
    ctx = Ctx(tmp_path, tmp_path)

    def backwards(arrays: dict) -> None:
        for key in [k for k in arrays if k not in ("meta", "segment_names")]:
            arrays[key] = arrays[key][:40]
        arrays["time_s"][20] = arrays["time_s"][19] - 0.01   # slightly earlier: refused, counted

    result = CliRunner().invoke(cli, _run(lambda c: _drive_variant(c, backwards))(ctx) + ["--no-plot"])
    assert result.exit_code == 0, result.output
    assert "time runs backwards at 1 frame(s)" in result.output
    assert "sensor frames rejected" in result.output


# ---------------------------------------------------------------- the runtime hub under random pushes


def test_calibration_ranges_pass_a_real_drive_and_refuse_wrong_scales():
    """The ranges a bundle's int8 inputs encode accept every frame of a simulator drive; a float image in
    0..255 and LiDAR at 1e30 or in metres (not m/10) are refused naming the range."""
    from support.runtime import runtime_bundle, short_drive

    students = json.loads((runtime_bundle() / "manifest.json").read_text())["students"]
    ranges = input_ranges(students)
    with np.load(short_drive(), allow_pickle=False) as data:
        frames = {m: data[m] for m in ranges}
    shapes = {m: tuple(students[m]["input_shapes"][m][1:]) for m in ranges}
    hub = SensorHub(shapes, 8, staleness_s=0.35, ranges=ranges)
    for i in range(len(frames["lidar"])):
        for m in ranges:
            assert hub.push(m, frames[m][i], 0.1 * i), (m, i, hub.buffers[m].last_bad_reason)
    t = 0.1 * len(frames["lidar"])
    for modality, frame in (("image", frames["image"][0].astype(np.float32)), ("lidar", np.full(216, 1e30)),
                            ("lidar", frames["lidar"][0] * 10.0 + 20.0)):
        t += 0.1
        assert not hub.push(modality, frame, t)
        assert "outside the range calibration saw" in hub.buffers[modality].last_bad_reason

HUB_SHAPES = {"image": (1, 4, 4), "radar": (2, 3, 3), "lidar": (8,)}
HUB_RANGES = {"image": (0.0, 1.0), "radar": (0.0, 2.0), "lidar": (0.0, 1.0)}
HUB_T, HUB_STALE = 3, 0.35
# the int8 input quantisation a full-int8 export gives each range (image: 1/255 and -128, the uint8 top-bit flip)
HUB_QUANT = {m: QuantSpec.of(np.float32((hi - lo) / 255.0), int(round(-128 - lo * 255.0 / (hi - lo))), np.int8)
             for m, (lo, hi) in HUB_RANGES.items()}
BAD_KINDS = ("nan_channel", "inf", "wrong_shape", "scale_255", "huge", "object")
FRAME_KINDS = ("good", "good", "good", "uint8", "int16", "flat", *BAD_KINDS)
STEPS = (0.1, 0.1, 0.1, 0.05, 0.0, -0.02, -5.0, 0.3, 0.5, 10.0, math.nan, math.inf, 1e9)


def _frame(kind: str, modality: str, rng: np.random.Generator):
    shape = HUB_SHAPES.get(modality, (3,))
    good = rng.uniform(0.1, 0.9, shape).astype(np.float32)
    if kind == "nan_channel":
        good.reshape(-1)[-1] = np.nan          # the last channel only
    elif kind == "inf":
        good.reshape(-1)[0] = np.inf
    elif kind == "wrong_shape":
        good = np.zeros((*shape, 2), np.float32)
    elif kind == "scale_255":
        good = good * 255.0
    elif kind == "huge":
        good = np.full(shape, 1e30, np.float32)
    elif kind == "uint8":
        good = (good * 255).astype(np.uint8)
    elif kind == "int16":
        good = np.ones(shape, np.int16)
    elif kind == "object":
        good = np.array([object()] * int(np.prod(shape)), dtype=object).reshape(shape)
    elif kind == "flat":
        good = good.reshape(-1)
    return good


_OPS = st.one_of(
    st.tuples(st.just("push"), st.sampled_from([*HUB_SHAPES, "thermal"]), st.sampled_from(FRAME_KINDS),
              st.sampled_from(STEPS)),
    st.tuples(st.just("new_track")),
    st.tuples(st.just("health"), st.sampled_from((0.0, 0.2, 0.4, -1.0, math.nan))),
)


@settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(_OPS, max_size=40), seed=st.integers(0, 2**16))
def test_hub_property_random_pushes(ops, seed):
    """No exception escapes; bad frames are refused; a modality is available only from a window of finite,
    in-range frames of one track with no gap over the staleness limit, fresh at the time asked; memory bounded;
    the integer ring holds exactly the float window quantised (TFLite's reference rounding)."""
    rng = np.random.default_rng(seed)
    hub = SensorHub(HUB_SHAPES, HUB_T, staleness_s=HUB_STALE, ranges=HUB_RANGES, quantized=HUB_QUANT)
    sizes = {m: b._frames.nbytes for m, b in hub.buffers.items()}
    accepted: dict[str, list[tuple[float, np.ndarray]]] = {m: [] for m in HUB_SHAPES}
    clock = 0.0
    for op in ops:
        if op[0] == "push":
            _, modality, kind, step = op
            t = clock + step
            if math.isfinite(t) and abs(step) < 1e6:
                clock = t
            ok = hub.push(modality, _frame(kind, modality, rng), t)
            if modality not in HUB_SHAPES or kind in BAD_KINDS or not math.isfinite(t):
                assert ok is False
            if not ok:
                continue
            stored = hub.window_of(modality)[-1].copy()
            lo, hi = HUB_RANGES[modality]
            margin = RANGE_MARGIN * (hi - lo)
            assert np.isfinite(stored).all() and lo - margin <= stored.min() <= stored.max() <= hi + margin
            run = accepted[modality]
            if run and abs(t - run[-1][0]) > HUB_STALE:
                run.clear()
            run.append((t, stored))
        elif op[0] == "new_track":
            hub.new_track()
            for run in accepted.values():
                run.clear()
        else:
            now = hub.now + op[1]
            for modality, health in hub.health(now).items():
                if not health.available:
                    continue
                run = accepted[modality][-HUB_T:]
                assert len(run) == HUB_T, "available without a full window of one track"
                times = [t for t, _ in run]
                assert all(0 < b - a <= HUB_STALE for a, b in zip(times, times[1:]))
                assert math.isfinite(now) and abs(now - times[-1]) <= HUB_STALE
                window = hub.window_of(modality)
                assert np.array_equal(window, np.stack([f for _, f in run])) and np.isfinite(window).all()
                spec = HUB_QUANT[modality]
                assert np.array_equal(hub.quantized_window_of(modality),
                                      quantize(window, spec.scale, int(spec.zero_point)))
    assert {m: b._frames.nbytes for m, b in hub.buffers.items()} == sizes


_ENGINE_OPS = st.one_of(
    st.tuples(st.just("push"), st.sampled_from(["image", "radar", "lidar", "thermal"]),
              st.sampled_from(("good", "good", "good", "good", "nan", "wrong_shape", "scale")),
              st.sampled_from((0.1, 0.1, 0.1, 0.0, -0.05, 0.5, 10.0, math.nan, -100.0))),
    st.tuples(st.just("predict"), st.sampled_from((0.0, 0.0, 0.2, 0.5, math.nan))),
    st.tuples(st.just("new_track")),
    st.tuples(st.just("burst"), st.integers(4, 12)),   # good frames of every sensor, 0.1 s apart
)


@pytest.fixture(scope="module")
def engine_parts():
    from support.runtime import runtime_bundle, short_drive

    from edgekd.device.runtime.engine import Runtime

    runtime = Runtime.from_bundle(runtime_bundle(), "x86-ap", threads=1)
    with np.load(short_drive(), allow_pickle=False) as data:
        frames = {m: data[m][:16].astype(np.float32) / (255.0 if m == "image" else 1.0)
                  for m in runtime.hub.modalities}
    return runtime, frames


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_ENGINE_OPS, max_size=30), seed=st.integers(0, 2**16))
def test_engine_property_random_pushes(engine_parts, ops, seed):
    """The real runtime (three int8 students): no exception escapes push/predict, and ok=True only when every
    modality of the chosen student has a full, fresh, finite window at the time asked; and after any sequence a
    full window of good frames is predicted from (nothing the sequence did blocks the runtime)."""
    runtime, frames = engine_parts
    runtime.hub.reset()
    rng = np.random.default_rng(seed)
    clock = 0.0
    for op in ops:
        if op[0] == "burst":
            for _ in range(op[1]):
                clock += 0.1
                for modality in runtime.hub.modalities:
                    runtime.push(modality, frames[modality][rng.integers(16)], clock)
        elif op[0] == "push":
            _, modality, kind, step = op
            t = clock + step
            if math.isfinite(t):
                clock = t
            frame = frames.get(modality, frames["lidar"])[rng.integers(16)].copy()
            if kind == "nan":
                frame.reshape(-1)[-1] = np.nan
            elif kind == "wrong_shape":
                frame = frame[..., :-1]
            elif kind == "scale":
                frame = frame * 255.0 + 300.0
            runtime.push(modality, frame, t)
        elif op[0] == "new_track":
            runtime.new_track()
        else:
            now = runtime.hub.now + op[1]
            pred = runtime.predict(now)
            if not pred.ok:
                continue
            health = runtime.hub.health(now)
            for modality in runtime.students[pred.student].modalities:
                assert health[modality].available, (pred.student, modality, health[modality].reason)
                assert np.isfinite(runtime.hub.window_of(modality)).all()
    # liveness: whatever came before, a full window of good, fresh frames is predicted from
    clock = max(clock, runtime.hub.now) + 1.0
    for _ in range(runtime.hub.window):
        clock += 0.1
        for modality in runtime.hub.modalities:
            assert runtime.push(modality, frames[modality][rng.integers(16)], clock)
    assert runtime.predict(clock).ok


# ---------------------------------------------------------------- the runtime cases, one by one


def _full(hub: SensorHub, modality: str, start: float, n: int = HUB_T, step: float = 0.1) -> float:
    t = start
    for _ in range(n):
        assert hub.push(modality, np.full(HUB_SHAPES[modality], 0.5, np.float32), t)
        t += step
    return t - step


def test_radar_nan_in_the_second_channel_only_is_refused():
    hub = SensorHub(HUB_SHAPES, HUB_T, staleness_s=HUB_STALE)
    t = _full(hub, "radar", 0.0)
    frame = np.full(HUB_SHAPES["radar"], 0.5, np.float32)
    frame[1, 2, 2] = np.nan
    assert not hub.push("radar", frame, t + 0.1)
    assert not hub.health()["radar"].available and "NaN" in hub.health()["radar"].reason


def test_a_future_frame_does_not_block_later_predictions():
    hub = SensorHub(HUB_SHAPES, HUB_T, staleness_s=HUB_STALE)
    t = _full(hub, "lidar", 0.0)
    assert hub.push("lidar", np.full(8, 0.5, np.float32), 1e9)       # one frame stamped far in the future
    t = _full(hub, "lidar", t + 0.1)                                  # the sensor carries on at its real time
    assert hub.now == pytest.approx(t) and hub.health()["lidar"].available
    hub.new_track()
    _full(hub, "lidar", 0.0)                                          # a new track may restart its clock
    assert hub.health()["lidar"].available


def test_nan_duplicate_and_backwards_timestamps():
    hub = SensorHub(HUB_SHAPES, HUB_T, staleness_s=HUB_STALE)
    t = _full(hub, "lidar", 0.0)
    frame = np.full(8, 0.5, np.float32)
    assert not hub.push("lidar", frame, math.nan) and "not finite" in hub.buffers["lidar"].last_bad_reason
    assert not hub.health(t)["lidar"].available                      # a NaN-stamped sensor is not "never stale"
    assert hub.push("lidar", frame, t + 0.1)
    assert not hub.push("lidar", frame, t + 0.1)                      # duplicate
    assert not hub.push("lidar", frame, t + 0.05)                     # backwards
    assert "out of order" in hub.buffers["lidar"].last_bad_reason
    assert hub.health(t + 0.1)["lidar"].available                     # refused, but the window stays good
    assert not hub.health(math.nan)["lidar"].available


def test_a_window_never_spans_a_gap_longer_than_the_staleness_limit():
    hub = SensorHub(HUB_SHAPES, HUB_T, staleness_s=HUB_STALE)
    t = _full(hub, "lidar", 0.0)
    assert hub.push("lidar", np.full(8, 0.5, np.float32), t + 10.0)  # after a 10 s gap
    health = hub.health()["lidar"]
    assert not health.available and "warming up (1/" in health.reason
    assert hub.buffers["lidar"].restarts == 1


def test_float_images_in_0_255_and_lidar_at_1e30_are_refused():
    hub = SensorHub(HUB_SHAPES, HUB_T, staleness_s=HUB_STALE, ranges=HUB_RANGES)
    assert not hub.push("image", np.full(HUB_SHAPES["image"], 200.0, np.float32), 0.0)
    assert "wrong scale" in hub.buffers["image"].last_bad_reason
    assert not hub.push("lidar", np.full(8, 1e30, np.float32), 0.0)
    assert hub.push("image", np.full(HUB_SHAPES["image"], 200, np.uint8), 0.1)   # uint8 is scaled by 1/255
