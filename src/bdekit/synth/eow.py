"""Turning a synthetic Windows 7+ image into a used-space-only (EOW) one, as Windows 10 lays it
out, for tests of the EOW reader and of the damage harness.

:func:`make_used_space_only` takes a built image (fully encrypted, :func:`bdekit.synth.build`)
and its volume plaintext and rewrites it the way the real Windows 10 used-space-only volume
in ``real-images/eow_partial.bin.gz`` is laid out:

* three regions: the volume after its first 8 KiB up to the relocated header block; the
  relocated header block alone (one chunk); the rest of the volume;
* the two information blocks (``FVE-EOW``, 4 KiB apart, identical), then one bitmap block
  per region (``FVE-EOWBM``: 1536 bytes, CRC32 over its first 512 bytes) every 8 KiB with
  its conversion log 4 KiB after it; each bitmap block holds two records (``FVE-EOWBR``, 512
  bytes at +512 and +1024, each with its own CRC32): the first the newest (sequence
  ``sequence``), the second one step older, differing in the chunks ``older_differs`` names;
* the chunks a bitmap marks unencrypted hold the plaintext on disk (``plain_chunks``, as
  volume offsets of chunk starts); the relocated header block holds plaintext when
  ``relocated_plain`` (what Windows 10 did on the real volume);
* the volume header's GUID record becomes the EOW GUID with the two information offsets.

It returns the decrypted volume a correct reader must produce, computed from the plaintext
alone (the EOW structures, conversion logs, metadata regions and relocated block read as
zeros), so a test can check a reader against it without decrypting anything itself.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from collections.abc import Collection

from bdekit.format import structs
from bdekit.format.constants import EOW_GUID
from bdekit.format.copies import read_metadata
from bdekit.format.layout import metadata_region_size

#: sizes Windows 10 uses (seen on the real volume)
INFORMATION_SPACING = 0x1000
BITMAP_SPACING = 0x2000
BITMAP_BLOCK_SIZE = 1536
RECORD_SIZE = 512
LOG_SIZE = 0x1000


@dataclasses.dataclass(frozen=True)
class EowImage:
    """Where the EOW structures of a converted image are (for tests that damage them)."""

    information: tuple[int, int]
    bitmaps: list[int]
    regions: list[tuple[int, int]]
    chunk_size: int


def _crc_at(block: bytearray, field: int, span: int) -> None:
    struct.pack_into("<I", block, field, 0)
    struct.pack_into("<I", block, field, zlib.crc32(bytes(block[:span])))


def _record(sequence: int, bits: list[bool]) -> bytes:
    nbytes = -(-len(bits) // 8)
    bitmap = bytearray(nbytes)
    for k, bit in enumerate(bits):
        if bit:
            bitmap[k // 8] |= 1 << (k % 8)
    rec = bytearray(RECORD_SIZE)
    rec[0:10] = b"FVE-EOWBR\x00"
    struct.pack_into("<HIIQI", rec, 10, 36, RECORD_SIZE, len(bits), sequence, 2)
    rec[36:36 + nbytes] = bitmap
    _crc_at(rec, 32, RECORD_SIZE)
    return bytes(rec)


def _bitmap_block(index: int, region: tuple[int, int], log_at: int, newest: bytes,
                  older: bytes) -> bytes:
    block = bytearray(BITMAP_BLOCK_SIZE)
    block[0:10] = b"FVE-EOWBM\x00"
    struct.pack_into("<HIIQQQIII", block, 10, 60, BITMAP_BLOCK_SIZE, index, region[0],
                     region[1], log_at, 512, 1024, RECORD_SIZE)
    _crc_at(block, 56, 512)
    block[512:1024] = newest
    block[1024:1536] = older
    return bytes(block)


def _information(at: tuple[int, int], bitmaps: list[int], sector_size: int, chunk: int) -> bytes:
    size = 56 + 8 * len(bitmaps)
    info = bytearray(INFORMATION_SPACING)
    info[0:8] = b"FVE-EOW\x00"
    struct.pack_into("<HHIIIIII", info, 8, 56, size, sector_size, sector_size, chunk, LOG_SIZE,
                     0, len(bitmaps))
    struct.pack_into("<QQ", info, 40, *at)
    for i, off in enumerate(bitmaps):
        struct.pack_into("<Q", info, 56 + 8 * i, off)
    _crc_at(info, 36, size)
    return bytes(info)


def make_used_space_only(image: bytearray, plaintext: bytes, *, chunk_size: int,
                         structures_at: int, plain_chunks: Collection[int] = (),
                         relocated_plain: bool = True, sequence: int = 7,
                         older_differs: Collection[int] = ()) -> tuple[bytes, EowImage]:
    """Rewrite ``image`` in place (see the module docstring); return (the expected decrypted
    volume, where the structures are). The chunks holding the structures are made
    unencrypted (their other bytes are plaintext); the conversion logs hold a pattern that a
    reader must not show."""
    md = read_metadata(lambda o, n: bytes(image[o:o + n]), None, len(image))
    ss = md.header.bytes_per_sector
    virt = md.virtualization
    assert virt is not None, "a Windows 7+ image with a relocated header block"
    size = len(plaintext)
    regions = [(0x2000, virt[0] - 0x2000), (virt[0], 0x2000),
               (virt[0] + 0x2000, size - virt[0] - 0x2000)]
    info_at = (structures_at, structures_at + INFORMATION_SPACING)
    bitmaps = [structures_at + 2 * INFORMATION_SPACING + i * BITMAP_SPACING
               for i in range(len(regions))]
    end = bitmaps[-1] + BITMAP_SPACING
    plain = {*plain_chunks, *_chunks_of(regions, chunk_size, structures_at, end)}
    region = metadata_region_size(2, ss, md.header.cluster_size)
    copies = [(int(o), region) for o in md.block_header.metadata_offsets]
    expected = bytearray(plaintext)
    all_bits = [_write_region(image, plaintext, (off, length), chunk_size,
                              relocated_plain if i == 1 else None, plain, copies)
                for i, (off, length) in enumerate(regions)]
    for i, ((off, length), bits) in enumerate(zip(regions, all_bits, strict=True)):
        older = [b != (off + k * chunk_size in older_differs) for k, b in enumerate(bits)]
        log_at = bitmaps[i] + LOG_SIZE
        image[bitmaps[i]:bitmaps[i] + BITMAP_BLOCK_SIZE] = _bitmap_block(
            i, (off, length), log_at, _record(sequence, bits), _record(sequence - 1, older))
        image[log_at:log_at + LOG_SIZE] = b"LOG!" * (LOG_SIZE // 4)
        expected[bitmaps[i]:bitmaps[i] + BITMAP_BLOCK_SIZE] = bytes(BITMAP_BLOCK_SIZE)
        expected[log_at:log_at + LOG_SIZE] = bytes(LOG_SIZE)
    if relocated_plain:
        image[virt[0]:virt[0] + 0x2000] = plaintext[:0x2000]
    for at in info_at:
        image[at:at + ss] = _information(info_at, bitmaps, ss, chunk_size)[:ss]
        expected[at:at + ss] = bytes(ss)
    record_at = md.header.guid_record_offset or structs.GUID_RECORD_OFFSET
    image[record_at:record_at + 16] = EOW_GUID.bytes_le
    struct.pack_into("<QQ", image, record_at + 40, *info_at)
    for off, length in copies:
        expected[off:off + length] = bytes(length)
    expected[virt[0]:virt[0] + 0x2000] = bytes(0x2000)
    return bytes(expected), EowImage(info_at, bitmaps, regions, chunk_size)


def _chunks_of(regions: list[tuple[int, int]], chunk: int, start: int, end: int) -> set[int]:
    """Starts of the chunks (of any region) that overlap ``[start, end)``."""
    out = set()
    for off, length in regions:
        for k in range(-(-length // chunk)):
            a = off + k * chunk
            if a < end and min(a + chunk, off + length) > start:
                out.add(a)
    return out


def _write_region(image: bytearray, plaintext: bytes, region: tuple[int, int], chunk: int,
                  fixed: bool | None, plain: Collection[int],
                  keep: list[tuple[int, int]]) -> list[bool]:
    """The bits of a region (set = encrypted); its unencrypted chunks get the plaintext, but
    for the ``keep`` spans (the metadata copies); the relocated block (``fixed`` not None) is
    written by the caller."""
    off, length = region
    bits = []
    for k in range(-(-length // chunk)):
        start = off + k * chunk
        is_plain = fixed if fixed is not None else start in plain
        bits.append(not is_plain)
        if is_plain and fixed is None:
            stop = min(start + chunk, off + length)
            saved = [(a, bytes(image[a:a + n])) for a, n in keep if a < stop and a + n > start]
            image[start:stop] = plaintext[start:stop]
            for a, data in saved:
                image[a:a + len(data)] = data
    return bits


__all__ = ["EowImage", "make_used_space_only"]
