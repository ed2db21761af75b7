"""Tests of bdekit.partitions: MBR (extended/logical), GPT (protective MBR, CRCs, backup).

Images are built two ways: with sfdisk (skipped when absent) and with the module's own
construct structures, and the two are cross-checked (byte for byte for GPT).
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
import subprocess
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from bdekit.errors import FormatError, UsageError
from bdekit.image.partitions import (
    GPT_ENTRY,
    GPT_HEADER,
    MBR,
    Partition,
    find_partition,
    gpt_header_crc,
    looks_like_vbr,
    read_partition_table,
)
from bdekit.image.sources import ImageSource, SliceSource, open_source

MiB = 1024 * 1024
SECTOR = 512

EFI = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
MSR = "E3C9E316-0B5C-4DB8-817D-F92DF00215AE"
BASIC = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"


class BytesSource(ImageSource):
    """An in-memory image."""

    def __init__(self, data: bytes | bytearray, path: str = "mem.img") -> None:
        super().__init__(path, len(data), "raw")
        self.data = bytes(data)

    def _read(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]


# --------------------------------------------------------------------------------------------
# builders using the module's construct structures
# --------------------------------------------------------------------------------------------
def mbr_entry(ptype: int = 0, lba: int = 0, count: int = 0, status: int = 0,
              chs_first: bytes = bytes(3), chs_last: bytes = bytes(3)) -> dict[str, object]:
    return {"status": status, "chs_first": chs_first, "type": ptype, "chs_last": chs_last,
            "lba_first": lba, "num_sectors": count}


def build_mbr(entries: list[dict[str, object]], boot_code: bytes = b"",
              disk_signature: int = 0) -> bytes:
    entries = entries + [mbr_entry()] * (4 - len(entries))
    return MBR.build({"boot_code": boot_code.ljust(440, b"\0"),
                      "disk_signature": disk_signature, "reserved": 0, "entries": entries})


@dataclass
class GptPart:
    first: int
    last: int
    type_guid: str
    name: str = ""
    unique: str = ""
    slot: int | None = None   # entry slot (0-based); default: next one


def build_gpt_image(size: int, parts: list[GptPart], *, sector_size: int = SECTOR,
                    disk_guid: str = "11111111-2222-3333-4444-555555555555",
                    first_usable: int | None = None, num_entries: int = 128) -> bytearray:
    """A whole GPT disk: protective MBR, primary header + entries, backup entries + header."""
    ss = sector_size
    total = size // ss
    last = total - 1
    entry_sectors = num_entries * 128 // ss
    entries = bytearray(num_entries * 128)
    for i, p in enumerate(parts):
        slot = i if p.slot is None else p.slot
        entries[slot * 128 : slot * 128 + 128] = GPT_ENTRY.build({
            "type_guid": uuid.UUID(p.type_guid),
            "unique_guid": uuid.UUID(p.unique or str(uuid.UUID(int=i + 1))),
            "first_lba": p.first, "last_lba": p.last, "attributes": 0, "name": p.name})
    entries_crc = zlib.crc32(entries) & 0xFFFFFFFF

    def header(current: int, backup: int, entries_lba: int) -> bytes:
        fields = {
            "revision": 0x00010000, "header_size": 92, "header_crc32": 0, "reserved": 0,
            "current_lba": current, "backup_lba": backup,
            "first_usable_lba": first_usable if first_usable is not None else 2 + entry_sectors,
            "last_usable_lba": last - 1 - entry_sectors,
            "disk_guid": uuid.UUID(disk_guid), "entries_lba": entries_lba,
            "num_entries": num_entries, "entry_size": 128, "entries_crc32": entries_crc}
        raw = GPT_HEADER.build(fields)
        fields["header_crc32"] = gpt_header_crc(raw)
        return GPT_HEADER.build(fields).ljust(ss, b"\0")

    img = bytearray(size)
    pmbr = build_mbr([mbr_entry(0xEE, 1, min(total - 1, 0xFFFFFFFF), 0,
                                b"\x00\x02\x00", b"\xff\xff\xff")])
    img[0:512] = pmbr
    img[ss : 2 * ss] = header(1, last, 2)
    img[2 * ss : 2 * ss + len(entries)] = entries
    backup_entries = last - entry_sectors
    img[backup_entries * ss : backup_entries * ss + len(entries)] = entries
    img[last * ss : (last + 1) * ss] = header(last, 1, backup_entries)
    return img


def vbr(oem: bytes, jump: bytes = b"\xeb\x58\x90", bps: int = 512, spc: int = 8) -> bytes:
    s = bytearray(512)
    s[0:3] = jump
    s[3:11] = oem
    s[11:13] = bps.to_bytes(2, "little")
    s[13] = spc
    msg = b"\x0d\x0aRemove disks or other media.\xff\x0d\x0aDisk error\xff\x0d\x0aPress a key"
    s[0x1BE:0x1FE] = msg.ljust(64, b"\0")[:64]  # boot code text where an MBR has its entries
    s[510:512] = b"\x55\xaa"
    assert len(s) == 512
    return bytes(s)


def sfdisk(img: Path, script: str) -> dict[str, object]:
    exe = shutil.which("sfdisk")
    if exe is None:
        pytest.skip("sfdisk (util-linux fdisk) not installed")
    subprocess.run([exe, "--no-reread", "--no-tell-kernel", "-q", str(img)], input=script,
                   text=True, check=True, capture_output=True, timeout=60)
    out = subprocess.run([exe, "--json", str(img)], text=True, check=True,
                         capture_output=True, timeout=60).stdout
    return json.loads(out)["partitiontable"]  # type: ignore[no-any-return]


def sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def simple(parts: list[Partition]) -> list[tuple[object, ...]]:
    return [(p.index, p.offset, p.size, p.scheme, p.type, p.name, p.truncated) for p in parts]


# --------------------------------------------------------------------------------------------
# GPT
# --------------------------------------------------------------------------------------------
GPT_LAYOUT = [
    GptPart(2048, 6143, EFI, "EFI system partition", "AAAAAAAA-0000-0000-0000-000000000001"),
    GptPart(6144, 8191, MSR, "Microsoft reserved partition",
            "AAAAAAAA-0000-0000-0000-000000000002"),
    GptPart(8192, 49151, BASIC, "Basic data partition", "AAAAAAAA-0000-0000-0000-000000000003"),
]
GPT_SCRIPT = """label: gpt
label-id: 11111111-2222-3333-4444-555555555555
unit: sectors
start=2048, size=4096, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=AAAAAAAA-0000-0000-0000-000000000001, name="EFI system partition"
start=6144, size=2048, type=E3C9E316-0B5C-4DB8-817D-F92DF00215AE, uuid=AAAAAAAA-0000-0000-0000-000000000002, name="Microsoft reserved partition"
start=8192, size=40960, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, uuid=AAAAAAAA-0000-0000-0000-000000000003, name="Basic data partition"
"""  # noqa: E501


def check_gpt_layout(parts: list[Partition], size: int) -> None:
    assert [p.index for p in parts] == [1, 2, 3]
    assert all(p.scheme == "gpt" and not p.truncated for p in parts)
    assert [(p.offset, p.size) for p in parts] == [
        (2048 * SECTOR, 4096 * SECTOR), (6144 * SECTOR, 2048 * SECTOR),
        (8192 * SECTOR, 40960 * SECTOR)]
    assert [p.type for p in parts] == [EFI, MSR, BASIC]
    assert [p.type_name for p in parts] == ["EFI system", "Microsoft reserved",
                                            "Microsoft basic data"]
    assert [p.name for p in parts] == ["EFI system partition", "Microsoft reserved partition",
                                       "Basic data partition"]


def test_gpt_sfdisk_cross_check(tmp_path: Path) -> None:
    size = 64 * MiB
    img = sparse(tmp_path / "gpt.img", size)
    table = sfdisk(img, GPT_SCRIPT)
    with open_source(img) as src:
        parts = read_partition_table(src)
    check_gpt_layout(parts, size)
    # against sfdisk's own reading
    assert [(p.index, p.offset // SECTOR, p.size // SECTOR, p.type, p.name) for p in parts] == [
        (int(e["node"].rsplit("img", 1)[1]), e["start"], e["size"], e["type"], e["name"])
        for e in table["partitions"]]  # type: ignore[attr-defined]
    # the construct-built image is byte-identical to sfdisk's where the tables live
    built = build_gpt_image(size, GPT_LAYOUT, first_usable=2048)
    on_disk = img.read_bytes()
    assert on_disk[: 34 * SECTOR] == bytes(built[: 34 * SECTOR])
    assert on_disk[-33 * SECTOR :] == bytes(built[-33 * SECTOR :])
    assert simple(read_partition_table(BytesSource(built))) == simple(parts)


def test_gpt_built(caplog: pytest.LogCaptureFixture) -> None:
    size = 32 * MiB
    data = build_gpt_image(size, GPT_LAYOUT)
    with caplog.at_level(logging.INFO, logger="bdekit.image.partitions"):
        parts = read_partition_table(BytesSource(data))
    check_gpt_layout(parts, size)
    assert "primary" in caplog.text


def test_gpt_slot_numbering_keeps_gaps() -> None:
    data = build_gpt_image(8 * MiB, [GptPart(2048, 4095, BASIC, "a", slot=0),
                                     GptPart(4096, 8191, LINUX, "c", slot=2)])
    parts = read_partition_table(BytesSource(data))
    assert [(p.index, p.name, p.type_name) for p in parts] == [
        (1, "a", "Microsoft basic data"), (3, "c", "Linux filesystem")]


def test_gpt_4096_byte_sectors(caplog: pytest.LogCaptureFixture) -> None:
    ss = 4096
    data = build_gpt_image(32 * MiB, [GptPart(256, 1279, BASIC, "data")], sector_size=ss,
                           num_entries=128)
    with caplog.at_level(logging.INFO, logger="bdekit.image.partitions"):
        parts = read_partition_table(BytesSource(data))
    assert [(p.index, p.offset, p.size) for p in parts] == [(1, 256 * ss, 1024 * ss)]
    assert "4096" in caplog.text


def test_gpt_damaged_primary_header_uses_backup(caplog: pytest.LogCaptureFixture) -> None:
    data = build_gpt_image(16 * MiB, [*GPT_LAYOUT[:1], GptPart(8192, 16383, BASIC, "v")])
    expect = simple(read_partition_table(BytesSource(data)))
    data[SECTOR + 40] ^= 0xFF  # a header field: the header CRC no longer matches
    with caplog.at_level(logging.INFO, logger="bdekit.image.partitions"):
        parts = read_partition_table(BytesSource(data))
    assert simple(parts) == expect
    assert "backup" in caplog.text and "CRC32" in caplog.text

    data[SECTOR : SECTOR + 8] = b"XXXXXXXX"  # no signature at all: same outcome
    assert simple(read_partition_table(BytesSource(data))) == expect


def test_gpt_damaged_primary_entries_uses_backup(caplog: pytest.LogCaptureFixture) -> None:
    data = build_gpt_image(16 * MiB, [GptPart(2048, 4095, BASIC, "v")])
    expect = simple(read_partition_table(BytesSource(data)))
    data[2 * SECTOR + 40] ^= 0x01  # first_lba of entry 1 in the primary array
    with caplog.at_level(logging.WARNING, logger="bdekit.image.partitions"):
        parts = read_partition_table(BytesSource(data))
    assert simple(parts) == expect
    assert "entry array CRC32" in caplog.text and "backup" in caplog.text


def test_gpt_both_damaged() -> None:
    data = build_gpt_image(16 * MiB, [GptPart(2048, 4095, BASIC, "v")])
    data[SECTOR + 40] ^= 0xFF
    data[-SECTOR + 40] ^= 0xFF
    with pytest.raises(FormatError, match="neither the primary nor the backup"):
        read_partition_table(BytesSource(data))


def test_gpt_without_protective_mbr() -> None:
    data = build_gpt_image(8 * MiB, [GptPart(2048, 4095, BASIC, "v")])
    data[0:512] = bytes(512)  # wiped sector 0
    assert [p.index for p in read_partition_table(BytesSource(data))] == [1]


def test_gpt_truncated_image() -> None:
    """A partial image: the partition reaches past the end (and the backup GPT is gone)."""
    full = build_gpt_image(16 * MiB, [GptPart(2048, 30000, BASIC, "v")])
    cut = full[: 8 * MiB]
    parts = read_partition_table(BytesSource(cut))
    assert len(parts) == 1 and parts[0].truncated
    assert parts[0].size == (30000 - 2048 + 1) * SECTOR


# --------------------------------------------------------------------------------------------
# MBR
# --------------------------------------------------------------------------------------------
DOS_SCRIPT = """label: dos
label-id: 0x12345678
unit: sectors
start=2048, size=4096, type=7, bootable
start=6144, size=4096, type=c
start=10240, size=40960, type=5
start=12288, size=8192, type=7
start=22528, size=8192, type=83
"""

DOS_EXPECT = [
    (1, 2048, 4096, "0x07", "NTFS/exFAT/BitLocker (0x07)"),
    (2, 6144, 4096, "0x0c", "FAT32 (LBA) (0x0C)"),
    (3, 10240, 40960, "0x05", "extended (0x05)"),
    (5, 12288, 8192, "0x07", "NTFS/exFAT/BitLocker (0x07)"),
    (6, 22528, 8192, "0x83", "Linux (0x83)"),
]


def build_dos_image(size: int) -> bytearray:
    """The DOS_SCRIPT layout, built with the construct structs (CHS left zero)."""
    img = bytearray(size)
    img[0:512] = build_mbr([mbr_entry(0x07, 2048, 4096, 0x80), mbr_entry(0x0C, 6144, 4096),
                            mbr_entry(0x05, 10240, 40960)], disk_signature=0x12345678)
    ext = 10240
    # EBR 1 at the extended start: logical at +2048, next EBR at ext+10240
    img[ext * SECTOR : ext * SECTOR + 512] = build_mbr(
        [mbr_entry(0x07, 2048, 8192), mbr_entry(0x05, 10240, 10240)])
    ebr2 = ext + 10240
    img[ebr2 * SECTOR : ebr2 * SECTOR + 512] = build_mbr([mbr_entry(0x83, 2048, 8192)])
    return img


def check_dos(parts: list[Partition]) -> None:
    assert [(p.index, p.offset // SECTOR, p.size // SECTOR, p.type, p.type_name)
            for p in parts] == DOS_EXPECT
    assert all(p.scheme == "mbr" and p.name == "" and not p.truncated for p in parts)
    assert [p.is_extended for p in parts] == [False, False, True, False, False]


def test_dos_sfdisk_cross_check(tmp_path: Path) -> None:
    size = 64 * MiB
    img = sparse(tmp_path / "dos.img", size)
    table = sfdisk(img, DOS_SCRIPT)
    with open_source(img) as src:
        parts = read_partition_table(src)
    check_dos(parts)
    assert [(p.index, p.offset // SECTOR, p.size // SECTOR, int(p.type, 16)) for p in parts] == [
        (int(e["node"].rsplit("img", 1)[1]), e["start"], e["size"], int(e["type"], 16))
        for e in table["partitions"]]  # type: ignore[attr-defined]
    # the construct-built equivalent reads the same
    built = build_dos_image(size)
    assert simple(read_partition_table(BytesSource(built))) == simple(parts)
    # sfdisk's EBRs parse with our struct and hold what we build (CHS aside)
    raw = img.read_bytes()
    for lba in (10240, 20480):
        theirs = MBR.parse(raw[lba * SECTOR : lba * SECTOR + 512])
        ours = MBR.parse(bytes(built[lba * SECTOR : lba * SECTOR + 512]))
        for a, b in zip(theirs.entries, ours.entries, strict=True):
            assert (a.type, a.lba_first, a.num_sectors) == (b.type, b.lba_first, b.num_sectors)


def test_dos_built() -> None:
    check_dos(read_partition_table(BytesSource(build_dos_image(32 * MiB))))


def test_partition_view_reads_the_volume(tmp_path: Path) -> None:
    data = build_dos_image(32 * MiB)
    marker = vbr(b"-FVE-FS-")
    data[22528 * SECTOR : 22528 * SECTOR + 512] = marker  # logical partition 6
    img = tmp_path / "disk.img"
    img.write_bytes(data)
    with open_source(img) as src:
        p6 = find_partition(read_partition_table(src), 6)
        with SliceSource(src, p6.offset, p6.size) as vol:
            assert vol.size == 8192 * SECTOR
            assert vol.read_at(0, 512) == marker
            assert read_partition_table(vol) == []  # the volume itself: no table


def test_mbr_gaps_and_truncation() -> None:
    data = bytearray(4 * MiB)
    data[0:512] = build_mbr([mbr_entry(), mbr_entry(0x07, 2048, 2048),
                             mbr_entry(), mbr_entry(0x83, 6000, 100_000)])
    parts = read_partition_table(BytesSource(data))
    assert [(p.index, p.truncated) for p in parts] == [(2, False), (4, True)]


def test_ebr_loop_terminates(caplog: pytest.LogCaptureFixture) -> None:
    data = bytearray(16 * MiB)
    data[0:512] = build_mbr([mbr_entry(0x0F, 2048, 20000)])
    # the EBR's "next" points back at itself
    data[2048 * SECTOR : 2048 * SECTOR + 512] = build_mbr(
        [mbr_entry(0x07, 63, 1000), mbr_entry(0x05, 0, 2000)])
    with caplog.at_level(logging.WARNING, logger="bdekit.image.partitions"):
        parts = read_partition_table(BytesSource(data))
    assert [p.index for p in parts] == [1, 5]
    assert "loops" in caplog.text


def test_empty_extended_partition() -> None:
    data = bytearray(4 * MiB)
    data[0:512] = build_mbr([mbr_entry(0x07, 2048, 2048), mbr_entry(0x05, 4096, 2048)])
    parts = read_partition_table(BytesSource(data))
    assert [(p.index, p.is_extended) for p in parts] == [(1, False), (2, True)]


def test_mbr_on_4k_sector_disk() -> None:
    ss = 4096
    data = bytearray(16 * MiB)
    data[0:512] = build_mbr([mbr_entry(0x07, 256, 1024)])
    data[256 * ss : 256 * ss + 512] = vbr(b"-FVE-FS-")
    parts = read_partition_table(BytesSource(data))
    assert [(p.offset, p.size) for p in parts] == [(256 * ss, 1024 * ss)]


def test_grub_style_mbr_is_a_table() -> None:
    """GRUB's boot.img starts with EB 63 90 like a VBR; its entries make it an MBR."""
    data = bytearray(4 * MiB)
    data[0:512] = build_mbr([mbr_entry(0x83, 2048, 4096, 0x80)], boot_code=b"\xeb\x63\x90")
    assert [p.index for p in read_partition_table(BytesSource(data))] == [1]


