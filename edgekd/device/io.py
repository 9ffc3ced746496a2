"""Atomic file and directory writes, hashing.

Nothing a command writes may be left half-written: write into a temporary
sibling, then rename over the destination (atomic on POSIX filesystems).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from edgekd.device.errors import EdgekdError


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        _apply_umask(Path(tmp), 0o666)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    # numpy scalars/arrays without importing numpy at module import time
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _umask() -> int:
    # os.umask can only be read by setting it; put it straight back.
    current = os.umask(0o022)
    os.umask(current)
    return current


def _apply_umask(path: Path, mode: int) -> None:
    # mkstemp/mkdtemp create 0600/0700 whatever the umask; a bundle must be readable by the
    # account that runs the board service, so give the final file the mode open() would have.
    os.chmod(path, mode & ~_umask())


def check_replaceable(dest: str | os.PathLike, *, overwrite: bool, marker: str | None,
                      what: str = "output directory") -> Path:
    """Fail (before any work) unless ``dest`` may be written: absent, or replaceable with ``overwrite``.

    With ``overwrite`` only an empty directory, or one holding ``marker`` (the file every
    output of this kind contains, e.g. ``manifest.json`` for a bundle), is replaced: a
    mistyped ``--out`` must never delete a folder of unrelated files.
    """
    dest = Path(dest)
    if not dest.exists() and not dest.is_symlink():
        return dest
    if not overwrite:
        raise EdgekdError(f"{what} already exists", file=dest,
                          fix="choose another --out or pass --overwrite to replace it")
    if dest.is_dir() and not dest.is_symlink():
        if not any(dest.iterdir()) or (marker is not None and (dest / marker).is_file()):
            return dest
        kind = f"it has no {marker}" if marker else "it is not empty"
        raise EdgekdError(f"refusing to replace {dest}: it does not look like an edgekd {what} ({kind})",
                          file=dest, field="--out",
                          fix="choose another --out; --overwrite only replaces edgekd's own output of this kind")
    raise EdgekdError(f"refusing to replace {dest}: it is a file, not an edgekd {what}", file=dest, field="--out",
                      fix="choose another --out")


def check_replaceable_file(dest: str | os.PathLike, *, overwrite: bool, is_own: Callable[[Path], bool],
                           what: str = "output file") -> Path:
    """The single-file twin of :func:`check_replaceable`: an existing file is replaced only with
    ``overwrite`` and only when ``is_own(path)`` recognises it as edgekd's own output of this kind."""
    dest = Path(dest)
    if not dest.exists():
        return dest
    if dest.is_dir():
        raise EdgekdError(f"{what} is a directory", file=dest, field="--out", fix="name a file for --out")
    if not overwrite:
        raise EdgekdError(f"{what} already exists", file=dest,
                          fix="choose another --out or pass --overwrite to replace it")
    if not is_own(dest):
        raise EdgekdError(f"refusing to replace {dest}: it is not an edgekd {what}", file=dest, field="--out",
                          fix="choose another --out; --overwrite only replaces edgekd's own output of this kind")
    return dest


@contextlib.contextmanager
def atomic_directory(dest: str | os.PathLike, *, overwrite: bool = False,
                     what: str = "output directory", marker: str | None = None) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``dest`` only if the block succeeds.

    ``dest`` existing is an error unless ``overwrite``, and then only an empty directory or
    one holding ``marker`` is replaced (see :func:`check_replaceable`), after the new one is
    complete. Stale ``.partial`` siblings of an earlier killed run are removed first.
    """
    dest = check_replaceable(dest, overwrite=overwrite, marker=marker, what=what)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{os.getpid()}-", suffix=".partial", dir=dest.parent))
    try:
        yield tmp
        _apply_umask(tmp, 0o777)
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_partials(dest: Path) -> list[Path]:
    """Delete ``.<name>.<pid>-*.partial`` / ``.<name>.old-<pid>`` siblings left by a killed run.

    Each leftover carries its writer's PID; only those whose writer is gone are removed, so a
    concurrent run is never disturbed (a leftover without a PID is removed after an hour).
    """
    removed = []
    for leftover in dest.parent.glob(f".{dest.name}.*"):
        match = re.fullmatch(rf"\.{re.escape(dest.name)}\.(?:(\d+)-\w+\.partial|old-(\d+)|\w+\.partial)", leftover.name)
        if not match or not leftover.is_dir():
            continue
        pid = match.group(1) or match.group(2)
        if pid is None and time.time() - leftover.stat().st_mtime < 3600:
            continue
        if pid is not None and _pid_alive(int(pid)):
            continue
        shutil.rmtree(leftover, ignore_errors=True)
        removed.append(leftover)
    return removed


@contextlib.contextmanager
def scratch_directory(prefix: str) -> Iterator[Path]:
    """A temporary folder ``$TMPDIR/<prefix><pid>-*``, removed on exit; first removes the folders of this
    prefix whose process is gone (a SIGKILLed run cannot clean up after itself)."""
    root = Path(tempfile.gettempdir())
    for leftover in root.glob(f"{prefix}*"):
        match = re.fullmatch(rf"{re.escape(prefix)}(\d+)-\w+", leftover.name)
        if match and leftover.is_dir() and not _pid_alive(int(match.group(1))):
            shutil.rmtree(leftover, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f"{prefix}{os.getpid()}-") as scratch:
        yield Path(scratch)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
