"""The unlock options that bring keys from outside: ``--memory``, ``--fvek-file``,
``--vmk-file``.

Each of them needs the volume (to validate memory keys, to read a key file in the volume's
method), so the volume named on the command line is opened here, its metadata read, and the
key put into :class:`~bdekit.escrow.secrets.Secrets` as ``fvek`` / ``vmk``: the command then
unlocks as with ``--fvek`` / ``--vmk``. Memory keys are validated before they are used (see
:mod:`.search`); the audit log records where a key came from, never the key.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from tqdm import tqdm

from bdekit.errors import MetadataError, MissingKeyError, NotBitLockerError, UsageError
from bdekit.escrow import audit, keyfiles
from bdekit.escrow.secrets import AttemptOutcome, SecretKind, Secrets
from bdekit.memory.schedule import MAX_ERRORS
from bdekit.memory.search import MemoryReport, ProgressFn, search_memory
from bdekit.volume.bde import BdeVolume, open_bde

log = logging.getLogger(__name__)

Echo = Callable[[str], None]


def load_key_options(secrets: Secrets, *, memory: Sequence[str] = (),
                     fvek_file: str | None = None, vmk_file: str | None = None,
                     image: str | None, offset: int | None = None,
                     partition: int | None = None,
                     audit_log: str | os.PathLike[str] | None = None, progress: bool = False,
                     echo: Echo | None = None, command: str = "bdekit") -> None:
    """Load the keys of ``--memory``, ``--fvek-file`` and ``--vmk-file`` into ``secrets``."""
    if not (memory or fvek_file or vmk_file):
        return
    if vmk_file:
        secrets.vmk = keyfiles.read_vmk_file(vmk_file)
    if not (memory or fvek_file):
        return
    if image is None:
        raise UsageError("--memory and --fvek-file need the volume's image")
    for path in [*memory, *(p for p in (fvek_file, vmk_file) if p)]:
        if _same_file(path, image):
            raise UsageError("the key file / memory image is the volume's image itself",
                             path=path)
    try:
        volume = open_bde(image, offset=offset, partition=partition)
    except (MetadataError, NotBitLockerError) as exc:
        if memory or not fvek_file:
            raise
        # a damaged volume (repair): the key file as it is; repair checks it on the image
        keyfile = keyfiles.read_fvek_file(fvek_file)
        log.warning("%s; using %s with its own method", exc.one_line(), fvek_file)
        secrets.fvek = keyfiles.fvek_for_method(keyfile, keyfile.method or 0x8004)[0] \
            if keyfile.method else keyfile.key
        return
    if fvek_file:
        keyfile = keyfiles.read_fvek_file(fvek_file)
        secrets.fvek, notes = keyfiles.fvek_for_method(keyfile, volume.metadata.method)
        for note in notes:
            log.warning("%s", note)
    if memory:
        report = memory_keys(volume, memory, progress=progress)
        found = report.found[0]
        if found.result.vmk is not None and secrets.vmk is None:
            secrets.vmk = found.result.vmk
        else:
            secrets.fvek = found.result.fvek
        where = found.locations[0]
        trail = audit.AuditLog(audit_log, command=command, image=volume.path,
                               volume_guid=volume.metadata.volume_guid)
        trail.used(SecretKind.VMK if found.result.vmk else SecretKind.FVEK,
                   f"memory image {where.image} at physical address 0x{where.phys:x} "
                   f"({where.how})", AttemptOutcome.FOUND_IN_MEMORY)
        if echo is not None:
            echo(f"bdekit: {'VMK' if found.result.vmk else 'FVEK'} found in {where.image} at "
                 f"physical address 0x{where.phys:x} ({where.how}), checked against the "
                 f"volume; {report.rejected} other candidate(s) rejected")


def memory_keys(volume: BdeVolume, paths: Sequence[str], *, progress: bool = False,
                stop_early: bool = True, max_errors: int = MAX_ERRORS) -> MemoryReport:
    """Search memory images for the volume's keys; raise MissingKeyError if none is found."""
    bar: Any = None
    callback: ProgressFn | None = None
    if progress:
        bar = tqdm(total=0, unit="B", unit_scale=True, desc="memory", leave=False)

        def callback(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)
    try:
        report = search_memory(volume, paths, progress=callback, stop_early=stop_early,
                               max_errors=max_errors)
    finally:
        if bar is not None:
            bar.close()
    if not report.found:
        raise MissingKeyError(
            f"no key of this volume in the memory image(s): {report.candidates} candidate "
            f"key(s) of its kind found ({report.schedules} AES key schedules, "
            f"{report.structures} structures), none decrypts the volume (stale keys of "
            "another boot or volume, or the memory was captured while it was locked)",
            path=volume.path)
    return report


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)
