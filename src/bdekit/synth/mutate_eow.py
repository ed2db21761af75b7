"""Damage-injection mutants of the used-space-only structures and the boot sectors (issue 11,
classes 4-6), added to :func:`bdekit.synth.mutate.mutants`.

Used-space-only (layouts: :mod:`bdekit.format.eow`)
    both information blocks damaged in different places, and the same way; each bitmap block's
    region offset, region size, conversion log offset and record offsets (with and without the
    block's CRC32 recomputed: damage the CRC cannot see must be caught by the regions' tiling);
    the newest record's sequence number and bit count; one bitmap block, and every bitmap
    block, gone (zeros).
Boot sectors
    the whole relocated header block gone (zeros); the relocated boot sector's BPB damaged in
    its bytes-per-sector field only.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator

from bdekit.format.eow import BLOCK_CRC_SPAN, DEFAULT_RECORD_OFFSETS, EOW_SIGNATURE
from bdekit.format.metadata import Metadata

ReadFn = Callable[[int, int], bytes]
Patch = tuple[int, bytes]

#: bitmap block fields: (name, offset, size)
_BLOCK_FIELDS = (("region-offset", 20, 8), ("region-size", 28, 8), ("log-offset", 36, 8),
                 ("record-offsets", 44, 4))


def _flip(read: ReadFn, pos: int, mask: int = 0x01) -> Patch:
    return pos, bytes([read(pos, 1)[0] ^ mask])


def _bitmap_offsets(read: ReadFn, md: Metadata) -> list[int]:
    for off in md.header.eow_offsets:
        info = read(off, 0x1000) if off else b""
        if info[:8] == EOW_SIGNATURE and len(info) >= 56:
            count = int.from_bytes(info[32:36], "little")
            return [int.from_bytes(info[56 + 8 * i:64 + 8 * i], "little")
                    for i in range(min(count, 64)) if 64 + 8 * i <= len(info)]
    return []


def _block_mutants(read: ReadFn, index: int, at: int) -> Iterator[tuple[str, tuple[Patch, ...]]]:
    block = bytearray(read(at, BLOCK_CRC_SPAN))
    if len(block) < BLOCK_CRC_SPAN:
        return
    for name, off, size in _BLOCK_FIELDS:
        value = int.from_bytes(block[off:off + size], "little") ^ 0x200
        new = value.to_bytes(size, "little")
        yield f"eow.bitmap{index}.{name}", ((at + off, new),)
        damaged = bytearray(block)
        damaged[off:off + size] = new
        damaged[56:60] = bytes(4)
        crc = zlib.crc32(bytes(damaged)).to_bytes(4, "little")
        yield f"eow.bitmap{index}.{name}+crc", ((at + off, new), (at + 56, crc))
    newest = at + DEFAULT_RECORD_OFFSETS[0]
    yield f"eow.bitmap{index}.record1-sequence", (_flip(read, newest + 20, 0x02),)
    yield f"eow.bitmap{index}.record1-bit-count", (_flip(read, newest + 16, 0x01),)
    yield f"eow.bitmap{index}-gone", ((at, bytes(0x600)),)


def eow_mutants(read: ReadFn, md: Metadata) -> Iterator[tuple[str, tuple[Patch, ...]]]:
    """(name, patches) of the used-space-only mutants (see the module docstring)."""
    infos = [o for o in md.header.eow_offsets if o and read(o, 8) == EOW_SIGNATURE]
    if len(infos) == 2:
        yield "eow.info-both-elsewhere", (_flip(read, infos[0] + 20), _flip(read, infos[1] + 24))
        yield "eow.info-both-same", (_flip(read, infos[0] + 20), _flip(read, infos[1] + 20))
    bitmaps = _bitmap_offsets(read, md)
    for i, at in enumerate(bitmaps):
        yield from _block_mutants(read, i, at)
    if bitmaps:
        yield "eow.bitmaps-gone", tuple((at, bytes(0x600)) for at in bitmaps)


def boot_mutants(read: ReadFn, md: Metadata) -> Iterator[tuple[str, tuple[Patch, ...]]]:
    """(name, patches) of the boot sector mutants (see the module docstring)."""
    virt = md.virtualization
    if virt is None or not virt[0]:
        return
    yield "relocated-block-gone", ((virt[0], bytes(virt[1] or 0x2000)),)
    yield "relocated-boot-sector-bps", (_flip(read, virt[0] + 12, 0x10),)


__all__ = ["boot_mutants", "eow_mutants"]
