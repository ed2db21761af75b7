"""Memory image containers, read as extents of physical memory in bounded chunks.

Formats (recognised by their first bytes, whatever the file is called):

* raw physical memory (``.raw .mem .bin .dd .vmem``, ``format=raw`` LiME, ``winpmem`` raw):
  file offset = physical address;
* LiME (``format=lime``): a sequence of 32-byte range headers, each followed by the range's
  bytes. Header, little-endian: magic ``0x4C694D45`` (bytes ``EMiL``), u32 version 1, u64
  start, u64 end (inclusive), u64 reserved. AVML's compressed variant (magic ``AVML``,
  version 2) is refused;
* Windows crash dumps. 64-bit (``PAGE`` ``DU64``): a 0x2000-byte header; physical memory
  descriptor at 0x88 (u32 run count, u64 page count, runs of u64 base page + u64 page count
  from 0x98); dump type u32 at 0xF98. 32-bit (``PAGE`` ``DUMP``): a 0x1000-byte header;
  descriptor at 0x64 (u32 count, u32 pages, runs of u32 base + u32 count from 0x6C); dump type
  at 0xF88. Type 1 (full): the runs' pages follow the header, packed in run order. Types 2, 5
  and 6 (kernel, full and live bitmap dumps): a second header right after the first,
  signature ``SDMP`` or ``FDMP`` then ``DUMP``, u64 first-page file offset at +0x20, u64
  number of bits at +0x30, the bitmap (LSB first, one bit per 4 KiB page frame) at +0x38; the
  present pages are packed in ascending frame order. Other dump types are scanned as raw
  bytes (keys are still found; the physical addresses then are file offsets);
* ``hiberfil.sys`` (signatures ``hibr``, ``HIBR``, ``wake``, ``WAKE``, ``RSTR``): compressed;
  refused (exit 5) with the advice to convert it to a raw image first.

Extents contiguous both in the file and in physical memory are merged; each is read in chunks
of ``chunk`` bytes plus ``overlap`` bytes of the next chunk, so that a structure straddling a
chunk boundary is seen whole once (searches report only hits that start before the overlap).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import struct
from collections.abc import Callable, Iterator

import numpy as np

from bdekit.errors import FormatError, SourceError, UnsupportedError

log = logging.getLogger(__name__)

PAGE = 4096
LIME_MAGIC = 0x4C694D45
AVML_MAGIC = 0x4C4D5641
HIBERNATION_SIGNATURES = (b"hibr", b"HIBR", b"wake", b"WAKE", b"RSTR", b"rstr")
BITMAP_TYPES = (2, 5, 6)
#: Default chunk: big enough to amortise numpy calls, small enough to stay in the CPU cache.
CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Extent:
    """``length`` bytes of physical memory from ``phys``, stored at ``file_offset``."""

    file_offset: int
    phys: int
    length: int


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Bytes read from one extent: ``data[:limit]`` is this chunk's own, the rest overlap."""

    data: memoryview
    file_offset: int
    phys: int
    limit: int


@dataclasses.dataclass
class MemoryImage:
    path: str
    kind: str
    extents: list[Extent]
    file_size: int

    @property
    def size(self) -> int:
        """Bytes of memory the image holds."""
        return sum(e.length for e in self.extents)

    def chunks(self, chunk: int = CHUNK, overlap: int = PAGE) -> Iterator[Chunk]:
        """Every extent in chunks of ``chunk`` bytes plus up to ``overlap`` following bytes;
        one buffer is reused (copy what must outlive the iteration step)."""
        buf = bytearray(chunk + overlap)
        try:
            fh = open(self.path, "rb", buffering=0)
        except OSError as exc:
            raise SourceError(f"cannot read memory image: {exc.strerror}",
                              path=self.path) from None
        with fh:
            for ext in self.extents:
                pos = 0
                while pos < ext.length:
                    want = min(chunk + overlap, ext.length - pos)
                    view = memoryview(buf)[:want]
                    fh.seek(ext.file_offset + pos)
                    got = fh.readinto(view) or 0
                    if got < want:
                        view[got:] = bytes(want - got)
                        log.warning("%s: short read at offset %d (memory image truncated?)",
                                    self.path, ext.file_offset + pos + got)
                    yield Chunk(view, ext.file_offset + pos, ext.phys + pos,
                                min(chunk, ext.length - pos))
                    pos += chunk

    def file_offset_of(self, phys: int) -> int | None:
        for ext in self.extents:
            if ext.phys <= phys < ext.phys + ext.length:
                return ext.file_offset + phys - ext.phys
        return None


def open_memory(path: str | os.PathLike[str]) -> MemoryImage:
    """Recognise a memory image and map its extents (see the module docstring)."""
    name = os.fspath(path)
    try:
        size = os.path.getsize(name)
        with open(name, "rb") as fh:
            head = fh.read(0x2000)
    except OSError as exc:
        raise SourceError(f"cannot read memory image: {exc.strerror}", path=name) from None
    if not size:
        raise FormatError("empty memory image", path=name, offset=0)
    if head[:4] in HIBERNATION_SIGNATURES:
        raise UnsupportedError(
            f"a Windows hibernation file (signature {head[:4].decode()!r}): its pages are "
            "compressed and no maintained Python library decompresses them; convert it to a "
            "raw memory image first (Volatility 3: windows.hibernation.Dump, or hibr2bin) and "
            "give that", path=name, offset=0)
    magic = int.from_bytes(head[:4], "little") if len(head) >= 4 else 0
    if magic in (LIME_MAGIC, AVML_MAGIC):
        return MemoryImage(name, "lime", _merge(_lime_extents(name, size)), size)
    if head[:4] == b"PAGE" and head[4:8] in (b"DU64", b"DUMP"):
        kind, extents = _dump_extents(name, head, size)
        return MemoryImage(name, kind, _merge(extents), size)
    return MemoryImage(name, "raw", [Extent(0, 0, size)], size)


