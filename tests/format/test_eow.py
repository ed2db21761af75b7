"""The one check of an EOW information block, used by the volume reader and the repair's scan.

Blocks are built here from the layout in docs/bitlocker-format.md section 7 (CRC32 over the
first ``size`` bytes with the CRC field at 36 zeroed), independently of the parser.
"""

from __future__ import annotations

import struct
import zlib

import pytest

from bdekit.errors import FormatError
from bdekit.format.eow import parse_eow_information, read_eow
from bdekit.recovery.metadata_scan import scan_metadata
from tests.conftest import BytesSource


def _information(bitmaps: list[int], *, crc_delta: int = 0, size: int | None = None) -> bytes:
    size = 56 + 8 * len(bitmaps) if size is None else size
    block = bytearray(0x1000)
    block[0:8] = b"FVE-EOW\x00"
    struct.pack_into("<HHIIIIII", block, 8, 56, size, 512, 0, 8 << 20, 0x10000, 0,
                     len(bitmaps))
    struct.pack_into("<QQ", block, 40, 0x500000, 0x600000)
    for i, off in enumerate(bitmaps):
        struct.pack_into("<Q", block, 56 + 8 * i, off)
    crc = zlib.crc32(bytes(block[:size])) if 40 <= size <= len(block) else 0
    struct.pack_into("<I", block, 36, (crc + crc_delta) & 0xFFFFFFFF)
    return bytes(block)


def test_information_block_checked() -> None:
    info = parse_eow_information(_information([0x700000]), 0x500000)
    assert info.chunk_size == 8 << 20 and list(info.bitmap_offsets) == [0x700000]
    with pytest.raises(FormatError, match="CRC32") as err:
        parse_eow_information(_information([0x700000], crc_delta=1), 0x500000, "v.img")
    assert err.value.offset == 0x500000 + 36 and err.value.path == "v.img"
    with pytest.raises(FormatError, match="size 20"):
        parse_eow_information(_information([], size=20), 0)
    with pytest.raises(FormatError, match="signature"):
        parse_eow_information(bytes(0x1000), 0)
    with pytest.raises(FormatError):  # the structure does not fit: one u64 of 200 missing
        parse_eow_information(_information([1] * 200, size=0x1000)[:60 + 8 * 199], 0)


def test_reader_and_scan_agree() -> None:
    """A block with a bad CRC is skipped by both the volume reader and the repair's scan."""
    image = bytearray(0x10000)
    image[0x2000:0x3000] = _information([])
    image[0x4000:0x5000] = _information([], crc_delta=1)
    found = scan_metadata(BytesSource(bytes(image)))  # type: ignore[arg-type]
    assert found.eow_offsets == [0x2000]

    def read(offset: int, length: int) -> bytes:
        return bytes(image[offset:offset + length])

    assert read_eow(read, [0x4000], 512) is None
    layout = read_eow(read, [0x4000, 0x2000], 512)
    assert layout is not None and layout.chunk_size == 8 << 20 and layout.regions == []
