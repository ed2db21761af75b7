"""Issue 11's metadata classes, reproduced on a fixture: the three copies are weighed, never
taken first-come (classes 1-3), and a damaged key datum is damage, not a wrong key."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest

from bdekit.format.constants import DatumRole, DatumType
from bdekit.format.copies import read_metadata
from bdekit.format.metadata import Metadata, MetadataCopy
from bdekit.synth.mutate import Mutant, judge
from tests.conftest import FIXTURES, run_cli
from tests.harness import Subject, load_subject, run_mutant

RP = "015026-497662-343442-191037-086713-242187-380908-588159"
STATE_OFFSET = 16  # block header: u64 state offset (the encrypted size)


@pytest.fixture(scope="module")
def subject(tmp_path_factory: pytest.TempPathFactory) -> Subject:
    work = tmp_path_factory.mktemp("weigh")
    return load_subject("xts128-rp", FIXTURES / "xts128-rp.img", ["-rp", RP], work)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return tmp_path


def _metadata(subject: Subject) -> Metadata:
    data = subject.image
    return read_metadata(lambda o, n: data[o:o + n], None, len(data))


def _patch(copy: MetadataCopy, rel: int, new: bytes, *, crc: bool) -> list[tuple[int, bytes]]:
    block = bytearray(copy.block)
    block[rel:rel + len(new)] = new
    out = [(copy.offset + rel, new)]
    if crc:
        out.append((copy.offset + len(block) + 4,
                    zlib.crc32(bytes(block)).to_bytes(4, "little")))
    return out


def _description(copy: MetadataCopy, char: int) -> int:
    datum = next(d for d in copy.datums if d.type == DatumType.UNICODE)
    return datum.offset - copy.offset + 8 + 2 * char


def _run(subject: Subject, patches: list[tuple[int, bytes]], work: Path,
         command: str = "decrypt") -> tuple[str, dict[str, object]]:
    verdict = run_mutant(subject, Mutant("case", tuple(patches)), work, command)
    report = json.loads((work / "report.json").read_text()) if (
        work / "report.json").exists() else {}
    return verdict.outcome, report


@pytest.mark.parametrize("command", ["decrypt", "repair"])
def test_class1_every_copy_damaged_elsewhere_is_rebuilt_by_vote(
        subject: Subject, work: Path, command: str) -> None:
    md = _metadata(subject)
    c1, c2, c3 = md.copies
    old = int.from_bytes(c1.block[STATE_OFFSET:STATE_OFFSET + 8], "little")
    patches = (_patch(c1, STATE_OFFSET, (old - 0x80000).to_bytes(8, "little"), crc=False)
               + _patch(c2, _description(c2, 1), b"X", crc=False)
               + _patch(c3, _description(c3, 2), b"Y", crc=False))
    outcome, report = _run(subject, patches, work, command)
    assert outcome == "exact"
    assert report["metadata_trust"] == "verified"
    fields = {d["field"] for d in report["metadata_decisions"]}  # type: ignore[union-attr]
    assert "state offset (encrypted size)" in fields


def test_class2_crc_good_copy_failing_sha256_is_outvoted(subject: Subject, work: Path) -> None:
    md = _metadata(subject)
    c1 = md.copies[0]
    old = int.from_bytes(c1.block[STATE_OFFSET:STATE_OFFSET + 8], "little")
    patches = _patch(c1, STATE_OFFSET, (old - 0xC0000).to_bytes(8, "little"), crc=True)
    outcome, report = _run(subject, patches, work)
    assert outcome == "exact"
    assert report["metadata_copy"] in (2, 3, 0)
    assert report["metadata_trust"] == "verified"


def _datum(copy: MetadataCopy, type_: int, role: int) -> tuple[int, int]:
    datum = next(d for d in copy.datums if d.type == type_ and d.role == role)
    return datum.offset - copy.offset, datum.size


@pytest.mark.parametrize("command", ["decrypt", "repair"])
def test_damaged_vmk_datum_in_a_crc_good_copy_is_not_a_wrong_key(
        subject: Subject, work: Path, command: str) -> None:
    c1 = _metadata(subject).copies[0]
    rel, size = _datum(c1, DatumType.VOLUME_MASTER_KEY, DatumRole.VOLUME_MASTER_KEY)
    mid = rel + size - 20  # inside the wrapped VMK of the protector
    patches = _patch(c1, mid, bytes([c1.block[mid] ^ 0x55]), crc=True)
    outcome, _ = _run(subject, patches, work, command)
    assert outcome == "exact"


def test_fvek_datum_damaged_in_every_copy_is_damage_exit_3(subject: Subject,
                                                           work: Path) -> None:
    patches: list[tuple[int, bytes]] = []
    for copy in _metadata(subject).copies:
        rel, size = _datum(copy, DatumType.AES_CCM_ENCRYPTED_KEY,
                           DatumRole.FULL_VOLUME_ENCRYPTION_KEY)
        pos = rel + size - 4
        patches += _patch(copy, pos, bytes([copy.block[pos] ^ 0x01]), crc=True)
    outcome, _ = _run(subject, patches, work)
    assert outcome == "refused"
    img = work / "mutant.img"
    code, _, err = run_cli("decrypt", str(img), str(work / "again.img"), "-rp", RP)
    assert code == 3, err
    assert "FVEK datum is damaged in every metadata copy" in err


def test_class3_all_copies_damaged_alike_is_never_exit_0(subject: Subject, work: Path) -> None:
    patches: list[tuple[int, bytes]] = []
    for copy in _metadata(subject).copies:
        old = int.from_bytes(copy.block[STATE_OFFSET:STATE_OFFSET + 8], "little")
        patches += _patch(copy, STATE_OFFSET, (old - 0x40000).to_bytes(8, "little"), crc=True)
    outcome, report = _run(subject, patches, work)
    assert outcome == "flagged"
    assert report["metadata_trust"] == "unverified"
    assert report["bytes_unrecovered"] == report["volume_size"]


GUID_AT = 160  # the Windows 7+ GUID record in the volume header: GUID, then 3 x u64 offsets


@pytest.mark.parametrize("command", ["decrypt", "repair"])
def test_destroyed_header_guid_is_found_by_the_offsets_after_it(
        subject: Subject, work: Path, command: str) -> None:
    """Every byte of the header's BitLocker GUID destroyed (beyond the near-miss tolerance):
    the header reads as Vista's, whose copy is not there; the three offsets after the GUID
    name the copies, so decrypt serves the plaintext (the output's first sector comes from
    the relocated boot sector, not from the header) and reports the decision."""
    assert subject.image[GUID_AT:GUID_AT + 16] != b"\x55" * 16
    outcome, report = _run(subject, [(GUID_AT, b"\x55" * 16)], work, command)
    assert outcome == "exact"
    assert report["metadata_trust"] == "verified"
    fields = {d["field"] for d in report["metadata_decisions"]}  # type: ignore[union-attr]
    assert "volume header GUID record" in fields


def test_destroyed_guid_and_offsets_still_refuse_in_decrypt(subject: Subject,
                                                           work: Path) -> None:
    """With the offsets gone too, nothing names the copies: decrypt refuses (exit 3, nothing
    written; ``repair`` scans for the copies)."""
    outcome, _ = _run(subject, [(GUID_AT, bytes(40))], work)
    assert outcome == "refused"
    assert not (work / "out.img").exists()


def test_judge_catches_what_it_should() -> None:
    """The rule itself: wrong bytes at exit 0 and unlisted wrong bytes at exit 6 are caught."""
    ref = bytes(range(256)) * 8
    bad = bytearray(ref)
    bad[100] ^= 1
    assert judge(0, ref, ref).outcome == "exact"
    assert judge(0, bytes(bad), ref).outcome.startswith("silent-wrong")
    assert judge(6, bytes(bad), ref, [(0, 99)]).outcome.startswith("silent-wrong")
    assert judge(6, bytes(bad), ref, [(96, 104)]).outcome == "flagged"
    assert judge(6, bytes(bad), ref, [(96, 104)], [(0, 50)]).outcome.startswith("silent-wrong")
    assert judge(3, None, ref).outcome == "refused"
    assert judge(3, ref, ref).outcome.startswith("silent-wrong")
    assert judge(4, None, ref).outcome.startswith("silent-wrong")
