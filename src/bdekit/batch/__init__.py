"""Fleets of images: ``bdekit batch``, on this machine or on a Dask cluster.

A batch decrypts (or repairs) every BitLocker volume of a directory of evidence, or of a job
list, each into its own directory under the output directory, with the keys of an escrow
keyring, and summarises what each job did. From the bottom up:

* :mod:`~bdekit.batch.spec` - a job (:class:`JobSpec`), the options all jobs share
  (:class:`BatchOptions`), what a job produced (:class:`JobResult`), where its files go;
* :mod:`~bdekit.batch.joblist` - CSV / JSON job lists, job names;
* :mod:`~bdekit.batch.discover` - the jobs of a directory: every image, every BitLocker volume
  on it (partitions included);
* :mod:`~bdekit.batch.worker` - :func:`run_job`, one job as a worker runs it (keys read from
  their paths, decrypt or repair, report, resume from the journal);
* :mod:`~bdekit.batch.local` - a pool of worker processes on this machine;
* :mod:`~bdekit.batch.cluster` - the same job function as Dask tasks (optional extra
  ``bdekit[cluster]``);
* :mod:`~bdekit.batch.summary` - ``summary.json``, ``summary.csv``, the final table, the exit
  code;
* :mod:`~bdekit.batch.runner` - :func:`run_batch`: output directory checks, ``--resume``,
  progress, summary.

This layer sits above :mod:`bdekit.recovery` (it uses its image survey and ``repair``) and
below the command line.

The names below are imported when first used (PEP 562): importing one submodule (the command
line's report options import :mod:`~bdekit.batch.spec`) does not load the pools and Dask.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bdekit._lazy import lazy_getattr

if TYPE_CHECKING:
    from bdekit.batch.cluster import DaskCluster
    from bdekit.batch.local import LocalPool
    from bdekit.batch.runner import load_jobs, run_batch
    from bdekit.batch.spec import MODES, BatchOptions, JobResult, JobSpec
    from bdekit.batch.summary import BatchSummary, format_table
    from bdekit.batch.worker import run_job

__getattr__ = lazy_getattr(__name__, {
    "DaskCluster": "cluster", "LocalPool": "local", "load_jobs": "runner", "run_batch": "runner",
    "MODES": "spec", "BatchOptions": "spec", "JobResult": "spec", "JobSpec": "spec",
    "BatchSummary": "summary", "format_table": "summary", "run_job": "worker"}, globals())

__all__ = ["MODES", "BatchOptions", "BatchSummary", "DaskCluster", "JobResult", "JobSpec",
           "LocalPool", "format_table", "load_jobs", "run_batch", "run_job"]
