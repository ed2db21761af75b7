"""Partition tables: MBR (with extended / logical partitions) and GPT (with protective MBR).

:func:`read_partition_table` lists the partitions of a disk image so the user can pick the
BitLocker volume with ``--partition N``.  Numbering follows Linux: MBR primaries keep their
slot number 1-4 (empty slots leave gaps), logical partitions inside extended ones are numbered
from 5 in chain order; GPT partitions are numbered by their entry slot (1-based).

An image with no partition table (a bare volume: a BitLocker, NTFS or FAT volume boot record
also ends with ``55 AA``) gives ``[]``.  A GPT is read at LBA 1 with 512-byte sectors, then
with 4096-byte sectors; its header CRC32 and entry-array CRC32 are checked, and when the
primary is damaged the backup at the last LBA serves (logged).  MBR offsets are in 512-byte
sectors, unless no partition starts on a boot record that way and some do with 4096-byte
sectors (an MBR on a 4Kn disk).

Every on-disk structure is a ``construct`` struct defined at the top of this module; the tests
build images with the same structs.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib

from construct import (
    Array,
    Bytes,
    Const,
    ConstructError,
    Container,
    Int8ul,
    Int16ul,
    Int32ul,
    Int64ul,
    PaddedString,
    Struct,
)

from bdekit.errors import FormatError, UsageError
from bdekit.format.structs import Guid
from bdekit.image.imagesource import ImageSource

__all__ = [
    "GPT_ENTRY",
    "GPT_HEADER",
    "GPT_TYPE_NAMES",
    "MBR",
    "MBR_ENTRY",
    "MBR_TYPE_NAMES",
    "Partition",
    "find_partition",
    "gpt_header_crc",
    "looks_like_vbr",
    "read_partition_table",
]

log = logging.getLogger(__name__)


#: One of the four 16-byte entries of an MBR or EBR.
MBR_ENTRY = Struct(
    "status" / Int8ul,            # 0x80 active, 0x00 inactive; anything else: not a table
    "chs_first" / Bytes(3),
    "type" / Int8ul,
    "chs_last" / Bytes(3),
    "lba_first" / Int32ul,        # MBR: from the disk start; EBR: relative (see _read_ebr_chain)
    "num_sectors" / Int32ul,
)

#: Sector 0 of a disk (and every EBR of an extended partition).
MBR = Struct(
    "boot_code" / Bytes(440),
    "disk_signature" / Int32ul,
    "reserved" / Int16ul,
    "entries" / Array(4, MBR_ENTRY),
    "signature" / Const(b"\x55\xaa"),
)

#: The GPT header (92 bytes used; the rest of its sector is reserved, zero).
GPT_HEADER = Struct(
    "signature" / Const(b"EFI PART"),
    "revision" / Int32ul,         # 0x00010000
    "header_size" / Int32ul,      # 92
    "header_crc32" / Int32ul,     # CRC32 of header_size bytes with this field zeroed
    "reserved" / Int32ul,
    "current_lba" / Int64ul,
    "backup_lba" / Int64ul,
    "first_usable_lba" / Int64ul,
    "last_usable_lba" / Int64ul,
    "disk_guid" / Guid,
    "entries_lba" / Int64ul,
    "num_entries" / Int32ul,
    "entry_size" / Int32ul,       # 128 * 2**n
    "entries_crc32" / Int32ul,    # CRC32 of num_entries * entry_size bytes
)
GPT_HEADER_SIZE = 92

#: One GPT partition entry (the first 128 bytes of each ``entry_size`` slot).
GPT_ENTRY = Struct(
    "type_guid" / Guid,
    "unique_guid" / Guid,
    "first_lba" / Int64ul,
    "last_lba" / Int64ul,         # inclusive
    "attributes" / Int64ul,
    "name" / PaddedString(72, "utf_16_le"),
)
GPT_ENTRY_SIZE = 128

MBR_TYPE_EMPTY = 0x00
MBR_TYPE_GPT_PROTECTIVE = 0xEE
MBR_EXTENDED_TYPES = frozenset({0x05, 0x0F, 0x85})
#: Upper bound on the GPT entry array bdekit reads (the usual one is 16 KiB).
MAX_GPT_ENTRIES_BYTES = 4 << 20
#: Upper bound on the EBR chain (loops in a damaged chain must not hang).
MAX_LOGICAL_PARTITIONS = 256

MBR_TYPE_NAMES: dict[int, str] = {
    0x01: "FAT12",
    0x04: "FAT16 <32M",
    0x05: "extended",
    0x06: "FAT16",
    0x07: "NTFS/exFAT/BitLocker",
    0x0B: "FAT32 (CHS)",
    0x0C: "FAT32 (LBA)",
    0x0E: "FAT16 (LBA)",
    0x0F: "extended (LBA)",
    0x11: "hidden FAT12",
    0x12: "OEM diagnostics/recovery",
    0x14: "hidden FAT16 <32M",
    0x16: "hidden FAT16",
    0x17: "hidden NTFS/exFAT/BitLocker",
    0x1B: "hidden FAT32 (CHS)",
    0x1C: "hidden FAT32 (LBA)",
    0x1E: "hidden FAT16 (LBA)",
    0x27: "Windows recovery environment",
    0x42: "Windows dynamic disk (LDM)",
    0x82: "Linux swap",
    0x83: "Linux",
    0x85: "Linux extended",
    0x8E: "Linux LVM",
    0xA5: "FreeBSD",
    0xA6: "OpenBSD",
    0xA8: "Apple UFS",
    0xAF: "Apple HFS/HFS+",
    0xDE: "Dell utility",
    0xEE: "GPT protective",
    0xEF: "EFI system",
    0xFD: "Linux RAID autodetect",
}

GPT_TYPE_NAMES: dict[str, str] = {
    "C12A7328-F81F-11D2-BA4B-00A0C93EC93B": "EFI system",
    "21686148-6449-6E6F-744E-656564454649": "BIOS boot",
    "E3C9E316-0B5C-4DB8-817D-F92DF00215AE": "Microsoft reserved",
    "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7": "Microsoft basic data",
    "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC": "Windows recovery environment",
    "5808C8AA-7E8F-42E0-85D2-E1E90434CFB3": "Windows LDM metadata",
    "AF9B60A0-1431-4F62-BC68-3311714A69AD": "Windows LDM data",
    "E75CAF8F-F680-4CEE-AFA3-B001E56EFC2D": "Windows Storage Spaces",
    "0FC63DAF-8483-4772-8E79-3D69D8477DE4": "Linux filesystem",
    "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709": "Linux root (x86-64)",
    "933AC7E1-2EB4-4F13-B844-0E14E2AEF915": "Linux home",
    "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F": "Linux swap",
    "E6D6D379-F507-44C2-A23C-238F2A3DF928": "Linux LVM",
    "A19D880F-05FC-4D3B-A006-743F0F84911E": "Linux RAID",
    "CA7D7CCB-63ED-4C53-861C-1742536059CC": "Linux LUKS",
    "48465300-0000-11AA-AA11-00306543ECAC": "Apple HFS+",
    "7C3457EF-0000-11AA-AA11-00306543ECAC": "Apple APFS",
    "516E7CB6-6ECF-11D6-8FF8-00022D09712B": "FreeBSD UFS",
}

#: OEM names of volume boot records bdekit recognises outright (BitLocker, NTFS, FAT, exFAT).
VBR_OEM_NAMES = frozenset({
    b"-FVE-FS-", b"NTFS    ", b"EXFAT   ", b"MSWIN4.1", b"MSWIN4.0", b"MSDOS5.0",
    b"mkfs.fat", b"mkdosfs ", b"FreeDOS ", b"IBM  3.3", b"FRDOS4.1", b"BSD  4.4",
})


@dataclasses.dataclass(frozen=True)
class Partition:
    """One partition of a disk image.

    ``index`` is what the user passes as ``--partition N``; ``offset`` and ``size`` are in
    bytes.  ``truncated`` is true when the partition reaches past the end of the image (it is
    still listed: a partial image may hold what matters at the start of the volume).
    """

    index: int
    offset: int
    size: int
    scheme: str       # "mbr" or "gpt"
    type: str         # MBR: "0x07"; GPT: the type GUID, upper case
    type_name: str    # "NTFS/exFAT/BitLocker (0x07)", "Microsoft basic data", ...
    name: str = ""    # GPT partition name; "" for MBR
    truncated: bool = False

    @property
    def end(self) -> int:
        """Offset one past the last byte."""
        return self.offset + self.size

    @property
    def is_extended(self) -> bool:
        """An MBR extended partition (a container of logical partitions, not a volume)."""
        return self.scheme == "mbr" and int(self.type, 16) in MBR_EXTENDED_TYPES

    def describe(self) -> str:
        """One line for listings."""
        text = (f"{self.index:>3}  {self.offset:>15}  {self.size:>15}  {self.scheme}  "
                f"{self.type_name}")
        if self.name:
            text += f"  {self.name!r}"
        if self.truncated:
            text += "  [truncated: extends past the end of the image]"
        return text


def mbr_type_name(code: int) -> str:
    return f"{MBR_TYPE_NAMES.get(code, 'unknown')} (0x{code:02X})"


def gpt_type_name(type_guid: str) -> str:
    return GPT_TYPE_NAMES.get(type_guid.upper(), "unknown")


def gpt_header_crc(header: bytes, header_size: int = GPT_HEADER_SIZE) -> int:
    """CRC32 of the first ``header_size`` bytes with the CRC field (offset 16) zeroed."""
    data = bytearray(header[:header_size])
    data[16:20] = b"\0\0\0\0"
    return zlib.crc32(data) & 0xFFFFFFFF


def looks_like_vbr(sector: bytes) -> bool:
    """True when ``sector`` is a volume boot record (BitLocker, NTFS, FAT, exFAT), not an MBR.

    A VBR starts with a jump (``EB xx 90`` or ``E9 xx xx``) followed by an OEM name and a BIOS
    parameter block whose bytes/sector (offset 11) is a power of two from 512 to 4096.  A known
    OEM name settles it; otherwise a plausible BPB (sectors/cluster a power of two) whose
    "partition entries" could not be a table also counts.  (GRUB's MBR also starts with
    ``EB 63 90``, but its BPB area is zero and its entries are a valid table.)
    """
    if len(sector) < 512:
        return False
    jump = (sector[0] == 0xEB and sector[2] == 0x90) or sector[0] == 0xE9
    if not jump:
        return False
    bps = int.from_bytes(sector[11:13], "little")
    if bps not in (512, 1024, 2048, 4096):
        # exFAT keeps its BPB zeroed and has the sector size as a shift at 108.
        return sector[3:11] == b"EXFAT   "
    if sector[3:11] in VBR_OEM_NAMES:
        return True
    spc = sector[13]
    if spc == 0 or spc & (spc - 1):
        return False
    return not _mbr_entries_plausible(sector)


def _mbr_entries_plausible(sector: bytes) -> bool:
    """Every used entry has status 0x00/0x80 and a non-empty extent, and one is used."""
    used = 0
    for i in range(4):
        e = sector[446 + 16 * i : 462 + 16 * i]
        status, ptype = e[0], e[4]
        if ptype == MBR_TYPE_EMPTY:
            continue
        lba = int.from_bytes(e[8:12], "little")
        count = int.from_bytes(e[12:16], "little")
        if status not in (0x00, 0x80) or lba == 0 or count == 0:
            return False
        used += 1
    return used > 0


def _read(source: ImageSource, offset: int, length: int) -> bytes:
    return source.read_at(offset, length)


def read_partition_table(source: ImageSource) -> list[Partition]:
    """The partitions of ``source``; ``[]`` when it holds no partition table (a bare volume).

    Raises :class:`FormatError` when a GPT is announced (protective MBR) but neither the
    primary nor the backup GPT is valid, and :class:`~bdekit.errors.ReadError` when the
    table cannot be read.
    """
    sector0 = _read(source, 0, 512)
    if len(sector0) < 512:
        log.info("%s: smaller than one sector: no partition table", source.path)
        return []
    try:
        mbr = MBR.parse(sector0)
    except ConstructError:
        # No 55AA: no MBR.  A GPT whose protective MBR was wiped is still worth finding.
        if _find_gpt_header_sector_size(source) is not None:
            log.warning("%s: no MBR signature at sector 0, but a GPT header is present; "
                        "reading the GPT", source.path)
            return _read_gpt(source)
        log.info("%s: no 55AA signature at sector 0: no partition table", source.path)
        return []

    log.debug("parsed MBR at offset 0 (0x0): entry types %s",
              [f"0x{e.type:02x}" for e in mbr.entries])
    if looks_like_vbr(sector0):
        log.info("%s: sector 0 is a volume boot record (OEM %r): no partition table",
                 source.path, bytes(sector0[3:11]))
        return []
    if any(e.type == MBR_TYPE_GPT_PROTECTIVE for e in mbr.entries):
        return _read_gpt(source)
    if not _mbr_entries_plausible(sector0):
        if _find_gpt_header_sector_size(source) is not None:
            log.warning("%s: MBR without a protective entry, but a GPT header is present; "
                        "reading the GPT", source.path)
            return _read_gpt(source)
        log.info("%s: sector 0 ends with 55AA but holds no valid partition entry: "
                 "no partition table", source.path)
        return []
    return _read_mbr(source, mbr)


def find_partition(partitions: list[Partition], index: int) -> Partition:
    """The partition numbered ``index`` (as in ``--partition N``), else :class:`UsageError`."""
    for p in partitions:
        if p.index == index:
            if p.is_extended:
                raise UsageError(f"partition {index} is an extended partition (a container "
                                 "of logical partitions), not a volume")
            return p
    if not partitions:
        raise UsageError(f"--partition {index}: the image has no partition table")
    valid = ", ".join(str(p.index) for p in partitions if not p.is_extended)
    raise UsageError(f"no partition {index}; the image has: {valid}")


# --------------------------------------------------------------------------------------------
# MBR
# --------------------------------------------------------------------------------------------
def _make_mbr_partition(source: ImageSource, index: int, type_code: int, start_lba: int,
                        num_sectors: int, sector_size: int) -> Partition:
    offset = start_lba * sector_size
    size = num_sectors * sector_size
    truncated = offset + size > source.size
    if truncated:
        log.warning("%s: partition %d (offset %d, size %d) extends past the end of the image "
                    "(%d bytes)", source.path, index, offset, size, source.size)
    return Partition(index=index, offset=offset, size=size, scheme="mbr",
                     type=f"0x{type_code:02x}", type_name=mbr_type_name(type_code), name="",
                     truncated=truncated)


def _guess_mbr_sector_size(source: ImageSource, mbr: Container) -> int:
    """512, unless no partition start holds a boot record at 512-byte units but one does at
    4096-byte units (an MBR on a 4Kn disk)."""
    starts = [e.lba_first for e in mbr.entries if e.type != MBR_TYPE_EMPTY]

    def hits(unit: int) -> int:
        n = 0
        for lba in starts:
            pos = lba * unit
            if pos + 512 <= source.size and _read(source, pos + 510, 2) == b"\x55\xaa":
                n += 1
        return n

    if hits(512) == 0 and hits(4096) > 0:
        log.info("%s: MBR partitions start on boot records only with 4096-byte sectors; "
                 "using 4096", source.path)
        return 4096
    return 512


def _read_mbr(source: ImageSource, mbr: Container) -> list[Partition]:
    sector_size = _guess_mbr_sector_size(source, mbr)
    parts: list[Partition] = []
    extended: list[tuple[int, int]] = []
    for slot, e in enumerate(mbr.entries, start=1):
        if e.type == MBR_TYPE_EMPTY:
            continue
        parts.append(_make_mbr_partition(source, slot, e.type, e.lba_first, e.num_sectors,
                                         sector_size))
        if e.type in MBR_EXTENDED_TYPES:
            extended.append((e.lba_first, e.num_sectors))
    next_index = 5
    for ext_start, ext_count in extended:
        logicals = _read_ebr_chain(source, ext_start, ext_count, sector_size, next_index)
        parts.extend(logicals)
        next_index += len(logicals)
    log.info("%s: MBR partition table, %d partition(s)", source.path, len(parts))
    return parts


def _read_ebr_chain(source: ImageSource, ext_start: int, ext_count: int, sector_size: int,
                    first_index: int) -> list[Partition]:
    """Follow the EBR chain of the extended partition at ``ext_start`` (LBA).

    In each EBR, entry 1 is a logical partition relative to that EBR; entry 2 (an extended
    type) points to the next EBR relative to the start of the *outermost* extended partition.
    """
    parts: list[Partition] = []
    seen: set[int] = set()
    ebr_lba = ext_start
    index = first_index
    while len(parts) < MAX_LOGICAL_PARTITIONS:
        if ebr_lba in seen:
            log.warning("%s: EBR chain loops back to LBA %d; stopping", source.path, ebr_lba)
            break
        seen.add(ebr_lba)
        raw = _read(source, ebr_lba * sector_size, 512)
        try:
            ebr = MBR.parse(raw)
        except ConstructError:
            if ebr_lba == ext_start:
                log.info("%s: extended partition at LBA %d has no EBR (empty)", source.path,
                         ebr_lba)
            else:
                log.warning("%s: EBR at LBA %d is missing or damaged (no 55AA); later "
                            "logical partitions are lost", source.path, ebr_lba)
            break
        log.debug("parsed EBR at offset %d (0x%x)", ebr_lba * sector_size, ebr_lba * sector_size)
        next_ebr: int | None = None
        for e in ebr.entries:
            if e.type == MBR_TYPE_EMPTY or e.num_sectors == 0:
                continue
            if e.type in MBR_EXTENDED_TYPES:
                if next_ebr is None:
                    next_ebr = ext_start + e.lba_first
                continue
            if e.status not in (0x00, 0x80):
                log.warning("%s: EBR at LBA %d has an invalid entry (status 0x%02x); skipped",
                            source.path, ebr_lba, e.status)
                continue
            start = ebr_lba + e.lba_first
            if not ext_start <= start < ext_start + ext_count:
                log.warning("%s: logical partition %d starts outside its extended partition",
                            source.path, index)
            parts.append(_make_mbr_partition(source, index, e.type, start, e.num_sectors,
                                             sector_size))
            index += 1
        if next_ebr is None:
            break
        ebr_lba = next_ebr
    return parts


# --------------------------------------------------------------------------------------------
# GPT
# --------------------------------------------------------------------------------------------
def _find_gpt_header_sector_size(source: ImageSource) -> int | None:
    for ss in (512, 4096):
        if _read(source, ss, 8) == b"EFI PART":
            return ss
    return None


class _GptInvalid(Exception):
    """Why one GPT copy cannot be used."""


def _parse_gpt_at(source: ImageSource, lba: int, sector_size: int,
                  expect_current: int) -> tuple[Container, bytes]:
    """Parse and verify the GPT header at ``lba`` and its entry array."""
    raw = _read(source, lba * sector_size, sector_size)
    if len(raw) < GPT_HEADER_SIZE:
        raise _GptInvalid(f"LBA {lba} is past the end of the image")
    try:
        hdr = GPT_HEADER.parse(raw)
    except ConstructError:
        raise _GptInvalid(f"no 'EFI PART' signature at LBA {lba}") from None
    if not GPT_HEADER_SIZE <= hdr.header_size <= sector_size:
        raise _GptInvalid(f"bad header size {hdr.header_size}")
    crc = gpt_header_crc(raw, hdr.header_size)
    if crc != hdr.header_crc32:
        raise _GptInvalid(f"header CRC32 mismatch (stored 0x{hdr.header_crc32:08x}, "
                          f"computed 0x{crc:08x})")
    log.debug("parsed GPT header at offset %d (0x%x): %d entries of %d bytes at LBA %d",
              lba * sector_size, lba * sector_size, hdr.num_entries, hdr.entry_size,
              hdr.entries_lba)
    if hdr.current_lba != expect_current:
        raise _GptInvalid(f"header says it is at LBA {hdr.current_lba}, found at {lba}")
    if hdr.entry_size < GPT_ENTRY_SIZE or hdr.entry_size % GPT_ENTRY_SIZE:
        raise _GptInvalid(f"bad entry size {hdr.entry_size}")
    length = hdr.num_entries * hdr.entry_size
    if length > MAX_GPT_ENTRIES_BYTES:
        raise _GptInvalid(f"entry array too large ({hdr.num_entries} x {hdr.entry_size})")
    entries = _read(source, hdr.entries_lba * sector_size, length)
    if len(entries) < length:
        raise _GptInvalid("entry array extends past the end of the image")
    crc = zlib.crc32(entries) & 0xFFFFFFFF
    if crc != hdr.entries_crc32:
        raise _GptInvalid(f"entry array CRC32 mismatch (stored 0x{hdr.entries_crc32:08x}, "
                          f"computed 0x{crc:08x})")
    return hdr, entries


def _read_gpt(source: ImageSource) -> list[Partition]:
    found = _find_gpt_header_sector_size(source)
    sizes = [found] if found else [512, 4096]
    problems: list[str] = []
    for ss in sizes:
        backup_lbas: list[int] = []
        try:
            hdr, entries = _parse_gpt_at(source, 1, ss, expect_current=1)
        except _GptInvalid as exc:
            problems.append(f"primary GPT ({ss}-byte sectors): {exc}")
            log.warning("%s: primary GPT (%d-byte sectors) unusable: %s", source.path, ss, exc)
            # The header may still tell where the backup is, even when its entries are bad.
            raw = _read(source, ss, ss)
            try:
                h = GPT_HEADER.parse(raw)
                if GPT_HEADER_SIZE <= h.header_size <= ss and \
                        gpt_header_crc(raw, h.header_size) == h.header_crc32:
                    backup_lbas.append(h.backup_lba)
            except ConstructError:
                pass
        else:
            log.info("%s: GPT: primary header at LBA 1 (%d-byte sectors) serves", source.path, ss)
            return _gpt_partitions(source, hdr, entries, ss)
        last_lba = source.size // ss - 1
        if last_lba not in backup_lbas:
            backup_lbas.append(last_lba)
        for lba in backup_lbas:
            if lba <= 1:
                continue
            try:
                hdr, entries = _parse_gpt_at(source, lba, ss, expect_current=lba)
            except _GptInvalid as exc:
                problems.append(f"backup GPT at LBA {lba}: {exc}")
                continue
            log.warning("%s: GPT: primary damaged; the backup header at LBA %d (%d-byte "
                        "sectors) serves", source.path, lba, ss)
            return _gpt_partitions(source, hdr, entries, ss)
    raise FormatError("protective MBR announces a GPT, but neither the primary nor the backup "
                      "GPT is valid: " + "; ".join(problems), path=source.path)


def _gpt_partitions(source: ImageSource, hdr: Container, entries: bytes,
                    sector_size: int) -> list[Partition]:
    parts: list[Partition] = []
    esize: int = hdr.entry_size
    for i in range(hdr.num_entries):
        raw = entries[i * esize : i * esize + GPT_ENTRY_SIZE]
        if raw[:16] == bytes(16):
            continue
        try:
            e = GPT_ENTRY.parse(raw)
        except (ConstructError, UnicodeDecodeError) as exc:
            log.warning("%s: GPT entry %d does not parse (%s); skipped", source.path, i + 1, exc)
            continue
        if e.last_lba < e.first_lba:
            log.warning("%s: GPT entry %d ends (LBA %d) before it starts (LBA %d); skipped",
                        source.path, i + 1, e.last_lba, e.first_lba)
            continue
        offset = e.first_lba * sector_size
        size = (e.last_lba - e.first_lba + 1) * sector_size
        truncated = offset + size > source.size
        if truncated:
            log.warning("%s: partition %d (offset %d, size %d) extends past the end of the "
                        "image (%d bytes)", source.path, i + 1, offset, size, source.size)
        type_guid = str(e.type_guid).upper()
        parts.append(Partition(index=i + 1, offset=offset, size=size, scheme="gpt",
                               type=type_guid, type_name=gpt_type_name(type_guid),
                               name=e.name.rstrip("\0"), truncated=truncated))
    log.info("%s: GPT partition table, %d partition(s)", source.path, len(parts))
    return parts

