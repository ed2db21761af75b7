"""Which metadata copy to believe, once the VMK is known: the SHA-256 integrity datum decides.

Each copy is followed by a validation datum: AES-CCM under the VMK, holding the SHA-256 of the
padded block. Its MAC makes the digest authentic (only the VMK holder could write it), so a
block whose SHA-256 equals an authentic digest is exactly what Windows wrote. The CRC32 before
it only tells damage from chance; it proves nothing (a recomputed CRC passes).

:func:`settle` weighs every candidate: the copies, in their order, and the byte-wise majority
of the copies (:mod:`bdekit.format.consensus`). The digests come from every copy's validation
datum that opens, CRC-bad copies included (the datum may be intact when the damage is
elsewhere). The first candidate whose block matches an authentic digest serves ("verified");
if none does, the candidate with the most support serves and the metadata is *unverified*:
every field that steers reads may be wrong, which callers must report as damage.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import logging

from bdekit.errors import BdeError
from bdekit.format.constants import DatumType
from bdekit.format.metadata import CopyIntegrity, Metadata, MetadataCopy
from bdekit.unlock.vmk import unwrap_key

log = logging.getLogger(__name__)


class Trust(enum.StrEnum):
    VERIFIED = "verified"  # SHA-256 of the serving block matches an authentic digest
    UNVERIFIED = "unverified"  # digests available, but no candidate matches
    UNAVAILABLE = "unavailable"  # no digest could be checked (no VMK, or no validation datum)


@dataclasses.dataclass
class Settlement:
    trust: Trust
    serving: MetadataCopy
    decisions: list[dict[str, object]]


def validation_digest(copy: MetadataCopy, vmk: bytes) -> bytes | None:
    """The authentic SHA-256 a copy's validation datum holds, or None if it does not open."""
    if copy.validation is None:
        return None
    try:
        inner = unwrap_key(copy.validation, vmk)
    except BdeError:
        return None
    if inner.type != DatumType.KEY:
        return None
    digest = bytes(inner.body.key)
    return digest if len(digest) == 32 else None


def check_copy(copy: MetadataCopy, digests: set[bytes]) -> CopyIntegrity:
    """A copy's integrity against the authentic digests: "ok", "mismatch" or "unavailable"."""
    if not copy.block or not digests:
        return CopyIntegrity.UNAVAILABLE
    if hashlib.sha256(copy.block).digest() in digests:
        return CopyIntegrity.OK
    return CopyIntegrity.MISMATCH


def integrity_of(copy: MetadataCopy, vmk: bytes | None) -> CopyIntegrity:
    """A copy checked against its own validation datum: "ok"; "mismatch" when the digest
    differs or the datum does not open under the VMK; "unavailable" without a VMK, a
    validation datum or a usable copy."""
    if vmk is None or not copy.usable or copy.validation is None:
        return CopyIntegrity.UNAVAILABLE
    digest = validation_digest(copy, vmk)
    return CopyIntegrity.MISMATCH if digest is None else check_copy(copy, {digest})


def _candidates(md: Metadata) -> list[MetadataCopy]:
    usable = [c for c in md.copies if c.usable]
    vote = md.vote_copy
    if vote is not None and vote.usable:
        usable.append(vote)
    return usable


def settle(md: Metadata, vmk: bytes | None) -> Settlement:
    """Verify every candidate with the VMK, choose the one to serve; record why."""
    candidates = _candidates(md)
    digests: set[bytes] = set()
    if vmk is not None:
        for copy in candidates:
            digest = validation_digest(copy, vmk)
            if digest is not None:
                digests.add(digest)
    for copy in candidates:
        copy.integrity = check_copy(copy, digests)
    decisions = list(md.vote_decisions)
    verified = [c for c in candidates if c.integrity == "ok"]
    if verified:
        serving, trust = verified[0], Trust.VERIFIED
    else:
        serving, trust = _unverified_choice(md, bool(digests))
    if serving is not md.best:
        decisions.append({"field": "serving copy", "decided_by":
                          f"{_name(serving)} matches the SHA-256 integrity datum",
                          "instead_of": _name(md.best)})
    if trust is Trust.UNVERIFIED:
        log.warning("no metadata copy matches its SHA-256 integrity datum: the metadata "
                    "steering this volume is unverified")
    return Settlement(trust, serving, decisions)


def _unverified_choice(md: Metadata, had_digests: bool) -> tuple[MetadataCopy, Trust]:
    """No candidate verifies: serve the majority when it decided every byte, else the best
    copy. Without any digest to check (unlocked by a raw FVEK), copies that agree and whose
    CRC holds are as good as it gets; anything else is unverified."""
    vote = md.vote_copy
    serving = vote if vote is not None and vote.usable and not md.vote_undecided else md.best
    if had_digests:
        return serving, Trust.UNVERIFIED
    consistent = not md.vote_decisions and md.best.crc_ok
    return serving, Trust.UNAVAILABLE if consistent else Trust.UNVERIFIED


def _name(copy: MetadataCopy) -> str:
    return "the majority of the copies" if copy.index == 0 else f"copy {copy.index}"