# --------------------------------------------------------------------------------------------
# no partition table
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sector",
    [
        vbr(b"-FVE-FS-"),                      # BitLocker (Windows 7+)
        vbr(b"NTFS    ", jump=b"\xeb\x52\x90"),
        vbr(b"MSWIN4.1"),                      # FAT32 / BitLocker To Go
        vbr(b"MSDOS5.0", jump=b"\xeb\x3c\x90"),
        vbr(b"EXFAT   ", jump=b"\xeb\x76\x90", bps=0, spc=0),
        vbr(b"SOMEOEM ", jump=b"\xe9\x00\x00"),  # unknown OEM, plausible BPB, no table
    ],
)
def test_bare_volume_boot_record(sector: bytes) -> None:
    assert looks_like_vbr(sector)
    data = bytearray(MiB)
    data[0:512] = sector
    assert read_partition_table(BytesSource(data)) == []


def test_bitlocker_vbr_whose_tail_looks_like_an_entry() -> None:
    """A known OEM name wins even when the bytes at 0x1BE happen to look like an entry."""
    s = bytearray(vbr(b"-FVE-FS-"))
    s[0x1BE:0x1CE] = bytes(MBR.build({"boot_code": bytes(440), "disk_signature": 0,
                                      "reserved": 0,
                                      "entries": [mbr_entry(0x07, 2048, 100)] + [mbr_entry()] * 3
                                      })[0x1BE:0x1CE])
    data = bytearray(MiB)
    data[0:512] = s
    assert read_partition_table(BytesSource(data)) == []


