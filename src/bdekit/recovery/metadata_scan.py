"""Searching a damaged image for FVE metadata blocks and EOW information blocks.

When the volume header (sector 0) is gone, or every copy it points to is unusable, the image is
read in large chunks (16 MiB) and searched with ``bytes.find`` for the FVE signature
``-FVE-FS-`` at *sector-aligned* offsets (multiples of 512: the volume header carries the same
string at offset 3, which is never aligned). Each hit is validated as a metadata copy would be
(:func:`bdekit.format.metadata.read_metadata_copy`: block header version 1 or 2 and a sane
size, a 48-byte dataset header that fits, datums that parse, CRC32 of the padded block). The
EOW information block signature ``FVE-EOW\\0`` is searched in the same pass and checked by
:func:`bdekit.format.eow.parse_eow_information`, as the volume header is the only other place
naming it.

Hits are grouped by (volume GUID, the three copy offsets their block header names); the group
with the most intact copies comes first. :func:`metadata_from_scan` turns a group into a
:class:`~bdekit.format.metadata.Metadata`, with a stand-in volume header when the real one is
gone (:func:`bdekit.format.metadata.stand_in_header`).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable, Sequence

from bdekit.errors import FormatError
from bdekit.format.constants import FVE_SIGNATURE
from bdekit.format.eow import EOW_INFORMATION_READ, EOW_SIGNATURE, parse_eow_information
from bdekit.format.metadata import (
    Metadata,
    MetadataCopy,
    MetadataSource,
    VolumeHeader,
    read_metadata_copy,
    stand_in_header,
)
from bdekit.format.steering import check_steering
from bdekit.image.sources import ImageSource

log = logging.getLogger(__name__)

SCAN_CHUNK = 16 << 20

#: sector sizes tried, most common first
SECTOR_SIZES = (512, 4096, 1024, 2048)

ReadFn = Callable[[int, int], bytes]

_GroupKey = tuple[uuid.UUID, tuple[int, ...]]


@dataclasses.dataclass
class ScanResult:
    copies: list[MetadataCopy]
    eow_offsets: list[int]
    bytes_scanned: int
    #: every aligned FVE signature, usable block or not (where a metadata region lies)
    signatures: list[int] = dataclasses.field(default_factory=list)

    def groups(self) -> list[list[MetadataCopy]]:
        """Copies grouped by (volume GUID, copy offsets), the best group first."""
        groups: dict[_GroupKey, list[MetadataCopy]] = {}
        for copy in self.copies:
            if not copy.usable or copy.block_header is None or copy.dataset_header is None:
                continue
            key = (copy.dataset_header.volume_guid,
                   tuple(int(o) for o in copy.block_header.metadata_offsets))
            groups.setdefault(key, []).append(copy)

        def rank(item: tuple[_GroupKey, list[MetadataCopy]]) -> tuple[int, int, int]:
            (_guid, offsets), copies = item
            consistent = sum(1 for c in copies if c.offset in offsets)
            return (sum(1 for c in copies if c.crc_ok), consistent, len(copies))

        ordered = sorted(groups.items(), key=rank, reverse=True)
        return [sorted(copies, key=lambda c: (not c.crc_ok, c.offset)) for _k, copies in ordered]


def source_reader(source: ImageSource) -> ReadFn:
    """``read(offset, length)`` over ``source``, clipped to its end (empty past it)."""
    size = int(source.size)

    def read(offset: int, length: int) -> bytes:
        if offset >= size or length <= 0:
            return b""
        return bytes(source.read_at(offset, min(length, size - offset)))

    return read


class _Hits:
    """What the scan found, checked as it is found."""

    def __init__(self, read: ReadFn, size: int, path: str | None) -> None:
        self.read = read
        self.size = size
        self.path = path
        self.copies: list[MetadataCopy] = []
        self.eow: list[int] = []
        self.signatures: list[int] = []

    def check(self, off: int, kind: bytes) -> None:
        if kind == FVE_SIGNATURE:
            self.signatures.append(off)
            copy = read_metadata_copy(self.read, off, 0, self.path, self.size)
            if copy.usable:
                log.info("scan: metadata block at %d (%s)", off, copy.status)
                self.copies.append(copy)
            return
        try:
            parse_eow_information(self.read(off, EOW_INFORMATION_READ), off, self.path)
        except FormatError:
            return
        log.info("scan: EOW information block at %d", off)
        self.eow.append(off)


def _find_aligned(view: bytearray, signature: bytes, base: int, align: int) -> list[int]:
    """Offsets (image coordinates) of ``signature`` in ``view`` that are ``align``-aligned."""
    found: list[int] = []
    i = view.find(signature)
    while i != -1:
        if (base + i) % align == 0:
            found.append(base + i)
            i = view.find(signature, i + align - i % align)
        else:
            i = view.find(signature, i + 1)
    return found


def scan_metadata(source: ImageSource, *, chunk: int = SCAN_CHUNK, align: int = 512,
                  path: str | None = None,
                  progress: Callable[[int], None] | None = None) -> ScanResult:
    """Search the whole ``source`` for FVE metadata blocks and EOW information blocks at
    ``align``-aligned offsets."""
    size = int(source.size)
    hits = _Hits(source_reader(source), size, path)
    buf = bytearray(chunk)
    pos = 0
    while pos < size:
        n = int(source.readinto_at(pos, memoryview(buf)[:min(chunk, size - pos)]))
        if n <= 0:
            break
        view = buf if n == chunk else buf[:n]
        for signature in (FVE_SIGNATURE, EOW_SIGNATURE):
            for off in _find_aligned(view, signature, pos, align):
                hits.check(off, signature)
        pos += n
        if progress is not None:
            progress(n)
    return ScanResult(hits.copies, hits.eow, pos, hits.signatures)


def metadata_from_scan(group: list[MetadataCopy], eow_offsets: Sequence[int],
                       header: VolumeHeader | None, sector_size: int = 512) -> Metadata:
    """A :class:`Metadata` served by a scanned copy; ``header`` is the volume header if it
    still parses (else a stand-in is made from the block header; its sector size is a guess
    to be confirmed on the boot sector)."""
    best = group[0]
    if best.block_header is None:
        raise FormatError("scanned metadata block has no block header", offset=best.offset)
    offsets = [int(o) for o in best.block_header.metadata_offsets]
    for copy in group:
        copy.index = offsets.index(copy.offset) + 1 if copy.offset in offsets else 0
    if header is None:
        header = stand_in_header(int(best.block_header.version), offsets,
                                 eow_offsets=eow_offsets, sector_size=sector_size)
    md = Metadata(header=header, copies=list(group), best=best, source=MetadataSource.SCAN)
    md.vote_decisions += check_steering(md)
    return md


__all__ = ["SCAN_CHUNK", "SECTOR_SIZES", "ReadFn", "ScanResult", "metadata_from_scan",
           "scan_metadata", "source_reader"]
