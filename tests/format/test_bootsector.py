"""The one boot-sector parser: hand-built sectors with values from the published layouts, and
the boot sectors Windows wrote on the real images.

bdekit once had two parsers that disagreed: for an ``NTFS`` sector with a total-sector count
but sectors-per-cluster 0 and no $MFT cluster, one said the volume was 1,048,576 bytes, the
other "not a boot sector". No NTFS driver mounts such a sector (a cluster of 0 sectors; the
$MFT at cluster 0, where the boot sector is), so it is not one; the test below pins that.

Sources of the field values: the NTFS boot sector layout (bytes per sector at 0x0B, sectors
per cluster at 0x0D, media 0xF8 at 0x15, total sectors u64 at 0x28, $MFT and $MFTMirr
clusters at 0x30 / 0x38; backup in the last sector, outside the total), Microsoft's FAT
specification (fatgen103: BPB_RsvdSecCnt 32 and BPB_BkBootSec 6 on FAT32, BPB_FATSz16 0 on
FAT32), Microsoft's exFAT specification (MustBeZero 11-63, VolumeLength at 72,
BytesPerSectorShift at 108, NumberOfFats at 110, backup boot region at sector 12) and the
ReFS file system recognition structure as libfsrefs documents it (``ReFS`` and four zero bytes
at 3, five zero bytes, ``FSRS`` at 16, number of sectors u64 at 24, bytes per sector u32 at
32, sectors per cluster u32 at 36, major version at 40).
"""

from __future__ import annotations

import gzip
import struct

import pytest

from bdekit import open_volume
from bdekit.format.bootsector import FsKind, parse_boot_sector
from bdekit.synth import build_volume_header
from tests.conftest import REAL_DIR, REAL_IMAGES, real_kwargs, requires_real


