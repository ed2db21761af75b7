"""Boot sectors of the file systems inside a BitLocker volume: NTFS, FAT12/16/32, exFAT, ReFS.

:func:`parse_boot_sector` is the one parser bdekit has: the volume (:mod:`bdekit.volume.bde`)
takes its size from it, and the repair (:mod:`bdekit.recovery`) uses it to tell a boot sector
from noise (a wrong key, a damaged relocated header block) and to find the NTFS backup.  A
sector is accepted only when every field checked below is what its specification allows;
anything else (zeros, noise, a BitLocker volume header) gives ``None``.

All integers little-endian; offsets in the sector; ``55 AA`` at 510 on the first three.

NTFS (OEM ``NTFS    `` at 3)
    bytes per sector u16 at 11 (512, 1024, 2048, 4096); sectors per cluster u8 at 13 (a power
    of two, or from 0xF4 on 2^(256 - value) for clusters above 64 KiB); total sectors u64 at
    0x28; cluster of ``$MFT`` u64 at 0x30 (never 0: cluster 0 holds the boot sector).  The
    volume is *total sectors + 1* sectors long: the backup boot sector lies in its last sector,
    outside the count.
FAT12/16/32 (any OEM but BitLocker's ``-FVE-FS-``)
    bytes per sector at 11; sectors per cluster at 13 (a power of two); reserved sectors u16
    at 14 (at least 1); number of FATs u8 at 16 (1 or 2); total sectors u16 at 19, or u32 at
    32 when that is 0; media descriptor u8 at 21 (0xF0 or 0xF8-0xFF); sectors per FAT u16 at
    22 (0 on FAT32).  FAT32 keeps a backup boot sector at the sector number u16 at 50
    (usually 6); FAT12/16 keep none.
exFAT (``EXFAT   `` at 3)
    bytes 11-63 zero (where a FAT BPB would be); volume length u64 at 72 (sectors);
    bytes-per-sector shift u8 at 108 (9-12); number of FATs u8 at 110 (1 or 2).  The backup
    boot region starts at sector 12.
ReFS (``ReFS\0\0\0\0`` at 3, file system recognition structure ``FSRS`` at 16)
    number of sectors u64 at 24; bytes per sector u32 at 32 (512 or 4096); sectors per
    cluster u32 at 36 (a power of two; clusters of 4 or 64 KiB); major version u8 at 40
    (1 to 3). Bytes 11-15 are zero. No ``55 AA`` is required; no backup is located here.
"""

from __future__ import annotations

import dataclasses
import enum

from construct import Container

from bdekit.format import structs
from bdekit.format.constants import FVE_SIGNATURE

SECTOR_SIZES = (512, 1024, 2048, 4096)
NTFS_OEM = b"NTFS    "
EXFAT_NAME = b"EXFAT   "
REFS_NAME = b"ReFS\x00\x00\x00\x00"
REFS_FSRS = b"FSRS"
#: exFAT: the backup boot region starts at this sector
EXFAT_BACKUP_SECTOR = 12
#: FAT32: where the backup boot sector number is
FAT32_BACKUP_FIELD = 50


class FsKind(enum.StrEnum):
    NTFS = "ntfs"
    FAT = "fat"
    EXFAT = "exfat"
    REFS = "refs"


@dataclasses.dataclass(frozen=True)
class BootSector:
    """What a boot sector says about its volume."""

    fs: FsKind
    bytes_per_sector: int
    volume_size: int  # bytes; NTFS: (total sectors + 1) x bytes per sector
    backup_offset: int | None  # byte offset of the backup boot sector in the volume, if any


def parse_boot_sector(sector: bytes | bytearray | memoryview) -> BootSector | None:
    """The boot sector in the first 512 bytes of ``sector``, or None if it is not one."""
    data = bytes(sector[:512])
    if len(data) < 512:
        return None
    if data[3:11] == REFS_NAME:
        return _refs(data)
    if data[510:512] != b"\x55\xaa":
        return None
    oem = data[3:11]
    if oem == EXFAT_NAME:
        return _exfat(data)
    if oem == FVE_SIGNATURE:
        return None
    bpb = structs.BOOT_SECTOR_PREFIX.parse(data)
    if int(bpb.bytes_per_sector) not in SECTOR_SIZES:
        return None
    if oem == NTFS_OEM:
        return _ntfs(bpb)
    return _fat(data, bpb)


def _ntfs(bpb: Container) -> BootSector | None:
    bps = int(bpb.bytes_per_sector)
    spc = int(bpb.sectors_per_cluster)
    if not (spc and (spc & (spc - 1) == 0 or spc >= 0xF4)):
        return None
    total = int(bpb.total_sectors_64)
    if not total or not bpb.mft_cluster:
        return None
    size = (total + 1) * bps
    return BootSector(FsKind.NTFS, bps, size, size - bps)


def _fat(data: bytes, bpb: Container) -> BootSector | None:
    bps = int(bpb.bytes_per_sector)
    spc = int(bpb.sectors_per_cluster)
    if not spc or spc & (spc - 1):
        return None
    if not bpb.reserved_sectors or bpb.fat_count not in (1, 2):
        return None
    if bpb.media_descriptor not in (0xF0, *range(0xF8, 0x100)):
        return None
    total = int(bpb.total_sectors_16 or bpb.total_sectors_32)
    if not total:
        return None
    backup = None
    if not bpb.sectors_per_fat_16:  # FAT32
        number = int.from_bytes(data[FAT32_BACKUP_FIELD:FAT32_BACKUP_FIELD + 2], "little")
        backup = number * bps if 0 < number < bpb.reserved_sectors else None
    return BootSector(FsKind.FAT, bps, total * bps, backup)


def _exfat(data: bytes) -> BootSector | None:
    if any(data[11:64]):
        return None
    shift = data[108]
    if not 9 <= shift <= 12 or data[110] not in (1, 2):
        return None
    length = int.from_bytes(data[72:80], "little")
    if not length:
        return None
    bps = 1 << shift
    return BootSector(FsKind.EXFAT, bps, length << shift, EXFAT_BACKUP_SECTOR * bps)


def _refs(data: bytes) -> BootSector | None:
    if data[16:20] != REFS_FSRS or any(data[11:16]):
        return None
    sectors = int.from_bytes(data[24:32], "little")
    bps = int.from_bytes(data[32:36], "little")
    spc = int.from_bytes(data[36:40], "little")
    if bps not in SECTOR_SIZES or not sectors or not spc or spc & (spc - 1):
        return None
    if bps * spc not in (4096, 65536) or not 1 <= data[40] <= 3:
        return None
    return BootSector(FsKind.REFS, bps, sectors * bps, None)


__all__ = ["BootSector", "FsKind", "parse_boot_sector"]
