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
import enum
import logging
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from construct import Construct, ConstructError, Container

from bdekit.errors import BdeError, FormatError, NotBitLockerError
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

#: Largest metadata block we accept (v2 size field is u16 in 16-byte units).
MAX_BLOCK_SIZE = 0xFFFF * 16

#: Where nested datums start inside a datum of each type (8-byte header included).
NESTED_OFFSET: dict[int, int] = {
    DatumType.VOLUME_MASTER_KEY: 36,
    DatumType.EXTERNAL_KEY: 32,
    DatumType.STRETCH_KEY: 28,
    DatumType.USE_KEY: 12,
}

ReadFn = Callable[[int, int], bytes]

#: What parsing with construct raises for bytes that do not fit a structure (adapters such as
#: the GUID one raise ValueError; an out-of-range integer OverflowError).
PARSE_ERRORS = (ConstructError, ValueError, OverflowError)


class HeaderKind(enum.StrEnum):
    """Which BitLocker volume header sector 0 holds."""

    VISTA = "vista"  # no GUID record; metadata version 1
    WIN7 = "win7"  # BitLocker GUID record at offset 160 (Windows 7 and later)
    EOW = "eow"  # used-space-only (encrypt-on-write) GUID record
    TOGO = "togo"  # BitLocker To Go: FAT32-style header, GUID record at offset 424


class MetadataSource(enum.StrEnum):
    """Where the metadata that serves was found."""

    VOLUME = "volume"  # the copies the volume header names
    SCAN = "scan"  # copies found by searching the image for their signature
    KEY_PACKAGE = "key package"  # the copy a key package carries
    SALVAGE = "salvage"  # no metadata: a stand-in built from an FVEK and the image


class CopyIntegrity(enum.StrEnum):
    """A copy's SHA-256 integrity check (needs the VMK, so known only after unlocking)."""

    UNCHECKED = "unchecked"  # not unlocked yet
    OK = "ok"  # the block's SHA-256 equals the digest its validation datum holds
    MISMATCH = "mismatch"  # it does not, or the validation datum does not open
    UNAVAILABLE = "unavailable"  # no VMK, or no validation datum to check against


def parse_struct(struct: Construct, data: bytes, what: str, offset: int,
                 path: str | None = None) -> Container:
    """Parse ``data`` with ``struct``; construct errors become FormatError naming the offset."""
    try:
        result = struct.parse(data)
    except PARSE_ERRORS as exc:
        raise FormatError(f"unable to read {what}: {_parse_detail(exc)}", path=path,
                          offset=offset) from None
    log.debug("parsed %s at offset %d (0x%x)", what, offset, offset)
    return result


