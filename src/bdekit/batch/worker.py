"""One job of a batch, as a worker process runs it: :func:`run_job`.

:func:`run_job` takes a :class:`~bdekit.batch.spec.JobSpec` and the batch's
:class:`~bdekit.batch.spec.BatchOptions` (paths and flags: picklable, the same on a local
worker process and on a Dask worker) and returns a :class:`~bdekit.batch.spec.JobResult`. It
never raises for the job's own failure (no key, unsupported protector, unreadable image, ...):
that is the result's status, exit class and one-line reason, and the other jobs go on.

Steps, in the job's directory (``OUTPUT_DIR/<name>/``, mode 0700; every file 0600):

1. take the job's lock (``.lock``, ``flock``: a job is never run twice at once, e.g. by a
   worker presumed lost) and record the batch run in ``.run``; a job started again in the same
   run (its worker was lost) or with ``--resume`` continues from its journal;
2. read the keys: the batch's keyrings and the job's key file, loaded here from their paths
   (cached per process); only the entries matching a protector of the volume are tried (the
   keyring matching of :class:`~bdekit.unlock.policy.UnlockPolicy`, audited), or only the
   entry the job names (``key_entry``);
3. ``decrypt`` mode: open the image through a salvage layer (input mapfile honoured),
   locate the volume, unlock it and stream it out with
   :func:`~bdekit.pipeline.decrypt.decrypt_to` and a journal; ``repair`` mode:
   :func:`~bdekit.recovery.repair.repair` with the same unlocker;
4. write the output mapfile and ``report.json`` (last: ``"complete": true`` means finished),
   then drop the journal.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from bdekit.batch.spec import REPORT_FORMAT, BatchOptions, JobPaths, JobResult, JobSpec, job_paths
from bdekit.crypto import keys
from bdekit.errors import EXIT_OTHER, BdeError, FormatError, OutputExistsError, UsageError
from bdekit.escrow.keyring import Keyring, load_keyring
from bdekit.escrow.secrets import Secrets, UnlockResult
from bdekit.format.constants import ProtectionType
from bdekit.image import locate
from bdekit.image.files import PRIVATE_MODE, write_atomic
from bdekit.image.mapfile import read_mapfile, write_mapfile
from bdekit.image.ranges import NOT_RESCUED
from bdekit.image.salvage import Record, SalvageSource
from bdekit.image.sources import SliceSource, open_source
from bdekit.pipeline import decrypt as decrypt_mod
from bdekit.pipeline.decrypt import decrypt_to
from bdekit.pipeline.journal import Journal
from bdekit.pipeline.report import Report
from bdekit.recovery.repair import RepairOptions, repair
from bdekit.unlock.certificates import Certificate, load_certificate
from bdekit.unlock.policy import UnlockableVolume, UnlockPolicy
from bdekit.volume.bde import BdeVolume

log = logging.getLogger(__name__)

PRIVATE_DIR = 0o700

#: keyrings already read by this process: (paths, sizes, times) -> keyring
_RINGS: dict[tuple[Any, ...], Keyring] = {}


def run_job(job: JobSpec, opts: BatchOptions) -> JobResult:
    """Run one job; its failure is the result's status, never an exception (see above)."""
    started = time.monotonic()
    result = JobResult(job=job.name, input=job.input, partition=job.partition,
                       offset=job.offset)
    paths = job_paths(opts.output_dir, job.name)
    report: Report | None = None
    journal: Journal | None = None
    try:
        make_private_dir(paths.directory)
        with _job_lock(paths, opts.lock_wait):
            resume = _claim(paths, opts)
            report, journal = _run(job, opts, paths, result, resume)
            _fill(result, report, paths)
    except KeyboardInterrupt:
        raise
    except BdeError as exc:
        if isinstance(exc, FormatError) and opts.mode == "decrypt":
            exc.with_hint("--mode repair salvages damaged metadata")
        result.fail(exc.exit_code, exc.display())
    except MemoryError:
        result.fail(EXIT_OTHER, "out of memory")
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        result.fail(EXIT_OTHER, f"{where}{exc.strerror or exc}")
    except Exception as exc:  # one job's failure never stops the others
        log.debug("job %s: internal error", job.name, exc_info=True)
        result.fail(EXIT_OTHER, f"internal error: {type(exc).__name__}: {exc}")
    result.seconds = round(time.monotonic() - started, 3)
    if os.path.isdir(paths.directory):
        _write_report(paths, job, result, report)
        if journal is not None and result.complete:
            journal.remove()
    return result


