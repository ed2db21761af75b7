"""Finding the BitLocker volume inside an image: bare volume, or a partition of a disk.

An image is either a bare volume (sector 0 is the BitLocker header) or a disk with an MBR or
GPT partition table (see :mod:`bdekit.partitions`). ``--offset`` or ``--partition`` choose
explicitly; otherwise the single BitLocker partition is used and several are an error listing
them.

:func:`scan_image` is what ``bdekit scan`` reports: every partition, which are BitLocker (with
the method and volume GUID from their metadata, no key needed), and, for a damaged disk, the
BitLocker metadata blocks found by signature outside any recognised volume
(:func:`find_metadata_blocks`, which runs :func:`bdekit.recovery.scan_metadata` -- the
``-FVE-FS-`` search of ``repair``: sector-aligned hits, 16 MiB ``bytes.find`` steps, each hit
validated as a metadata copy -- over the ranges to search, reading around bad sectors).  From
a found block's three metadata offsets (relative to its volume) the start of the volume it
belongs to is inferred.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from bdekit.errors import BdeError, ReadError, UsageError
from bdekit.format.constants import METHOD_LABELS, DatumRole, DatumType
from bdekit.format.metadata import block_size_of
from bdekit.image.locate import is_bitlocker

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# bdekit scan: partitions, BitLocker volumes and stray metadata blocks
# --------------------------------------------------------------------------------------------
#: Metadata blocks start on a sector boundary (of the volume, hence of the disk).
SCAN_ALIGN = 512


#: ``--search`` modes of :func:`scan_image`.
SEARCH_MODES = ("auto", "all", "none")


@dataclasses.dataclass
class FoundBlock:
    """A BitLocker metadata block found by its signature (offsets are in the image)."""

    offset: int
    version: int
    size: int  # padded block size
    metadata_offsets: list[int]  # as its header records them: relative to its volume
    volume_start: int | None = None  # inferred start of its volume in the image
    copy_index: int | None = None  # which of the three copies it is (1-3), if inferred
    volume_header: bool = False  # whether a BitLocker volume header lies at volume_start
    partition: int | None = None  # index of the partition holding it, if any
    status: str = ""  # "ok", "crc mismatch", or why it is unusable
    volume_guid: str | None = None
    encryption_method: str | None = None
    description: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ScanEntry:
    """One partition (or the bare volume) and, when it is BitLocker, what its metadata says."""

    index: int | None  # partition number (--partition N); None for a bare volume
    offset: int
    size: int
    scheme: str  # "mbr", "gpt", or "none" (bare volume)
    type: str
    type_name: str
    name: str = ""
    truncated: bool = False
    extended: bool = False
    bitlocker: str = ""  # header kind: "win7", "eow", "togo", "vista"; "" when not BitLocker
    filesystem: str = ""  # OEM name of a non-BitLocker volume boot record ("NTFS", ...)
    metadata_version: int | None = None
    encryption_method: str | None = None
    volume_guid: str | None = None
    description: str | None = None
    state: str | None = None
    created: str | None = None
    protectors: list[str] = dataclasses.field(default_factory=list)
    metadata_copies: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    error: str | None = None  # why the BitLocker metadata could not be read

    @property
    def end(self) -> int:
        return self.offset + self.size

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ScanReport:
    path: str
    container: str  # image source kind: raw, split, ewf, vhd, vhdx, device
    image_size: int
    table: str  # "mbr", "gpt", "none" (no table: bare volume or unknown), "damaged"
    table_error: str | None
    entries: list[ScanEntry]
    search: str  # the search mode
    searched: list[tuple[int, int]]  # [start, end) ranges searched for metadata blocks
    blocks: list[FoundBlock]  # metadata blocks outside every recognised BitLocker volume

    @property
    def searched_bytes(self) -> int:
        return sum(b - a for a, b in self.searched)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "container": self.container,
            "image_size": self.image_size,
            "partition_table": self.table,
            "partition_table_error": self.table_error,
            "volumes": [e.to_json() for e in self.entries],
            "bitlocker_count": sum(1 for e in self.entries if e.bitlocker),
            "metadata_search": {"mode": self.search,
                                "ranges": [list(r) for r in self.searched],
                                "bytes": self.searched_bytes},
            "stray_metadata_blocks": [b.to_json() for b in self.blocks],
        }


class _ZeroFillOnError:
    """A source whose read errors cost only the 64 KiB pieces that fail (read as zeros): a
    search over a dying disk goes on past its bad sectors."""

    PIECE = 1 << 16

    def __init__(self, source: Any) -> None:
        self.source = source
        self.size = int(source.size)
        self.path = getattr(source, "path", None)
        self.kind = getattr(source, "kind", "raw")

    def read_at(self, offset: int, length: int) -> bytes:
        buf = bytearray(max(0, min(length, self.size - offset)))
        n = self.readinto_at(offset, buf)
        return bytes(buf[:n])

    def readinto_at(self, offset: int, buf: Any) -> int:
        mv = memoryview(buf).cast("B")
        try:
            return int(self.source.readinto_at(offset, mv))
        except ReadError as exc:
            log.warning("read error while searching for metadata: %s; reading around it",
                        exc.one_line())
        done = 0
        for pos in range(0, len(mv), self.PIECE):
            piece = mv[pos:pos + self.PIECE]
            try:
                got = int(self.source.readinto_at(offset + pos, piece))
            except ReadError:
                piece[:] = bytes(len(piece))
                got = min(len(piece), max(0, self.size - offset - pos))
            done = pos + got
            if got < len(piece):
                break
        return done


def find_metadata_blocks(source: Any, start: int = 0, end: int | None = None, *,
                         progress: Any = None) -> list[Any]:
    """The usable metadata copies found by signature in ``[start, end)`` of ``source``,
    their ``offset`` made absolute (image offsets).

    The search itself is :func:`bdekit.recovery.scan_metadata` (``-FVE-FS-`` at 512-aligned
    offsets, 16 MiB ``bytes.find`` steps, each hit validated as a metadata copy), run over a
    window of the image; read errors zero-fill 64 KiB and the search goes on.
    """
    from bdekit.image.sources import SliceSource
    from bdekit.recovery.metadata_scan import scan_metadata

    end = int(source.size) if end is None else min(end, int(source.size))
    # scan_metadata cannot report a block at offset 0 of what it searches: start one sector
    # early (an aligned start stays aligned)
    start = max(0, start - start % SCAN_ALIGN - SCAN_ALIGN)
    if start >= end:
        return []
    window = SliceSource(_ZeroFillOnError(source), start, end - start)  # type: ignore[arg-type]
    result = scan_metadata(window, path=getattr(source, "path", None), progress=progress)
    found = []
    for copy in result.copies:
        copy.offset += start
        found.append(copy)
    return found


def _merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(r for r in ranges if r[1] > r[0]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _describe_bitlocker(entry: ScanEntry, source: Any) -> list[int]:
    """Fill ``entry`` from the volume's metadata; return the image offsets of its copies."""
    from bdekit.image.sources import SliceSource
    from bdekit.volume.bde import BdeVolume

    window = SliceSource(source, entry.offset, entry.size)
    try:
        volume = BdeVolume(window, path=source.path)
    except BdeError as exc:
        entry.error = exc.message
        return []
    d = volume.describe()
    entry.metadata_version = d["metadata_version"]
    entry.encryption_method = d["encryption_method"]
    entry.volume_guid = d["volume_guid"]
    entry.description = d["description"]
    entry.state = d["state"]
    entry.created = d["created"]
    entry.protectors = [p["type"] for p in d["protectors"]]
    entry.metadata_copies = [{"index": c["index"], "offset": c["offset"], "status": c["status"]}
                             for c in d["metadata_copies"]]
    return [entry.offset + c.offset for c in volume.metadata.copies if c.offset]


