"""The copies as evidence in ``repair`` (issue 11, classes 2 and 8): unlocking tries every
copy's protector and FVEK datums, the copy that serves is the one that verifies (as the volume
itself decides), and the fields that steer reads (copy offsets, the relocated header block)
are weighed and checked before use: a misaligned value is damage of its copy, not a crash.

The fixture is ``fixtures/xts128-rp.img``; its plaintext is checked against the manifest's
digests by the harness (:func:`tests.harness.reference_plaintext`)."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from bdekit.errors import EXIT_FORMAT, EXIT_OK, EXIT_PARTIAL
from bdekit.format.copies import read_metadata
from bdekit.format.metadata import MetadataCopy
from tests.conftest import FIXTURES, run_cli
from tests.harness import reference_plaintext
from tests.recovery.rule import assert_honest

IMAGE = FIXTURES / "xts128-rp.img"
RP = "015026-497662-343442-191037-086713-242187-380908-588159"
Patch = tuple[int, bytes]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    manifest = json.loads(IMAGE.with_name(IMAGE.name + ".manifest.json").read_text())
    return reference_plaintext(IMAGE, ["-rp", RP], tmp_path_factory.mktemp("ref"),
                               manifest).read_bytes()


def _copies() -> list[MetadataCopy]:
    data = IMAGE.read_bytes()
    return read_metadata(lambda o, n: data[o:o + n], None, len(data)).copies


def _patched(copy: MetadataCopy, rel: int, new: bytes, crc: bool) -> list[Patch]:
    """``new`` written at ``rel`` in the copy's block, with its CRC32 recomputed or not."""
    block = bytearray(copy.block)
    block[rel:rel + len(new)] = new
    out = [(copy.offset + rel, new)]
    if crc:
        out.append((copy.offset + len(block) + 4, zlib.crc32(bytes(block)).to_bytes(4, "little")))
    return out


def _datum(copy: MetadataCopy, type_name: str) -> tuple[int, int]:
    d = next(d for d in copy.datums if d.type_name.startswith(type_name))
    return d.offset - copy.offset, d.size


def _field(copy: MetadataCopy, rel: int, size: int, change: Callable[[int], int],
           crc: bool) -> list[Patch]:
    old = int.from_bytes(copy.block[rel:rel + size], "little")
    return _patched(copy, rel, change(old).to_bytes(size, "little"), crc)


def _run(patches: list[Patch], tmp_path: Path, command: str,
         *unlock: str) -> tuple[int, str, Path, Path]:
    img = bytearray(IMAGE.read_bytes())
    for off, data in patches:
        img[off:off + len(data)] = data
    path = tmp_path / f"{command}.img"
    path.write_bytes(img)
    out, report = tmp_path / f"{command}.out", tmp_path / f"{command}.json"
    extra = ["--output-mapfile", str(tmp_path / "out.map")] if command == "repair" else []
    code, _o, err = run_cli("-q", command, str(path), str(out), "--report", str(report),
                            *extra, *(unlock or ("-rp", RP)))
    return code, err, out, report


@pytest.mark.parametrize("crc", [False, True])
@pytest.mark.parametrize("command", ["repair", "decrypt"])
def test_copy_offset_off_by_one_in_every_copy(crc: bool, command: str, tmp_path: Path,
                                              reference: bytes) -> None:
    """The third copy's offset off by one in every block header: the volume header and the
    offset the copy was read from outvote it; no 65,537-byte read, no exit 2."""
    patches = [p for c in _copies() for p in _field(c, 48, 8, lambda v: v + 1, crc)]
    code, err, out, report = _run(patches, tmp_path, command)
    assert code in (EXIT_OK, EXIT_PARTIAL), err
    mapfile = tmp_path / "out.map" if command == "repair" else None
    assert_honest(code, out, reference, report, mapfile)
    decisions = json.loads(report.read_text())["metadata_decisions"]
    assert any(d.get("field") == "offset of copy 3" for d in decisions)


@pytest.mark.parametrize("command", ["repair", "decrypt"])
def test_virtualization_datum_misaligned_in_every_copy(command: str, tmp_path: Path,
                                                       reference: bytes) -> None:
    """The virtualization datum's offset off by one in every copy (CRC32s recomputed): the
    block headers' relocated offset outvotes it; the relocated block is read where it is."""
    patches = []
    for c in _copies():
        rel, _size = _datum(c, "virtualization")
        patches += _field(c, rel + 8, 8, lambda v: v + 1, True)
    code, err, out, report = _run(patches, tmp_path, command)
    assert code in (EXIT_OK, EXIT_PARTIAL), err
    mapfile = tmp_path / "out.map" if command == "repair" else None
    assert_honest(code, out, reference, report, mapfile)
    assert out.read_bytes()[:512] == reference[:512]  # the boot sector, from the right place


def test_damaged_vmk_datum_in_an_intact_copy(tmp_path: Path, reference: bytes) -> None:
    """Copy 1's protector changed with its CRC32 recomputed (a CRC-good copy): the other
    copies' protector opens; copy 1 fails its SHA-256 and does not serve."""
    c1 = _copies()[0]
    rel, size = _datum(c1, "volume_master_key")
    patches = _field(c1, rel + size - 20, 4, lambda v: v ^ 0x01010101, True)
    code, err, out, report = _run(patches, tmp_path, "repair")
    assert code == EXIT_OK, err
    assert out.read_bytes() == reference
    rep = json.loads(report.read_text())
    assert rep["metadata_trust"] == "verified" and rep["metadata_copy"] != 1


def test_fvek_datum_damaged_in_every_copy(tmp_path: Path) -> None:
    """Every copy's FVEK datum changed (CRC32s recomputed): the recovery password opens the
    VMK, the validation datums confirm it, so the FVEK datums are damage: exit 3 naming them,
    never exit 4 (wrong key)."""
    patches = []
    for c in _copies():
        rel, size = _datum(c, "aes_ccm_encrypted_key")
        patches += _field(c, rel + size - 8, 4, lambda v: v ^ 0x00FF00FF, True)
    code, err, out, _report = _run(patches, tmp_path, "repair")
    assert code == EXIT_FORMAT, err
    assert "FVEK datum is damaged" in err and not out.exists()


def test_a_verified_copy_serves_not_the_first_that_unlocks(tmp_path: Path,
                                                           reference: bytes) -> None:
    """Copy 1's state offset changed with its CRC32 recomputed: it unlocks first, but the
    SHA-256 digests say copy 2 (or the vote) is what Windows wrote: that serves."""
    c1 = _copies()[0]
    patches = _field(c1, 16, 8, lambda v: v - 0x40000, True)
    code, err, out, report = _run(patches, tmp_path, "repair")
    assert code == EXIT_OK, err
    assert out.read_bytes() == reference
    rep = json.loads(report.read_text())
    assert rep["metadata_trust"] == "verified"
    assert any(d.get("field") == "serving copy" for d in rep["metadata_decisions"])
