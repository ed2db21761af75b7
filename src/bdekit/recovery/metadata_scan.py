"""Finding what a damaged BitLocker volume lost: metadata blocks, relocated header, boot sector.

Metadata scan
    When the volume header (sector 0) is gone or every copy it points to is unusable, the image
    is read in large chunks (16 MiB) and searched with ``bytes.find`` for the FVE signature
    ``-FVE-FS-`` at *sector-aligned* offsets (multiples of 512: the volume header carries the
    same string at offset 3, which is never aligned). Each hit is validated as a metadata copy
    would be (block header version 1 or 2 and sane size, 48-byte dataset header that fits,
    datums that parse, CRC32 of the padded block); the EOW information block signature
    ``FVE-EOW\\0`` is searched in the same pass (CRC-checked), as the volume header is the only
    other place naming it. Hits are grouped by (volume GUID, the three copy offsets their block
    header names) and the group with the most intact copies wins.

Relocated header block
    Windows 7+ moves the original first sectors of the volume (the NTFS/FAT boot sector) to the
    relocated header block, encrypted at its new position. Found, when the metadata does not say
    where it is, by trying the candidate positions (right after each metadata region, which is
    where Windows puts it), then by brute force: every sector of the image is decrypted (in
    chunks; all-zero ciphertext is skipped) and checked for a boot sector (``55 AA``, a sane BPB
    whose bytes-per-sector equals the sector size tried). The hit describing the largest volume
    wins; a hit lying at ``volume size - sector`` is that volume's *backup* boot sector instead.

Boot sector rebuild
    NTFS keeps a backup of its boot sector in the last sector of the volume (volume size =
    (total sectors + 1) x bytes per sector). If the relocated block decrypts to something that
    is not a boot sector, candidate volume sizes (the size a key package recorded, the state
    offset of the block header - the encrypted size on Windows 10 -, the image size) are
    checked by decrypting the sector at ``size - sector`` and requiring a BPB that describes
    exactly that size; the one found replaces sector 0 of the output.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from bdekit.format import structs
from bdekit.format.constants import FVE_SIGNATURE
from bdekit.format.metadata import Metadata, MetadataCopy, VolumeHeader, read_metadata_copy

log = logging.getLogger(__name__)


SCAN_CHUNK = 16 << 20


EOW_SIGNATURE = b"FVE-EOW\x00"


SECTOR_SIZES = (512, 4096, 1024, 2048)


ReadFn = Callable[[int, int], bytes]


@dataclasses.dataclass
class ScanResult:
    copies: list[MetadataCopy]
    eow_offsets: list[int]
    bytes_scanned: int

    def groups(self) -> list[list[MetadataCopy]]:
        """Copies grouped by (volume GUID, copy offsets), the best group first."""
        groups: dict[tuple[Any, ...], list[MetadataCopy]] = {}
        for copy in self.copies:
            if not copy.usable or copy.block_header is None or copy.dataset_header is None:
                continue
            key = (copy.dataset_header.volume_guid,
                   tuple(int(o) for o in copy.block_header.metadata_offsets))
            groups.setdefault(key, []).append(copy)

        def rank(item: tuple[tuple[Any, ...], list[MetadataCopy]]) -> tuple[int, int, int]:
            (_guid, offsets), copies = item
            consistent = sum(1 for c in copies if c.offset in offsets)
            return (sum(1 for c in copies if c.crc_ok), consistent, len(copies))

        ordered = sorted(groups.items(), key=rank, reverse=True)
        return [sorted(copies, key=lambda c: (not c.crc_ok, c.offset)) for _k, copies in ordered]


def _eow_ok(read: ReadFn, off: int) -> bool:
    head = read(off, 0x1000)
    if head[:8] != EOW_SIGNATURE:
        return False
    try:
        info = structs.EOW_INFORMATION.parse(head)
    except Exception:  # construct errors on damaged data
        return False
    if not 40 <= info.size <= len(head):
        return False
    check = bytearray(head[:info.size])
    check[36:40] = b"\0\0\0\0"
    return zlib.crc32(check) == info.crc32


def scan_metadata(source: Any, *, chunk: int = SCAN_CHUNK, align: int = 512,
                  path: str | None = None,
                  progress: Callable[[int], None] | None = None) -> ScanResult:
    """Search the whole ``source`` (``size``, ``readinto_at``, ``read_at``) for FVE metadata
    blocks and EOW information blocks at ``align``-aligned offsets."""
    size = int(source.size)

    def read(offset: int, length: int) -> bytes:
        if offset >= size:
            return b""
        return bytes(source.read_at(offset, min(length, size - offset)))

    buf = bytearray(chunk)
    copies: list[MetadataCopy] = []
    eow: list[int] = []
    pos = 0
    while pos < size:
        n = int(source.readinto_at(pos, memoryview(buf)[:min(chunk, size - pos)]))
        if n <= 0:
            break
        view = buf if n == chunk else buf[:n]
        for signature, kind in ((FVE_SIGNATURE, "fve"), (EOW_SIGNATURE, "eow")):
            i = view.find(signature)
            while i != -1:
                off = pos + i
                if off % align == 0:
                    if kind == "fve":
                        copy = read_metadata_copy(read, off, 0, path, size)
                        if copy.usable:
                            log.info("scan: metadata block at %d (%s)", off, copy.status)
                            copies.append(copy)
                    elif _eow_ok(read, off):
                        log.info("scan: EOW information block at %d", off)
                        eow.append(off)
                    i = view.find(signature, i + align - i % align)
                else:
                    i = view.find(signature, i + 1)
        pos += n
        if progress is not None:
            progress(n)
    return ScanResult(copies, eow, pos)


def metadata_from_scan(group: list[MetadataCopy], eow_offsets: Sequence[int],
                       header: VolumeHeader | None, sector_size: int = 512) -> Metadata:
    """A :class:`Metadata` served by a scanned copy; ``header`` is the volume header if it
    still parses (else a stand-in is made from the block header; its sector size is a guess
    to be confirmed by :func:`detect_sector_size`)."""
    best = group[0]
    assert best.block_header is not None
    offsets = [int(o) for o in best.block_header.metadata_offsets]
    for copy in group:
        copy.index = offsets.index(copy.offset) + 1 if copy.offset in offsets else 0
    if header is None:
        version = int(best.block_header.version)
        kind = "vista" if version == 1 else ("eow" if eow_offsets else "win7")
        header = VolumeHeader(kind=kind, oem_id=b"", bytes_per_sector=sector_size,
                              sectors_per_cluster=8, metadata_offsets=offsets,
                              eow_offsets=list(eow_offsets)[:2], guid_record_offset=None,
                              raw=b"")
    return Metadata(header=header, copies=list(group), best=best, source="scan")