def _filesystem_name(sector: bytes) -> str:
    from bdekit.image.partitions import looks_like_vbr

    if not looks_like_vbr(sector):
        return ""
    oem = bytes(sector[3:11])
    if oem == b"NTFS    ":
        return "NTFS"
    if oem == b"EXFAT   ":
        return "exFAT"
    if sector[0x52:0x57] == b"FAT32" or sector[0x36:0x39] == b"FAT":
        return "FAT"
    return oem.decode("ascii", "replace").strip()


def _infer_volume_start(offset: int, hdr: Any, hits: dict[int, Any],
                        part_starts: set[int], source: Any) -> tuple[int | None, int | None]:
    """(volume start, copy index) for a block at ``offset``: the candidate start (offset
    minus one of its recorded copy offsets) that best explains the other blocks found, a
    partition start or a BitLocker header."""
    offsets = [int(o) for o in hdr.metadata_offsets]
    best: tuple[int, int, int] | None = None  # (score, -index, start)
    for index, rel in enumerate(offsets, start=1):
        if not rel or rel > offset:
            continue
        start = offset - rel
        score = sum(1 for o in offsets if o and start + o in hits
                    and [int(x) for x in hits[start + o].block_header.metadata_offsets]
                    == offsets)
        if start in part_starts:
            score += 2
        if is_bitlocker(source.read_at(start, 512)):
            score += 2
        key = (score, -index, start)
        if best is None or key > best:
            best = key
    if best is None:
        return None, None
    return best[2], -best[1]


