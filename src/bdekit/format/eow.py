"""Used-space-only (encrypt-on-write, EOW) structures: which chunks of a region are encrypted.

A volume encrypted "used space only" names two EOW information blocks in its volume header
(EOW GUID record). Layouts (integers little-endian; see :mod:`bdekit.format.structs`):

Information block (``FVE-EOW\\0``), two identical copies
    header size u16, size u16, sector size u32, u32, chunk size u32, conversion log size u32,
    u32, region count u32, CRC32 u32 at 36 (computed over the first ``size`` bytes with the
    field zeroed), the two EOW information block offsets (u64), then one u64 bitmap block
    offset per region.
Bitmap block (``FVE-EOWBM\\0``), one per region
    header size u16, size u32, region index u32, region offset u64, region size u64,
    conversion log offset u64, two u32 record offsets (from the block's start), record size
    u32, CRC32 u32 at 56 (over the block's first 512 bytes with the field zeroed).
Bitmap record (``FVE-EOWBR\\0``), two per bitmap block
    header size u16, size u32, bitmap size u32 (bits), sequence number u64, flags u32, CRC32
    u32 at 32 (over the record, ``record size`` bytes, with the field zeroed), then the bitmap:
    one bit per chunk, least significant bit first, set = encrypted. The two records alternate:
    the verified one with the higher sequence number is current, the other is one step older.

The regions tile the volume after its first sectors (on the real Windows 10 volume: the
relocated header block is a region of its own, one chunk long). All of these structures, and
each region's conversion log, read as zeros in the decrypted volume.

Verification (:func:`read_eow`): the first information block whose CRC verifies serves (when
neither does, a byte-wise reconciliation of the two is tried against their CRCs); each bitmap
block is checked by its CRC, each record by its own. A bitmap block that fails its CRC is still
used when its region agrees with its neighbours' and a record verifies on its own. Where the
state of a chunk is not proven - no verified record for the region, no verified information
block at all, or a damaged record that may be the newest (the chunks where it differs from the
verified one) - the span is listed in :attr:`EowLayout.doubts`; the reader decides those
sectors by their content and reports them as guessed. :func:`parse_eow_information` is the one
check of an information block (signature, structure, size, CRC); the metadata scan of the
repair uses it too.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
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
BITMAP_SIGNATURE = b"FVE-EOWBM\x00"
RECORD_SIGNATURE = b"FVE-EOWBR\x00"
#: bytes read for an information block or a bitmap block
EOW_INFORMATION_READ = 0x1000
EOW_BITMAP_READ = 0x2000
_INFO_CRC = slice(36, 40)
_BLOCK_CRC = slice(56, 60)
#: the bitmap block's CRC covers this many bytes (its first sector on 512-byte volumes)
BLOCK_CRC_SPAN = 512
_RECORD_CRC = slice(32, 36)
#: where Windows puts the two records in a bitmap block, and their size
DEFAULT_RECORD_OFFSETS = (512, 1024)
DEFAULT_RECORD_SIZE = 512
#: end of every span a "no information block" doubt covers (the whole volume)
WHOLE_VOLUME = 1 << 62
#: at most this many differing bytes are reconciled between two damaged information blocks
_MAX_RECONCILE = 10


class Doubt(enum.StrEnum):
    """Why the encryption state of a span is not proven (decide it by content)."""

    NO_INFORMATION = "no used-space-only information block verifies"
    NO_BITMAP = "no verified used-space-only bitmap for the region"
    RECORD_DAMAGED = "the newest used-space-only bitmap record may be the damaged one"


@dataclasses.dataclass
class EowLayout:
    """Used-space-only bitmaps: per region, chunk runs with their encryption state.

    ``regions``: (offset, size, bitmap, bits) of each region, the bitmap of the record that
    serves (all ones where none verifies: the state is then a fallback, see ``doubts``);
    ``reserved``: (offset, length) of the EOW structures and conversion logs; ``doubts``:
    (start, end, why) volume spans whose state must be decided by content; ``notes``: what
    was decided and why (for the report)."""

    chunk_size: int
    regions: list[tuple[int, int, bytes, int]]
    reserved: list[tuple[int, int]]
    doubts: list[tuple[int, int, Doubt]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)


def crc_ok(data: bytes, field: slice, expected: int) -> bool:
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
    if not crc_ok(head[:info.size], _INFO_CRC, int(info.crc32)):
        raise FormatError("EOW information block: CRC32 mismatch", path=path,
                          offset=offset + _INFO_CRC.start)
    return info


# --------------------------------------------------------------------------------------------
# Bitmap blocks and records
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Record:
    at: int  # offset in the bitmap block
    sequence: int
    bitmap: bytes
    bits: int
    verified: bool


@dataclasses.dataclass
class _Block:
    offset: int
    verified: bool
    fields: Container | None  # the parsed header (unauthenticated unless ``verified``)
    records: list[_Record]
    unreadable: int  # record slots holding something that is not a record
    extent: tuple[int, int] | None = None  # (offset, size) of the region, once settled


def _record_slots(bm: Container | None, verified: bool) -> list[tuple[int, int | None]]:
    """(offset, size or None = the record's own size field) of the record slots to read."""
    if bm is not None and verified:
        return [(int(o), int(bm.record_size)) for o in bm.record_offsets]
    slots: list[tuple[int, int | None]] = []
    claimed = [int(o) for o in bm.record_offsets] if bm is not None else []
    for off in dict.fromkeys([*claimed, *DEFAULT_RECORD_OFFSETS]):
        if 0 < off < EOW_BITMAP_READ and off % 512 == 0:
            slots.append((off, None))
    return slots


def _parse_record(data: bytes, at: int, size: int | None) -> _Record | None:
    raw = data[at:]
    if raw[:len(RECORD_SIGNATURE)] != RECORD_SIGNATURE:
        return None
    try:
        rec = structs.EOW_BITMAP_RECORD.parse(raw)
    except PARSE_ERRORS:
        return None
    length = size if size is not None else int(rec.size)
    ok = 36 <= length <= len(raw) and crc_ok(raw[:length], _RECORD_CRC, int(rec.crc32))
    return _Record(at, int(rec.sequence), bytes(rec.bitmap), int(rec.bitmap_size), ok)


def _parse_block(data: bytes, offset: int) -> _Block:
    bm = None
    if data[:len(BITMAP_SIGNATURE)] == BITMAP_SIGNATURE:
        try:
            bm = structs.EOW_BITMAP_BLOCK.parse(data)
        except PARSE_ERRORS:
            bm = None
    verified = (bm is not None and len(data) >= BLOCK_CRC_SPAN
                and crc_ok(data[:BLOCK_CRC_SPAN], _BLOCK_CRC, int(bm.crc32)))
    records: list[_Record] = []
    unreadable = 0
    for at, size in _record_slots(bm, verified):
        rec = _parse_record(data, at, size)
        if rec is not None:
            records.append(rec)
        elif any(data[at:at + DEFAULT_RECORD_SIZE]) and (verified or at in
                                                        DEFAULT_RECORD_OFFSETS):
            unreadable += 1
    return _Block(offset, verified, bm, records, unreadable)


def _claimed(blk: _Block | None) -> tuple[int, int] | None:
    if blk is None or blk.fields is None:
        return None
    return int(blk.fields.region_offset), int(blk.fields.region_size)


def _tiling_suspects(blocks: list[_Block]) -> set[int]:
    """Verified blocks whose regions do not tile with a verified neighbour's (the regions
    follow each other without gap or overlap): a CRC recomputed over damage. Both sides of a
    boundary that does not meet are suspect."""
    suspects: set[int] = set()
    for i in range(len(blocks) - 1):
        a, b = blocks[i], blocks[i + 1]
        ca, cb = _claimed(a), _claimed(b)
        if a.verified and b.verified and ca and cb and sum(ca) != cb[0]:
            suspects.update((i, i + 1))
    return suspects


def _settle_extents(blocks: list[_Block], chunk: int, notes: list[str]) -> None:
    """The region of each block: its own fields when its CRC verifies and it tiles with its
    neighbours; for a damaged block, its fields when they agree with the neighbours' regions
    and a record it holds verifies with a matching bit count. Blocks left without a region
    are covered by :func:`_gaps`."""
    suspects = _tiling_suspects(blocks)
    for i in sorted(suspects):
        notes.append(f"used-space-only bitmap block {i} at offset {blocks[i].offset}: its region "
                     "does not meet its neighbour's although both verify: not trusted")
        log.warning(notes[-1])
    for i, blk in enumerate(blocks):
        if blk.verified and i not in suspects:
            blk.extent = _claimed(blk)
    for i, blk in enumerate(blocks):
        claimed = _claimed(blk)
        if blk.verified or claimed is None or claimed[1] <= 0:
            continue
        before = blocks[i - 1].extent if i else None
        after = blocks[i + 1].extent if i + 1 < len(blocks) else None
        checks = [before is not None and sum(before) == claimed[0]] if i else []
        checks += [after[0] == sum(claimed)] if i + 1 < len(blocks) and after else []
        fits = (i == 0 or before is not None) and (i + 1 == len(blocks) or after is not None)
        need = -(-claimed[1] // chunk) if chunk else -1
        bits_fit = any(r.verified and r.bits == need for r in blk.records)
        if fits and checks and all(checks) and bits_fit:
            blk.extent = claimed
            notes.append(f"used-space-only bitmap block {i} at offset {blk.offset} fails its "
                         f"CRC32; its region ({claimed[0]}, {claimed[1]} bytes) agrees with "
                         "the neighbouring regions and its records verify on their own: used")
            log.warning(notes[-1])


def _gaps(blocks: list[_Block]) -> list[tuple[int, int]]:
    """(start, end) of each run of blocks left without a region: from the region before it
    to the region after it; a run at either end reaches the start (or the end) of the volume,
    since its own claims are what is in doubt."""
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(blocks):
        if blocks[i].extent is not None:
            i += 1
            continue
        j = i
        while j < len(blocks) and blocks[j].extent is None:
            j += 1
        before = blocks[i - 1].extent if i else None
        after = blocks[j].extent if j < len(blocks) else None
        start = sum(before) if before else 0
        end = after[0] if after else WHOLE_VOLUME
        if end > start:
            out.append((start, end))
        i = j
    return out


# --------------------------------------------------------------------------------------------
# The state of each region
# --------------------------------------------------------------------------------------------


def _all_encrypted(size: int, chunk: int) -> tuple[bytes, int]:
    bits = -(-size // chunk) if chunk else 0
    return b"\xff" * (-(-bits // 8)), bits


def _differing_chunks(best: _Record, other: _Record) -> list[int] | None:
    """Chunks whose bits differ between two records; None when the other's bitmap cannot be
    compared (its bit count differs: the damage may be there)."""
    if other.bits != best.bits:
        return None
    n = best.bits
    a = int.from_bytes(best.bitmap[:-(-n // 8)], "little")
    b = int.from_bytes(other.bitmap[:-(-n // 8)], "little")
    diff = (a ^ b) & ((1 << n) - 1)
    return [k for k in range(n) if diff >> k & 1]


def _chunk_spans(chunks: list[int], offset: int, size: int,
                 chunk: int) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for k in chunks:
        lo, hi = offset + k * chunk, min(offset + (k + 1) * chunk, offset + size)
        if spans and spans[-1][1] == lo:
            spans[-1] = (spans[-1][0], hi)
        elif lo < hi:
            spans.append((lo, hi))
    return spans


def _region_state(i: int, blk: _Block, chunk: int,
                  layout: EowLayout) -> tuple[bytes, int]:
    """The bitmap that serves for block ``i``'s region; doubts and notes added to
    ``layout``."""
    assert blk.extent is not None
    offset, size = blk.extent
    where = f"used-space-only region {i} (offset {offset}, {size} bytes)"
    verified = [r for r in blk.records if r.verified]
    if not verified:
        layout.doubts.append((offset, offset + size, Doubt.NO_BITMAP))
        layout.notes.append(f"{where}: no bitmap record verifies: its sectors are decided by "
                            "content")
        log.warning(layout.notes[-1])
        return _all_encrypted(size, chunk)
    best = max(verified, key=lambda r: r.sequence)
    # a damaged record's sequence number is as unauthenticated as its bits: any of them may
    # be the newest, so the chunks where it differs from the verified one are in doubt
    suspects = [r for r in blk.records if not r.verified]
    chunks: set[int] = set()
    whole = blk.unreadable > 0
    for rec in suspects:
        diff = _differing_chunks(best, rec)
        if diff is None:
            whole = True
        else:
            chunks.update(diff)
    if whole:
        chunks = set(range(max(best.bits, -(-size // chunk))))
    if suspects or blk.unreadable:
        spans = _chunk_spans(sorted(chunks), offset, size, chunk)
        layout.doubts += [(a, b, Doubt.RECORD_DAMAGED) for a, b in spans]
        newer = any(r.sequence > best.sequence for r in suspects)
        layout.notes.append(
            f"{where}: bitmap record {best.sequence} (verified) serves"
            f"{', although it is not the newest' if newer else ''}: a damaged record fails its "
            f"CRC32 and may be the current one; {len(chunks)} chunk(s) where they may differ "
            "are decided by content")
        log.warning(layout.notes[-1])
    return best.bitmap, best.bits


def _majority(values: list[int]) -> set[int]:
    """The value most of ``values`` agree on, as a set (empty when there is no majority)."""
    if not values:
        return set()
    best = max(set(values), key=values.count)
    return {best} if values.count(best) * 2 > len(values) else set()


def _structures(blocks: list[_Block], log_size: int, layout: EowLayout) -> None:
    """Reserve each bitmap block and its conversion log (they read as zeros). A damaged
    block's own size and log offset are unauthenticated: the verified blocks' common size and
    log placement serve when they agree; what stays unknown is put in doubt (decided by
    content and reported) rather than zeroed or shown as if it were data."""
    sizes = _majority([int(b.fields.size) for b in blocks
                       if b.verified and b.fields is not None])
    deltas = _majority([int(b.fields.conversion_log_offset) - b.offset for b in blocks
                        if b.verified and b.fields is not None])
    for blk in blocks:
        fields = blk.fields
        if blk.verified and fields is not None and int(fields.size) in sizes and int(
                fields.conversion_log_offset) - blk.offset in deltas:
            layout.reserved.append((blk.offset, int(fields.size)))
            layout.reserved.append((int(fields.conversion_log_offset), log_size))
            continue
        if len(sizes) == 1:
            layout.reserved.append((blk.offset, next(iter(sizes))))
        else:
            layout.reserved.append((blk.offset, BLOCK_CRC_SPAN))
            layout.doubts.append((blk.offset + BLOCK_CRC_SPAN, blk.offset + EOW_BITMAP_READ,
                                  Doubt.NO_BITMAP))
        if len(deltas) == 1:
            layout.reserved.append((blk.offset + next(iter(deltas)), log_size))
            continue
        candidates = {blk.offset + EOW_INFORMATION_READ}
        if blk.fields is not None:
            candidates.add(int(blk.fields.conversion_log_offset))
        layout.doubts += [(c, c + log_size, Doubt.NO_BITMAP) for c in sorted(candidates)]


def _layout(read: Callable[[int, int], bytes], info: Container, sector_size: int,
            path: str | None) -> EowLayout:
    chunk = int(info.chunk_size)
    layout = EowLayout(chunk, [], [(int(o), round_up(info.size, sector_size))
                                   for o in info.eow_offsets if int(o)])
    blocks = [_parse_block(read(int(off), EOW_BITMAP_READ), int(off))
              for off in info.bitmap_offsets]
    _settle_extents(blocks, chunk, layout.notes)
    _structures(blocks, int(info.conversion_log_size), layout)
    for i, blk in enumerate(blocks):
        if blk.extent is not None:
            bitmap, bits = _region_state(i, blk, chunk, layout)
            layout.regions.append((blk.extent[0], blk.extent[1], bitmap, bits))
    for start, end in _gaps(blocks):
        if end < WHOLE_VOLUME:  # beyond every known region the fallback is "encrypted" anyway
            layout.regions.append((start, end - start, *_all_encrypted(end - start, chunk)))
        layout.doubts.append((start, end, Doubt.NO_BITMAP))
        layout.notes.append(f"used-space-only bitmaps: no usable bitmap block for the region "
                            f"from offset {start}{'' if end >= WHOLE_VOLUME else f' to {end}'}: "
                            "its sectors are decided by content")
        log.warning(layout.notes[-1])
    layout.regions.sort()
    return layout


# --------------------------------------------------------------------------------------------
# The information block
# --------------------------------------------------------------------------------------------


def _reconcile(heads: list[bytes]) -> bytes | None:
    """Two damaged copies of the information block: the combination of their differing bytes
    whose CRC32 verifies (each copy damaged in a different place), if any."""
    if len(heads) != 2:
        return None
    sizes = [int.from_bytes(h[10:12], "little") for h in heads]
    plausible = [n for n in sizes if 40 <= n <= min(len(h) for h in heads)]
    if not plausible:
        return None
    span = max(plausible)  # the block; what follows it may differ between the copies
    a, b = (bytearray(h[:span]) for h in heads)
    diff = [k for k in range(span) if a[k] != b[k]]
    if not diff or len(diff) > _MAX_RECONCILE:
        return None
    for choice in itertools.product((0, 1), repeat=len(diff)):
        cand = bytearray(a)
        for k, pick in zip(diff, choice, strict=True):
            if pick:
                cand[k] = b[k]
        try:
            parse_eow_information(bytes(cand), 0)
        except FormatError:
            continue
        return bytes(cand) + bytes(heads[0][span:])
    return None


def read_eow(read: Callable[[int, int], bytes], offsets: list[int], sector_size: int,
             path: str | None = None) -> EowLayout | None:
    """The used-space-only layout of a volume whose header names EOW information blocks at
    ``offsets``; None when it names none. See the module docstring for what is verified."""
    heads: list[bytes] = []
    info = None
    for off in offsets:
        if not off:
            continue
        head = read(off, EOW_INFORMATION_READ)
        try:
            info = parse_eow_information(head, off, path)
        except FormatError as exc:
            log.warning("%s", exc.one_line())
            if head[:len(EOW_SIGNATURE)] == EOW_SIGNATURE:
                heads.append(head)
            continue
        break
    notes: list[str] = []
    if info is None and heads:
        merged = _reconcile(heads)
        if merged is not None:
            info = parse_eow_information(merged, 0, path)
            notes.append("both used-space-only information blocks fail their CRC32; the "
                         "combination of their bytes that verifies serves")
            log.warning(notes[-1])
    if info is None:
        if not any(offsets):
            return None
        return _no_information(offsets, heads, sector_size)
    layout = _layout(read, info, sector_size, path)
    layout.notes[:0] = notes
    return layout


def probe_eow_offsets(read: Callable[[int, int], bytes], header: bytes,
                      record_at: int | None) -> list[int]:
    """EOW information block offsets in a volume header whose GUID record does not say EOW
    (a damaged GUID): the two u64 after the metadata offsets, when one of them points at an
    information block that verifies."""
    if record_at is None or record_at + 56 > len(header):
        return []
    offsets = [int.from_bytes(header[record_at + 40 + 8 * i:record_at + 48 + 8 * i], "little")
               for i in range(2)]
    for off in offsets:
        if not off:
            continue
        try:
            parse_eow_information(read(off, EOW_INFORMATION_READ), off)
        except FormatError:
            continue
        log.warning("the volume header does not name EOW information blocks, but one is at "
                    "offset %d: the volume is used-space-only", off)
        return offsets
    return []


def _no_information(offsets: list[int], heads: list[bytes], sector_size: int) -> EowLayout:
    note = ("no used-space-only information block verifies: the encryption state of every "
            "sector is decided by content")
    log.warning(note)
    reserved = [(off, sector_size) for off in offsets if off] if heads else []
    return EowLayout(0, [], reserved, [(0, WHOLE_VOLUME, Doubt.NO_INFORMATION)], [note])


__all__ = ["BITMAP_SIGNATURE", "DEFAULT_RECORD_OFFSETS", "DEFAULT_RECORD_SIZE", "EOW_SIGNATURE",
           "RECORD_SIGNATURE", "Doubt", "EowLayout", "parse_eow_information",
           "probe_eow_offsets", "read_eow"]
