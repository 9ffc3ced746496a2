"""Child processes that die with their parent and leave Ctrl-C to it (``data synth`` workers, the converter).

Linux only where it matters (``prctl``); elsewhere the helpers are no-ops and a child ends when its
pipes close. A child names itself once its death signal is armed, so ``ps`` (and the SIGKILL tests)
can tell an armed child from one still starting up.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

WORKER_NAME = "edgekd-synth"   # the render workers' process name once their death signal is armed


THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def one_thread_children():
    """BLAS/OpenMP limited to one thread in the environment child processes inherit when they start
    (the parent's own value comes back after): small per-child work gains nothing from more threads,
    and on a busy machine the extra ones spin."""
    saved = {k: os.environ.get(k) for k in THREAD_VARS}
    os.environ.update({k: "1" for k in THREAD_VARS})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def workers_ignore_ctrl_c():
    """SIGINT ignored while child processes are started (an ignored signal stays ignored across exec, so a
    Ctrl-C during a worker's start-up imports prints no traceback); the parent's handler comes back after."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def stop_pool(pool: Any) -> None:
    """Ctrl-C or an error in the parent of a ``ProcessPoolExecutor``: drop its queued work and kill its
    running workers (render workers only fill memory; training workers leave resumable checkpoints).

    Not ``shutdown(wait=True, cancel_futures=True)`` alone: it waits for every running item to finish,
    and with the queue cancelled it can wait forever (cpython#94440).
    """
    # pid -> Process; no public accessor before Python 3.14's terminate_workers()
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.kill()
    for process in processes:
        process.join(timeout=10)


def worker_init(parent_pid: int) -> None:
    """A render worker: dies with the parent, and leaves Ctrl-C to it (the parent cancels the queue;
    a worker interrupted mid-drive would only print a traceback)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent_pid, WORKER_NAME)


def die_with_parent(parent_pid: int, name: str | None = None) -> None:
    """In a child process: have the kernel SIGKILL it when ``parent_pid`` dies (even by SIGKILL).

    Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)``; a parent already gone by the time this runs
    makes the child exit at once. Elsewhere a no-op (the child ends when its pipes close).
    Used by the ``data synth`` workers and the export converter child. ``name`` (15 bytes at most)
    then becomes the process name (``ps``, ``/proc/PID/comm``): a child so named is armed.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig, pr_set_name = 1, 15
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # no prctl in this libc: nothing to arm
        return
    if os.getppid() != parent_pid:
        os._exit(1)
    if name:
        libc.prctl(pr_set_name, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
