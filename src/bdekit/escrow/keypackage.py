"""Key packages: what decryption needs when a volume's metadata is gone.

A key package holds the volume master key (VMK) protected by the recovery password and/or the
recovery key, the full volume encryption key (FVEK) wrapped under the VMK, and the layout facts
needed to read the volume without its metadata. With the recovery password (or the recovery key
file, or the user password if its protector was included) it decrypts an image whose three
metadata copies are all destroyed (``bdekit repair -kp FILE``).

bdekit key package file (``.kpg``, written by ``bdekit keypackage export``)
==========================================================================

All integers little-endian; GUIDs Microsoft mixed-endian. A 160-byte header, then a genuine
BitLocker dataset (so that any BitLocker parser, and the tolerant reader below, can use it).

====  ====  ==================================================================================
off   size  field
====  ====  ==================================================================================
0     8     magic ``BDEKITKP``
8     2     format version (1)
10    2     header size (160)
12    4     size of the whole file
16    16    volume GUID
32    4     flags: bit 0 the block header below is a copy of the volume's; bit 1 the volume
            size was read from the decrypted boot sector (else 0 or a guess); bit 2 the sector
            size is known
36    4     bytes per sector
40    8     volume size in bytes (0 = unknown)
48    16    two u64 byte offsets of the EOW information blocks (used-space-only volumes; else 0)
64    2     volume header kind: 0 unknown, 1 Vista, 2 Windows 7+, 3 used-space-only, 4 To Go
66    2     sectors per cluster
68    4     reserved (0)
72    64    the 64-byte FVE metadata block header of the copy that served (signature, size,
            version, current / next state, state offset = conversion boundary, state size,
            virtualized sectors, the three metadata copy offsets, relocated header block offset)
136   16    reserved (0)
152   4     CRC32 of the dataset (bytes 160 to the end of the file)
156   4     CRC32 of header bytes 0-155
160   ...   dataset: 48-byte dataset header (size, version 1, header size 48, copy size, volume
            GUID, next nonce counter, encryption method, flags, creation FILETIME), then datums
            copied verbatim from the volume's metadata: the description (role 7), the VMK
            protector datums (role 2) of the recovery password, startup / recovery key and
            (unless ``--recovery-only``) password protectors, the FVEK datum (role 3, AES-CCM
            under the VMK) and the virtualization info datum (role 15: relocated header block
            offset and size).
====  ====  ==================================================================================

Nothing in the package is usable without a secret: the VMK datums are exactly as on the volume
(stretched-key AES-CCM for passwords, BEK-key AES-CCM for key files); the clear-key protector of
a suspended volume is never exported.

Verification (like the volume's metadata)
=========================================

A package is weighed part by part, never trusted whole after a warning:

* both CRC32s hold: the package is *intact* (``KeyPackage.intact``) and every fact in it is
  used;
* the header CRC32 holds, the dataset's fails (a byte changed in it, bytes cut out): the header
  facts (block header, sector size, volume size, EOW offsets) are used; of the datums, only
  those AES-CCM authenticates are kept: the VMK datums (their MAC is checked with the recovery
  password or key) and the FVEK datum (checked with the VMK);
* the header CRC32 fails: no header fact is used (not even the dataset's size or CRC, except
  when the CRC32 it records still matches everything after the header); the datums as above;
* the AES-CCM MACs decide the rest when unlocking: a VMK datum that does not open with a
  recovery password that opens another copy of it, or an FVEK datum that does not open with a
  VMK that the package's own recovery protector yields, is damage (exit 3), not a wrong key.

What a damaged package seemed to say about the layout (relocated header block, copy offsets)
is kept in ``KeyPackage.hints``: the repair only uses a hint the image confirms (a boot sector
that decrypts where the hint says).

Other key packages (read tolerantly)
====================================

Any file holding a BitLocker datum set: an FVE metadata block, a dataset header followed by
datums, or loose datums; in binary, or as base64 / hex text (an LDIF export of the AD DS
``msFVE-KeyPackage`` attribute, PowerShell output in UTF-16). The file is searched for VMK
datums (type 8) that carry an AES-CCM wrapped key, AES-CCM datums of role 3 (the FVEK), the
virtualization info datum, dataset headers (volume GUID, method) and block headers. Nothing
checksums such a file unless it holds a whole FVE metadata block whose CRC32 holds: then that
block's facts and datums are used as a metadata copy's would be. Otherwise only the VMK and
FVEK datums count (AES-CCM authenticates them); the rest are hints. Facts a package lacks
(sector size, relocated header block, volume size, metadata offsets, the conversion state) are
inferred from the image by the repair (see :mod:`bdekit.recovery`), and every range they steer
is reported as a guess.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import uuid
import zlib
from typing import Any

from construct import (
    Array,
    Bytes,
    Const,
    Container,
    Int16ul,
    Int32ul,
    Int64ul,
    ListContainer,
    Struct,
)

from bdekit.errors import BdeError, FormatError, UsageError
from bdekit.escrow.datum_search import MARKERS, datum_at, text_blobs
from bdekit.format import structs
from bdekit.format.constants import (
    FVE_SIGNATURE,
    DatumRole,
    DatumType,
    EncryptionMethod,
    ProtectionType,
    VolumeState,
    enum_label,
)
from bdekit.format.datum_build import dataset_header
from bdekit.format.metadata import (
    PARSE_ERRORS,
    Datum,
    Metadata,
    MetadataCopy,
    MetadataSource,
    VolumeHeader,
    parse_datums,
    parse_struct,
    read_metadata_copy,
    stand_in_header,
)
from bdekit.format.protector import Protector
from bdekit.image.bounded import read_bounded

log = logging.getLogger(__name__)

MAGIC = b"BDEKITKP"
VERSION = 1
HEADER_SIZE = 160

FLAG_BLOCK_HEADER = 1
FLAG_VOLUME_SIZE = 2
FLAG_SECTOR_SIZE = 4

HEADER_KINDS = {0: "", 1: "vista", 2: "win7", 3: "eow", 4: "togo"}
KIND_CODES = {v: k for k, v in HEADER_KINDS.items()}

PACKAGE_HEADER = Struct(
    "magic" / Const(MAGIC),
    "version" / Int16ul,
    "header_size" / Int16ul,
    "file_size" / Int32ul,
    "volume_guid" / structs.Guid,
    "flags" / Int32ul,
    "sector_size" / Int32ul,
    "volume_size" / Int64ul,
    "eow_offsets" / Array(2, Int64ul),
    "header_kind" / Int16ul,
    "sectors_per_cluster" / Int16ul,
    "reserved_1" / Int32ul,
    "block_header" / Bytes(64),
    "reserved_2" / Bytes(16),
    "dataset_crc32" / Int32ul,
    "header_crc32" / Int32ul,
)
assert PACKAGE_HEADER.sizeof() == HEADER_SIZE

#: Protection types whose VMK datum goes into a package.
RECOVERY_TYPES = (ProtectionType.RECOVERY_PASSWORD, ProtectionType.STARTUP_KEY)
PASSWORD_TYPES = (ProtectionType.PASSWORD,)


@dataclasses.dataclass
class KeyPackage:
    """A key package, ours or found in a foreign file."""

    path: str
    kind: str  # "bdekit" or "datum set"
    datums: list[Datum]
    volume_guid: uuid.UUID | None = None
    method: int | None = None
    creation_time: int = 0
    nonce_counter: int = 0
    block_header: Container | None = None
    sector_size: int | None = None
    volume_size: int | None = None
    volume_size_verified: bool = False
    eow_offsets: list[int] = dataclasses.field(default_factory=list)
    header_kind: str = ""
    sectors_per_cluster: int = 8
    notes: list[str] = dataclasses.field(default_factory=list)
    #: every checksum of the package holds (bdekit's two CRC32s, or a whole metadata block's
    #: CRC32 in a foreign file): its facts are what was exported
    intact: bool = False
    #: what the package seemed to say but no checksum vouches for (see module docstring):
    #: ``relocated`` (offsets of the relocated header block), ``metadata_offsets``
    hints: dict[str, list[int]] = dataclasses.field(default_factory=dict)

    def hint(self, name: str, value: int) -> None:
        values = self.hints.setdefault(name, [])
        if value and value not in values:
            values.append(value)

    @property
    def vmks(self) -> list[Datum]:
        return [d for d in self.datums if d.type == DatumType.VOLUME_MASTER_KEY]

    @property
    def fveks(self) -> list[Datum]:
        return [d for d in self.datums if d.type == DatumType.AES_CCM_ENCRYPTED_KEY
                and d.role == DatumRole.FULL_VOLUME_ENCRYPTION_KEY]

    @property
    def virtualization(self) -> tuple[int, int] | None:
        for d in self.datums:
            if d.type == DatumType.VIRTUALIZATION_INFO:
                return int(d.body.offset), int(d.body.size)
        if self.block_header is not None and int(self.block_header.version) >= 2 \
                and int(self.block_header.virtualized_offset):
            ss = self.sector_size or 512
            return (int(self.block_header.virtualized_offset),
                    int(self.block_header.virtualized_sectors) * ss)
        return None

    def describe(self) -> dict[str, Any]:
        bh = self.block_header
        return {
            "path": self.path,
            "kind": self.kind,
            "volume_guid": str(self.volume_guid).upper() if self.volume_guid else None,
            "encryption_method": enum_label(EncryptionMethod, self.method)
            if self.method is not None else None,
            "protectors": [Protector(d).describe() for d in self.vmks],
            "fvek_datums": len(self.fveks),
            "sector_size": self.sector_size,
            "volume_size": self.volume_size,
            "volume_size_verified": self.volume_size_verified,
            "relocated_header": list(self.virtualization) if self.virtualization else None,
            "metadata_offsets": [int(o) for o in bh.metadata_offsets] if bh is not None else None,
            "state_offset": int(bh.state_offset) if bh is not None else None,
            "state": int(bh.current_state) if bh is not None else None,
            "eow_offsets": self.eow_offsets,
            "intact": self.intact,
            "hints": self.hints,
            "notes": self.notes,
        }


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def build_package(metadata: Metadata, *, sector_size: int, volume_size: int = 0,
                  volume_size_verified: bool = False, recovery_only: bool = False) -> bytes:
    """The bytes of a bdekit key package for the volume described by ``metadata``."""
    wanted = RECOVERY_TYPES if recovery_only else RECOVERY_TYPES + PASSWORD_TYPES
    vmks = [d for d in metadata.find_all(DatumType.VOLUME_MASTER_KEY,
                                         DatumRole.VOLUME_MASTER_KEY)
            if int(d.body.protection) in wanted]
    if not vmks:
        kinds = "recovery password or startup / recovery key" + ("" if recovery_only
                                                                 else " or password")
        raise UsageError(f"the volume has no {kinds} protector to put in a key package "
                         "(add one with manage-bde -protectors -add)")
    fvek = metadata.find(DatumType.AES_CCM_ENCRYPTED_KEY, DatumRole.FULL_VOLUME_ENCRYPTION_KEY)
    if fvek is None:
        raise FormatError("the metadata holds no FVEK datum (AES-CCM, role 3)")
    datums: list[Datum] = []
    desc = metadata.find(DatumType.UNICODE, DatumRole.DESCRIPTION)
    if desc is not None:
        datums.append(desc)
    datums += vmks
    datums.append(fvek)
    virt = metadata.find(DatumType.VIRTUALIZATION_INFO)
    if virt is not None:
        datums.append(virt)
    body = b"".join(d.raw for d in datums)
    ds = metadata.dataset
    dataset = structs.DATASET_HEADER.build(dataset_header(
        ds.volume_guid, nonce_counter=int(ds.nonce_counter), method=int(ds.method),
        creation_time=int(ds.creation_time), body_size=len(body),
        method_flags=int(ds.method_flags))) + body
    block = metadata.best.block[:64]
    flags = FLAG_SECTOR_SIZE
    if len(block) == 64 and block[:8] == FVE_SIGNATURE:
        flags |= FLAG_BLOCK_HEADER
    else:
        block = bytes(64)
    if volume_size_verified:
        flags |= FLAG_VOLUME_SIZE
    header = metadata.header
    fields = Container(
        version=VERSION, header_size=HEADER_SIZE, file_size=HEADER_SIZE + len(dataset),
        volume_guid=ds.volume_guid, flags=flags, sector_size=sector_size,
        volume_size=volume_size,
        eow_offsets=ListContainer([*header.eow_offsets, 0, 0][:2]),
        header_kind=KIND_CODES.get(header.kind, 0),
        sectors_per_cluster=header.sectors_per_cluster or 8, reserved_1=0,
        block_header=bytes(block), reserved_2=bytes(16),
        dataset_crc32=zlib.crc32(dataset), header_crc32=0)
    raw = PACKAGE_HEADER.build(fields)
    fields.header_crc32 = zlib.crc32(raw[:156])
    return PACKAGE_HEADER.build(fields) + dataset


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def read_key_package(path: str | os.PathLike[str]) -> KeyPackage:
    """Read (bounded: a regular file of at most 16 MiB) and parse a key package."""
    return parse_key_package(read_bounded(path, "key package"), os.fspath(path))


def parse_key_package(data: bytes, path: str = "<key package>") -> KeyPackage:
    """Our format when the magic is there (checked part by part: module docstring); else the
    bytes are searched for a datum set."""
    if data[:8] == MAGIC and len(data) >= HEADER_SIZE:
        try:
            return _parse_ours(data, path)
        except BdeError as exc:
            log.warning("%s: bdekit key package unreadable (%s); searching it for datums",
                        path, exc.message)
    pkg = scan_datum_set(data, path)
    if pkg is None:
        raise FormatError("no BitLocker key package found: the file holds no VMK datum with a "
                          "wrapped key and no FVEK datum", path=path)
    return pkg


def _parse_ours(data: bytes, path: str) -> KeyPackage:
    head = parse_struct(PACKAGE_HEADER, data[:HEADER_SIZE], "key package header", 0, path)
    header_ok = (head.version == VERSION and head.header_size == HEADER_SIZE
                 and zlib.crc32(data[:156]) == head.header_crc32)
    if header_ok:
        dataset = data[HEADER_SIZE:head.file_size]
        dataset_ok = head.file_size <= len(data) and zlib.crc32(dataset) == head.dataset_crc32
    else:
        # the header's own fields are suspect; its dataset CRC32 still proves the rest intact
        # when it matches everything after the header
        dataset = data[HEADER_SIZE:]
        dataset_ok = zlib.crc32(dataset) == head.dataset_crc32
    if header_ok and dataset_ok:
        return _intact_package(head, dataset, path)
    return _damaged_package(head, header_ok, dataset, dataset_ok, path)


def _intact_package(head: Container, dataset: bytes, path: str) -> KeyPackage:
    """Both CRC32s hold: every fact is used (parts that do not parse are a FormatError)."""
    ds = parse_struct(structs.DATASET_HEADER, dataset[:48], "dataset header", HEADER_SIZE, path)
    datums = parse_datums(dataset[48:ds.size], HEADER_SIZE + 48, path)
    pkg = KeyPackage(path=path, kind="bdekit", datums=datums, intact=True)
    _take_dataset_header(pkg, ds)
    _take_header(pkg, head, path)
    return pkg


def _take_dataset_header(pkg: KeyPackage, ds: Container) -> None:
    pkg.volume_guid = ds.volume_guid
    pkg.method = int(ds.method) or None
    pkg.creation_time = int(ds.creation_time)
    pkg.nonce_counter = int(ds.nonce_counter)


def _take_header(pkg: KeyPackage, head: Container, path: str) -> None:
    """The facts of a package header whose CRC32 holds."""
    if head.flags & FLAG_BLOCK_HEADER:
        pkg.block_header = parse_struct(structs.FVE_BLOCK_HEADER, head.block_header,
                                        "FVE block header", 72, path)
    pkg.volume_guid = head.volume_guid
    pkg.sector_size = int(head.sector_size) if head.flags & FLAG_SECTOR_SIZE else None
    pkg.volume_size = int(head.volume_size) or None
    pkg.volume_size_verified = bool(head.flags & FLAG_VOLUME_SIZE)
    pkg.eow_offsets = [int(o) for o in head.eow_offsets if o]
    pkg.header_kind = HEADER_KINDS.get(int(head.header_kind), "")
    pkg.sectors_per_cluster = int(head.sectors_per_cluster) or 8


def _damaged_package(head: Container, header_ok: bool, dataset: bytes, dataset_ok: bool,
                     path: str) -> KeyPackage:
    """A checksum fails: only what a checksum that holds, or AES-CCM, vouches for is used."""
    pkg: KeyPackage | None = None
    if dataset_ok:
        try:
            ds = parse_struct(structs.DATASET_HEADER, dataset[:48], "dataset header",
                              HEADER_SIZE, path)
            datums = parse_datums(dataset[48:ds.size], HEADER_SIZE + 48, path)
        except BdeError:
            pass
        else:
            pkg = KeyPackage(path=path, kind="bdekit", datums=datums)
            _take_dataset_header(pkg, ds)
    if pkg is None:
        pkg = KeyPackage(path=path, kind="bdekit", datums=[])
        _scan_blob(dataset, pkg, set(), authenticated_only=True)
    if header_ok:
        _take_header(pkg, head, path)
    else:
        _hint_block_header(pkg, bytes(head.block_header))
    if not pkg.vmks and not pkg.fveks:
        raise FormatError("damaged key package: its checksums fail and no VMK or FVEK datum "
                          "survives in it", path=path, offset=0)
    failed = [what for what, ok in (("header", header_ok), ("dataset", dataset_ok)) if not ok]
    pkg.notes.append(f"damaged key package: the {' and '.join(failed)} CRC32 fails; "
                     + ("its layout facts are used (the header CRC32 holds)" if header_ok else
                        "none of its layout facts is used")
                     + ("" if dataset_ok else "; of its datums only the VMK and FVEK datums "
                        "(authenticated by AES-CCM) are used"))
    log.warning("%s: %s", path, pkg.notes[-1])
    return pkg


def _hint_block_header(pkg: KeyPackage, raw: bytes) -> None:
    """Offsets an unverified block header names, as hints."""
    if raw[:8] != FVE_SIGNATURE:
        return
    try:
        bh = structs.FVE_BLOCK_HEADER.parse(raw[:64])
    except PARSE_ERRORS:
        return
    for off in bh.metadata_offsets:
        pkg.hint("metadata_offsets", int(off))
    if int(bh.version) >= 2:
        pkg.hint("relocated", int(bh.virtualized_offset))


# -- tolerant search ---------------------------------------------------------------------------

def scan_datum_set(data: bytes, path: str = "<key package>") -> KeyPackage | None:
    """Search ``data`` (and base64 / hex blobs in it) for the datums a key package needs."""
    pkg = KeyPackage(path=path, kind="datum set", datums=[])
    seen: set[bytes] = set()
    for blob in [data, *text_blobs(data)]:
        _scan_blob(blob, pkg, seen)
    if not pkg.vmks and not pkg.fveks:
        return None
    if not pkg.vmks:
        pkg.notes.append("no VMK datum: the package needs --vmk or a VMK from elsewhere")
    if not pkg.fveks:
        pkg.notes.append("no FVEK datum: the package cannot decrypt alone")
    log.info("%s: datum set with %d VMK and %d FVEK datum(s)", path, len(pkg.vmks),
             len(pkg.fveks))
    return pkg


def _scan_blob(blob: bytes, pkg: KeyPackage, seen: set[bytes], *,
               authenticated_only: bool = False) -> None:
    """Add what ``blob`` holds to ``pkg``; with ``authenticated_only`` (a damaged bdekit
    package), only the VMK and FVEK datums, everything else as hints."""
    i = blob.find(FVE_SIGNATURE)
    while i != -1:
        if not authenticated_only and _whole_block(blob, i, pkg, seen):
            pass
        elif i + 64 <= len(blob):
            _hint_block_header(pkg, blob[i:i + 64])
        i = blob.find(FVE_SIGNATURE, i + 1)
    if not authenticated_only:
        _dataset_headers(blob, pkg)
    for marker, check in MARKERS:
        i = blob.find(marker)
        while i != -1:
            datum = datum_at(blob, i - 2)
            i = blob.find(marker, i + 1)
            if datum is None or not check(datum) or datum.raw in seen:
                continue
            seen.add(datum.raw)
            if datum.type == DatumType.VIRTUALIZATION_INFO:
                pkg.hint("relocated", int(datum.body.offset))
            elif not authenticated_only or datum.type in (DatumType.VOLUME_MASTER_KEY,
                                                         DatumType.AES_CCM_ENCRYPTED_KEY):
                pkg.datums.append(datum)


def _whole_block(blob: bytes, at: int, pkg: KeyPackage, seen: set[bytes]) -> bool:
    """A whole FVE metadata block at ``at`` whose CRC32 holds: its facts and datums serve,
    as a metadata copy's would (the first such block only)."""
    if pkg.intact:
        return False
    copy = read_metadata_copy(lambda o, n: blob[o:o + n], at, 0, pkg.path, len(blob))
    if not copy.crc_ok or copy.block_header is None or copy.dataset_header is None:
        return False
    pkg.intact = True
    pkg.block_header = copy.block_header
    _take_dataset_header(pkg, copy.dataset_header)
    for datum in copy.datums:
        if datum.raw not in seen:
            seen.add(datum.raw)
            pkg.datums.append(datum)
    log.info("%s: a whole metadata block (CRC32 holds) at offset %d", pkg.path, at)
    return True