def _found_block(copy: Any, hits: dict[int, Any], parts: list[Any],
                 source: Any) -> FoundBlock:
    hdr = copy.block_header
    start, index = _infer_volume_start(copy.offset, hdr, hits,
                                       {p.offset for p in parts if not p.is_extended}, source)
    holder = [p for p in parts if not p.is_extended and p.offset <= copy.offset < p.end]
    block = FoundBlock(offset=copy.offset, version=int(hdr.version), size=block_size_of(hdr),
                       metadata_offsets=[int(o) for o in hdr.metadata_offsets],
                       volume_start=start, copy_index=index,
                       partition=holder[0].index if holder else None, status=copy.status)
    if start is not None:
        block.volume_header = bool(is_bitlocker(source.read_at(start, 512)))
    if copy.dataset_header is not None:
        block.volume_guid = str(copy.dataset_header.volume_guid).upper()
        method = int(copy.dataset_header.method)
        block.encryption_method = next((label for m, label in METHOD_LABELS.items()
                                        if int(m) == method), f"unknown (0x{method:04x})")
    for datum in copy.datums:
        if datum.type == DatumType.UNICODE and datum.role == DatumRole.DESCRIPTION:
            block.description = datum.text
            break
    return block


def scan_image(source: Any, *, search: str = "auto", progress: Any = None) -> ScanReport:
    """What ``bdekit scan`` reports about an opened image source.

    ``search`` chooses where to look for stray metadata blocks: ``"auto"`` searches the
    space outside every partition, partitions whose first sector is neither a BitLocker
    header nor another volume boot record, BitLocker partitions whose metadata cannot be
    read, and the whole image when it has no table and is not a BitLocker volume;
    ``"all"`` searches the whole image; ``"none"`` nothing.
    """
    from bdekit.image.partitions import read_partition_table

    if search not in SEARCH_MODES:
        raise UsageError(f"search mode {search!r} is not one of {', '.join(SEARCH_MODES)}")
    size = int(source.size)
    head = source.read_at(0, 512)
    entries: list[ScanEntry] = []
    table = "none"
    table_error: str | None = None
    ranges: list[tuple[int, int]] = []
    known: set[int] = set()

    kind = is_bitlocker(head)
    parts = []
    if kind:
        entry = ScanEntry(index=None, offset=0, size=size, scheme="none", type="",
                          type_name="bare volume (no partition table)", bitlocker=kind)
        entries.append(entry)
    else:
        try:
            parts = read_partition_table(source)
        except BdeError as exc:
            table, table_error = "damaged", exc.message
        if parts:
            table = parts[0].scheme
        for part in parts:
            entry = ScanEntry(index=part.index, offset=part.offset, size=part.size,
                              scheme=part.scheme, type=part.type, type_name=part.type_name,
                              name=part.name, truncated=part.truncated,
                              extended=part.is_extended)
            entries.append(entry)
            if part.is_extended or part.offset >= size:
                continue
            sector = source.read_at(part.offset, 512)
            entry.bitlocker = is_bitlocker(sector)
            if not entry.bitlocker:
                entry.filesystem = _filesystem_name(sector)
                if not entry.filesystem:  # unknown content: maybe a wiped BitLocker header
                    ranges.append((part.offset, min(part.end, size)))
        if not parts:
            ranges.append((0, size))
        else:  # the space no partition covers (gaps, slack after the last one)
            covered = _merge_ranges([(p.offset, min(p.end, size)) for p in parts
                                     if not p.is_extended])
            pos = 0
            for a, b in covered:
                ranges.append((pos, a))
                pos = max(pos, b)
            ranges.append((pos, size))
    for entry in entries:
        if entry.bitlocker:
            copies = _describe_bitlocker(entry, source)
            known.update(copies)
            if entry.error:
                ranges.append((entry.offset, min(entry.end, size)))

    if search == "all":
        ranges = [(0, size)]
    elif search == "none":
        ranges = []
    searched = _merge_ranges([(max(0, a), min(b, size)) for a, b in ranges])
    hits: dict[int, Any] = {}
    for a, b in searched:
        log.info("searching %d bytes at offset %d for BitLocker metadata blocks", b - a, a)
        for copy in find_metadata_blocks(source, a, b, progress=progress):
            hits.setdefault(copy.offset, copy)
    blocks = [_found_block(copy, hits, parts, source)
              for offset, copy in sorted(hits.items()) if offset not in known]
    return ScanReport(path=source.path, container=source.kind, image_size=size, table=table,
                      table_error=table_error, entries=entries, search=search,
                      searched=searched, blocks=blocks)

