"""Unlocking candidate metadata of a damaged volume, and choosing the copy that serves.

The candidates are, in turn, the copies the volume header points to, the blocks a scan found
and the copies key packages carry. :class:`CopyUnlocker` tries each with the user's secrets
(through the caller's unlock function: the CLI's audited one) until one unlocks; from then on
the VMK it gave opens the others directly (no key stretch). A key failure on an intact copy
of the volume means the secret is wrong, not the metadata, so the search stops there.

:func:`settle_copy` then weighs every copy (CRC-bad ones, scanned ones and the byte-wise
majority vote included) with the VMK exactly as the volume does
(:func:`bdekit.unlock.integrity.settle`): the candidate whose block matches an authentic
SHA-256 digest serves, whichever copy unlocked. Unlocking itself tries the protector and FVEK
datums of every copy (:func:`bdekit.unlock.attempt.unlock`), so a copy whose VMK or FVEK
datum is damaged neither stops the search nor passes for a wrong key.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

from bdekit.errors import BdeError, KeyError_, MetadataError, UnsupportedError
from bdekit.escrow.secrets import Secrets, UnlockResult
from bdekit.format.metadata import Metadata, MetadataCopy, MetadataSource
from bdekit.image.sources import ImageSource
from bdekit.unlock.attempt import unlock
from bdekit.unlock.integrity import Trust, settle
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
        # a key package's copy is "CRC-good" only when every checksum of the package holds
        intact = md.best.crc_ok and md.source in (MetadataSource.VOLUME, MetadataSource.SCAN,
                                                  MetadataSource.KEY_PACKAGE)
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
    """Weigh every copy of ``md`` and of ``pool`` (scanned ones too) and the majority vote
    with the VMK, as the volume does (:func:`bdekit.unlock.integrity.settle`): the candidate
    that matches an authentic SHA-256 digest serves; ``md.trust`` says whether one did."""
    extra = [c for c in pool if c not in md.copies and c.usable]
    full = dataclasses.replace(md, copies=[*md.copies, *extra])
    prior = list(md.decisions)
    settlement = settle(full, result.vmk)
    full.best = settlement.serving
    if settlement.serving in extra:
        full.source = MetadataSource.SCAN
    full.trust = str(settlement.trust)
    # unlocking through a volume may have settled ``md`` already: its decisions count too
    full.decisions = [*settlement.decisions,
                      *(d for d in prior if d not in settlement.decisions)]
    for copy in full.copies:
        log.info("%s: CRC %s, SHA-256 %s", copy_name(copy), "ok" if copy.crc_ok else "bad",
                 copy.integrity)
    if result.vmk is None:
        log.info("no VMK (unlocked with %s): the copies' SHA-256 cannot be checked; %s "
                 "serves", result.via, copy_name(full.best))
        return full, result
    if settlement.serving is not md.best:
        log.warning("%s does not match an authentic SHA-256 digest; %s does and serves",
                    copy_name(md.best), _name(settlement.serving))
    elif settlement.trust == Trust.UNVERIFIED:
        log.warning("no metadata copy matches an authentic SHA-256 digest: %s serves, "
                    "unverified", copy_name(md.best))
    try:
        fvek, key_type = decrypt_fvek(full, result.vmk)
    except BdeError:
        return full, result
    return full, UnlockResult(fvek, key_type or full.method, result.vmk, result.via,
                              result.protector, result.source)


def _name(copy: MetadataCopy) -> str:
    return "the majority of the copies" if copy.index == 0 and copy.status != "key package" \
        else copy_name(copy)


__all__ = ["CopyUnlocker", "Unlocker", "copy_name", "ordered_copies", "settle_copy"]