def test_no_table() -> None:
    assert read_partition_table(BytesSource(bytes(MiB))) == []             # zeros
    assert read_partition_table(BytesSource(b"\x55\xaa" * 100)) == []      # < 1 sector
    junk = bytearray(MiB)
    junk[510:512] = b"\x55\xaa"                                             # 55AA, no entries
    assert read_partition_table(BytesSource(junk)) == []
    bad = bytearray(MiB)
    bad[0:512] = build_mbr([mbr_entry(0x07, 2048, 100, status=0x33)])       # invalid status
    assert read_partition_table(BytesSource(bad)) == []


# --------------------------------------------------------------------------------------------
# find_partition
# --------------------------------------------------------------------------------------------
def test_find_partition() -> None:
    parts = read_partition_table(BytesSource(build_dos_image(32 * MiB)))
    assert find_partition(parts, 5).offset == 12288 * SECTOR
    with pytest.raises(UsageError, match="extended"):
        find_partition(parts, 3)
    with pytest.raises(UsageError, match="1, 2, 5, 6"):
        find_partition(parts, 4)
    with pytest.raises(UsageError, match="no partition table"):
        find_partition([], 1)
    assert "truncated" not in parts[0].describe()


# --------------------------------------------------------------------------------------------
# real BitLocker volume boot records (../shared/real-images; skipped when absent)
# --------------------------------------------------------------------------------------------
from tests.conftest import REAL_DIR  # noqa: E402

