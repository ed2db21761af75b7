"""Running a batch on a Dask cluster: ``--scheduler tcp://HOST:8786`` (extra ``bdekit[cluster]``).

The jobs are the same function as on the local pool, :func:`~bdekit.batch.worker.run_job`,
submitted as Dask tasks with their :class:`~bdekit.batch.spec.JobSpec` and
:class:`~bdekit.batch.spec.BatchOptions` (paths and flags: no secret travels to the scheduler;
each worker reads the keys from the keyring's path). Task keys are ``bdekit-job-<n>-<run>``:
a number, never a file or key name. The workers must see the same paths as the command
(shared storage: NFS, SMB, a SAN) and have bdekit installed.

One volume is one task (a volume is I/O bound: it is not split across machines); many
volumes are spread over the workers. When a worker is lost, the scheduler runs its tasks
again on another worker, where the job, started again in the same run, resumes from its
journal. A task the scheduler gives up on (``KilledWorker`` after repeated losses) is a
failed job with that reason.

Cluster set-up (one scheduler, any number of workers; each worker process runs as many jobs
at once as it has threads)::

    dask scheduler --host 0.0.0.0 --port 8786
    dask worker tcp://SCHEDULER:8786 --nthreads 1 --nworkers 2
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from bdekit.batch.spec import BatchOptions, JobResult, JobSpec, failed_result
from bdekit.batch.worker import run_job
from bdekit.errors import EXIT_OTHER, SourceError, UsageError

log = logging.getLogger(__name__)

#: seconds between two progress ticks
TICK = 0.5
#: seconds to wait for the scheduler to answer
CONNECT_TIMEOUT = 20


def _distributed() -> Any:
    """The ``distributed`` module (an optional dependency: imported when a batch uses it)."""
    try:
        return importlib.import_module("distributed")
    except ImportError:
        raise UsageError("--scheduler needs Dask: pip install 'bdekit[cluster]' (installs "
                         "dask[distributed])") from None


class DaskCluster:
    """The Dask scheduler at ``address`` and its workers (see the module docstring)."""

    def __init__(self, address: str) -> None:
        self.address = address

    @property
    def description(self) -> str:
        return f"dask {self.address}"

    def connect(self) -> Any:
        distributed = _distributed()
        try:
            return distributed.Client(self.address, timeout=CONNECT_TIMEOUT,
                                      set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise SourceError(f"cannot reach the Dask scheduler: {exc}",
                              path=self.address) from None

    def run(self, jobs: Sequence[JobSpec], opts: BatchOptions, tick: Callable[[], None],
            done: Callable[[JobSpec, JobResult], None]) -> None:
        """Submit every job; ``done`` is called as each finishes, ``tick`` twice a second."""
        client = self.connect()
        token = opts.run_id[:8] or "run"
        futures: dict[Any, JobSpec] = {}
        try:
            for n, job in enumerate(jobs):
                future = client.submit(run_job, job, opts, key=f"bdekit-job-{n:05d}-{token}",
                                       pure=False)
                futures[future] = job
            log.info("%d job(s) submitted to %s", len(futures), self.address)
            while futures:
                finished = [f for f in futures if f.done()]
                if not finished:
                    time.sleep(TICK)
                tick()
                for future in finished:
                    job = futures.pop(future)
                    done(job, _result(job, future))
        except BaseException:
            client.cancel(list(futures))
            raise
        finally:
            client.close()


def _result(job: JobSpec, future: Any) -> JobResult:
    try:
        result = future.result()
    except Exception as exc:  # noqa: BLE001 - KilledWorker, a cancelled task...: one failed job
        return failed_result(job, EXIT_OTHER, f"Dask: {type(exc).__name__}: {exc}")
    if not isinstance(result, JobResult):
        return failed_result(job, EXIT_OTHER, f"Dask: unexpected task result "
                                              f"{type(result).__name__}")
    return result


__all__ = ["DaskCluster"]