def _dataset_headers(blob: bytes, pkg: KeyPackage) -> None:
    """Volume GUID and method of the first plausible dataset header (version 1, header size
    48); nothing checksums them: the GUID only orders packages, the FVEK's key type wins."""
    marker = b"\x01\x00\x00\x00\x30\x00\x00\x00"
    i = blob.find(marker)
    while i != -1 and pkg.volume_guid is None:
        start = i - 4
        if start >= 0 and start + 48 <= len(blob):
            ds = structs.DATASET_HEADER.parse(blob[start:start + 48])
            if 48 <= ds.size <= len(blob) - start and \
                    (ds.method in EncryptionMethod.__members__.values() or ds.method == 0):
                _take_dataset_header(pkg, ds)
        i = blob.find(marker, i + 1)


# --------------------------------------------------------------------------------------------
# Metadata from a package
# --------------------------------------------------------------------------------------------


def block_header_container(**fields: Any) -> Container:
    """A parsed-looking FVE block header built from ``fields`` (defaults: v2, encrypted)."""
    values: dict[str, Any] = dict(size=0, version=2, current_state=VolumeState.ENCRYPTED,
                                  next_state=VolumeState.ENCRYPTED, state_offset=0,
                                  state_size=0, virtualized_sectors=0,
                                  metadata_offsets=[0, 0, 0], virtualized_offset=0)
    values.update(fields)
    values["metadata_offsets"] = ListContainer([*values["metadata_offsets"], 0, 0, 0][:3])
    return structs.FVE_BLOCK_HEADER.parse(structs.FVE_BLOCK_HEADER.build(Container(values)))


