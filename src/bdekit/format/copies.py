"""Reading the three metadata copies and weighing them before anything is unlocked.

Where the copies are: the volume header's GUID record names all three (Windows 7+); on Vista
the header names the first (a cluster number) and the first copy's block header the other two.
Each copy is read and judged on its own (:func:`bdekit.format.metadata.read_metadata_copy`).

Then the copies are weighed, never simply taken first-come: the raw regions of every copy
whose offset lies in the image are voted on byte by byte (:mod:`bdekit.format.consensus`), and
the majority is parsed like a copy (index 0). The copy that serves until the VMK can verify
one (:mod:`bdekit.unlock.integrity`) is, in order: a copy whose CRC holds and which equals the
majority; any copy whose CRC holds; the majority when it parses and its CRC holds; the first
copy that parses; the majority. Only when none of these exists is the metadata unusable
(:class:`~bdekit.errors.MetadataError`).

A Windows 7+ header whose GUID record lost its GUID (more bytes than the near-miss tolerance
of :func:`~bdekit.format.metadata.parse_volume_header`) parses as a Vista header, and the
Vista reading then finds no copy. Before giving up, the three offsets at the GUID record's two
places (offset 160, and 424 for BitLocker To Go) are read as the copies' offsets; they serve
when a copy there holds BitLocker metadata, and the report lists the destroyed GUID among the
metadata decisions. The copies themselves are then weighed and verified as always.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from bdekit.errors import MetadataError
from bdekit.format.consensus import Vote, field_namer, vote, vote_span
from bdekit.format.metadata import (
    HeaderKind,
    Metadata,
    MetadataCopy,
    ReadFn,
    VolumeHeader,
    parse_volume_header,
    read_metadata_copy,
)
from bdekit.format.steering import check_steering
from bdekit.format.structs import GUID_RECORD_OFFSET, TOGO_GUID_RECORD_OFFSET

log = logging.getLogger(__name__)

#: largest block a copy's header may claim and still take part in the vote
_MAX_VOTED_BLOCK = 0x10000


def _read_copies(read: ReadFn, header: VolumeHeader, path: str | None,
                 image_size: int | None) -> list[MetadataCopy]:
    offsets = list(header.metadata_offsets)
    if header.kind != HeaderKind.VISTA:
        return [read_metadata_copy(read, off, index, path, image_size)
                for index, off in enumerate(offsets, start=1)]
    first = read_metadata_copy(read, offsets[0], 1, path, image_size)
    if first.block_header is not None:
        offsets = [int(o) for o in first.block_header.metadata_offsets]
    else:
        offsets = [*offsets, 0, 0]
    rest = [read_metadata_copy(read, off, index, path, image_size)
            for index, off in enumerate(offsets[1:], start=2)]
    return [first, *rest]


def _claimed_size(head: bytes) -> int:
    if len(head) < 12:
        return 0
    units = int.from_bytes(head[8:10], "little")
    version = int.from_bytes(head[10:12], "little")
    size = units * 16 if version >= 2 else units
    return size if 112 <= size <= _MAX_VOTED_BLOCK else 0


def _regions(read: ReadFn, copies: list[MetadataCopy],
             image_size: int | None) -> tuple[dict[int, bytes], int]:
    """Raw bytes from each copy's offset (copies whose offset lies in the image)."""
    placed = [c for c in copies
              if c.offset > 0 and c.offset % 512 == 0
              and (image_size is None or c.offset + 64 <= image_size)]
    sizes = [_claimed_size(read(c.offset, 12)) for c in placed]
    span = vote_span([s for s in sizes if s])
    if span <= 8 + 0x200:
        return {}, 0
    return {c.index: read(c.offset, span) for c in placed}, span


def _vote_copy(read: ReadFn, copies: list[MetadataCopy], path: str | None,
               image_size: int | None) -> tuple[MetadataCopy | None, Vote | None]:
    regions, span = _regions(read, copies, image_size)
    if len(regions) < 2:
        return None, None
    plain = vote(regions, span)
    anchor = min(c.offset for c in copies if c.index in regions)
    data = plain.data

    def read_voted(offset: int, length: int) -> bytes:
        rel = offset - anchor
        return data[rel:rel + length] if rel >= 0 else b""

    voted = read_metadata_copy(read_voted, anchor, 0, path, None)
    if not plain.disagreements:
        return voted, plain
    spans = [(d.offset - anchor, d.offset - anchor + d.size,
              f"datum at +{d.offset - anchor} ({d.type_name}, role {d.role_name})")
             for d in voted.datums]
    named = vote(regions, span, field_namer(data, voted.block_size or span, spans))
    return voted, named


