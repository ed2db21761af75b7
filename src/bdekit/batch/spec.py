"""What a batch is made of: jobs, the options every job shares, and what each job produced.

Everything here crosses a process boundary (a local worker process, a Dask worker on another
machine), so it is plain picklable data: paths, numbers and flags, never a secret. A job names
the files it needs (image, input mapfile, key file) and its keys are read from them by the
process that runs it.

Files of a job, under ``OUTPUT_DIR/<job name>/`` (:func:`job_paths`):

* ``<name>.img`` - the decrypted volume (renamed into place when complete);
* ``<name>.img.map`` - its GNU ddrescue mapfile (``-`` where the data could not be recovered);
* ``report.json`` - what the job did (:class:`JobResult` plus the decrypt report); written
  last, so ``"complete": true`` in it means the job is finished;
* ``<name>.img.bdekit-journal`` / ``.bdekit-partial`` - while it runs, and after an
  interruption (what ``--resume`` continues from);
* ``.lock`` (held while the job runs) and ``.run`` (the batch run that last started it).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from bdekit.errors import EXIT_OK, EXIT_PARTIAL
from bdekit.pipeline.decrypt import DEFAULT_CHUNK, Pace
from bdekit.pipeline.journal import JOURNAL_SUFFIX

#: ``--mode`` values: ``decrypt`` (strict: damaged metadata fails) or ``repair`` (salvage).
MODES = ("decrypt", "repair")

#: Job status values in reports and summaries.
OK = "ok"
DAMAGED = "damaged"
FAILED = "failed"

REPORT_NAME = "report.json"
REPORT_FORMAT = "bdekit-batch-job"
LOCK_NAME = ".lock"
RUN_NAME = ".run"


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """One BitLocker volume to decrypt: the image, where the volume lies in it, its files."""

    #: the job's directory under the output directory (a plain file name)
    name: str
    #: the image (absolute path)
    input: str
    partition: int | None = None
    offset: int | None = None
    #: a key file for this job only (BEK, recovery key text, escrow export), read by the worker
    key_file: str | None = None
    #: a keyring entry (``file:row N``) or key ID / protector GUID: only that key is tried
    key_entry: str | None = None
    #: GNU ddrescue mapfile of the input (areas not marked finished are unreadable)
    mapfile: str | None = None
    #: the volume's size as discovery saw it (progress bar; 0 when unknown)
    size_hint: int = 0
    #: where the job came from, for messages ("jobs.csv:line 4", the directory)
    origin: str = ""

    def files(self) -> list[str]:
        """Every file the job reads (outputs must resolve to none of them)."""
        return [p for p in (self.input, self.key_file, self.mapfile) if p]


@dataclasses.dataclass(frozen=True)
class BatchOptions:
    """What every job of a batch shares (paths and flags only; see the module docstring)."""

    output_dir: str
    mode: str = "decrypt"
    #: escrow keyrings (files or directories), loaded by each worker
    keyrings: tuple[str, ...] = ()
    #: key packages for ``repair`` (files or directories)
    key_packages: tuple[str, ...] = ()
    #: DRA / smart card certificates; their password comes from the worker's
    #: $BDEKIT_CERTIFICATE_PASSWORD, never from the task
    certificates: tuple[str, ...] = ()
    certificate_key: str | None = None
    audit_log: str | None = None
    force: bool = False
    resume: bool = False
    #: decrypt threads per job (None: the worker machine's CPU count)
    threads: int | None = None
    chunk_size: int = DEFAULT_CHUNK
    hash_output: bool = True
    retries: int = 1
    #: identifies this run of the batch: a job started again in the same run (its worker was
    #: lost) resumes from its journal
    run_id: str = ""
    #: seconds a job waits for another process holding its lock
    lock_wait: float = 60.0
    #: the decrypt loop's pace (tests slow jobs down); None: the worker's default
    pace: Pace | None = None
    command: str = "bdekit batch"


@dataclasses.dataclass
class JobPaths:
    directory: str
    output: str
    mapfile: str
    report: str
    journal: str
    lock: str
    run: str


def job_paths(output_dir: str, name: str) -> JobPaths:
    """Where the files of job ``name`` go (see the module docstring)."""
    directory = os.path.join(output_dir, name)
    output = os.path.join(directory, name + ".img")
    return JobPaths(directory=directory, output=output, mapfile=output + ".map",
                    report=os.path.join(directory, REPORT_NAME),
                    journal=output + JOURNAL_SUFFIX, lock=os.path.join(directory, LOCK_NAME),
                    run=os.path.join(directory, RUN_NAME))


#: Columns of ``summary.csv``, in order (every field of :class:`JobResult`).
CSV_COLUMNS = ("job", "status", "exit_code", "input", "partition", "offset", "volume_guid",
               "method", "protector", "protector_type", "unlocked_via", "key_source",
               "volume_size", "bytes_decrypted", "damage_bytes", "damaged_ranges", "sha256",
               "seconds", "resumed_at", "output", "mapfile", "error")


@dataclasses.dataclass
class JobResult:
    """One row of the summary: what a job did (no secret: the key's source, never the key)."""

    job: str
    input: str
    partition: int | None = None
    offset: int | None = None
    status: str = FAILED
    exit_code: int = 1
    volume_guid: str | None = None
    method: str | None = None
    #: GUID of the protector that unlocked, its type, the kind of secret, where it came from
    protector: str | None = None
    protector_type: str | None = None
    unlocked_via: str | None = None
    key_source: str | None = None
    volume_size: int = 0
    bytes_decrypted: int = 0
    damage_bytes: int = 0
    damaged_ranges: int = 0
    sha256: str | None = None
    seconds: float = 0.0
    #: where an interrupted job was resumed (None: it ran from the start)
    resumed_at: int | None = None
    output: str | None = None
    mapfile: str | None = None
    error: str | None = None

    @property
    def complete(self) -> bool:
        """Finished, with or without unrecoverable data (nothing left to do)."""
        return self.status in (OK, DAMAGED)

    def succeed(self, damage_bytes: int) -> None:
        self.status = DAMAGED if damage_bytes else OK
        self.exit_code = EXIT_PARTIAL if damage_bytes else EXIT_OK
        self.error = None

    def fail(self, exit_code: int, message: str) -> None:
        self.status = FAILED
        self.exit_code = exit_code
        self.error = message

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobResult:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


def failed_result(job: JobSpec, exit_code: int, message: str) -> JobResult:
    """The row of a job that could not run at all (its worker was lost, ...)."""
    result = JobResult(job=job.name, input=job.input, partition=job.partition,
                       offset=job.offset)
    result.fail(exit_code, message)
    return result


__all__ = ["CSV_COLUMNS", "DAMAGED", "FAILED", "MODES", "OK", "REPORT_FORMAT", "BatchOptions",
           "JobPaths", "JobResult", "JobSpec", "failed_result", "job_paths"]