def _ntfs(total: int, *, bps: int = 512, spc: int = 8, mft: int = 4) -> bytearray:
    sector = bytearray(512)
    sector[0:3] = b"\xeb\x52\x90"
    sector[3:11] = b"NTFS    "
    struct.pack_into("<HB", sector, 0x0B, bps, spc)
    sector[0x15] = 0xF8
    struct.pack_into("<QQQ", sector, 0x28, total, mft, total // 16)  # total, $MFT, $MFTMirr
    sector[510:512] = b"\x55\xaa"
    return sector


def _fat32(total: int, *, bps: int = 512, backup: int = 6) -> bytearray:
    sector = bytearray(512)
    sector[0:3] = b"\xeb\x58\x90"
    sector[3:11] = b"MSDOS5.0"
    # bytes/sector, sectors/cluster, reserved, FATs, root entries, total16, media, FATSz16
    struct.pack_into("<HBHBHHBH", sector, 11, bps, 8, 32, 2, 0, 0, 0xF8, 0)
    struct.pack_into("<I", sector, 32, total)  # BPB_TotSec32
    struct.pack_into("<IHHIHH", sector, 36, 1000, 0, 0, 2, 1, backup)  # FATSz32 .. BkBootSec
    sector[0x52:0x5A] = b"FAT32   "
    sector[510:512] = b"\x55\xaa"
    return sector


def _fat16(total: int) -> bytearray:
    sector = bytearray(512)
    sector[0:3] = b"\xeb\x3c\x90"
    sector[3:11] = b"MSDOS5.0"
    struct.pack_into("<HBHBHHBH", sector, 11, 512, 4, 1, 2, 512, total, 0xF8, 32)
    sector[0x36:0x3E] = b"FAT16   "
    sector[510:512] = b"\x55\xaa"
    return sector


def _exfat(length: int, *, shift: int = 9, fats: int = 1) -> bytearray:
    sector = bytearray(512)
    sector[0:3] = b"\xeb\x76\x90"
    sector[3:11] = b"EXFAT   "
    struct.pack_into("<QQ", sector, 64, 0, length)  # PartitionOffset, VolumeLength
    # FatOffset, FatLength, ClusterHeapOffset, ClusterCount
    struct.pack_into("<IIII", sector, 80, 128, 256, 512, max(0, length - 512) >> 3)
    struct.pack_into("<HHBBBBB", sector, 104, 0x0100, 0, shift, 3, fats, 0x80, 0)
    sector[510:512] = b"\x55\xaa"
    return sector


def test_ntfs_volume_is_total_sectors_plus_the_backup() -> None:
    info = parse_boot_sector(_ntfs(2047))
    assert info is not None
    assert (info.fs, info.bytes_per_sector) == (FsKind.NTFS, 512)
    assert info.volume_size == 2048 * 512
    assert info.backup_offset == 2047 * 512  # the last sector of the volume
    big = parse_boot_sector(_ntfs(999, bps=4096, spc=0xF4))  # 2**12-sector clusters
    assert big is not None and big.volume_size == 1000 * 4096


def test_ntfs_without_clusters_or_mft_is_no_boot_sector() -> None:
    """The sector the two old parsers disagreed on (1,048,576 bytes vs. None)."""
    sector = _ntfs(2047, spc=0, mft=0)
    assert parse_boot_sector(sector) is None
    assert parse_boot_sector(_ntfs(2047, spc=0)) is None
    assert parse_boot_sector(_ntfs(2047, mft=0)) is None
    assert parse_boot_sector(_ntfs(2047, spc=3)) is None  # not a power of two
    assert parse_boot_sector(_ntfs(0)) is None
    assert parse_boot_sector(_ntfs(2047, bps=520)) is None


def test_fat32_and_fat16() -> None:
    info = parse_boot_sector(_fat32(1_000_000))
    assert info is not None
    assert (info.fs, info.volume_size, info.backup_offset) == (FsKind.FAT, 1_000_000 * 512,
                                                               6 * 512)
    assert parse_boot_sector(_fat32(1_000_000, backup=0)).backup_offset is None  # type: ignore[union-attr]
    info16 = parse_boot_sector(_fat16(60_000))
    assert info16 is not None
    assert (info16.fs, info16.volume_size, info16.backup_offset) == (FsKind.FAT, 60_000 * 512,
                                                                     None)
    no_fats = _fat32(1_000_000)
    no_fats[16] = 0
    assert parse_boot_sector(no_fats) is None
    bad_media = _fat32(1_000_000)
    bad_media[21] = 0x12
    assert parse_boot_sector(bad_media) is None


def test_exfat() -> None:
    info = parse_boot_sector(_exfat(65536))
    assert info is not None
    assert (info.fs, info.bytes_per_sector, info.volume_size, info.backup_offset) == (
        FsKind.EXFAT, 512, 65536 * 512, 12 * 512)
    info4k = parse_boot_sector(_exfat(65536, shift=12, fats=2))
    assert info4k is not None and info4k.volume_size == 65536 * 4096
    assert info4k.backup_offset == 12 * 4096
    for bad in (_exfat(65536, shift=8), _exfat(65536, fats=0), _exfat(0)):
        assert parse_boot_sector(bad) is None
    stray_bpb = _exfat(65536)
    stray_bpb[11:13] = (512).to_bytes(2, "little")  # MustBeZero
    assert parse_boot_sector(stray_bpb) is None


def _refs(sectors: int, *, bps: int = 512, spc: int = 8, major: int = 3) -> bytearray:
    sector = bytearray(512)
    sector[3:11] = b"ReFS\0\0\0\0"
    sector[16:20] = b"FSRS"
    struct.pack_into("<QII", sector, 24, sectors, bps, spc)
    sector[40] = major
    return sector


def test_refs() -> None:
    info = parse_boot_sector(_refs(2_097_152))
    assert info is not None and info.fs == FsKind.REFS
    assert info.bytes_per_sector == 512 and info.volume_size == 2_097_152 * 512
    assert parse_boot_sector(_refs(1 << 20, bps=4096, spc=16)) is not None  # 64 KiB clusters
    for bad in (_refs(0), _refs(100, spc=3), _refs(100, bps=4095), _refs(100, major=9),
                _refs(100, spc=2)):  # 1 KiB clusters: ReFS has 4 or 64 KiB
        assert parse_boot_sector(bad) is None
    no_fsrs = _refs(100)
    no_fsrs[16:20] = b"FSRX"
    assert parse_boot_sector(no_fsrs) is None


def test_not_boot_sectors() -> None:
    assert parse_boot_sector(bytes(512)) is None
    assert parse_boot_sector(bytes(_ntfs(2047))[:511]) is None
    no_signature = _ntfs(2047)
    no_signature[510] = 0
    assert parse_boot_sector(no_signature) is None
    # a BitLocker volume header has a FAT32-style BPB but is not the volume's boot sector
    assert parse_boot_sector(build_volume_header(512, [0x100000, 0x200000, 0x300000])) is None


SMART_CARD_RP = "538329-080597-399190-348700-323345-161062-279807-230978"


@requires_real
@pytest.mark.real
@pytest.mark.parametrize("name", ["aes-xts_128", "vista", "eow_partial", "decrypted"])
def test_real_boot_sectors(real_image, name: str) -> None:  # type: ignore[no-untyped-def]
    """Windows' own boot sectors parse as NTFS; the volumes are larger than the truncated
    captures (README), by the (total sectors + 1) rule."""
    path = real_image(name)
    with open_volume(path, **real_kwargs(name)) as vol:
        sector = vol.read(512)
    info = parse_boot_sector(sector)
    assert info is not None and (info.fs, info.bytes_per_sector) == (FsKind.NTFS, 512)
    total = struct.unpack_from("<Q", sector, 0x28)[0]
    assert info.volume_size == (total + 1) * 512 > path.stat().st_size
    assert name in REAL_IMAGES


@requires_real
@pytest.mark.real
def test_real_whole_volume_size(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """smart_card.img is a whole 100 MiB volume (README: 104857600 bytes, NTFS serial
    C4EC5396EC53819A): its boot sector gives exactly that size, the backup in its last
    sector."""
    source = REAL_DIR / "smart_card.img.gz"
    if not source.is_file():
        pytest.skip("smart_card.img.gz is absent")
    path = tmp_path / "smart_card.img"
    with gzip.open(source, "rb") as src:
        path.write_bytes(src.read())
    with open_volume(path, recovery_password=SMART_CARD_RP) as vol:
        sector = vol.read(512)
    assert sector[0x48:0x50][::-1].hex().upper() == "C4EC5396EC53819A"
    info = parse_boot_sector(sector)
    assert info is not None and info.fs == FsKind.NTFS
    assert info.volume_size == 104857600 == path.stat().st_size
    assert info.backup_offset == 104857600 - 512
