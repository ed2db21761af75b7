"""bootsector: split from bdekit.volume (TODO docstring)."""

from __future__ import annotations

import dataclasses
import logging

from bdekit.format import structs
from bdekit.format.constants import FVE_SIGNATURE

log = logging.getLogger(__name__)


def boot_sector_size(sector: bytes) -> int | None:
    """Volume size in bytes from an NTFS, FAT or exFAT boot sector, or None."""
    if len(sector) < 512 or sector[510:512] != b"\x55\xaa":
        return None
    if sector[3:11] == b"EXFAT   ":  # exFAT: volume length (sectors) at 72, 2^shift at 108
        shift = sector[108]
        length = int.from_bytes(sector[72:80], "little")
        return length << shift if 9 <= shift <= 12 and length else None
    bpb = structs.BOOT_SECTOR_PREFIX.parse(sector)
    bps = bpb.bytes_per_sector
    if bps not in (512, 1024, 2048, 4096):
        return None
    if bpb.oem_id == b"NTFS    ":
        return int((bpb.total_sectors_64 + 1) * bps) if bpb.total_sectors_64 else None
    total = bpb.total_sectors_16 or bpb.total_sectors_32
    return int(total * bps) if total else None
@dataclasses.dataclass(frozen=True)
class BootSector:
    fs: str  # "ntfs", "fat", "exfat"
    bytes_per_sector: int
    volume_size: int  # bytes; for NTFS (total sectors + 1) x bytes per sector


def parse_boot_sector(sector: bytes | bytearray | memoryview) -> BootSector | None:
    """A plausible NTFS / FAT / exFAT boot sector, or None (garbage, zeros, BitLocker header)."""
    data = bytes(sector[:512])
    if len(data) < 512 or data[510:512] != b"\x55\xaa":
        return None
    oem = data[3:11]
    if oem == b"EXFAT   ":
        shift = data[108]
        if not 9 <= shift <= 12:
            return None
        length = int.from_bytes(data[72:80], "little")
        return BootSector("exfat", 1 << shift, length << shift) if length else None
    bpb = structs.BOOT_SECTOR_PREFIX.parse(data)
    bps = int(bpb.bytes_per_sector)
    if bps not in (512, 1024, 2048, 4096):
        return None
    spc = int(bpb.sectors_per_cluster)
    if oem == b"NTFS    ":
        # NTFS: cluster sizes above 64 KiB are stored as 256 - log2(sectors per cluster)
        if not (spc and (spc & (spc - 1) == 0 or spc >= 0xF4)):
            return None
        total = int(bpb.total_sectors_64)
        if not total or not bpb.mft_cluster:
            return None
        return BootSector("ntfs", bps, (total + 1) * bps)
    if oem == FVE_SIGNATURE:
        return None
    if not spc or spc & (spc - 1):
        return None
    if not bpb.reserved_sectors or bpb.fat_count not in (1, 2):
        return None
    if bpb.media_descriptor not in (0xF0, *range(0xF8, 0x100)):
        return None
    total = int(bpb.total_sectors_16 or bpb.total_sectors_32)
    if not total:
        return None
    return BootSector("fat", bps, total * bps)

