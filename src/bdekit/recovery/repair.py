"""``bdekit repair``: salvaging a damaged BitLocker image, step by step.

1. **Input.** The image is opened read-only through a
   :class:`~bdekit.image.salvage.SalvageSource`: unreadable sectors (EIO) are retried, then
   the failing range is split down to single sectors; what stays unreadable reads as zeros and
   is recorded. ``--mapfile`` (a GNU ddrescue mapfile of the input) marks every area not
   finished (``+``) as unreadable without reading it. When the very first sectors are
   unreadable (the container cannot be detected) the file is read as a raw image.
2. **Opening** (:func:`bdekit.recovery.open_damaged.open_damaged`): the volume is located
   (tolerating a lost header), unlocked with whatever survives of its metadata - its own
   copies, copies found by a scan, key packages (``-kp``: files, or directories of them) -
   its missing layout facts inferred and a damaged boot sector rebuilt from its backup.
3. **Decryption** by the shared loop (:func:`bdekit.pipeline.decrypt.decrypt_to`) through a
   :class:`~bdekit.pipeline.chunks.ChunkReader` that applies the rebuilt sectors and zeroes
   the lost ranges, with a journal beside the output so that ``--resume`` continues an
   interrupted run byte-identically (the journal records every input that decides the
   output: image, volume, key fingerprint, metadata that served, patches, input mapfile).
4. **Products.** The output image; its ddrescue mapfile (``OUTPUT.map`` or
   ``--output-mapfile``) in output coordinates, ``-`` for every range that could not be
   recovered (unreadable, not rescued, missing tail of a truncated image, lost boot code) and
   ``+`` elsewhere; the JSON report (``--report``: the decrypt report plus the damage list,
   which copy or package served, what was rebuilt); the human-readable log (``-lf``, every
   INFO message of the run; secrets never reach it and :func:`command_line` masks them). Every
   file is created 0600 (``mode``); the log also gets the error that ends a failed run.

The caller exits 6 (:data:`~bdekit.errors.EXIT_PARTIAL`) when any range could not be recovered.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import logging
import os
import shlex
import stat
from collections.abc import Iterator, Sequence
from typing import Any

from bdekit.crypto import keys
from bdekit.errors import BdeError, ReadError, UsageError
from bdekit.escrow.keypackage import KeyPackage, read_key_package
from bdekit.escrow.secrets import Secrets
from bdekit.image.mapfile import Mapfile, read_mapfile, write_mapfile
from bdekit.image.ranges import NOT_RESCUED
from bdekit.image.salvage import SalvageSource
from bdekit.image.sources import ImageSource, RawSource, open_source
from bdekit.pipeline.chunks import ChunkReader
from bdekit.pipeline.decrypt import DEFAULT_CHUNK, ChunkFn, decrypt_to
from bdekit.pipeline.journal import Journal, journal_path_for
from bdekit.pipeline.output import is_device
from bdekit.pipeline.paths import image_files
from bdekit.pipeline.report import Report
from bdekit.recovery.open_damaged import Opened, locate_tolerant, open_damaged
from bdekit.recovery.sector_judge import SectorJudge
from bdekit.recovery.unlock_copies import Unlocker

log = logging.getLogger(__name__)

#: files larger than this in a key package directory are not read
MAX_KEY_PACKAGE = 64 << 20
#: command-line flags whose value is a secret (masked in logs and the mapfile header)
SECRET_FLAGS = frozenset({"-rp", "--recovery-password", "-RecoveryPassword", "-pw",
                          "--password", "-Password", "--fvek", "--vmk",
                          "--certificate-password"})


@dataclasses.dataclass
class RepairOptions:
    input: str
    output: str
    secrets: Secrets = dataclasses.field(default_factory=Secrets)
    key_packages: Sequence[str] = ()
    offset: int | None = None
    partition: int | None = None
    force: bool = False
    resume: bool = False
    threads: int | None = None
    chunk_size: int = DEFAULT_CHUNK
    mapfile: str | None = None
    output_mapfile: str | None = None
    report_path: str | None = None
    log_path: str | None = None
    retries: int = 1
    progress: bool = False
    hash_output: bool = True
    #: algorithms of the output's hashes (None: sha256); ``hash_input``: hash the image too
    hashes: Sequence[str] | None = None
    hash_input: bool = False
    #: mode of the files written (output, mapfile, report, log)
    mode: int = 0o600
    command: str = ""
    #: how to unlock a candidate volume (the CLI passes its audited ``cli_unlock``)
    unlocker: Unlocker | None = None
    #: encryption method of a salvage with an FVEK and no metadata (None: inferred)
    method: int | None = None


class _QuietFileHandler(logging.FileHandler):
    """A log file that cannot be written (a full disk) is not reported with a traceback: the
    error that ends the run is reported on stderr anyway."""

    def handleError(self, record: logging.LogRecord) -> None:
        return


@contextlib.contextmanager
def log_file(path: str | None, *, append: bool = False, mode: int = 0o600) -> Iterator[None]:
    """Copy every INFO+ message of the ``bdekit`` loggers into ``path`` (human-readable,
    created with ``mode``), leaving the level of the existing (stderr) handlers as it was. An
    error that ends the run is written there too (not to stderr: the caller prints it)."""
    if not path:
        yield
        return
    root = logging.getLogger("bdekit")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC),
                     mode)
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fchmod(fd, mode)
        os.close(fd)
        handler = _QuietFileHandler(path, mode="a", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write the log file: {exc.strerror}", path=path) from None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s",
                                           "%Y-%m-%d %H:%M:%S"))
    handler.setLevel(logging.INFO)
    old_level = root.level
    effective = root.getEffectiveLevel()
    saved = [(h, h.level) for h in root.handlers]
    for h, level in saved:
        h.setLevel(max(level, effective))
    root.addHandler(handler)
    root.setLevel(min(effective, logging.INFO))
    try:
        yield
    except BaseException as exc:
        handler.handle(root.makeRecord(root.name, logging.ERROR, __file__, 0,
                                       "stopped: %s", (_describe(exc),), None))
        raise
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(old_level)
        for h, level in saved:
            h.setLevel(level)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BdeError):
        return exc.display()
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return f"{type(exc).__name__}: {exc}"


def command_line(argv: Sequence[str]) -> str:
    """The command line for logs and the mapfile header, secrets masked."""
    masked: list[str] = []
    hide = False
    for arg in argv:
        if hide and not arg.startswith("-"):
            masked.append("***")
            hide = False
            continue
        hide = False
        name, eq, _value = arg.partition("=")
        if name in SECRET_FLAGS and eq:
            masked.append(name + "=***")
        else:
            masked.append(arg)
            hide = name in SECRET_FLAGS
    return shlex.join(masked)


def default_mapfile_path(output: str) -> str:
    if is_device(output):
        return os.path.abspath(os.path.basename(output) + ".map")
    return output + ".map"


def load_key_packages(paths: Sequence[str],
                      skipped: list[str] | None = None) -> list[KeyPackage]:
    """Read each key package; a directory contributes every file in it that holds one. A file
    that holds none is skipped with a warning (named in ``skipped``): the volume's own
    metadata may not need it."""
    packages: list[KeyPackage] = []
    for path in paths:
        if os.path.isdir(path):
            packages += _key_package_directory(path)
            continue
        try:
            packages.append(read_key_package(path))
        except BdeError as exc:
            log.warning("key package skipped: %s", exc.one_line())
            if skipped is not None:
                skipped.append(path)
    return packages


def _key_package_directory(path: str) -> list[KeyPackage]:
    packages: list[KeyPackage] = []
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if not os.path.isfile(full) or os.path.getsize(full) > MAX_KEY_PACKAGE:
            continue
        try:
            packages.append(read_key_package(full))
        except BdeError as exc:
            log.info("%s: not a key package (%s)", full, exc.message)
    log.info("key package directory %s: %d package(s)", path, len(packages))
    if not packages:
        log.warning("key package directory %s holds no key package", path)
    return packages


def repair(opts: RepairOptions) -> Report:
    """Salvage ``opts.input`` into ``opts.output``; returns the report (see module docstring).

    Raises like ``decrypt`` for what prevents any output (no usable metadata and no key
    package, wrong key, refused output); a finished job with damage returns normally and the
    caller exits 6 when ``report.damaged`` is not empty.
    """
    started = dt.datetime.now()
    with log_file(opts.log_path, append=opts.resume, mode=opts.mode):
        log.info("bdekit repair started: %s", opts.command or f"{opts.input} -> {opts.output}")
        return _repair(opts, started)


def _fingerprint(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def _open_image(path: str) -> ImageSource:
    """``open_source``; when the very first sectors are unreadable (the container cannot be
    detected), the file is read as a raw image."""
    try:
        return open_source(path)
    except ReadError as exc:
        log.warning("%s: reading it as a raw image", exc.one_line())
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
    except OSError:
        os.close(fd)
        raise
    return RawSource(path, fd, size)


def _not_rescued(mf: Mapfile, image_size: int) -> list[tuple[int, int, str]]:
    """The image ranges the input mapfile does not mark rescued."""
    if mf.size and mf.size < image_size:
        log.warning("the input mapfile covers %d bytes of the %d-byte image: the rest "
                    "counts as not rescued", mf.size, image_size)
    bad: list[tuple[int, int, str]] = []
    for pos, size, status in mf.unrescued(domain_size=image_size):
        if pos >= image_size:
            continue
        size = min(size, image_size - pos)
        bad.append((pos, size, NOT_RESCUED))
        log.info("input mapfile: image offset %d, %d bytes not rescued (status '%s')",
                 pos, size, status)
    return bad


def _repair(opts: RepairOptions, started: dt.datetime) -> Report:
    skipped: list[str] = []
    packages = load_key_packages(opts.key_packages, skipped)
    mf = map_digest = None
    if opts.mapfile:
        mf = read_mapfile(opts.mapfile)
        with open(opts.mapfile, "rb") as fh:
            map_digest = _fingerprint(fh.read())
    image = _open_image(opts.input)
    bad = _not_rescued(mf, image.size) if mf is not None else []
    salvage = SalvageSource(image, bad=bad, retries=opts.retries)
    try:
        vsrc, base = locate_tolerant(salvage, opts.offset, opts.partition)
        opened = open_damaged(vsrc, opts.secrets, packages=packages,
                              path=opts.input, unlocker=opts.unlocker, method=opts.method,
                              skipped_packages=skipped)
        for off, length, _reason in salvage.outside:
            log.warning("unreadable while reading metadata: image offset %d, %d bytes", off,
                        length)
        journal = Journal(journal_path_for(opts.output),
                          _journal_params(opts, opened, salvage, base, map_digest))
        report = decrypt_to(
            opened.volume, opts.output, force=opts.force, threads=opts.threads,
            chunk_size=opts.chunk_size, progress=opts.progress, hash_output=opts.hash_output,
            hashes=opts.hashes, mode=opts.mode, input_base=base,
            hash_input=salvage if opts.hash_input else None,
            read_chunk=_chunk_reader(opened, salvage, base), extra_damage=opened.doubts,
            journal=journal, resume=opts.resume, report=_initial_report(opts, opened))
        _write_products(opts, opened, report, started)
        journal.remove()
        return report
    finally:
        salvage.close()


def _chunk_reader(opened: Opened, salvage: SalvageSource, base: int) -> ChunkFn:
    """Reads the output's chunks: rebuilt sectors applied, lost ranges zeroed; every sector
    judged by its own bytes when the layout is inferred."""
    reader = ChunkReader(opened.volume, salvage, base, patches=opened.patches,
                         lost=opened.lost)
    return SectorJudge(reader, opened.volume) if opened.judge else reader


def _journal_params(opts: RepairOptions, opened: Opened, salvage: SalvageSource, base: int,
                    map_digest: str | None) -> dict[str, Any]:
    """Everything that decides the output: a resumed run must agree on all of it."""
    volume = opened.volume
    result = opened.result
    return {
        "input": os.path.realpath(opts.input), "input_size": int(salvage.size),
        "volume_offset": base, "output": os.path.realpath(opts.output),
        "volume_size": volume.volume_size, "sector_size": volume.sector_size,
        "method": int(result.method), "fvek": keys.fvek_fingerprint(result.fvek),
        "metadata_source": str(volume.metadata.source),
        "metadata_offset": volume.metadata.best.offset,
        "patches": _fingerprint(b"".join(o.to_bytes(8, "little") + d
                                         for o, d in opened.patches)),
        "lost": [[d.offset, d.length, d.reason] for d in opened.lost],
        "doubts": [[d.offset, d.length, d.reason] for d in opened.doubts],
        "judged": opened.judge,
        "mapfile": map_digest,
    }


def _initial_report(opts: RepairOptions, opened: Opened) -> Report:
    report = Report(input=os.path.abspath(opts.input), output=os.path.abspath(opts.output),
                    command_line=opts.command, command=opts.command,
                    input_files=[os.path.abspath(p) for p in image_files(opts.input)
                                 if os.path.lexists(p)])
    report.metadata_copies = [c.describe() for c in opened.copies]
    report.key_package = opened.key_package
    report.repairs = list(opened.repairs)
    report.notes = list(opened.notes)
    return report


def _write_products(opts: RepairOptions, opened: Opened, report: Report,
                    started: dt.datetime) -> None:
    """The output mapfile, the JSON report; the damage in the log."""
    map_path = opts.output_mapfile or default_mapfile_path(opts.output)
    bad_out = [(d["offset"], d["length"]) for d in report.damaged]
    write_mapfile(map_path, opened.volume.volume_size, bad_out, command=opts.command,
                  started=started, mode=opts.mode)
    report.output_mapfile = map_path
    for item in report.damaged:
        log.info("damaged: output offset %d (0x%x), %d bytes: %s",
                 item["offset"], item["offset"], item["length"], item["reason"])
    if opts.report_path:
        report.write(opts.report_path, opts.mode)
    log.info("finished: %s", report.summary())
    log.info("output mapfile: %s (%d damaged range(s), %d bytes)", map_path,
             len(report.damaged), report.bytes_unrecovered)


__all__ = ["RepairOptions", "command_line", "default_mapfile_path", "load_key_packages",
           "log_file", "repair"]
