"""Waiting for a command's child processes and checking that they die with it (SIGKILL tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil


def wait_for_children(parent: subprocess.Popen, match: str, timeout_s: float = 90,
                      armed: str | None = None) -> list[psutil.Process]:
    """The children whose command line contains ``match``; with ``armed``, once every one of them has taken
    that process name (edgekd's children rename themselves right after arming their death signal, so a
    child still importing at kill time is not mistaken for one that outlives its parent)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert parent.poll() is None, "the parent ended before its children started"
        found = []
        for child in psutil.Process(parent.pid).children(recursive=True):
            try:
                if match in " ".join(child.cmdline()):
                    found.append(child)
            except psutil.NoSuchProcess:
                continue
        if found and (armed is None or all(_name(child) == armed for child in found)):
            return found
        time.sleep(0.2)
    raise AssertionError(f"no child matching {match!r}{f' named {armed!r}' if armed else ''} within {timeout_s} s")


def _name(child: psutil.Process) -> str | None:
    try:
        return child.name()
    except psutil.NoSuchProcess:
        return None


def kill_and_check(parent: subprocess.Popen, children: list[psutil.Process], within_s: float = 5.0) -> float:
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(timeout=10)
    start = time.monotonic()
    _, alive = psutil.wait_procs(children, timeout=within_s)
    for proc in alive:  # clean up before failing, so the test never leaves them behind either
        proc.kill()
    assert not alive, f"{len(alive)} child process(es) outlived their SIGKILLed parent by {within_s} s"
    return time.monotonic() - start
