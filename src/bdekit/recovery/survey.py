"""``bdekit scan``: the partitions of an image, which are BitLocker, and stray metadata blocks.

:func:`scan_image` reads the partition table (MBR or GPT, :mod:`bdekit.image.partitions`) or
takes the image as a bare volume, and describes each entry: BitLocker ones by their metadata
(header kind, method, volume GUID, description, protector types: no key needed), others by the
OEM name of their volume boot record. Then, for a damaged disk, it searches for BitLocker
metadata blocks outside every recognised volume (:func:`find_metadata_blocks`, which runs the
repair's ``-FVE-FS-`` search, :func:`bdekit.recovery.metadata_scan.scan_metadata`, over each
range: sector-aligned hits, 16 MiB ``bytes.find`` steps, each hit validated as a metadata copy,
reading around bad sectors). From a found block's three metadata offsets (relative to its
volume) the start of the volume it belongs to is inferred.

Where it searches (``search``): ``"auto"`` the space outside every partition, partitions whose
first sector is neither a BitLocker header nor another volume boot record, BitLocker
partitions whose metadata cannot be read, and the whole image when it has no table and is not
a BitLocker volume; ``"all"`` the whole image; ``"none"`` nowhere.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from bdekit.errors import BdeError, ReadError, UsageError
from bdekit.format.bootsector import EXFAT_NAME, NTFS_OEM
from bdekit.format.constants import METHOD_LABELS, DatumRole, DatumType
from bdekit.format.metadata import MetadataCopy, block_size_of
from bdekit.image.locate import is_bitlocker
from bdekit.image.partitions import Partition, looks_like_vbr, read_partition_table
from bdekit.image.ranges import merge_spans
from bdekit.image.sources import ImageSource, SliceSource
from bdekit.recovery.metadata_scan import scan_metadata
from bdekit.volume.bde import BdeVolume

log = logging.getLogger(__name__)

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


class _ZeroFillOnError(ImageSource):
    """A source whose read errors cost only the 64 KiB pieces that fail (read as zeros): a
    search over a dying disk goes on past its bad sectors."""

    PIECE = 1 << 16

    def __init__(self, source: ImageSource) -> None:
        super().__init__(source.path, int(source.size), source.kind)
        self.source = source

    def _read(self, offset: int, length: int) -> bytes:
        buf = bytearray(length)
        n = self._readinto(offset, memoryview(buf))
        return bytes(buf[:n])

    def _readinto(self, offset: int, buf: memoryview) -> int:
        try:
            return int(self.source.readinto_at(offset, buf))
        except ReadError as exc:
            log.warning("read error while searching for metadata: %s; reading around it",
                        exc.one_line())
        done = 0
        for pos in range(0, len(buf), self.PIECE):
            piece = buf[pos:pos + self.PIECE]
            try:
                got = int(self.source.readinto_at(offset + pos, piece))
            except ReadError:
                piece[:] = bytes(len(piece))
                got = min(len(piece), max(0, self.size - offset - pos))
            done = pos + got
            if got < len(piece):
                break
        return done


def find_metadata_blocks(source: ImageSource, start: int = 0, end: int | None = None, *,
                         progress: Callable[[int], None] | None = None) -> list[MetadataCopy]:
    """The usable metadata copies found by signature in ``[start, end)`` of ``source``,
    their ``offset`` made absolute (image offsets).

    The search itself is :func:`bdekit.recovery.metadata_scan.scan_metadata` (``-FVE-FS-`` at
    512-aligned offsets, 16 MiB ``bytes.find`` steps, each hit validated as a metadata copy),
    run over a window of the image; read errors zero-fill 64 KiB and the search goes on.
    """
    end = int(source.size) if end is None else min(end, int(source.size))
    # scan_metadata cannot report a block at offset 0 of what it searches: start one sector
    # early (an aligned start stays aligned)
    start = max(0, start - start % SCAN_ALIGN - SCAN_ALIGN)
    if start >= end:
        return []
    window = SliceSource(_ZeroFillOnError(source), start, end - start)
    result = scan_metadata(window, path=source.path, progress=progress)
    for copy in result.copies:
        copy.offset += start
    return result.copies


def _describe_bitlocker(entry: ScanEntry, source: ImageSource) -> list[int]:
    """Fill ``entry`` from the volume's metadata; return the image offsets of its copies."""
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
    if not looks_like_vbr(sector):
        return ""
    oem = bytes(sector[3:11])
    if oem == NTFS_OEM:
        return "NTFS"
    if oem == EXFAT_NAME:
        return "exFAT"
    if sector[0x52:0x57] == b"FAT32" or sector[0x36:0x39] == b"FAT":
        return "FAT"
    return oem.decode("ascii", "replace").strip()


