"""Issue 11 class 4 on a synthetic used-space-only volume laid out as Windows 10 lays it out
(:mod:`tests.eow_subject`): damaged bitmaps are verified, never silently trusted; what nothing
proves is decided by content and reported as guessed (exit 6).

The expected plaintext comes from the volume's plaintext alone (the EOW structures, logs,
metadata regions and relocated block zeroed), never from bdekit's own output.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest

from bdekit.errors import EXIT_OK, EXIT_PARTIAL
from bdekit.escrow.secrets import Secrets
from bdekit.image.ranges import GUESSED_NO_BITMAP, GUESSED_RECORD_DAMAGED
from bdekit.synth.eow import EowImage
from bdekit.synth.mutate import Mutant
from tests.conftest import (
    REAL_PASSWORD,
    reference_digests,
    requires_real,
    run_cli,
    window_digests,
)
from tests.eow_subject import CHUNK, build_eow_subject
from tests.harness import Subject, run_mutant


@pytest.fixture(scope="module")
def eow(tmp_path_factory: pytest.TempPathFactory) -> tuple[Subject, EowImage, Path]:
    return build_eow_subject(tmp_path_factory.mktemp("eow"))


def _run(subject: Subject, patches: list[tuple[int, bytes]], work: Path,
         command: str = "decrypt") -> tuple[str, dict[str, object]]:
    verdict = run_mutant(subject, Mutant("case", tuple(patches)), work, command)
    report_path = work / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return verdict.outcome, report


def _reasons(report: dict[str, object]) -> set[str]:
    return {d["reason"] for d in report.get("damaged", [])}  # type: ignore[union-attr]


def test_undamaged_volume_is_exact(eow: tuple[Subject, EowImage, Path], tmp_path: Path) -> None:
    subject, _where, img = eow
    out = tmp_path / "out.img"
    code, _o, err = run_cli("decrypt", str(img), str(out))
    assert code == EXIT_OK, err
    assert out.read_bytes() == subject.reference


@pytest.mark.parametrize("command", ["decrypt", "repair"])
def test_damaged_newest_record_is_guessed_not_trusted(
        eow: tuple[Subject, EowImage, Path], tmp_path: Path, command: str) -> None:
    """The newest record's sequence number damaged (its CRC fails): the older record serves
    for what they agree on; the two chunks where they differ are decided by content and
    listed as guessed; their plaintext still comes out right (text encrypted, text plain)."""
    subject, where, _img = eow
    newest = where.bitmaps[0] + 512
    seq = subject.image[newest + 20]
    outcome, report = _run(subject, [(newest + 20, bytes([seq ^ 0x02]))], tmp_path, command)
    assert outcome == "flagged"
    assert _reasons(report) == {GUESSED_RECORD_DAMAGED}
    differ = [(0x2000 + 4 * CHUNK, 2 * CHUNK)]
    assert [(d["offset"], d["length"]) for d in report["damaged"]] == differ  # type: ignore
    out = (tmp_path / "out.img").read_bytes()
    assert out[0x2000 + 4 * CHUNK:0x2000 + 6 * CHUNK] == \
        subject.reference[0x2000 + 4 * CHUNK:0x2000 + 6 * CHUNK]


def test_record_size_field_is_not_every_chunk_encrypted(
        eow: tuple[Subject, EowImage, Path], tmp_path: Path) -> None:
    subject, where, _img = eow
    pos = where.bitmaps[0] + 52
    outcome, report = _run(subject, [(pos, bytes([subject.image[pos] ^ 0x04]))], tmp_path)
    assert outcome == "exact"
    assert any("fails its CRC32" in n for n in report["notes"])  # type: ignore[union-attr]


def test_bitmap_blocks_gone_relocated_plaintext_wins(
        eow: tuple[Subject, EowImage, Path], tmp_path: Path) -> None:
    """No bitmap block left: every region is decided by content and reported; the relocated
    boot sectors, which this volume (like Windows 10's) keeps in plaintext, are read as
    plaintext because that is the reading that parses as a boot sector."""
    subject, where, _img = eow
    patches = [(at, bytes(1536)) for at in where.bitmaps]
    outcome, report = _run(subject, patches, tmp_path)
    assert outcome == "flagged"
    assert _reasons(report) == {GUESSED_NO_BITMAP}
    out = (tmp_path / "out.img").read_bytes()
    assert out[:0x2000] == subject.reference[:0x2000]
    guessed = [(d["offset"], d["length"]) for d in report["damaged"]]  # type: ignore
    assert all(off >= 0x2000 for off, _n in guessed)


def test_region_moved_with_crc_recomputed_is_caught(
        eow: tuple[Subject, EowImage, Path], tmp_path: Path) -> None:
    """A bitmap block whose region offset was changed and its CRC recomputed: the regions no
    longer tile, so neither side is trusted: guessed, never silently shifted."""
    subject, where, _img = eow
    at = where.bitmaps[2]
    block = bytearray(subject.image[at:at + 512])
    offset = struct.unpack_from("<Q", block, 20)[0] + 0x10000
    struct.pack_into("<Q", block, 20, offset)
    struct.pack_into("<I", block, 56, 0)
    struct.pack_into("<I", block, 56, zlib.crc32(bytes(block)))
    outcome, report = _run(subject, [(at, bytes(block))], tmp_path)
    assert outcome == "flagged"
    assert any("does not meet" in n for n in report["notes"])  # type: ignore[union-attr]


def test_eow_guid_damaged_is_not_vista(eow: tuple[Subject, EowImage, Path],
                                       tmp_path: Path) -> None:
    subject, _where, _img = eow
    at = 160 + 3
    outcome, _report = _run(subject, [(at, bytes([subject.image[at] ^ 0x10]))], tmp_path)
    assert outcome == "exact"


def test_eow_guid_gone_found_by_its_offsets(eow: tuple[Subject, EowImage, Path],
                                            tmp_path: Path) -> None:
    """The whole EOW GUID replaced by the Windows 7 one: the offsets after the record still
    lead to information blocks that verify, so the bitmaps are used."""
    from bdekit.format.constants import BITLOCKER_GUID

    subject, _where, _img = eow
    outcome, _report = _run(subject, [(160, BITLOCKER_GUID.bytes_le)], tmp_path)
    assert outcome == "exact"


def test_eow_guid_destroyed_is_found_by_its_offsets(eow: tuple[Subject, EowImage, Path],
                                                    tmp_path: Path) -> None:
    """Every byte of the EOW GUID destroyed (the header then reads as Vista's): the copy
    offsets after the record name the metadata and the EOW offsets lead to information blocks
    that verify, so the bitmaps are used and the output is exact."""
    subject, _where, _img = eow
    outcome, report = _run(subject, [(160, b"\x5a" * 16)], tmp_path)
    assert outcome == "exact"
    fields = {d["field"] for d in report["metadata_decisions"]}  # type: ignore[union-attr]
    assert "volume header GUID record" in fields


def test_status_code_of_a_guess(eow: tuple[Subject, EowImage, Path], tmp_path: Path) -> None:
    """A guess is never exit 0, even when every guessed sector came out right."""
    subject, where, _img = eow
    newest = where.bitmaps[0] + 512
    img = tmp_path / "in.img"
    data = bytearray(subject.image)
    data[newest + 20] ^= 0x02
    img.write_bytes(data)
    code, _o, _e = run_cli("-q", "decrypt", str(img), str(tmp_path / "o.img"))
    assert code == EXIT_PARTIAL


@requires_real
@pytest.mark.real
def test_real_volume_with_its_bitmap_blocks_gone(real_image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The real Windows 10 used-space-only volume with all six bitmap blocks zeroed: its
    relocated boot sectors, which Windows left in plaintext, are read as plaintext (the reading
    that parses), and content decides the rest: every window of the peers' reference digests
    matches except those holding the EOW structures and conversion logs (which read as zeros
    with the bitmaps, and are reported as guessed without them)."""
    from bdekit.image.sources import open_source
    from bdekit.volume.bde import BdeVolume

    src = real_image("eow_partial")
    img = tmp_path / "nobitmaps.bin"
    data = bytearray(src.read_bytes())
    for i in range(6):  # the bitmap blocks, 520 KiB apart from the first
        at = 357810176 + 0x82000 * i
        data[at:at + 1536] = bytes(1536)
    img.write_bytes(data)
    del data
    volume = BdeVolume(open_source(str(img)))
    volume.unlock(Secrets(passwords=[REAL_PASSWORD]))
    assert volume.boot_sector_verified and volume.size_source == "boot sector"
    assert volume.guessed and all(d.reason == GUESSED_NO_BITMAP for d in volume.guessed)

    def read(offset: int, length: int) -> bytes:
        buf = bytearray(length)
        volume.read_into(offset, buf)
        return bytes(buf)

    got = window_digests(src, read)
    want = reference_digests()["eow_partial"]["windows"]
    structures = (357801984 - (1 << 20), 361004032)
    assert {k: v for k, v in got.items() if not structures[0] < int(k) < structures[1]} == {
        k: v for k, v in want.items() if not structures[0] < int(k) < structures[1]}
