"""Independent training jobs side by side: a pool of fresh processes, one torch thread each.

For hosts with more cores than one small model can use. On the 2-core host it does not pay: the
demo's image teacher and radar student train ~1.8x faster on two threads than on one, so side by
side the demo took 16.9 min against 14.0 in turn (BENCHMARKS.md, "The demo in 10 minutes"). A job
is a module-level function with picklable arguments that returns a JSON-ready dict; the parent
shows one progress bar in epochs, read from the JSONL log each trainer appends a line to per
finished epoch, and names each job as it finishes.

``workers=1`` runs the jobs in this process, in order, with their own progress bars.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgekd.host.data.workers import die_with_parent, one_thread_children, stop_pool, workers_ignore_ctrl_c

TRAINER_NAME = "edgekd-train"   # a worker's process name once its death signal is armed


@dataclasses.dataclass(frozen=True)
class Job:
    """One training run: ``fn(**kwargs)`` in a worker; ``epochs`` and ``log`` drive the progress bar."""

    name: str
    fn: Callable[..., dict]
    kwargs: dict[str, Any]
    epochs: int = 1
    log: Path | None = None      # the trainer's JSONL epoch log (one line per finished epoch)
    cost: float = 1.0            # expected run time, any unit: the costliest jobs start first
    about: str = ""              # what the console says when the job starts


def run_jobs(jobs: Sequence[Job], workers: int, *, progress: bool = True, desc: str = "training",
             echo: Callable[[str], None] = print) -> dict[str, dict]:
    """Run every job; returns ``{name: result}`` with ``result["seconds"]`` the job's own wall time.

    A failing job stops the rest (queued jobs are cancelled) and its error is raised here.
    """
    if workers <= 1 or len(jobs) <= 1:
        in_turn: dict[str, dict] = {}
        for job in jobs:
            echo(f"  {job.about or job.name}")
            in_turn[job.name] = _timed(job.fn, job.kwargs)
        return in_turn
    from tqdm.auto import tqdm

    order = sorted(jobs, key=lambda job: -job.cost)   # longest first: the last job to start is a short one
    results: dict[str, dict] = {}
    ctx = multiprocessing.get_context("spawn")
    bar = tqdm(total=sum(job.epochs for job in jobs), desc=desc, unit="epoch", disable=not progress)
    with one_thread_children():   # the pool starts its workers on submit: they inherit it
        pool = concurrent.futures.ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx,
                                                      initializer=_worker_init, initargs=(os.getpid(),))
        try:
            for job in order:
                echo(f"  {job.about or job.name}")
            with workers_ignore_ctrl_c():
                futures = {pool.submit(_timed, job.fn, job.kwargs): job for job in order}
            pending = set(futures)
            while pending:
                done, pending = concurrent.futures.wait(pending, timeout=1.0,
                                                        return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    job = futures[future]
                    results[job.name] = future.result()   # a job's error is raised here
                    bar.clear()
                    echo(f"  {job.name} finished in {results[job.name]['seconds']:.0f} s")
                _show(bar, jobs, results)
        except BaseException:
            stop_pool(pool)   # each running job may have most of an hour to go; it leaves a checkpoint
            raise
        finally:
            bar.close()
    pool.shutdown()
    return results


def _show(bar: Any, jobs: Sequence[Job], results: dict[str, dict]) -> None:
    """Epochs done: a finished job counts in full, a running one by its log's lines (each log read once)."""
    running = {job.name: _lines(job.log) for job in jobs if job.name not in results}
    done = sum(min(job.epochs, running[job.name]) if job.name in running else job.epochs for job in jobs)
    bar.update(done - bar.n)
    bar.set_postfix_str(", ".join(name for name, lines in running.items() if lines))


def _lines(path: Path | None) -> int:
    if path is None:
        return 0
    try:
        with open(path, "rb") as handle:
            return sum(1 for _ in handle)
    except OSError:   # not written yet
        return 0


def _timed(fn: Callable[..., dict], kwargs: dict[str, Any]) -> dict:
    start = time.perf_counter()
    result = dict(fn(**kwargs))
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def _worker_init(parent_pid: int) -> None:
    """A training worker: one torch thread, dies with the parent, leaves Ctrl-C to it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent_pid, TRAINER_NAME)
    import torch

    torch.set_num_threads(1)