def _merge(extents: list[Extent]) -> list[Extent]:
    out: list[Extent] = []
    for ext in extents:
        if ext.length <= 0:
            continue
        if out:
            last = out[-1]
            if (last.file_offset + last.length == ext.file_offset
                    and last.phys + last.length == ext.phys):
                out[-1] = Extent(last.file_offset, last.phys, last.length + ext.length)
                continue
        out.append(ext)
    return out


def _lime_extents(path: str, size: int) -> list[Extent]:
    extents: list[Extent] = []
    pos = 0
    with open(path, "rb") as fh:
        while pos < size:
            fh.seek(pos)
            header = fh.read(32)
            if len(header) < 32:
                raise FormatError(f"truncated LiME range header ({len(header)} of 32 bytes)",
                                  path=path, offset=pos)
            magic, version, start, end, _reserved = struct.unpack("<IIQQQ", header)
            if magic == AVML_MAGIC or (magic == LIME_MAGIC and version != 1):
                raise UnsupportedError(f"compressed LiME/AVML range (magic 0x{magic:08x}, "
                                       f"version {version}); expected LiME version 1: "
                                       "convert it with 'avml-convert' first",
                                       path=path, offset=pos)
            if magic != LIME_MAGIC:
                raise FormatError(f"expected a LiME range header (magic 0x{LIME_MAGIC:08x}), "
                                  f"found 0x{magic:08x}", path=path, offset=pos)
            if end < start:
                raise FormatError(f"LiME range ends (0x{end:x}) before it starts "
                                  f"(0x{start:x})", path=path, offset=pos + 16)
            length = end - start + 1
            if pos + 32 + length > size:
                log.warning("%s: LiME range at offset %d is truncated", path, pos)
                length = size - pos - 32
            extents.append(Extent(pos + 32, start, length))
            pos += 32 + length
    return extents


def _dump_extents(path: str, head: bytes, size: int) -> tuple[str, list[Extent]]:
    is64 = head[4:8] == b"DU64"
    header_size = 0x2000 if is64 else 0x1000
    dump_type = struct.unpack_from("<I", head, 0xF98 if is64 else 0xF88)[0]
    if dump_type == 1:
        return "crash dump (full)", _dump_runs(path, head, is64, header_size)
    if dump_type in BITMAP_TYPES:
        return "crash dump (bitmap)", _dump_bitmap(path, header_size, size)
    log.warning("%s: crash dump type %d is not a full or bitmap dump: scanning it as raw "
                "bytes (addresses shown are file offsets)", path, dump_type)
    return f"crash dump (type {dump_type}, raw)", [Extent(0, 0, size)]


def _dump_runs(path: str, head: bytes, is64: bool, data_start: int) -> list[Extent]:
    if is64:
        count = struct.unpack_from("<I", head, 0x88)[0]
        fmt, first, step, limit = "<QQ", 0x98, 16, 42
    else:
        count = struct.unpack_from("<I", head, 0x64)[0]
        fmt, first, step, limit = "<II", 0x6C, 8, 86
    if count > limit:
        raise FormatError(f"crash dump has {count} physical memory runs; the header holds at "
                          f"most {limit}", path=path, offset=0x88 if is64 else 0x64)
    extents = []
    file_offset = data_start
    for i in range(count):
        base, pages = struct.unpack_from(fmt, head, first + i * step)
        extents.append(Extent(file_offset, base * PAGE, pages * PAGE))
        file_offset += pages * PAGE
    return extents


def _dump_bitmap(path: str, at: int, size: int) -> list[Extent]:
    with open(path, "rb") as fh:
        fh.seek(at)
        header = fh.read(0x38)
        if len(header) < 0x38 or header[:4] not in (b"SDMP", b"FDMP") or \
                header[4:8] != b"DUMP":
            raise FormatError("bitmap crash dump: expected an 'SDMP'/'FDMP' 'DUMP' header",
                              path=path, offset=at)
        first_page, _present, bits = struct.unpack_from("<QQQ", header, 0x20)
        if bits > (size * 8):
            raise FormatError(f"bitmap crash dump claims {bits} page frames, more than the "
                              "file can map", path=path, offset=at + 0x30)
        bitmap = np.frombuffer(fh.read((bits + 7) // 8), dtype=np.uint8)
    flags = np.unpackbits(bitmap, bitorder="little")[:bits].astype(np.int8)
    edges = np.diff(np.concatenate(([0], flags, [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    before = np.concatenate(([0], np.cumsum(ends - starts)[:-1]))
    return [Extent(int(first_page + PAGE * b), int(s) * PAGE, int(e - s) * PAGE)
            for s, e, b in zip(starts, ends, before, strict=True)]


ProgressFn = Callable[[int], None]