def make_private_dir(path: str) -> None:
    """Create ``path`` (mode 0700, whatever the umask) unless it exists as a directory."""
    try:
        os.mkdir(path, PRIVATE_DIR)
    except FileExistsError:
        if not os.path.isdir(path) or os.path.islink(path):
            raise UsageError("exists and is not a directory (or is a symbolic link)",
                             path=path) from None
        return
    os.chmod(path, PRIVATE_DIR)


@contextlib.contextmanager
def _job_lock(paths: JobPaths, wait: float) -> Iterator[None]:
    """Hold the job's lock; wait up to ``wait`` seconds for another process holding it."""
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                 PRIVATE_MODE)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise UsageError("the job is running in another process (its lock is "
                                     "held)", path=paths.lock) from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)  # releases the lock


def _claim(paths: JobPaths, opts: BatchOptions) -> bool:
    """Record this batch run in the job's directory; whether to resume from a journal
    (``--resume``, or this run already started the job: its worker was lost)."""
    again = False
    with contextlib.suppress(OSError):
        with open(paths.run, encoding="utf-8") as fh:
            again = bool(opts.run_id) and fh.read().strip() == opts.run_id
    write_atomic(paths.run, opts.run_id + "\n")
    if again:
        log.info("job %s: started again in the same run: resuming from its journal",
                 os.path.basename(paths.directory))
    return opts.resume or again


def _run(job: JobSpec, opts: BatchOptions, paths: JobPaths, result: JobResult,
         resume: bool) -> tuple[Report, Journal | None]:
    for path in (paths.output, paths.mapfile, paths.report):
        real = os.path.realpath(path)
        if any(real == os.path.realpath(f) for f in job.files()):
            raise OutputExistsError("refusing to write over an input of the job", path=path)
    unlocker = JobUnlocker(job, opts, result)
    if opts.mode == "repair":
        if opts.pace is not None:
            decrypt_mod.PACE = opts.pace  # repair runs the decrypt loop at the module's pace
        return _repair(job, opts, paths, unlocker, resume), None
    return _decrypt(job, opts, paths, unlocker, resume)


def _fill(result: JobResult, report: Report, paths: JobPaths) -> None:
    result.method = report.method or result.method
    result.protector = report.protector
    result.unlocked_via = report.unlocked_via or None
    result.volume_size = report.volume_size
    result.bytes_decrypted = report.bytes_decrypted
    result.damage_bytes = report.bytes_unrecovered
    result.damaged_ranges = len(report.damaged)
    result.sha256 = report.sha256 or None
    result.resumed_at = report.resumed_at
    result.output = paths.output
    result.mapfile = paths.mapfile
    result.succeed(report.bytes_unrecovered)


def _write_report(paths: JobPaths, job: JobSpec, result: JobResult,
                  report: Report | None) -> None:
    data = {"format": REPORT_FORMAT, "version": 1, "complete": result.complete,
            "job": dataclasses.asdict(job), "result": result.to_json(),
            "report": report.to_json() if report is not None else None,
            "finished": dt.datetime.now(dt.UTC).isoformat()}
    try:
        write_atomic(paths.report, json.dumps(data, indent=2, default=str) + "\n")
    except OSError as exc:
        log.error("job %s: cannot write its report: %s", job.name, exc)


# --------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------


def _load_ring(paths: tuple[str, ...]) -> Keyring:
    """The keyring of ``paths``, read once per process (again when a file changes)."""
    stamp: list[Any] = []
    for path in paths:
        st = os.stat(path)
        stamp.append((path, st.st_size, st.st_mtime_ns))
    key = tuple(stamp)
    ring = _RINGS.get(key)
    if ring is None:
        ring = _RINGS[key] = load_keyring(paths)
    return ring


def _select_entry(ring: Keyring, ref: str) -> Keyring:
    """Only the entry ``ref`` names: its ``file:entry`` source, key ID or protector GUID."""
    text = ref.strip()
    ident = text.strip("{}").upper()
    chosen = [e for e in ring.entries
              if e.source == text or (e.identifier or "").upper() == ident]
    if not chosen:
        raise UsageError(f"key_entry {text!r} names no entry of the keyring "
                         f"({len(ring)} entries)")
    return Keyring(entries=chosen, files=list(ring.files))


