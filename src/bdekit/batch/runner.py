"""Running a batch: the jobs, the output directory, what is already done, progress, summary.

:func:`load_jobs` reads the jobs (a directory of evidence: :mod:`~bdekit.batch.discover`; a
job list: :mod:`~bdekit.batch.joblist`). :func:`run_batch` then

1. prepares the output directory (created 0700) and refuses what would be unsafe: an output
   directory inside the evidence directory, an input inside the output directory, a
   ``--report`` that is an input, or the leftovers of an earlier batch without ``--resume``
   (continue it) or ``--force`` (redo it);
2. with ``--resume``, takes the result of every job whose ``report.json`` says complete (its
   output still there) from that report, and runs the others (an interrupted one continues
   from its journal);
3. runs the jobs on a backend (:class:`~bdekit.batch.local.LocalPool` or
   :class:`~bdekit.batch.cluster.DaskCluster`) with a live progress display on stderr (jobs
   and bytes: the bytes of running jobs are read from their journals, so this works the same
   for remote workers on shared storage) and a line per finished job;
4. writes ``summary.json`` and ``summary.csv`` (:mod:`~bdekit.batch.summary`), also when
   interrupted (unfinished jobs are then failed with "interrupted").
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from tqdm import tqdm

from bdekit.batch.discover import discover
from bdekit.batch.joblist import read_job_list
from bdekit.batch.spec import (
    FAILED,
    REPORT_FORMAT,
    BatchOptions,
    JobResult,
    JobSpec,
    failed_result,
    job_paths,
)
from bdekit.batch.summary import BatchSummary, write_summary
from bdekit.batch.worker import make_private_dir
from bdekit.errors import EXIT_OTHER, NotBitLockerError, OutputExistsError, UsageError
from bdekit.pipeline import decrypt as decrypt_mod

log = logging.getLogger(__name__)


class Backend(Protocol):
    """Where the jobs run (the local pool, a Dask cluster)."""

    @property
    def description(self) -> str: ...

    def run(self, jobs: Sequence[JobSpec], opts: BatchOptions, tick: Callable[[], None],
            done: Callable[[JobSpec, JobResult], None]) -> None: ...


def _inside(path: str, directory: str) -> bool:
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def load_jobs(source: str, *, mode: str, output_dir: str) -> list[JobSpec]:
    """The jobs of a directory of evidence or of a job list."""
    if os.path.isdir(source):
        if _inside(output_dir, source):
            raise UsageError("the output directory is inside the evidence directory: choose "
                             "one outside it (evidence stays read-only)", path=output_dir)
        jobs = discover(source, repair=mode == "repair", exclude=[output_dir])
        if not jobs:
            raise NotBitLockerError("no BitLocker volume found in any image of this directory "
                                    "(`bdekit scan IMAGE` shows what an image holds)",
                                    path=source)
        return jobs
    return read_job_list(source)


def _prepare(jobs: Sequence[JobSpec], opts: BatchOptions, report_path: str | None) -> None:
    inputs = {os.path.realpath(f) for job in jobs for f in job.files()}
    for path in sorted(inputs):
        if _inside(path, opts.output_dir):
            raise UsageError(f"input {path} lies inside the output directory",
                             path=opts.output_dir)
    if report_path and os.path.realpath(report_path) in inputs:
        raise OutputExistsError("refusing to write the report over an input", path=report_path)
    parent = os.path.dirname(os.path.abspath(opts.output_dir))
    if not os.path.isdir(parent):
        raise UsageError(f"the directory {parent} does not exist", path=opts.output_dir)
    make_private_dir(opts.output_dir)
    if opts.resume or opts.force:
        return
    for job in jobs:
        directory = job_paths(opts.output_dir, job.name).directory
        if os.path.isdir(directory) and os.listdir(directory):
            raise OutputExistsError("holds the outputs of an earlier batch: use --resume to "
                                    "continue it or --force to redo it", path=directory)


def previous_result(job: JobSpec, opts: BatchOptions) -> JobResult | None:
    """The result of ``job`` from its report when an earlier run finished it (and its output
    is still there); None when it must run."""
    paths = job_paths(opts.output_dir, job.name)
    try:
        with open(paths.report, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT \
            or not data.get("complete") or not isinstance(data.get("result"), dict):
        return None
    result = JobResult.from_json(data["result"])
    same = (result.input, result.partition, result.offset) == \
        (job.input, job.partition, job.offset)
    if not same or not result.complete or not os.path.isfile(paths.output):
        return None
    if os.path.exists(paths.journal):  # killed between its report and the journal's removal
        os.unlink(paths.journal)
    return result


class _Progress:
    """Progress bars (jobs, bytes) on stderr, or one line per finished job."""

    def __init__(self, jobs: Sequence[JobSpec], opts: BatchOptions, finished: int,
                 total: int, enabled: bool, announce: Callable[[str], None] | None) -> None:
        self.opts = opts
        self.running = {job.name: job for job in jobs}
        self.total = total
        self.count = finished
        self.announce = announce
        self.bytes_done = 0
        self.partial: dict[str, tuple[int, int]] = {}  # name -> (journal mtime, bytes done)
        self.jobs_bar: Any = None
        self.bytes_bar: Any = None
        if enabled:
            self.jobs_bar = tqdm(total=total, initial=finished, desc="jobs", unit="job",
                                 position=0, file=sys.stderr, leave=False)
            self.bytes_bar = tqdm(total=sum(j.size_hint for j in jobs), desc="bytes",
                                  unit="B", unit_scale=True, unit_divisor=1024, position=1,
                                  file=sys.stderr, leave=False)

    def tick(self) -> None:
        if self.bytes_bar is None:
            return
        for name in list(self.running):
            journal = job_paths(self.opts.output_dir, name).journal
            try:
                mtime = os.stat(journal).st_mtime_ns
                if self.partial.get(name, (None, 0))[0] != mtime:
                    with open(journal, encoding="utf-8") as fh:
                        self.partial[name] = (mtime, int(json.load(fh).get("done", 0)))
            except (OSError, ValueError, AttributeError):
                continue
        self.bytes_bar.n = self.bytes_done + sum(n for _m, n in self.partial.values())
        self.bytes_bar.refresh()

    def done(self, job: JobSpec, result: JobResult) -> None:
        self.running.pop(job.name, None)
        self.partial.pop(job.name, None)
        self.count += 1
        self.bytes_done += result.volume_size
        if self.bytes_bar is not None:
            self.bytes_bar.total += result.volume_size - job.size_hint
            self.jobs_bar.update(1)
            self.tick()
        line = f"[{self.count}/{self.total}] {job.name}: {result.status}"
        if result.status == FAILED:
            line += f": {result.error}"
        elif result.damage_bytes:
            line += f" ({result.damage_bytes} bytes could not be recovered)"
        if self.jobs_bar is not None:
            tqdm.write(line, file=sys.stderr)
        elif self.announce is not None:
            self.announce(line)

    def close(self) -> None:
        for bar in (self.bytes_bar, self.jobs_bar):
            if bar is not None:
                bar.close()


def run_batch(jobs: Sequence[JobSpec], opts: BatchOptions, backend: Backend, *,
              progress: bool = False, report_path: str | None = None,
              announce: Callable[[str], None] | None = None) -> BatchSummary:
    """Run the batch (see the module docstring); returns its summary (also written)."""
    opts = dataclasses.replace(opts, output_dir=os.path.abspath(opts.output_dir),
                               run_id=opts.run_id or uuid.uuid4().hex,
                               pace=opts.pace or decrypt_mod.PACE)
    _prepare(jobs, opts, report_path)
    started, clock = dt.datetime.now(dt.UTC), time.monotonic()
    results: dict[str, JobResult] = {}
    skipped: list[str] = []
    if opts.resume:
        for job in jobs:
            prior = previous_result(job, opts)
            if prior is not None:
                results[job.name] = prior
                skipped.append(job.name)
    todo = [job for job in jobs if job.name not in results]
    if skipped:
        log.info("%d job(s) already complete, %d to run", len(skipped), len(todo))
    bars = _Progress(todo, opts, len(skipped), len(jobs), progress, announce)

    def done(job: JobSpec, result: JobResult) -> None:
        results[job.name] = result
        bars.done(job, result)

    try:
        if todo:
            backend.run(todo, opts, bars.tick, done)
    except KeyboardInterrupt:
        for job in todo:
            results.setdefault(job.name, failed_result(
                job, 130, "interrupted: run the batch again with --resume to continue"))
        raise
    finally:
        bars.close()
        summary = BatchSummary(
            mode=opts.mode, runner=backend.description, started=started.isoformat(),
            finished=dt.datetime.now(dt.UTC).isoformat(), seconds=time.monotonic() - clock,
            results=[results.get(job.name) or failed_result(job, EXIT_OTHER, "not run")
                     for job in jobs], skipped=skipped)
        write_summary(opts.output_dir, summary, report_path)
    return summary


__all__ = ["Backend", "load_jobs", "previous_result", "run_batch"]
