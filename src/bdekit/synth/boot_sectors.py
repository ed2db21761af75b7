"""Sector 0 of a synthetic volume: the BitLocker volume header, and the NTFS-like boot sector of
the generated plaintext.

Windows 7+ volume header (:func:`build_volume_header`, in plaintext at sector 0)
    Windows writes a FAT32-style boot sector: jump ``EB 58 90``, OEM ``-FVE-FS-``, bytes per
    sector, sectors per cluster (8 for 512-byte sectors; 4 KiB clusters in general), media
    ``F8``, 63 sectors per track, 255 heads, hidden sectors copied from the NTFS boot sector,
    FAT32 fields (sectors per FAT 0x1FE0, FSInfo sector 1, backup boot sector 6, drive 0x80,
    signature 0x29, label ``NO NAME``, type ``FAT32``), NTFS total sectors (0x28) zero; at
    offset 160 the GUID record: BitLocker GUID and the byte offsets of the three metadata
    copies (the two EOW offsets after them stay zero).  Windows' boot code and messages are not
    copied: those bytes are zero.  Sectors 1 .. 15 (the rest of the first 8 KiB) hold noise on
    Windows volumes (they are never read: the decrypted view serves them from the relocated
    block); the builder writes seeded noise there.

Vista volume header (:func:`vista_volume_header`)
    Sector 0 is the NTFS boot sector with OEM ``-FVE-FS-`` and the MFT mirror cluster at 0x38
    replaced by the cluster number of the first metadata copy (the block header keeps the MFT
    mirror cluster); sectors 1 .. 15 stay plaintext.

Generated plaintext boot sector (:func:`ntfs_boot_sector`)
    An NTFS-like boot sector (``EB 52 90``, ``NTFS``, total sectors = size / sector size - 1,
    ``55AA``), written at offset 0 and as its backup in the last sector, so that readers take
    the volume size from it.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from construct import Container

from bdekit.errors import UsageError
from bdekit.format import structs
from bdekit.format.constants import BITLOCKER_GUID, FVE_SIGNATURE


def ntfs_boot_sector(volume_size: int, sector_size: int, serial: int = 0,
                     hidden_sectors: int = 0) -> bytes:
    """An NTFS-like boot sector whose BPB gives the volume size (total sectors + 1)."""
    spc = max(1, 4096 // sector_size)
    clusters = volume_size // (sector_size * spc)
    prefix = Container(
        jump=b"\xeb\x52\x90", oem_id=b"NTFS    ", bytes_per_sector=sector_size,
        sectors_per_cluster=spc, reserved_sectors=0, fat_count=0, root_entries=0,
        total_sectors_16=0, media_descriptor=0xF8, sectors_per_fat_16=0, sectors_per_track=63,
        heads=255, hidden_sectors=hidden_sectors, total_sectors_32=0, unknown_36=0x00800080,
        total_sectors_64=volume_size // sector_size - 1, mft_cluster=max(4, clusters // 3),
        metadata_lcn=2)
    sector = bytearray(sector_size)
    sector[:64] = structs.BOOT_SECTOR_PREFIX.build(prefix)
    sector[0x40] = 0xF6  # clusters per MFT record: 2**10 bytes
    sector[0x44] = 0x01  # clusters per index block
    struct.pack_into("<Q", sector, 0x48, serial)
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def build_volume_header(sector_size: int, metadata_offsets: Sequence[int],
                        hidden_sectors: int = 0) -> bytes:
    """The Windows 7+ BitLocker volume header (FAT32-style BPB, GUID record at 160)."""
    spc = max(1, 4096 // sector_size)
    prefix = Container(
        jump=b"\xeb\x58\x90", oem_id=FVE_SIGNATURE, bytes_per_sector=sector_size,
        sectors_per_cluster=spc, reserved_sectors=0, fat_count=0, root_entries=0,
        total_sectors_16=0, media_descriptor=0xF8, sectors_per_fat_16=0, sectors_per_track=63,
        heads=255, hidden_sectors=hidden_sectors, total_sectors_32=0,
        unknown_36=0x1FE0,  # FAT32 sectors per FAT, as Windows writes it
        total_sectors_64=0,  # FAT32 flags, version, root cluster
        mft_cluster=0x00060001,  # FAT32 FSInfo sector 1, backup boot sector 6
        metadata_lcn=0)
    boot1 = bytearray(structs.GUID_RECORD_OFFSET - 64)
    boot1[0] = 0x80  # drive number
    boot1[2] = 0x29  # extended boot signature
    boot1[7:18] = b"NO NAME    "
    boot1[18:26] = b"FAT32   "
    header = Container(
        prefix=prefix, boot_code_1=bytes(boot1),
        record=Container(guid=BITLOCKER_GUID, metadata_offsets=list(metadata_offsets),
                         eow_offsets=[0, 0]),
        boot_code_2=bytes(510 - structs.GUID_RECORD_OFFSET - structs.EOW_GUID_RECORD.sizeof()))
    sector = structs.WIN7_VOLUME_HEADER.build(header)
    return sector + bytes(sector_size - len(sector))


def vista_volume_header(first: bytes, first_copy_offset: int, cluster_size: int,
                        sector_size: int) -> bytes:
    """The plaintext start of the volume (``first``) turned into a Vista BitLocker header: OEM
    ``-FVE-FS-`` and the cluster of the first metadata copy at 0x38."""
    head = bytearray(first)
    head[3:11] = FVE_SIGNATURE
    struct.pack_into("<Q", head, 0x38, first_copy_offset // cluster_size)
    if head[13] * sector_size != cluster_size:
        raise UsageError("the Vista layout needs a source with 4 KiB clusters")
    return bytes(head)
