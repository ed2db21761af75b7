"""Unlocking candidate metadata of a damaged volume, and choosing the copy that serves.

The candidates are, in turn, the copies the volume header points to, the blocks a scan found
and the copies key packages carry. :class:`CopyUnlocker` tries each with the user's secrets
(through the caller's unlock function: the CLI's audited one) until one unlocks; from then on
the VMK it gave opens the others directly (no key stretch). A key failure on an intact copy
of the volume means the secret is wrong, not the metadata, so the search stops there.

:func:`settle_copy` then checks every copy's SHA-256 integrity datum with the VMK
(:func:`bdekit.unlock.integrity.integrity_of`) and, when the copy that unlocked fails it,
serves from one that verifies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from bdekit.errors import BdeError, KeyError_, MetadataError, UnsupportedError
from bdekit.escrow.secrets import Secrets, UnlockResult
from bdekit.format.metadata import Metadata, MetadataCopy, MetadataSource
from bdekit.image.sources import ImageSource
from bdekit.unlock.attempt import unlock
from bdekit.unlock.integrity import integrity_of
from bdekit.unlock.vmk import decrypt_fvek
from bdekit.volume.bde import BdeVolume

log = logging.getLogger(__name__)

#: how to unlock a candidate volume (the CLI passes its audited ``cli_unlock``)
Unlocker = Callable[[BdeVolume, Secrets], UnlockResult]


def copy_name(copy: MetadataCopy) -> str:
    """How logs and notes name a copy."""
    if copy.status == "key package":
        return "the key package"
    which = f"copy {copy.index}" if copy.index else "a stray copy"
    return f"{which} at offset {copy.offset}"


def ordered_copies(copies: Sequence[MetadataCopy]) -> list[MetadataCopy]:
    """The usable copies, intact (CRC) first, then by copy number and offset."""
    usable = [c for c in copies if c.usable]
    return sorted(usable, key=lambda c: (not c.crc_ok, c.index or 99, c.offset))


def _default_unlock(volume: BdeVolume, secrets: Secrets) -> UnlockResult:
    return volume.unlock(secrets)


class CopyUnlocker:
    """Tries candidate metadata; after the first success, the VMK opens the others."""

    def __init__(self, src: ImageSource, path: str | None, secrets: Secrets,
                 unlock_fn: Unlocker | None) -> None:
        self.src = src
        self.path = path
        self.secrets = secrets
        self.unlock_fn: Unlocker = unlock_fn or _default_unlock
        self.vmk: bytes | None = None
        self.first: UnlockResult | None = None
        self.key_errors: list[BdeError] = []
        self.errors: list[BdeError] = []
        #: a key (or unsupported protector) failure on an intact copy: the secret is the
        #: problem, not the metadata, so scanning for more copies is pointless
        self.wrong_on_intact = False

    def attempt(self, md: Metadata) -> UnlockResult | None:
        """The key of ``md`` (served by ``md.best``), or None (the failure is kept)."""
        if self.vmk is not None and self.first is not None:
            return self._with_vmk(md, self.vmk, self.first)
        name = copy_name(md.best)
        log.info("unlocking with %s", name)
        try:
            result = self._unlock(md)
        except (KeyError_, UnsupportedError) as exc:
            log.warning("%s: %s", name, exc.message)
            self._key_failure(md, exc)
            return None
        except BdeError as exc:
            log.warning("%s: cannot unlock: %s", name, exc.message)
            self.errors.append(exc)
            return None
        if result.vmk is not None:
            self.vmk = result.vmk
            self.first = result
        who = f" (protector {result.protector.key_id})" if result.protector else ""
        log.info("unlocked with %s via %s%s", name, result.via, who)
        return result

    def _with_vmk(self, md: Metadata, vmk: bytes, first: UnlockResult) -> UnlockResult | None:
        try:
            fvek, key_type = decrypt_fvek(md, vmk)
        except BdeError as exc:
            log.warning("%s: the VMK does not open its FVEK: %s", copy_name(md.best),
                        exc.message)
            self.errors.append(exc)
            return None
        return UnlockResult(fvek, key_type or md.method, vmk, first.via, first.protector,
                            first.source)

    def _unlock(self, md: Metadata) -> UnlockResult:
        if self.secrets.fvek is not None:
            # a raw FVEK opens any copy; whether it is right is decided on the image (boot
            # sector, its backup), after the boot sector check
            return unlock(md, Secrets(fvek=self.secrets.fvek), path=self.path)
        return self.unlock_fn(BdeVolume(self.src, path=self.path, metadata=md), self.secrets)

    def _key_failure(self, md: Metadata, exc: BdeError) -> None:
        intact = (md.best.crc_ok and md.source in (MetadataSource.VOLUME, MetadataSource.SCAN)) \
            or md.source == MetadataSource.KEY_PACKAGE
        if not intact:
            self.errors.append(exc)
            return
        self.key_errors.append(exc)
        if md.source == MetadataSource.VOLUME:
            self.wrong_on_intact = True

    def failure(self, what: str) -> BdeError:
        """The error to raise when no candidate unlocked."""
        if self.key_errors:
            return self.key_errors[0]
        if self.errors:
            return MetadataError(f"{what}; last error: {self.errors[-1].message}",
                                 path=self.path)
        return MetadataError(what, path=self.path)


def settle_copy(md: Metadata, result: UnlockResult,
                pool: Sequence[MetadataCopy]) -> tuple[Metadata, UnlockResult]:
    """Check every copy's SHA-256 under the VMK; serve from one that verifies."""
    vmk = result.vmk
    if vmk is None:
        log.info("no VMK (unlocked with %s): the copies' SHA-256 cannot be checked; %s "
                 "serves on its CRC", result.via, copy_name(md.best))
        return md, result
    for copy in pool:
        copy.integrity = integrity_of(copy, vmk)
        log.info("%s: CRC %s, SHA-256 %s", copy_name(copy), "ok" if copy.crc_ok else "bad",
                 copy.integrity)
    if md.best.integrity == "ok":
        return md, result
    for copy in ordered_copies(pool):
        if copy is md.best or copy.integrity != "ok":
            continue
        other = _served_by(md, copy)
        try:
            fvek, key_type = decrypt_fvek(other, vmk)
        except BdeError:
            continue
        log.warning("%s fails its SHA-256 integrity check; %s verifies and serves",
                    copy_name(md.best), copy_name(copy))
        return other, UnlockResult(fvek, key_type or other.method, vmk, result.via,
                                   result.protector, result.source)
    if md.best.integrity == "mismatch":
        log.warning("%s fails its SHA-256 integrity check and no other copy verifies; it "
                    "serves anyway (its FVEK opened)", copy_name(md.best))
    return md, result


def _served_by(md: Metadata, copy: MetadataCopy) -> Metadata:
    if copy in md.copies:
        return Metadata(header=md.header, copies=md.copies, best=copy, source=md.source)
    return Metadata(header=md.header, copies=[*md.copies, copy], best=copy,
                    source=MetadataSource.SCAN)


__all__ = ["CopyUnlocker", "Unlocker", "copy_name", "ordered_copies", "settle_copy"]
