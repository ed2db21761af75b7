"""The one check of an EOW information block, used by the volume reader and the repair's scan.

Blocks are built here from the layout in docs/bitlocker-format.md section 7 (CRC32 over the
first ``size`` bytes with the CRC field at 36 zeroed), independently of the parser.
"""

from __future__ import annotations

import struct
import zlib

import pytest

from bdekit.errors import FormatError
from bdekit.format.eow import Doubt, parse_eow_information, read_eow
from bdekit.recovery.metadata_scan import scan_metadata
from tests.conftest import BytesSource, requires_real


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
    """A block with a bad CRC is skipped by both the volume reader and the repair's scan; with
    no block that verifies, the reader puts the whole volume in doubt (decided by content)."""
    image = bytearray(0x10000)
    image[0x2000:0x3000] = _information([])
    image[0x4000:0x5000] = _information([], crc_delta=1)
    found = scan_metadata(BytesSource(bytes(image)))  # type: ignore[arg-type]
    assert found.eow_offsets == [0x2000]

    def read(offset: int, length: int) -> bytes:
        return bytes(image[offset:offset + length])

    doubtful = read_eow(read, [0x4000], 512)
    assert doubtful is not None and doubtful.regions == []
    assert [(a, why) for a, _b, why in doubtful.doubts] == [(0, Doubt.NO_INFORMATION)]
    assert read_eow(read, [0, 0], 512) is None
    layout = read_eow(read, [0x4000, 0x2000], 512)
    assert layout is not None and layout.chunk_size == 8 << 20 and layout.regions == []


# --------------------------------------------------------------------------------------------
# Verification of the bitmaps, on the real Windows 10 used-space-only volume
# --------------------------------------------------------------------------------------------

#: the real image (docs/bitlocker-format.md section 7 and the README's format findings): the
#: two information blocks and the first bitmap block
REAL_INFO = (357801984, 357806080)
REAL_BITMAP0 = 357810176


def _real_reader(real_image, patches=()):  # type: ignore[no-untyped-def]
    data = bytearray(real_image("eow_partial").read_bytes()[:REAL_INFO[0] + 0x400000])
    for off, new in patches:
        data[off:off + len(new)] = new

    def read(offset: int, length: int) -> bytes:
        return bytes(data[offset:offset + length])
    return read, data


@requires_real
def test_real_bitmaps_verify(real_image) -> None:  # type: ignore[no-untyped-def]
    """Every block and record of the real volume verifies by the CRC rules of the README
    (block: its first 512 bytes; record: its 512 bytes; CRC field zeroed): nothing in doubt,
    and the record with the higher sequence number of each region serves."""
    read, data = _real_reader(real_image)
    layout = read_eow(read, list(REAL_INFO), 512)
    assert layout is not None and layout.doubts == [] and layout.notes == []
    assert len(layout.regions) == 6
    for i, (offset, size, bitmap, bits) in enumerate(layout.regions):
        block = REAL_BITMAP0 + 0x82000 * i  # the blocks lie 532480 bytes apart
        assert struct.unpack_from("<QQ", data, block + 20) == (offset, size)
        seqs = [struct.unpack_from("<Q", data, block + r + 20)[0] for r in (512, 1024)]
        newest = 512 if seqs[0] > seqs[1] else 1024
        assert bits == struct.unpack_from("<I", data, block + newest + 16)[0]
        assert bitmap[:-(-bits // 8)] == data[block + newest + 36:block + newest + 36
                                              + -(-bits // 8)]


@requires_real
def test_real_damaged_newest_record(real_image) -> None:  # type: ignore[no-untyped-def]
    """One byte of region 0's newest record (sequence 7, at +512): the older record (6)
    serves, and the chunks where the damaged bits and the older ones differ are in doubt."""
    pos = REAL_BITMAP0 + 512 + 36
    read, data = _real_reader(real_image)
    old = data[pos]
    read, data = _real_reader(real_image, [(pos, bytes([old ^ 0x0F]))])
    layout = read_eow(read, list(REAL_INFO), 512)
    assert layout is not None
    region0 = layout.regions[0]
    assert region0[2][:1] == bytes([data[REAL_BITMAP0 + 1024 + 36]])  # the older record's
    differ = (old ^ 0x0F) ^ data[REAL_BITMAP0 + 1024 + 36]
    chunk = 8 << 20
    expected = [(8192 + k * chunk, min(8192 + (k + 1) * chunk, 8192 + region0[1]))
                for k in range(5) if differ >> k & 1]
    merged: list[tuple[int, int]] = []
    for a, b in expected:
        if merged and merged[-1][1] == a:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    assert [(a, b) for a, b, why in layout.doubts if why == Doubt.RECORD_DAMAGED] == merged
    assert any("not the newest" in n or "may be the current" in n for n in layout.notes)


@requires_real
def test_real_record_size_field_damaged(real_image) -> None:  # type: ignore[no-untyped-def]
    """The bitmap block's record-size field (no CRC recomputed): the block fails its CRC, but
    its region meets its neighbours' and its records verify on their own: used, with a note;
    never "every chunk encrypted"."""
    pos = REAL_BITMAP0 + 52
    read, data = _real_reader(real_image)
    clean = read_eow(read, list(REAL_INFO), 512)
    read, _ = _real_reader(real_image, [(pos, bytes([data[pos] ^ 0x04]))])
    layout = read_eow(read, list(REAL_INFO), 512)
    assert layout is not None and clean is not None
    assert layout.regions == clean.regions and layout.doubts == []
    assert any("fails its CRC32" in n for n in layout.notes)


@requires_real
def test_real_bitmap_blocks_gone(real_image) -> None:  # type: ignore[no-untyped-def]
    """Every bitmap block zeroed: every region is in doubt (decided by content)."""
    patches = [(REAL_BITMAP0 + 0x82000 * i, bytes(1536)) for i in range(6)]
    read, _ = _real_reader(real_image, patches)
    layout = read_eow(read, list(REAL_INFO), 512)
    assert layout is not None
    assert {why for _a, _b, why in layout.doubts} == {Doubt.NO_BITMAP}
    assert min(a for a, _b, _w in layout.doubts) <= REAL_BITMAP0


def test_two_damaged_information_blocks_reconciled() -> None:
    """Each copy damaged in a different byte: the combination that verifies serves."""
    good = _information([0x700000])
    a, b = bytearray(good), bytearray(good)
    a[20] ^= 1  # chunk size
    b[24] ^= 1  # conversion log size
    image = bytearray(0x10000)
    image[0x2000:0x3000] = a
    image[0x4000:0x5000] = b

    def read(offset: int, length: int) -> bytes:
        return bytes(image[offset:offset + length])

    layout = read_eow(read, [0x2000, 0x4000], 512)
    assert layout is not None and layout.chunk_size == 8 << 20
    assert not any(why == Doubt.NO_INFORMATION for _a, _b, why in layout.doubts)
    a[24] ^= 1  # now both are damaged the same way: nothing verifies
    image[0x2000:0x3000] = a
    b[20] ^= 1
    image[0x4000:0x5000] = b
    layout = read_eow(read, [0x2000, 0x4000], 512)
    assert layout is not None and layout.doubts[0][2] == Doubt.NO_INFORMATION
