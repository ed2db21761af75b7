"""Running a batch on this machine: a pool of worker processes (no extra dependency).

:class:`LocalPool` runs :func:`~bdekit.batch.worker.run_job` in ``workers`` processes
(``spawn`` start method: a fresh interpreter, no thread or lock inherited from the command).
Each worker process

* dies with the command (Linux ``PR_SET_PDEATHSIG``, SIGTERM: its job keeps a last journal
  checkpoint), so a batch killed even with SIGKILL leaves no orphan writing behind it, and a
  resumed batch is alone with its outputs;
* ignores SIGINT: on Ctrl-C the command stops its workers with SIGTERM, which the decrypt
  loop turns into a clean interruption (journal kept, resumable);
* logs to stderr at the command's level.

A worker process that dies (killed, out of memory) breaks the pool; the jobs that had not
finished are run again in a new pool (they resume from their journal, as on a lost Dask
worker), up to :data:`MAX_POOLS` pools.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from bdekit.batch.spec import BatchOptions, JobResult, JobSpec, failed_result
from bdekit.batch.worker import run_job
from bdekit.errors import EXIT_OTHER
from bdekit.logs import log_to_stderr

log = logging.getLogger(__name__)

#: pools started in one batch before the jobs left are recorded as failed
MAX_POOLS = 3
#: seconds between two progress ticks
TICK = 0.5
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """Linux: SIGTERM this process when its parent dies (a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the call
        os.kill(os.getpid(), signal.SIGTERM)


def _init_worker(parent: int, level: int) -> None:
    """In each worker process: die with the command, ignore SIGINT, log to stderr."""
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    log_to_stderr(level)


def _run_in_worker(job: JobSpec, opts: BatchOptions, parent: int) -> JobResult:
    """:func:`run_job` in a worker process. The process ends, rather than take the next job
    queued for it, when the command is gone or stopped it (SIGTERM: the job's journal is
    saved by then)."""
    if os.getppid() != parent:
        os._exit(1)
    try:
        return run_job(job, opts)
    except KeyboardInterrupt:
        os._exit(130)


class LocalPool:
    """``workers`` processes on this machine (see the module docstring)."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)

    @property
    def description(self) -> str:
        return f"local, {self.workers} worker process(es)"

    def run(self, jobs: Sequence[JobSpec], opts: BatchOptions, tick: Callable[[], None],
            done: Callable[[JobSpec, JobResult], None]) -> None:
        """Run every job; ``done`` is called as each finishes, ``tick`` twice a second."""
        pending = list(jobs)
        for attempt in range(1, MAX_POOLS + 1):
            if not pending:
                return
            if attempt > 1:
                log.warning("a worker process died: running the %d unfinished job(s) again",
                            len(pending))
            pending = self._pool(pending, opts, tick, done)
        for job in pending:
            done(job, failed_result(job, EXIT_OTHER, "its worker process died "
                                                     f"{MAX_POOLS} times"))

    def _pool(self, jobs: list[JobSpec], opts: BatchOptions, tick: Callable[[], None],
              done: Callable[[JobSpec, JobResult], None]) -> list[JobSpec]:
        """One pool over ``jobs``; returns the jobs a broken pool left unfinished."""
        level = logging.getLogger("bdekit").getEffectiveLevel()
        pool = ProcessPoolExecutor(max_workers=min(self.workers, len(jobs)),
                                   mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(os.getpid(), level))
        left: list[JobSpec] = []
        try:
            futures: dict[Future[JobResult], JobSpec] = {
                pool.submit(_run_in_worker, job, opts, os.getpid()): job for job in jobs}
            while futures:
                finished, _running = wait(futures, timeout=TICK, return_when=FIRST_COMPLETED)
                tick()
                for future in finished:
                    job = futures.pop(future)
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        left.append(job)
                        continue
                    except Exception as exc:  # noqa: BLE001 - recorded; the others go on
                        result = failed_result(job, EXIT_OTHER, f"internal error: "
                                                                f"{type(exc).__name__}: {exc}")
                    done(job, result)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            stop_workers()
            raise
        pool.shutdown(wait=True)
        return left


def stop_workers() -> None:
    """SIGTERM the worker processes of this process (their jobs keep their journal)."""
    for child in multiprocessing.active_children():
        child.terminate()
    for child in multiprocessing.active_children():
        child.join(timeout=30)


__all__ = ["LocalPool", "stop_workers"]