def package_metadata(pkg: KeyPackage, header: VolumeHeader | None = None, *,
                     method: int | None = None) -> Metadata:
    """A :class:`Metadata` served by the package, so that :class:`~bdekit.volume.BdeVolume`
    and :func:`~bdekit.protectors.unlock` work unchanged (``source = "key package"``).

    ``header`` is the image's volume header when it still parses; facts the package lacks stay
    zero (unknown) for the repair to infer. The copy's ``crc_ok`` says whether the package is
    intact: a key failure on a damaged package is damage, not a wrong key."""
    bh = pkg.block_header
    if bh is None:
        offsets = list(header.metadata_offsets) if header is not None else [0, 0, 0]
        virt = pkg.virtualization
        ss = pkg.sector_size or (header.bytes_per_sector if header else 512)
        bh = block_header_container(
            metadata_offsets=offsets,
            virtualized_offset=virt[0] if virt else 0,
            virtualized_sectors=(virt[1] // ss) if virt else 0)
    guid = pkg.volume_guid or uuid.UUID(int=0)
    meth = method if method is not None else (pkg.method or 0)
    dataset = structs.DATASET_HEADER.parse(structs.DATASET_HEADER.build(dataset_header(
        guid, nonce_counter=pkg.nonce_counter, method=meth, creation_time=pkg.creation_time)))
    if header is None:
        header = stand_in_header(int(bh.version), bh.metadata_offsets,
                                 eow_offsets=pkg.eow_offsets,
                                 sector_size=pkg.sector_size or 512,
                                 sectors_per_cluster=pkg.sectors_per_cluster,
                                 kind=pkg.header_kind)
    elif pkg.sector_size and header.bytes_per_sector != pkg.sector_size:
        header = header.with_sector_size(pkg.sector_size)
    copy = MetadataCopy(index=0, offset=0, status="key package", block_header=bh,
                        dataset_header=dataset, datums=list(pkg.datums), block=b"",
                        crc_ok=pkg.intact)
    return Metadata(header=header, copies=[copy], best=copy, source=MetadataSource.KEY_PACKAGE)


__all__ = ["HEADER_SIZE", "MAGIC", "KeyPackage", "block_header_container", "build_package",
           "package_metadata", "parse_key_package", "read_key_package", "scan_datum_set"]
