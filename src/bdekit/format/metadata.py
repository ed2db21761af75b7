"""Reading the BitLocker volume header and the three FVE metadata copies.

Layout handled here (see ``structs.py`` for the byte layouts):

* Sector 0 of the volume: the BitLocker volume header. Windows 7+ headers carry a GUID record
  (BitLocker GUID, or the EOW GUID for used-space-only volumes) giving the byte offsets of the
  three metadata copies; it sits at offset 160 (NTFS-style) or 424 (To Go, FAT32-style) and is
  found by searching the sector, as Windows' driver does. Vista headers have no record; the u64 at
  offset 56 is the *cluster* number of the first copy, and the copy's block header names the
  other two.
* Each copy: 64-byte block header, 48-byte dataset header, datums; the block is padded to its
  size (v1: bytes, v2: 16-byte units) and followed by the validation header whose CRC32 covers
  the padded block, then an AES-CCM datum with the block's SHA-256 (checked after unlocking).

Every copy is read and judged on its own; the best one (first whose CRC holds, else the first
that parses) serves, and each copy's state is reported. Damage never raises here; only the
absence of any usable copy does (:class:`~bdekit.errors.MetadataError`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from construct import ConstructError, Container

from bdekit.errors import BdeError, FormatError, MetadataError, NotBitLockerError
from bdekit.format import structs
from bdekit.format.constants import (
    BITLOCKER_GUID,
    EOW_GUID,
    FVE_SIGNATURE,
    DatumRole,
    DatumType,
    EncryptionMethod,
    ProtectionType,
    VolumeState,
    enum_label,
)

log = logging.getLogger(__name__)

#: Reserved region of each v2 metadata copy (reads as zeros in the decrypted volume).
V2_METADATA_REGION = 0x10000
#: v1 (Vista) copies reserve 16 KiB rounded up to the cluster size.
V1_METADATA_REGION = 0x4000
#: Largest metadata block we accept (v2 size field is u16 in 16-byte units).
MAX_BLOCK_SIZE = 0xFFFF * 16

#: Where nested datums start inside a datum of each type (8-byte header included).
NESTED_OFFSET = {
    DatumType.VOLUME_MASTER_KEY: 36,
    DatumType.EXTERNAL_KEY: 32,
    DatumType.STRETCH_KEY: 28,
    DatumType.USE_KEY: 12,
}

ReadFn = Callable[[int, int], bytes]


def filetime_to_datetime(value: int) -> dt.datetime | None:
    """FILETIME (100 ns ticks since 1601) to an aware UTC datetime; None for 0 / out of range."""
    if not value:
        return None
    try:
        return dt.datetime(1601, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=value // 10)
    except OverflowError:
        return None


def datetime_to_filetime(value: dt.datetime) -> int:
    delta = value - dt.datetime(1601, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86400 + delta.seconds) * 10_000_000 + delta.microseconds * 10


def parse_struct(struct: Any, data: bytes, what: str, offset: int,
                 path: str | None = None) -> Container:
    """Parse ``data`` with ``struct``; construct errors become FormatError naming the offset."""
    try:
        result = struct.parse(data)
    except (ConstructError, ValueError, OverflowError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FormatError(f"unable to read {what}: {detail}", path=path, offset=offset) from None
    log.debug("parsed %s at offset %d (0x%x)", what, offset, offset)
    return result


# --------------------------------------------------------------------------------------------
# Datums
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Datum:
    """One datum of the metadata tree, with its absolute offset when known."""

    offset: int
    size: int
    role: int
    type: int
    version: int
    body: Container
    children: list[Datum]
    raw: bytes

    @classmethod
    def from_container(cls, obj: Container, offset: int, raw: bytes) -> Datum:
        size = len(raw)
        children: list[Datum] = []
        nested = NESTED_OFFSET.get(obj.type)
        body = obj.body
        if nested is not None and body is not None and "datums" in body:
            pos = nested
            for child in body.datums:
                child_size = int.from_bytes(raw[pos:pos + 2], "little")
                children.append(cls.from_container(child, offset + pos, raw[pos:pos + child_size]))
                pos += child_size
        return cls(offset, size, obj.role, obj.type, obj.version, body, children, raw)

    # Meaningful accessors -------------------------------------------------------------------
    @property
    def type_name(self) -> str:
        return enum_label(DatumType, self.type)

    @property
    def role_name(self) -> str:
        return enum_label(DatumRole, self.role)

    def find(self, type_: int, role: int | None = None) -> Datum | None:
        for child in self.children:
            if child.type == type_ and (role is None or child.role == role):
                return child
        return None

    def find_all(self, type_: int) -> list[Datum]:
        return [child for child in self.children if child.type == type_]

    def walk(self) -> Iterator[Datum]:
        yield self
        for child in self.children:
            yield from child.walk()

    @property
    def text(self) -> str:
        """Decoded UTF-16LE string of a unicode datum."""
        data: bytes = self.body.data
        return data.decode("utf-16-le", errors="replace").split("\x00", 1)[0]

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"offset": self.offset, "size": self.size, "role": self.role_name,
                               "type": self.type_name, "version": self.version}
        if self.type == DatumType.UNICODE:
            out["text"] = self.text
        elif self.type == DatumType.VOLUME_MASTER_KEY:
            out["guid"] = str(self.body.guid)
            out["protection"] = enum_label(ProtectionType, self.body.protection)
        if self.children:
            out["children"] = [c.describe() for c in self.children]
        return out


def parse_datum(data: bytes, offset: int, path: str | None = None) -> Datum:
    """Parse one datum (``data`` starts at it; may be longer)."""
    if len(data) < 8:
        raise FormatError("unable to read datum: fewer than 8 bytes left", path=path,
                          offset=offset)
    size = int.from_bytes(data[:2], "little")
    if size < 8 or size > len(data):
        raise FormatError(f"datum size {size} is out of bounds (8..{len(data)})", path=path,
                          offset=offset)
    raw = bytes(data[:size])
    obj = parse_struct(structs.DATUM, raw, "datum", offset, path)
    datum = Datum.from_container(obj, offset, raw)
    log.debug("datum at %d: type %s role %s size %d", offset, datum.type_name, datum.role_name,
              size)
    return datum


def parse_datums(data: bytes, offset: int, path: str | None = None) -> list[Datum]:
    """Parse a datum list filling ``data`` exactly; ``offset`` is where ``data`` starts."""
    datums: list[Datum] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 8 and not any(data[pos:]):
            break  # trailing padding
        datum = parse_datum(data[pos:], offset + pos, path)
        datums.append(datum)
        pos += datum.size
    return datums


# --------------------------------------------------------------------------------------------
# Volume header
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class VolumeHeader:
    kind: str  # "vista", "win7", "eow", "togo"
    oem_id: bytes
    bytes_per_sector: int
    sectors_per_cluster: int
    metadata_offsets: list[int]
    eow_offsets: list[int]
    guid_record_offset: int | None
    raw: bytes

    @property
    def cluster_size(self) -> int:
        return self.bytes_per_sector * self.sectors_per_cluster

    @property
    def version(self) -> int:
        return 1 if self.kind == "vista" else 2


def parse_volume_header(sector: bytes, path: str | None = None) -> VolumeHeader:
    """Recognise a BitLocker volume header; raise NotBitLockerError otherwise."""
    if len(sector) < 512:
        if not sector:
            raise NotBitLockerError("empty image: expected a BitLocker volume header", path=path,
                                    offset=0)
        raise NotBitLockerError(f"only {len(sector)} bytes: expected a 512-byte BitLocker "
                                "volume header", path=path, offset=0)
    sector = bytes(sector[:512])
    prefix = structs.BOOT_SECTOR_PREFIX.parse(sector)
    oem = bytes(prefix.oem_id)
    record_at = -1
    record: Container | None = None
    kind = ""
    for guid, name in ((EOW_GUID, "eow"), (BITLOCKER_GUID, "win7")):
        record_at = sector.find(guid.bytes_le)
        if record_at != -1:
            layout = structs.EOW_GUID_RECORD if name == "eow" else structs.GUID_RECORD
            if record_at + layout.sizeof() > 512:
                continue
            record = layout.parse(sector[record_at:])
            kind = name
            break
    bps = prefix.bytes_per_sector
    spc = prefix.sectors_per_cluster
    if bps not in (512, 1024, 2048, 4096):
        if record is None and oem != FVE_SIGNATURE:
            raise NotBitLockerError("no BitLocker volume header (expected OEM '-FVE-FS-' or a "
                                    "BitLocker GUID record)", path=path, offset=0)
        raise FormatError(f"BitLocker volume header has bytes per sector {bps}, expected 512, "
                          "1024, 2048 or 4096", path=path, offset=11)
    if record is not None:
        if oem == b"MSWIN4.1" or record_at == structs.TOGO_GUID_RECORD_OFFSET:
            kind = "togo" if kind == "win7" else kind
        offsets = [int(o) for o in record.metadata_offsets]
        eow = [int(o) for o in record.get("eow_offsets", [])]
        return VolumeHeader(kind, oem, bps, spc, offsets, eow, record_at, sector)
    if oem == FVE_SIGNATURE:
        if spc == 0 or spc & (spc - 1):
            raise FormatError(f"Vista BitLocker header has sectors per cluster {spc}, expected a "
                              "power of two", path=path, offset=13)
        first = prefix.metadata_lcn * bps * spc
        return VolumeHeader("vista", oem, bps, spc, [first], [], None, sector)
    raise NotBitLockerError("no BitLocker volume header (expected OEM '-FVE-FS-' or a BitLocker "
                            "GUID record)", path=path, offset=0)


# --------------------------------------------------------------------------------------------
# Metadata copies
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class MetadataCopy:
    index: int  # 1..3
    offset: int
    status: str = "unread"  # "ok", "crc mismatch", or why the copy is unusable
    block_header: Container | None = None
    dataset_header: Container | None = None
    datums: list[Datum] = dataclasses.field(default_factory=list)
    block: bytes = b""  # the padded block the CRC and SHA-256 cover
    crc_ok: bool = False
    validation: Datum | None = None  # AES-CCM datum holding SHA-256(block)
    integrity: str = "unchecked"  # after unlocking: "ok", "mismatch", "unavailable"

    @property
    def usable(self) -> bool:
        return self.dataset_header is not None

    @property
    def block_size(self) -> int:
        return len(self.block)

    def describe(self) -> dict[str, Any]:
        return {"index": self.index, "offset": self.offset, "status": self.status,
                "crc_ok": self.crc_ok, "integrity": self.integrity}


def block_size_of(header: Container) -> int:
    """Padded size of a metadata block from its header (v1 bytes, v2 16-byte units)."""
    return int(header.size) * (16 if header.version >= 2 else 1)


def read_metadata_copy(read: ReadFn, offset: int, index: int, path: str | None = None,
                       image_size: int | None = None) -> MetadataCopy:
    """Read and check one metadata copy; damage is recorded in ``status``, never raised."""
    copy = MetadataCopy(index=index, offset=offset)
    try:
        _read_copy_into(copy, read, path, image_size)
    except BdeError as exc:
        copy.status = exc.message
        copy.dataset_header = None
        log.debug("metadata copy %d at offset %d unusable: %s", index, offset, exc.message)
    return copy


def _read_copy_into(copy: MetadataCopy, read: ReadFn, path: str | None,
                    image_size: int | None) -> None:
    offset = copy.offset
    if offset <= 0 or offset % 512:
        raise FormatError(f"offset {offset} is not a sector-aligned position")
    if image_size is not None and offset + 64 > image_size:
        raise FormatError(f"beyond the end of the image ({image_size} bytes)")
    head = read(offset, 64)
    if len(head) < 64:
        raise FormatError("truncated: fewer than 64 bytes of block header")
    if head[:8] != FVE_SIGNATURE:
        what = "all zeros" if not any(head) else f"signature {head[:8]!r}"
        raise FormatError(f"expected signature '-FVE-FS-', found {what}")
    header = parse_struct(structs.FVE_BLOCK_HEADER, head, "FVE metadata block header", offset,
                          path)
    if header.version not in (1, 2):
        raise FormatError(f"metadata block version {header.version} is not 1 or 2")
    size = block_size_of(header)
    if not 64 + 48 <= size <= MAX_BLOCK_SIZE:
        raise FormatError(f"metadata block size {size} is out of bounds")
    data = read(offset, size + 8)
    if len(data) < size + 8:
        raise FormatError("truncated metadata block")
    block = data[:size]
    dataset = parse_struct(structs.DATASET_HEADER, block[64:112], "dataset header", offset + 64,
                           path)
    if not 48 <= dataset.size <= size - 64:
        raise FormatError(f"dataset size {dataset.size} does not fit the block ({size - 64})")
    if dataset.header_size != 48:
        raise FormatError(f"dataset header size {dataset.header_size}, expected 48")
    validation = parse_struct(structs.VALIDATION_HEADER, data[size:size + 8],
                              "metadata validation header", offset + size, path)
    copy.block_header = header
    copy.block = bytes(block)
    copy.crc_ok = validation.crc32 == zlib.crc32(block)
    copy.datums = parse_datums(block[112:64 + dataset.size], offset + 112, path)
    copy.dataset_header = dataset
    if copy.crc_ok:
        more = read(offset + size + 8, 0x200)
        try:
            copy.validation = parse_datum(more, offset + size + 8, path)
        except FormatError:
            copy.validation = None
    copy.status = "ok" if copy.crc_ok else "crc mismatch"


@dataclasses.dataclass
class Metadata:
    """The volume header and every metadata copy, with the copy that serves."""

    header: VolumeHeader
    copies: list[MetadataCopy]
    best: MetadataCopy
    source: str = "volume"  # "volume", "scan" or "key package"

    @property
    def block_header(self) -> Container:
        assert self.best.block_header is not None
        return self.best.block_header

    @property
    def dataset(self) -> Container:
        assert self.best.dataset_header is not None
        return self.best.dataset_header

    @property
    def datums(self) -> list[Datum]:
        return self.best.datums

    @property
    def version(self) -> int:
        return int(self.block_header.version)

    @property
    def method(self) -> int:
        return int(self.dataset.method)

    @property
    def method_name(self) -> str:
        return enum_label(EncryptionMethod, self.method)

    @property
    def volume_guid(self) -> uuid.UUID:
        return self.dataset.volume_guid  # type: ignore[no-any-return]

    @property
    def state(self) -> int:
        return int(self.block_header.current_state)

    @property
    def state_name(self) -> str:
        return enum_label(VolumeState, self.state)

    def find(self, type_: int, role: int | None = None) -> Datum | None:
        for datum in self.datums:
            if datum.type == type_ and (role is None or datum.role == role):
                return datum
        return None

    def find_all(self, type_: int, role: int | None = None) -> list[Datum]:
        return [d for d in self.datums if d.type == type_ and (role is None or d.role == role)]

    @property
    def description(self) -> str:
        datum = self.find(DatumType.UNICODE, DatumRole.DESCRIPTION)
        return datum.text if datum else ""

    @property
    def virtualization(self) -> tuple[int, int] | None:
        """(offset, size) of the relocated header block, v2 only."""
        if self.version < 2:
            return None
        datum = self.find(DatumType.VIRTUALIZATION_INFO)
        if datum is not None:
            return int(datum.body.offset), int(datum.body.size)
        sectors = int(self.block_header.virtualized_sectors)
        return int(self.block_header.virtualized_offset), sectors * self.header.bytes_per_sector


def choose_copy(copies: list[MetadataCopy]) -> MetadataCopy | None:
    """First copy whose CRC holds; else the first that parses."""
    for copy in copies:
        if copy.crc_ok and copy.usable:
            return copy
    for copy in copies:
        if copy.usable:
            return copy
    return None


def read_metadata(read: ReadFn, path: str | None = None,
                  image_size: int | None = None) -> Metadata:
    """Read the volume header and every metadata copy; raise if none is usable."""
    header = parse_volume_header(read(0, 512), path)
    log.debug("volume header: %s, metadata offsets %s", header.kind, header.metadata_offsets)
    copies: list[MetadataCopy] = []
    offsets = list(header.metadata_offsets)
    if header.kind == "vista":
        first = read_metadata_copy(read, offsets[0], 1, path, image_size)
        copies.append(first)
        if first.block_header is not None:
            offsets = [int(o) for o in first.block_header.metadata_offsets]
        else:
            offsets = [*offsets, 0, 0]
        for index, off in enumerate(offsets[1:], start=2):
            copies.append(read_metadata_copy(read, off, index, path, image_size))
    else:
        for index, off in enumerate(offsets, start=1):
            copies.append(read_metadata_copy(read, off, index, path, image_size))
    best = choose_copy(copies)
    if best is None:
        reasons = "; ".join(f"copy {c.index} at {c.offset}: {c.status}" for c in copies)
        raise MetadataError(f"no usable BitLocker metadata ({reasons})", path=path)
    for copy in copies:
        if copy is not best and copy.status != "ok":
            log.warning("metadata copy %d at offset %d: %s (copy %d serves)", copy.index,
                        copy.offset, copy.status, best.index)
    return Metadata(header=header, copies=copies, best=best)
