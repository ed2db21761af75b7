"""eow: split from bdekit.volume (TODO docstring)."""

from __future__ import annotations

import dataclasses
import logging
import zlib
from typing import Any

from bdekit.errors import FormatError
from bdekit.format import structs
from bdekit.format.layout import round_up

log = logging.getLogger(__name__)


@dataclasses.dataclass
class EowLayout:
    """Used-space-only bitmaps: per region, chunk runs with their encryption state."""

    chunk_size: int
    regions: list[tuple[int, int, bytes, int]]  # (offset, size, bitmap, bits)
    reserved: list[tuple[int, int]]  # (offset, length) of EOW structures and conversion logs


def read_eow(read: Any, offsets: list[int], sector_size: int,
             path: str | None = None) -> EowLayout | None:
    """Read the first valid EOW information block and its bitmaps' current records."""
    for off in offsets:
        if not off:
            continue
        head = read(off, 0x1000)
        if head[:8] != b"FVE-EOW\x00":
            log.warning("EOW information at %d: bad signature", off)
            continue
        try:
            info = structs.EOW_INFORMATION.parse(head)
        except Exception:  # construct errors on a damaged block
            log.warning("EOW information at %d does not parse", off)
            continue
        check = bytearray(head[:info.size])
        check[36:40] = b"\0\0\0\0"
        if zlib.crc32(check) != info.crc32:
            log.warning("EOW information at %d: CRC mismatch", off)
            continue
        regions: list[tuple[int, int, bytes, int]] = []
        reserved: list[tuple[int, int]] = []
        for eow_off in info.eow_offsets:
            reserved.append((int(eow_off), round_up(info.size, sector_size)))
        for bm_off in info.bitmap_offsets:
            data = read(bm_off, 0x2000)
            try:
                bm = structs.EOW_BITMAP_BLOCK.parse(data)
            except Exception:
                raise FormatError("EOW bitmap block does not parse", path=path,
                                  offset=int(bm_off)) from None
            reserved.append((int(bm_off), int(bm.size)))
            reserved.append((int(bm.conversion_log_offset), int(info.conversion_log_size)))
            best = None
            for rec_off in bm.record_offsets:
                rec_data = data[rec_off:rec_off + bm.record_size]
                try:
                    rec = structs.EOW_BITMAP_RECORD.parse(rec_data)
                except Exception:
                    continue
                check = bytearray(rec_data)
                check[32:36] = b"\0\0\0\0"
                if zlib.crc32(check) != rec.crc32:
                    continue
                if best is None or rec.sequence > best.sequence:
                    best = rec
            if best is None:
                raise FormatError("EOW bitmap block has no valid record", path=path,
                                  offset=int(bm_off))
            regions.append((int(bm.region_offset), int(bm.region_size), bytes(best.bitmap),
                            int(best.bitmap_size)))
        return EowLayout(int(info.chunk_size), regions, reserved)
    return None