class JobUnlocker:
    """Unlocks a job's volume with the keys its worker reads from their paths.

    Called as ``unlocker(volume, secrets)`` (the signature ``repair`` uses; its ``secrets``
    are empty and ignored); records the volume's GUID, method and the key used in the result.
    """

    def __init__(self, job: JobSpec, opts: BatchOptions, result: JobResult) -> None:
        self.opts = opts
        self.result = result
        paths = tuple(opts.keyrings) + ((job.key_file,) if job.key_file else ())
        self.ring: Keyring | None = _load_ring(paths) if paths else None
        if job.key_entry:
            if self.ring is None:
                raise UsageError(f"key_entry {job.key_entry!r}: no keyring was given")
            self.ring = _select_entry(self.ring, job.key_entry)
        self.certificates: list[Certificate] = [
            load_certificate(path, os.environ.get("BDEKIT_CERTIFICATE_PASSWORD"),
                             opts.certificate_key) for path in opts.certificates]

    def __call__(self, volume: UnlockableVolume, _secrets: Secrets | None = None
                 ) -> UnlockResult:
        self.result.volume_guid = str(volume.metadata.volume_guid).upper()
        self.result.method = volume.metadata.method_name
        secrets = Secrets(certificates=list(self.certificates))
        policy = UnlockPolicy(audit_log=self.opts.audit_log, command=self.opts.command)
        clear = any(p.protection == ProtectionType.CLEAR_KEY for p in volume.protectors)
        # a suspended volume needs no key: a keyring without a match must not refuse it
        if self.ring is not None and (self.ring.candidates(volume.protectors) or not clear):
            policy.keyring = self.ring
            secrets.candidates = self.ring.candidates()
        unlocked = policy.unlock(volume, secrets).result
        self.result.key_source = unlocked.source or None
        if unlocked.protector is not None:
            self.result.protector_type = unlocked.protector.type_name
        return unlocked


# --------------------------------------------------------------------------------------------
# The two modes
# --------------------------------------------------------------------------------------------


def _digest(path: str | None) -> str | None:
    if path is None:
        return None
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()[:32]


def _unrescued(mapfile: str | None, image_size: int) -> list[Record]:
    """The image ranges an input mapfile does not mark finished (read as unreadable)."""
    if mapfile is None:
        return []
    mf = read_mapfile(mapfile)
    return [(pos, min(size, image_size - pos), NOT_RESCUED)
            for pos, size, _status in mf.unrescued(domain_size=image_size) if pos < image_size]


def _decrypt(job: JobSpec, opts: BatchOptions, paths: JobPaths, unlocker: JobUnlocker,
             resume: bool) -> tuple[Report, Journal]:
    started = dt.datetime.now()
    image = open_source(job.input)
    salvage = SalvageSource(image, bad=_unrescued(job.mapfile, int(image.size)),
                            retries=opts.retries)
    try:
        vsrc = locate.volume_source(salvage, offset=job.offset, partition=job.partition)
        base = vsrc.offset if isinstance(vsrc, SliceSource) else 0
        volume = BdeVolume(vsrc, path=job.input)
        unlocked = unlocker(volume)
        journal = Journal(paths.journal, {
            "input": os.path.realpath(job.input), "input_size": int(salvage.size),
            "volume_offset": base, "output": os.path.realpath(paths.output),
            "volume_size": volume.volume_size, "sector_size": volume.sector_size,
            "method": int(unlocked.method), "fvek": keys.fvek_fingerprint(unlocked.fvek),
            "mapfile": _digest(job.mapfile)})
        report = decrypt_to(volume, paths.output, force=opts.force, threads=opts.threads,
                            chunk_size=opts.chunk_size, hash_output=opts.hash_output,
                            journal=journal, resume=resume, pace=opts.pace)
    finally:
        salvage.close()
    write_mapfile(paths.mapfile, report.volume_size,
                  [(d["offset"], d["length"]) for d in report.damaged],
                  command=opts.command, started=started)
    report.output_mapfile = paths.mapfile
    report.command = opts.command
    return report, journal


def _repair(job: JobSpec, opts: BatchOptions, paths: JobPaths, unlocker: JobUnlocker,
            resume: bool) -> Report:
    return repair(RepairOptions(
        input=job.input, output=paths.output, key_packages=list(opts.key_packages),
        offset=job.offset, partition=job.partition, force=opts.force, resume=resume,
        threads=opts.threads, chunk_size=opts.chunk_size, mapfile=job.mapfile,
        output_mapfile=paths.mapfile, retries=opts.retries, hash_output=opts.hash_output,
        command=opts.command, unlocker=unlocker))


__all__ = ["JobUnlocker", "make_private_dir", "run_job"]