def choose_copy(copies: list[MetadataCopy],
                voted: MetadataCopy | None = None) -> MetadataCopy | None:
    """The copy that serves before anything can be verified (module docstring)."""
    usable = [c for c in copies if c.usable]
    if voted is not None and voted.usable:
        for copy in usable:
            if copy.crc_ok and copy.block == voted.block:
                return copy
    for copy in usable:
        if copy.crc_ok:
            return copy
    if voted is not None and voted.usable and voted.crc_ok:
        return voted
    if usable:
        return usable[0]
    return voted if voted is not None and voted.usable else None


def read_metadata(read: ReadFn, path: str | None = None,
                  image_size: int | None = None) -> Metadata:
    """Read the volume header and every metadata copy, weigh them; raise if none is usable."""
    header = parse_volume_header(read(0, 512), path)
    log.debug("volume header: %s, metadata offsets %s", header.kind, header.metadata_offsets)
    copies = _read_copies(read, header, path, image_size)
    voted, result = _vote_copy(read, copies, path, image_size)
    best = choose_copy(copies, voted)
    header_decisions: list[dict[str, Any]] = []
    if best is None:
        found = _lost_guid_record(read, header, path, image_size)
        if found is not None:
            header, copies, decision = found
            header_decisions.append(decision)
            voted, result = _vote_copy(read, copies, path, image_size)
            best = choose_copy(copies, voted)
    if best is None:
        reasons = "; ".join(f"copy {c.index} at {c.offset}: {c.status}" for c in copies)
        raise MetadataError(f"no usable BitLocker metadata ({reasons})", path=path)
    for copy in copies:
        if copy is not best and copy.status != "ok":
            log.warning("metadata copy %d at offset %d: %s (%s serves)", copy.index,
                        copy.offset, copy.status, _name(best))
    decisions = header_decisions + ([d.to_json() for d in result.disagreements]
                                    if result is not None else [])
    if best.index == 0:
        log.warning("no metadata copy is intact on its own: the majority of the copies serves")
    md = Metadata(header=header, copies=copies, best=best, vote_copy=voted,
                  vote_decisions=decisions,
                  vote_undecided=bool(result is not None and result.undecided))
    md.vote_decisions += check_steering(md, image_size)  # misaligned / outvoted offsets
    return md


def _lost_guid_record(read: ReadFn, header: VolumeHeader, path: str | None,
                      image_size: int | None
                      ) -> tuple[VolumeHeader, list[MetadataCopy], dict[str, Any]] | None:
    """A header read as Vista's whose copies are all unusable: the Windows 7+ header it may be,
    with a destroyed GUID (module docstring). (header, copies, report decision) or None."""
    if header.kind != HeaderKind.VISTA or len(header.raw) < 512:
        return None
    places = ((GUID_RECORD_OFFSET, HeaderKind.WIN7), (TOGO_GUID_RECORD_OFFSET, HeaderKind.TOGO))
    for at, kind in places:
        offsets = [int.from_bytes(header.raw[at + 16 + 8 * i:at + 24 + 8 * i], "little")
                   for i in range(3)]
        if 0 in offsets or len(set(offsets)) != 3:
            continue  # not three distinct copy offsets: no GUID record here
        copies = [read_metadata_copy(read, off, index, path, image_size)
                  for index, off in enumerate(offsets, start=1)]
        if not any(copy.usable for copy in copies):
            continue
        log.warning("%svolume header: no BitLocker GUID at offset %d, but the offsets after it "
                    "name metadata copies: taken as a %s header whose GUID is destroyed",
                    f"{path}: " if path else "", at, kind)
        decision = {"field": "volume header GUID record", "value": f"offset {at}",
                    "decided_by": "the GUID is destroyed; the copy offsets after it name "
                                  "BitLocker metadata, so they serve"}
        return (dataclasses.replace(header, kind=kind, metadata_offsets=offsets,
                                    guid_record_offset=at), copies, decision)
    return None


def _name(copy: MetadataCopy) -> str:
    return "the majority of the copies" if copy.index == 0 else f"copy {copy.index}"
