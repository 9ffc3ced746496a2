"""Outputs are never lost or half-written: --overwrite replaces only edgekd's own output of the same
kind, files come out with the umask's mode, and leftovers of a killed run are cleared by the next one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgekd.device.errors import EdgekdError
from edgekd.device.io import (
    atomic_directory,
    atomic_write_text,
    check_replaceable,
    check_replaceable_file,
    remove_stale_partials,
)


def _notes(folder: Path) -> Path:
    folder.mkdir()
    (folder / "thesis.tex").write_text("three years of work")
    return folder


def test_overwrite_refuses_a_folder_of_unrelated_files(tmp_path):
    notes = _notes(tmp_path / "notes")
    with pytest.raises(EdgekdError) as err:
        with atomic_directory(notes, overwrite=True, what="bundle directory", marker="manifest.json") as tmp:
            (tmp / "manifest.json").write_text("{}")
    assert "manifest.json" in str(err.value) and str(err.value.file) == str(notes)
    assert (notes / "thesis.tex").read_text() == "three years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]  # no .partial left behind


def test_overwrite_replaces_own_output_and_empty_folders(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("old")
    with atomic_directory(bundle, overwrite=True, marker="manifest.json") as tmp:
        (tmp / "manifest.json").write_text("new")
    assert (bundle / "manifest.json").read_text() == "new"
    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_directory(empty, overwrite=True, marker="manifest.json") as tmp:
        (tmp / "manifest.json").write_text("x")
    assert (empty / "manifest.json").is_file()


def test_without_a_marker_only_empty_folders_are_replaced(tmp_path):
    notes = _notes(tmp_path / "notes")
    with pytest.raises(EdgekdError):
        check_replaceable(notes, overwrite=True, marker=None)
    with pytest.raises(EdgekdError, match="already exists"):
        check_replaceable(notes, overwrite=False, marker=None)
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    with pytest.raises(EdgekdError, match="is a file"):
        check_replaceable(a_file, overwrite=True, marker="meta.json")


def test_single_file_outputs_replace_only_their_own_kind(tmp_path):
    essay = tmp_path / "essay.pt"
    essay.write_text("not a checkpoint")
    with pytest.raises(EdgekdError, match="already exists"):
        check_replaceable_file(essay, overwrite=False, is_own=lambda p: True, what="checkpoint")
    with pytest.raises(EdgekdError, match="not an edgekd checkpoint"):
        check_replaceable_file(essay, overwrite=True, is_own=lambda p: False, what="checkpoint")
    assert check_replaceable_file(essay, overwrite=True, is_own=lambda p: True) == essay
    assert essay.read_text() == "not a checkpoint"  # checking never touches the file


def test_outputs_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "report.md", "x")
        with atomic_directory(tmp_path / "bundle") as tmp:
            atomic_write_text(tmp / "manifest.json", "{}")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "bundle").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "bundle" / "manifest.json").stat().st_mode & 0o777 == 0o644


def test_leftovers_of_a_killed_writer_are_removed_by_the_next_run(tmp_path):
    dest = tmp_path / "bundle"
    # A real process that wrote a .partial folder and was SIGKILLed before renaming it.
    code = ("import os, sys, tempfile, pathlib; d = tempfile.mkdtemp(prefix=f'.bundle.{os.getpid()}-', "
            "suffix='.partial', dir=sys.argv[1]); pathlib.Path(d, 'model.tflite').write_bytes(b'x' * 100); "
            "print(d, flush=True); os.kill(os.getpid(), 9)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    leftover = Path(proc.stdout.strip())
    assert proc.returncode == -9 and leftover.is_dir()
    mine = Path(f"{tmp_path}/.bundle.{os.getpid()}-live.partial")  # a live writer's folder stays
    mine.mkdir()
    assert remove_stale_partials(dest) == [leftover]
    assert mine.is_dir()
    with atomic_directory(dest) as tmp:
        (tmp / "manifest.json").write_text("{}")
    assert not leftover.exists() and dest.is_dir()


def test_scratch_directory_removes_the_leftovers_of_dead_runs_only(tmp_path, monkeypatch):
    import tempfile

    from edgekd.device.io import scratch_directory

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)   # that process has exited: its PID names no live process (barring reuse)
    stale = tmp_path / f"edgekd-export-{dead_pid}-abc123"
    live = tmp_path / f"edgekd-export-{os.getppid()}-def456"   # a concurrent run: never touched
    other = tmp_path / "edgekd-export-logs"                      # not a scratch folder
    for folder in (stale, live, other):
        (folder / "work").mkdir(parents=True)
    with scratch_directory("edgekd-export-") as scratch:
        assert scratch.is_dir() and scratch.name.startswith(f"edgekd-export-{os.getpid()}-")
        assert not stale.exists() and live.exists() and other.exists()
    assert not scratch.exists()