REAL_NAMES = sorted(p.name.removesuffix(".bin.gz") for p in REAL_DIR.glob("*.bin.gz")) \
    if REAL_DIR.is_dir() else []


@pytest.mark.real
@pytest.mark.skipif(not REAL_NAMES, reason="../shared/real-images is absent")
@pytest.mark.parametrize("name", REAL_NAMES or ["none"])
def test_real_bitlocker_volume_is_not_a_table(name: str) -> None:
    with gzip.open(REAL_DIR / f"{name}.bin.gz", "rb") as f:
        head = f.read(MiB)  # the volume's first MiB is enough for the table code
    assert head[3:11] == b"-FVE-FS-"
    assert looks_like_vbr(head[:512])
    assert read_partition_table(BytesSource(head)) == []

    # the same volume inside an MBR disk and a GPT disk is found again
    mbr_disk = bytearray(4 * MiB)
    mbr_disk[0:512] = build_mbr([mbr_entry(0x07, 2048, 2048)])
    mbr_disk[MiB : 2 * MiB] = head
    gpt_disk = build_gpt_image(4 * MiB, [GptPart(2048, 4095, BASIC, "Basic data partition")])
    gpt_disk[MiB : 2 * MiB] = head
    for disk in (mbr_disk, gpt_disk):
        src = BytesSource(disk)
        (part,) = read_partition_table(src)
        assert (part.index, part.offset, part.size) == (1, MiB, MiB)
        assert SliceSource(src, part.offset, part.size).read_at(0, MiB) == head
