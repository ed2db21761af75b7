"""Damage-injection mutants of a BitLocker image, and the rule every run on them must obey.

A :class:`Mutant` is a named list of byte patches (image offsets) that damages one field class
of an image: the volume header's GUID record and offsets, each field of each metadata copy's
block header and dataset header, each datum, the validation header and datum, the EOW
information block, bitmap blocks and records, the relocated boot sectors, the Vista header's
volume size; each with and without the copy's CRC32 recomputed (damage that a CRC check
cannot see), plus the combinations that matter: every copy damaged in a different place, and
all three copies damaged the same way.

:func:`judge` states the rule a decrypt or repair run on a mutant must obey:

* exit 0: the output is the undamaged volume's plaintext, byte for byte;
* exit 6: every byte that differs lies inside a range of the report's damage list (and of the
  output mapfile, when there is one);
* any other exit: nothing exists under the output's name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import zlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from bdekit.format.consensus import field_name_plain
from bdekit.format.copies import read_metadata
from bdekit.format.metadata import Metadata, MetadataCopy
from bdekit.synth.mutate_eow import boot_mutants, eow_mutants

ReadFn = Callable[[int, int], bytes]

#: (offset, size) of the integer fields of the 64-byte block header and the dataset header
_INT_FIELDS = [(8, 2), (10, 2), (12, 2), (14, 2), (16, 8), (24, 4), (28, 4), (32, 8), (40, 8),
               (48, 8), (56, 8), (64, 4), (68, 4), (72, 4), (76, 4), (96, 4), (100, 2),
               (102, 2), (104, 8)]
_BYTE_FIELDS = [(80, 16)]  # volume GUID


@dataclasses.dataclass(frozen=True)
class Mutant:
    name: str
    patches: tuple[tuple[int, bytes], ...]

    def apply(self, image: bytearray) -> None:
        for offset, data in self.patches:
            image[offset:offset + len(data)] = data


def _values(old: int, size: int, rng: random.Random) -> list[int]:
    top = (1 << (8 * size)) - 1
    cands = [old ^ 1, old + 512, max(0, old - 512), 0, top, 1 << min(8 * size - 1, 40),
             rng.randrange(0, top + 1)]
    return [v & top for v in cands if (v & top) != old]


def _crc_patch(copy: MetadataCopy, block: bytearray) -> tuple[int, bytes]:
    return copy.offset + len(block) + 4, zlib.crc32(bytes(block)).to_bytes(4, "little")


def _copy_field_mutants(copy: MetadataCopy, rng: random.Random) -> Iterator[Mutant]:
    for off, size in _INT_FIELDS:
        old = int.from_bytes(copy.block[off:off + size], "little")
        for value in _values(old, size, rng)[:3]:
            yield from _with_and_without_crc(
                copy, f"copy{copy.index}.{field_name_plain(off)}={value:#x}",
                [(off, value.to_bytes(size, "little"))])
    for off, size in _BYTE_FIELDS:
        flipped = bytes(b ^ 0x5A for b in copy.block[off:off + size])
        yield from _with_and_without_crc(copy, f"copy{copy.index}.{field_name_plain(off)}",
                                         [(off, flipped)])


def _datum_mutants(copy: MetadataCopy) -> Iterator[Mutant]:
    for datum in copy.datums:
        rel = datum.offset - copy.offset
        mid = rel + max(8, datum.size // 2)
        name = f"copy{copy.index}.datum@{rel}({datum.type_name})"
        yield from _with_and_without_crc(copy, name + ".byte",
                                         [(mid, bytes([copy.block[mid] ^ 0x01]))])
        size = int.from_bytes(copy.block[rel:rel + 2], "little")
        yield from _with_and_without_crc(copy, name + ".size",
                                         [(rel, (size + 8).to_bytes(2, "little"))])


def _with_and_without_crc(copy: MetadataCopy, name: str,
                          patches: Sequence[tuple[int, bytes]]) -> Iterator[Mutant]:
    block = bytearray(copy.block)
    absolute = []
    for off, data in patches:
        if off + len(data) > len(block):
            return
        block[off:off + len(data)] = data
        absolute.append((copy.offset + off, bytes(data)))
    yield Mutant(name, tuple(absolute))
    yield Mutant(name + "+crc", (*absolute, _crc_patch(copy, block)))


def _validation_mutants(copy: MetadataCopy, read: ReadFn) -> Iterator[Mutant]:
    end = copy.offset + len(copy.block)
    crc = read(end + 4, 4)
    yield Mutant(f"copy{copy.index}.crc", ((end + 4, bytes(b ^ 0xFF for b in crc)),))
    datum = read(end + 8, 0x50)
    if len(datum) > 40:
        yield _flip(f"copy{copy.index}.validation-datum", end + 8 + 40, datum[40], 0x01)


def _description_patch(copy: MetadataCopy, which: int) -> Mutant | None:
    for datum in copy.datums:
        if datum.type_name.lower().startswith("unicode") and datum.size > 12 + 2 * which:
            rel = datum.offset - copy.offset + 8 + 2 * which
            block = bytearray(copy.block)
            block[rel] ^= 0x01
            return Mutant(f"copy{copy.index}.description[{which}]",
                          ((copy.offset + rel, bytes([block[rel]])),))
    return None


def _combination_mutants(md: Metadata, rng: random.Random) -> Iterator[Mutant]:
    copies = [c for c in md.copies if c.usable and c.block]
    if len(copies) < 3:
        return
    first = copies[0]
    descs = [_description_patch(c, i + 1) for i, c in enumerate(copies[1:])]
    for off, size in [(16, 8), (28, 4), (56, 8), (100, 2)]:
        old = int.from_bytes(first.block[off:off + size], "little")
        value = _values(old, size, rng)[0]
        patch = (first.offset + off, value.to_bytes(size, "little"))
        if all(descs):
            others = tuple(p for d in descs if d for p in d.patches)
            yield Mutant(f"every-copy-elsewhere:{field_name_plain(off)}", (patch, *others))
        same: list[tuple[int, bytes]] = []
        for copy in copies:
            block = bytearray(copy.block)
            block[off:off + size] = value.to_bytes(size, "little")
            same += [(copy.offset + off, value.to_bytes(size, "little")), _crc_patch(copy, block)]
        yield Mutant(f"all-copies-same+crc:{field_name_plain(off)}", tuple(same))


def _header_mutants(md: Metadata) -> Iterator[Mutant]:
    hdr = md.header
    at = hdr.guid_record_offset
    if at is not None:
        yield Mutant("header.guid-record", ((at + 3, bytes([hdr.raw[at + 3] ^ 0x10])),))
        for i in range(3):
            pos = at + 16 + 8 * i
            yield Mutant(f"header.copy{i + 1}-offset", ((pos, bytes([hdr.raw[pos] ^ 0x02])),))
        for i, _ in enumerate(hdr.eow_offsets):
            pos = at + 40 + 8 * i
            yield Mutant(f"header.eow{i + 1}-offset", ((pos, bytes([hdr.raw[pos] ^ 0x02])),))
    yield Mutant("header.bytes-per-sector", ((11, (4096 if hdr.bytes_per_sector == 512
                                                    else 512).to_bytes(2, "little")),))
    if hdr.kind == "vista":
        yield Mutant("vista.volume-size-small", ((0x28, (10).to_bytes(8, "little")),))
        yield Mutant("vista.volume-size-huge", ((0x28, (1 << 31).to_bytes(8, "little")),))


def _relocated_mutants(md: Metadata) -> Iterator[Mutant]:
    virt = md.virtualization
    if virt is None:
        return
    yield Mutant("relocated-boot-sector", ((virt[0] + 3, b"\xA5" * 64),))


def _eow_mutants(read: ReadFn, md: Metadata) -> Iterator[Mutant]:
    """EOW information block (chunk size), bitmap block (record size) and each record's
    bitmap bytes (layouts: :mod:`bdekit.format.structs`)."""
    for i, off in enumerate(md.header.eow_offsets):
        info = read(off, 64) if off else b""
        if info[:8] != b"FVE-EOW\x00" or len(info) < 64:
            continue
        yield _flip(f"eow{i + 1}.info-chunk-size", off + 20, info[20], 0x01)
        bitmap_at = int.from_bytes(info[56:64], "little")
        block = read(bitmap_at, 64) if bitmap_at else b""
        if not block.startswith(b"FVE-EOWBM"):
            continue
        yield _flip(f"eow{i + 1}.bitmap-record-size", bitmap_at + 52, block[52], 0x04)
        for r in (0, 1):
            rec = int.from_bytes(block[44 + 4 * r:48 + 4 * r], "little")
            if rec:
                pos = bitmap_at + rec + 36
                yield _flip(f"eow{i + 1}.record{r + 1}-bits", pos, read(pos, 1)[0], 0x0F)


def _flip(name: str, pos: int, old: int, mask: int) -> Mutant:
    return Mutant(name, ((pos, bytes([old ^ mask])),))


def mutants(read: ReadFn, image_size: int, *, seed: int = 0) -> list[Mutant]:
    """Every mutant of the image read through ``read`` (see the module docstring)."""
    rng = random.Random(seed)
    md = read_metadata(read, None, image_size)
    out: list[Mutant] = []
    out += _header_mutants(md)
    for copy in md.copies:
        if not copy.usable or not copy.block:
            continue
        out += _copy_field_mutants(copy, rng)
        out += _datum_mutants(copy)
        out += _validation_mutants(copy, read)
    out += _combination_mutants(md, rng)
    out += _relocated_mutants(md)
    out += _eow_mutants(read, md)
    out += [Mutant(name, patches) for name, patches in (*eow_mutants(read, md),
                                                        *boot_mutants(read, md))]
    return out


# --------------------------------------------------------------------------------------------
# The rule
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Verdict:
    outcome: str  # "exact", "flagged", "refused", or "silent-wrong: ..."
    detail: str = ""

    @property
    def ok(self) -> bool:
        return not self.outcome.startswith("silent-wrong")


#: bytes compared at a time by :func:`diff_ranges` (memory stays bounded for any volume size)
_DIFF_CHUNK = 16 << 20

#: a plaintext to judge: the bytes, or the file that holds them
Plaintext = bytes | bytearray | memoryview | os.PathLike[str]


def diff_ranges(out: Plaintext, ref: Plaintext) -> list[tuple[int, int]]:
    """Maximal byte ranges where ``out`` and ``ref`` differ (the shorter padded with zeros),
    compared :data:`_DIFF_CHUNK` bytes at a time; files are read, never loaded whole."""
    with contextlib.ExitStack() as stack:
        read_out, n_out = _reader(out, stack)
        read_ref, n_ref = _reader(ref, stack)
        ranges: list[tuple[int, int]] = []
        for pos in range(0, max(n_out, n_ref), _DIFF_CHUNK):
            n = min(_DIFF_CHUNK, max(n_out, n_ref) - pos)
            for lo, hi in _chunk_diffs(read_out(pos, n), read_ref(pos, n), n):
                if ranges and ranges[-1][1] == pos + lo:
                    ranges[-1] = (ranges[-1][0], pos + hi)  # a range across the chunk edge
                else:
                    ranges.append((pos + lo, pos + hi))
        return ranges


def _reader(data: Plaintext, stack: contextlib.ExitStack) -> \
        tuple[Callable[[int, int], bytes], int]:
    if isinstance(data, os.PathLike):
        fh = stack.enter_context(open(data, "rb"))
        return (lambda o, n: os.pread(fh.fileno(), n, o)), os.fstat(fh.fileno()).st_size
    view = memoryview(data).cast("B")
    return (lambda o, n: bytes(view[o:o + n])), len(view)


def _chunk_diffs(a: bytes, b: bytes, n: int) -> list[tuple[int, int]]:
    if len(a) == len(b) == n and a == b:
        return []
    x = np.zeros(n, dtype=np.uint8)
    y = np.zeros(n, dtype=np.uint8)
    x[:len(a)] = np.frombuffer(a, dtype=np.uint8)
    y[:len(b)] = np.frombuffer(b, dtype=np.uint8)
    padded = np.concatenate([[False], x != y, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1]).tolist()
    return list(zip(edges[::2], edges[1::2], strict=True))


def _covered(ranges: Sequence[tuple[int, int]], marked: Sequence[tuple[int, int]]) -> \
        tuple[int, int] | None:
    """The first byte range of ``ranges`` not inside the union of ``marked``, or None."""
    spans = sorted(marked)
    for lo, hi in ranges:
        pos = lo
        for a, b in spans:
            if b <= pos:
                continue
            if a > pos:
                break
            pos = max(pos, b)
            if pos >= hi:
                break
        if pos < hi:
            return pos, hi
    return None


def judge(exit_code: int, output: Plaintext | None, reference: Plaintext,
          damage: Sequence[tuple[int, int]] = (),
          mapfile_bad: Sequence[tuple[int, int]] | None = None) -> Verdict:
    """Apply the rule to one run made with the right key: ``output`` is what exists under the
    output's name (None if nothing), ``damage`` the report's damage list and ``mapfile_bad``
    the output mapfile's non-finished ranges (None when the command writes no mapfile). Exit 4
    (wrong key) breaks the rule too: damaged metadata is damage, not a wrong key."""
    if exit_code == 4:
        return Verdict("silent-wrong: exit 4 (wrong key) although the key is right: damaged "
                       "metadata must be reported as damage")
    if exit_code not in (0, 6):
        if output is not None:
            return Verdict(f"silent-wrong: exit {exit_code} left an output behind")
        return Verdict("refused")
    if output is None:
        return Verdict(f"silent-wrong: exit {exit_code} without an output")
    diffs = diff_ranges(output, reference)
    if exit_code == 0:
        if diffs:
            lo, hi = diffs[0]
            return Verdict(f"silent-wrong: exit 0, {sum(b - a for a, b in diffs)} bytes differ "
                           f"(first at {lo}..{hi})")
        return Verdict("exact")
    for marks, what in ((damage, "damage list"), (mapfile_bad, "mapfile")):
        if marks is None:
            continue
        gap = _covered(diffs, marks)
        if gap is not None:
            return Verdict(f"silent-wrong: exit 6 but bytes {gap[0]}..{gap[1]} differ outside "
                           f"the {what}")
    return Verdict("flagged", f"{len(diffs)} differing ranges, all marked")