def _infer_volume_start(offset: int, hdr: Any, hits: dict[int, MetadataCopy],
                        part_starts: set[int],
                        source: ImageSource) -> tuple[int | None, int | None]:
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
                    and _recorded_offsets(hits[start + o]) == offsets)
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


def _recorded_offsets(copy: MetadataCopy) -> list[int]:
    if copy.block_header is None:
        return []
    return [int(x) for x in copy.block_header.metadata_offsets]


def _found_block(copy: MetadataCopy, hits: dict[int, MetadataCopy], parts: list[Partition],
                 source: ImageSource) -> FoundBlock:
    hdr = copy.block_header
    if hdr is None:
        raise BdeError("metadata block without a block header", path=source.path,
                       offset=copy.offset)
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


@dataclasses.dataclass
class _Survey:
    """The entries of an image and the ranges to search for stray metadata blocks."""

    entries: list[ScanEntry] = dataclasses.field(default_factory=list)
    parts: list[Partition] = dataclasses.field(default_factory=list)
    table: str = "none"
    table_error: str | None = None
    ranges: list[tuple[int, int]] = dataclasses.field(default_factory=list)


def _partition_entry(part: Partition, source: ImageSource, survey: _Survey) -> ScanEntry:
    entry = ScanEntry(index=part.index, offset=part.offset, size=part.size,
                      scheme=part.scheme, type=part.type, type_name=part.type_name,
                      name=part.name, truncated=part.truncated, extended=part.is_extended)
    if part.is_extended or part.offset >= source.size:
        return entry
    sector = source.read_at(part.offset, 512)
    entry.bitlocker = is_bitlocker(sector)
    if not entry.bitlocker:
        entry.filesystem = _filesystem_name(sector)
        if not entry.filesystem:  # unknown content: maybe a wiped BitLocker header
            survey.ranges.append((part.offset, min(part.end, source.size)))
    return entry


def _survey_table(source: ImageSource, survey: _Survey) -> None:
    """The partitions; the space none covers (gaps, slack after the last one) is searched."""
    size = int(source.size)
    try:
        survey.parts = read_partition_table(source)
    except BdeError as exc:
        survey.table, survey.table_error = "damaged", exc.message
    if not survey.parts:
        survey.ranges.append((0, size))
        return
    survey.table = survey.parts[0].scheme
    survey.entries += [_partition_entry(part, source, survey) for part in survey.parts]
    covered = merge_spans([(p.offset, min(p.end, size)) for p in survey.parts
                           if not p.is_extended])
    pos = 0
    for a, b in covered:
        survey.ranges.append((pos, a))
        pos = max(pos, b)
    survey.ranges.append((pos, size))


def _survey(source: ImageSource) -> tuple[_Survey, set[int]]:
    """The entries, described; the ranges to search; the image offsets of known copies."""
    size = int(source.size)
    survey = _Survey()
    kind = is_bitlocker(source.read_at(0, 512))
    if kind:
        survey.entries.append(ScanEntry(index=None, offset=0, size=size, scheme="none",
                                        type="", type_name="bare volume (no partition table)",
                                        bitlocker=kind))
    else:
        _survey_table(source, survey)
    known: set[int] = set()
    for entry in survey.entries:
        if entry.bitlocker:
            known.update(_describe_bitlocker(entry, source))
            if entry.error:
                survey.ranges.append((entry.offset, min(entry.end, size)))
    return survey, known


def scan_image(source: ImageSource, *, search: str = "auto",
               progress: Callable[[int], None] | None = None) -> ScanReport:
    """What ``bdekit scan`` reports about an opened image source (see module docstring)."""
    if search not in SEARCH_MODES:
        raise UsageError(f"search mode {search!r} is not one of {', '.join(SEARCH_MODES)}")
    size = int(source.size)
    survey, known = _survey(source)
    ranges = {"all": [(0, size)], "none": []}.get(search, survey.ranges)
    searched = merge_spans([(max(0, a), min(b, size)) for a, b in ranges])
    hits: dict[int, MetadataCopy] = {}
    for a, b in searched:
        log.info("searching %d bytes at offset %d for BitLocker metadata blocks", b - a, a)
        for copy in find_metadata_blocks(source, a, b, progress=progress):
            hits.setdefault(copy.offset, copy)
    blocks = [_found_block(copy, hits, survey.parts, source)
              for offset, copy in sorted(hits.items()) if offset not in known]
    return ScanReport(path=source.path, container=source.kind, image_size=size,
                      table=survey.table, table_error=survey.table_error,
                      entries=survey.entries, search=search, searched=searched, blocks=blocks)
