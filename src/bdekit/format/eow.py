"""Used-space-only (encrypt-on-write, EOW) structures: which chunks of a region are encrypted.

A volume encrypted "used space only" names two EOW information blocks in its volume header
(EOW GUID record). Layouts (integers little-endian; see :mod:`bdekit.format.structs`):

Information block (``FVE-EOW\\0``)
    header size u16, size u16, sector size u32, u32, chunk size u32, conversion log size u32,
    u32, region count u32, CRC32 u32 at 36 (computed over the first ``size`` bytes with the
    field zeroed), the two EOW information block offsets (u64), then one u64 bitmap block
    offset per region.
Bitmap block (``FVE-EOWBM\\0``)
    header size u16, size u32, u32, region offset u64, region size u64, conversion log offset
    u64, two u32 record offsets (from the block's start), record size u32, CRC32.
Bitmap record (``FVE-EOWBR\\0``)
    header size u16, size u32, bitmap size u32 (bits), sequence number u64, flags u32, CRC32
    u32 at 32 (over the record with the field zeroed), then the bitmap: one bit per chunk,
    least significant bit first, set = encrypted. Of the two records the valid one with the
    higher sequence number is current.

All of these, and each region's conversion log, read as zeros in the decrypted volume.
:func:`parse_eow_information` is the one check of an information block (signature, structure,
size, CRC); the metadata scan of the repair uses it too.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from collections.abc import Callable

from construct import Container

from bdekit.errors import FormatError
from bdekit.format import structs
from bdekit.format.layout import round_up
from bdekit.format.metadata import PARSE_ERRORS, parse_struct

log = logging.getLogger(__name__)

EOW_SIGNATURE = b"FVE-EOW\x00"
#: bytes read for an information block or a bitmap block
EOW_INFORMATION_READ = 0x1000
EOW_BITMAP_READ = 0x2000
_INFO_CRC = slice(36, 40)
_RECORD_CRC = slice(32, 36)


@dataclasses.dataclass
class EowLayout:
    """Used-space-only bitmaps: per region, chunk runs with their encryption state."""

    chunk_size: int
    regions: list[tuple[int, int, bytes, int]]  # (offset, size, bitmap, bits)
    reserved: list[tuple[int, int]]  # (offset, length) of EOW structures and conversion logs


def _crc_ok(data: bytes, field: slice, expected: int) -> bool:
    check = bytearray(data)
    check[field] = bytes(4)
    return zlib.crc32(check) == expected


def parse_eow_information(head: bytes, offset: int, path: str | None = None) -> Container:
    """The EOW information block at the start of ``head`` (read at ``offset``); raises
    :class:`FormatError` naming what is wrong (signature, structure, size, CRC32)."""
    if head[:8] != EOW_SIGNATURE:
        raise FormatError("EOW information block: bad signature (expected 'FVE-EOW')",
                          path=path, offset=offset)
    info = parse_struct(structs.EOW_INFORMATION, head, "EOW information block", offset, path)
    if not 40 <= info.size <= len(head):
        raise FormatError(f"EOW information block: size {info.size} out of bounds "
                          f"(40..{len(head)})", path=path, offset=offset + 10)
    if not _crc_ok(head[:info.size], _INFO_CRC, int(info.crc32)):
        raise FormatError("EOW information block: CRC32 mismatch", path=path,
                          offset=offset + _INFO_CRC.start)
    return info


def _current_record(data: bytes, bm: Container) -> Container | None:
    """The valid bitmap record with the highest sequence number."""
    best = None
    for rec_off in bm.record_offsets:
        rec_data = data[rec_off:rec_off + bm.record_size]
        try:
            rec = structs.EOW_BITMAP_RECORD.parse(rec_data)
        except PARSE_ERRORS:
            continue
        if not _crc_ok(rec_data, _RECORD_CRC, int(rec.crc32)):
            continue
        if best is None or rec.sequence > best.sequence:
            best = rec
    return best


def _layout(read: Callable[[int, int], bytes], info: Container, sector_size: int,
            path: str | None) -> EowLayout:
    regions: list[tuple[int, int, bytes, int]] = []
    reserved = [(int(eow_off), round_up(info.size, sector_size)) for eow_off in info.eow_offsets]
    for bm_off in info.bitmap_offsets:
        data = read(bm_off, EOW_BITMAP_READ)
        try:
            bm = structs.EOW_BITMAP_BLOCK.parse(data)
        except PARSE_ERRORS:
            raise FormatError("EOW bitmap block does not parse", path=path,
                              offset=int(bm_off)) from None
        reserved.append((int(bm_off), int(bm.size)))
        reserved.append((int(bm.conversion_log_offset), int(info.conversion_log_size)))
        best = _current_record(data, bm)
        if best is None:
            raise FormatError("EOW bitmap block has no valid record", path=path,
                              offset=int(bm_off))
        regions.append((int(bm.region_offset), int(bm.region_size), bytes(best.bitmap),
                        int(best.bitmap_size)))
    return EowLayout(int(info.chunk_size), regions, reserved)


def read_eow(read: Callable[[int, int], bytes], offsets: list[int], sector_size: int,
             path: str | None = None) -> EowLayout | None:
    """Read the first valid EOW information block and its bitmaps' current records."""
    for off in offsets:
        if not off:
            continue
        try:
            info = parse_eow_information(read(off, EOW_INFORMATION_READ), off, path)
        except FormatError as exc:
            log.warning("%s", exc.one_line())
            continue
        return _layout(read, info, sector_size, path)
    return None


__all__ = ["EOW_SIGNATURE", "EowLayout", "parse_eow_information", "read_eow"]