def _parse_detail(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


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
    try:
        obj = structs.DATUM.parse(raw)
    except PARSE_ERRORS as exc:
        inner = failing_datum_offset(raw, offset)
        where = "" if inner == offset else f" nested in the datum at offset {offset}"
        raise FormatError(f"unable to read datum{where}: {_parse_detail(exc)}", path=path,
                          offset=inner) from None
    datum = Datum.from_container(obj, offset, raw)
    log.debug("parsed datum at offset %d (0x%x): type %s role %s size %d", offset, offset,
              datum.type_name, datum.role_name, size)
    return datum


def failing_datum_offset(raw: bytes, offset: int) -> int:
    """Offset of the innermost datum that does not parse, in a datum ``raw`` (at ``offset``)
    that does not: a nested datum that fails on its own, else the datum itself."""
    nested = NESTED_OFFSET.get(int.from_bytes(raw[4:6], "little"))
    if nested is None:
        return offset
    pos = nested
    while pos + 8 <= len(raw):
        size = int.from_bytes(raw[pos:pos + 2], "little")
        if size < 8 or pos + size > len(raw):
            return offset + pos  # this child's size field is what breaks the parent
        child = raw[pos:pos + size]
        try:
            structs.DATUM.parse(child)
        except PARSE_ERRORS:
            return failing_datum_offset(child, offset + pos)
        pos += size
    return offset


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
    kind: HeaderKind
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
        return 1 if self.kind == HeaderKind.VISTA else 2

    @property
    def stand_in(self) -> bool:
        """Whether this header stands in for a lost one (made up, no sector read)."""
        return not self.raw

    def with_sector_size(self, sector_size: int) -> VolumeHeader:
        return dataclasses.replace(self, bytes_per_sector=sector_size)


def stand_in_header(version: int, metadata_offsets: Iterable[int], *,
                    eow_offsets: Iterable[int] = (), sector_size: int = 512,
                    sectors_per_cluster: int = 8, kind: str = "") -> VolumeHeader:
    """The header that stands in for a lost volume header, from what a metadata block header
    (found by a scan) or a key package records.  Unless given, the kind follows the metadata
    version (1: Vista) and whether EOW information blocks are known; the sector size is a
    guess unless a package records it (the repair confirms it on the boot sector)."""
    eow = [int(o) for o in eow_offsets][:2]
    if not kind:
        kind = HeaderKind.VISTA if version == 1 else (HeaderKind.EOW if eow else HeaderKind.WIN7)
    return VolumeHeader(kind=HeaderKind(kind), oem_id=b"", bytes_per_sector=sector_size,
                        sectors_per_cluster=sectors_per_cluster,
                        metadata_offsets=[int(o) for o in metadata_offsets], eow_offsets=eow,
                        guid_record_offset=None, raw=b"")


#: a GUID record whose GUID differs from BitLocker's in at most this many bytes is taken as
#: damaged rather than absent (a Vista header has boot code there, not a near miss)
_GUID_DAMAGE_BYTES = 3


def _near_guid_record(sector: bytes, path: str | None) -> tuple[int, HeaderKind] | None:
    """(offset, kind) of a GUID record at one of its two places whose GUID is one of
    BitLocker's with a few bytes damaged (a damaged EOW GUID must not make a Windows 7+
    header look like Vista's)."""
    for at in (structs.GUID_RECORD_OFFSET, structs.TOGO_GUID_RECORD_OFFSET):
        found = sector[at:at + 16]
        for guid, kind in ((EOW_GUID, HeaderKind.EOW), (BITLOCKER_GUID, HeaderKind.WIN7)):
            wrong = sum(a != b for a, b in zip(found, guid.bytes_le, strict=True))
            if len(found) == 16 and 0 < wrong <= _GUID_DAMAGE_BYTES:
                log.warning("%svolume header: the GUID at offset %d differs from the %s GUID in "
                            "%d byte(s): taken as that GUID, damaged",
                            f"{path}: " if path else "", at, kind, wrong)
                return at, kind
    return None


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
    kind = HeaderKind.WIN7
    for guid, name in ((EOW_GUID, HeaderKind.EOW), (BITLOCKER_GUID, HeaderKind.WIN7)):
        record_at = sector.find(guid.bytes_le)
        if record_at != -1:
            layout = structs.EOW_GUID_RECORD if name == HeaderKind.EOW else structs.GUID_RECORD
            if record_at + layout.sizeof() > 512:
                continue
            record = layout.parse(sector[record_at:])
            kind = name
            break
    if record is None:
        near = _near_guid_record(sector, path)
        if near is not None:
            record_at, kind = near
            layout = structs.EOW_GUID_RECORD if kind == HeaderKind.EOW else structs.GUID_RECORD
            record = layout.parse(sector[record_at:])
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
            kind = HeaderKind.TOGO if kind == HeaderKind.WIN7 else kind
        offsets = [int(o) for o in record.metadata_offsets]
        eow = [int(o) for o in record.get("eow_offsets", [])]
        return VolumeHeader(kind, oem, bps, spc, offsets, eow, record_at, sector)
    if oem == FVE_SIGNATURE:
        if spc == 0 or spc & (spc - 1):
            raise FormatError(f"Vista BitLocker header has sectors per cluster {spc}, expected a "
                              "power of two", path=path, offset=13)
        first = prefix.metadata_lcn * bps * spc
        return VolumeHeader(HeaderKind.VISTA, oem, bps, spc, [first], [], None, sector)
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
    integrity: CopyIntegrity = CopyIntegrity.UNCHECKED  # known after unlocking

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
        copy.status = _damage_status(exc, offset)
        copy.dataset_header = None
        log.debug("metadata copy %d at offset %d unusable: %s", index, offset, copy.status)
    return copy


def _damage_status(exc: BdeError, copy_offset: int) -> str:
    """Why a copy is unusable, keeping where inside it the damage lies (a datum, a field)."""
    if exc.offset is None or exc.offset == copy_offset:
        return exc.message
    return f"{exc.message} (at offset {exc.offset}, +{exc.offset - copy_offset} in the copy)"


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
        raise FormatError(f"metadata block version {header.version} is not 1 or 2",
                          offset=offset + 10)
    size = block_size_of(header)
    if not 64 + 48 <= size <= MAX_BLOCK_SIZE:
        raise FormatError(f"metadata block size {size} is out of bounds", offset=offset + 8)
    data = read(offset, size + 8)
    if len(data) < size + 8:
        raise FormatError("truncated metadata block")
    block = data[:size]
    dataset = parse_struct(structs.DATASET_HEADER, block[64:112], "dataset header", offset + 64,
                           path)
    if not 48 <= dataset.size <= size - 64:
        raise FormatError(f"dataset size {dataset.size} does not fit the block ({size - 64})",
                          offset=offset + 64)
    if dataset.header_size != 48:
        raise FormatError(f"dataset header size {dataset.header_size}, expected 48",
                          offset=offset + 72)
    validation = parse_struct(structs.VALIDATION_HEADER, data[size:size + 8],
                              "metadata validation header", offset + size, path)
    copy.block_header = header
    copy.block = bytes(block)
    copy.crc_ok = validation.crc32 == zlib.crc32(block)
    copy.datums = parse_datums(block[112:64 + dataset.size], offset + 112, path)
    copy.dataset_header = dataset
    # the validation datum is read whatever the CRC says: it may be intact when the damage
    # lies elsewhere, and only the VMK can tell (its AES-CCM MAC)
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
    source: MetadataSource = MetadataSource.VOLUME
    #: the byte-wise majority of the copies, parsed (index 0), when at least two were read
    vote_copy: MetadataCopy | None = None
    #: where the copies disagreed and what the majority chose (report: metadata_decisions)
    vote_decisions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    #: some byte had no majority (all copies differ there, or two copies disagree)
    vote_undecided: bool = False
    #: after unlocking: "verified", "unverified" or "unavailable" (bdekit.unlock.integrity)
    trust: str = "unchecked"
    #: every decision taken about the copies, for the report
    decisions: list[dict[str, Any]] = dataclasses.field(default_factory=list)

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
        guid: uuid.UUID = self.dataset.volume_guid
        return guid

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
