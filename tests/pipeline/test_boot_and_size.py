"""Issue 11 classes 5 and 6: the boot sector is verified in every command that yields
plaintext, the volume size is weighed against the rest of the evidence, and a truncated
capture's missing tail is a hole (not read, decrypted or written).

Expected values come from the fixtures' verified plaintext (their manifests' digests, checked
by :func:`tests.harness.reference_plaintext`) and from the real Vista image's published size.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import time
from pathlib import Path

import pytest

from bdekit import open_volume
from bdekit.errors import EXIT_OK, EXIT_PARTIAL
from bdekit.image.ranges import BOOT_CODE_LOST, BOOT_SECTOR_LOST, MISSING
from bdekit.synth.mutate import Mutant
from tests.conftest import FIXTURES, VISTA_RP, requires_real, run_cli
from tests.harness import Subject, load_subject, run_mutant

RP = "015026-497662-343442-191037-086713-242187-380908-588159"
VISTA_FIXTURE_RP = "518166-459778-027753-182765-002090-292666-254342-449647"
RELOCATED = 589824  # fixtures/xts128-rp.img: the relocated header block (its manifest)


@pytest.fixture(scope="module")
def xts(tmp_path_factory: pytest.TempPathFactory) -> Subject:
    work = tmp_path_factory.mktemp("xts")
    return load_subject("xts128-rp", FIXTURES / "xts128-rp.img", ["-rp", RP], work)


@pytest.fixture(scope="module")
def vista(tmp_path_factory: pytest.TempPathFactory) -> Subject:
    work = tmp_path_factory.mktemp("vista")
    return load_subject("vista", FIXTURES / "vista-diffuser128.img", ["-rp", VISTA_FIXTURE_RP],
                        work)


def _report(work: Path) -> dict[str, object]:
    return json.loads((work / "report.json").read_text())  # type: ignore[no-any-return]


def test_damaged_relocated_boot_sector_comes_from_the_backup(xts: Subject,
                                                             tmp_path: Path) -> None:
    """The BPB of the relocated boot sector garbled: decrypt no longer writes noise with exit
    0; sector 0 comes from the NTFS backup (recorded in repairs), the rest of the relocated
    block is lost and listed."""
    verdict = run_mutant(xts, Mutant("bpb", ((RELOCATED + 3, b"\xa5" * 64),)), tmp_path)
    assert verdict.outcome == "flagged"
    report = _report(tmp_path)
    assert [(d["offset"], d["length"], d["reason"]) for d in report["damaged"]] == [  # type: ignore
        (512, 8192 - 512, BOOT_CODE_LOST)]
    assert any("rebuilt from its backup" in r for r in report["repairs"])  # type: ignore
    out = (tmp_path / "out.img").read_bytes()
    assert out[:512] == xts.reference[:512]


def test_no_boot_sector_anywhere(xts: Subject, tmp_path: Path) -> None:
    """Relocated block zeroed and the capture cut before the backup: no valid boot sector;
    the first 8 KiB are zeros and damage, the size comes from the state offset; the library
    still opens the volume, says so and logs a warning."""
    image = bytearray(xts.image[:900 * 1024])
    image[RELOCATED:RELOCATED + 8192] = bytes(8192)
    img = tmp_path / "in.img"
    img.write_bytes(image)
    out = tmp_path / "out.img"
    code, _o, err = run_cli("decrypt", str(img), str(out), "-rp", RP, "--report",
                            str(tmp_path / "report.json"))
    assert code == EXIT_PARTIAL, err
    report = _report(tmp_path)
    damaged = [(d["offset"], d["length"], d["reason"]) for d in report["damaged"]]  # type: ignore
    assert damaged[0] == (0, 8192, BOOT_SECTOR_LOST)
    assert {r for _o, _n, r in damaged[1:]} == {MISSING}
    assert report["volume_size"] == len(xts.reference)
    assert not any(out.read_bytes()[:8192])
    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("bdekit.volume.bde")
    logger.addHandler(handler)
    try:
        stream = open_volume(img, recovery_password=RP)
    finally:
        logger.removeHandler(handler)
    assert stream.volume.boot_sector_verified is False
    assert any("cannot be verified" in m for m in seen)
    assert stream.read(8192) == bytes(8192)


def test_intact_volume_boot_sector_verified(xts: Subject, tmp_path: Path) -> None:
    stream = open_volume(FIXTURES / "xts128-rp.img", recovery_password=RP)
    assert stream.volume.boot_sector_verified is True
    assert stream.read(512) == xts.reference[:512]


@pytest.mark.parametrize("total", [10, 1 << 31])
def test_vista_volume_size_field_weighed(vista: Subject, tmp_path: Path, total: int) -> None:
    """The Vista header's total sectors (plaintext, unauthenticated) set to 10 (a 5 KB volume
    although the copies lie at 512-768 KiB) or to 2^31 (1 TiB, although every copy and the
    MFT mirror sit in the first MiB): the size the NTFS backup boot sector confirms serves,
    fast, and the output is exact."""
    started = time.monotonic()
    verdict = run_mutant(vista, Mutant("size", ((0x28, struct.pack("<Q", total)),)), tmp_path)
    assert verdict.outcome == "exact", verdict.outcome
    assert time.monotonic() - started < 60
    assert any("backup" in r for r in _report(tmp_path)["repairs"])  # type: ignore


def test_missing_tail_is_a_hole(xts: Subject, tmp_path: Path) -> None:
    """A capture cut at 600 KiB: the tail is neither read nor written (a sparse output), yet
    the output and its SHA-256 are those of the plaintext with the tail zero."""
    cut = 600 * 1024
    img = tmp_path / "in.img"
    img.write_bytes(xts.image[:cut])
    out = tmp_path / "out.img"
    code, _o, err = run_cli("decrypt", str(img), str(out), "-rp", RP, "--report",
                            str(tmp_path / "report.json"), "--chunk-size", "65536")
    assert code == EXIT_PARTIAL, err
    expected = xts.reference[:cut] + bytes(len(xts.reference) - cut)
    data = out.read_bytes()
    assert data == expected
    report = _report(tmp_path)
    assert report["sha256"] == hashlib.sha256(expected).hexdigest()
    assert any("holes in the output" in n for n in report["notes"])  # type: ignore
    assert os.stat(out).st_blocks * 512 <= cut + (64 << 10)


def test_boot_sector_larger_than_its_partition_is_capped(xts: Subject, tmp_path: Path) -> None:
    """A partition table entry smaller than the volume the boot sector describes (but holding
    every metadata copy): the output stops at the end of the partition, with a note."""
    start, part = 2048, 1800  # sectors: the partition holds 900 KiB of the 1 MiB volume
    disk = bytearray(start * 512) + bytearray(xts.image)
    struct.pack_into("<B3sB3sII", disk, 446, 0, b"\0\0\0", 0x07, b"\0\0\0", start, part)
    disk[510:512] = b"\x55\xaa"
    img = tmp_path / "disk.img"
    img.write_bytes(disk)
    out = tmp_path / "out.img"
    code, _o, err = run_cli("decrypt", str(img), str(out), "-rp", RP, "--report",
                            str(tmp_path / "report.json"))
    assert code == EXIT_OK, err
    report = _report(tmp_path)
    assert report["volume_size"] == part * 512
    assert any("exceeds its partition" in n for n in report["notes"])  # type: ignore
    assert out.read_bytes() == xts.reference[:part * 512]


@requires_real
@pytest.mark.real
def test_real_vista_tail_is_not_written(real_image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The 22 MB capture of a 96 GB Vista volume: seconds, not minutes, and a sparse output
    (the hashes of 96 GB of zeros are the one cost left; --no-hash skips them)."""
    out = tmp_path / "vista.out"
    started = time.monotonic()
    code, _o, err = run_cli("decrypt", str(real_image("vista")), str(out), "-rp", VISTA_RP,
                            "--no-hash")
    assert code == EXIT_PARTIAL, err
    assert time.monotonic() - started < 60
    assert out.stat().st_size == 96292831232  # (total sectors 188071935 + 1) x 512
    assert out.stat().st_blocks * 512 < 64 << 20
