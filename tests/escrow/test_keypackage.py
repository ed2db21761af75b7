"""Key packages: bdekit's format (export, show, checksums) and foreign datum sets read
tolerantly (raw dataset bytes, LDIF base64 of msFVE-KeyPackage, UTF-16 hex text, loose datums
without any layout facts); each one decrypts an image whose metadata is all gone."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from pathlib import Path

import pytest

from bdekit import synth
from bdekit.errors import EXIT_FORMAT, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, FormatError
from bdekit.escrow.keypackage import HEADER_SIZE, MAGIC, parse_key_package, read_key_package
from bdekit.format.constants import DatumType
from bdekit.format.metadata import parse_datums
from tests.recovery.rule import assert_honest
from tests.repair_support import (
    Synth,
    check_repaired,
    damage,
    run_cli,
    synth_image,
)

REGION = 64 << 10


@pytest.fixture(scope="session")
def two(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """Recovery password and password protectors."""
    return synth_image(tmp_path_factory, "two", method="aes-xts-256", protectors=[
        synth.RecoveryPasswordSpec(), synth.PasswordSpec("hunter2!")])


@pytest.fixture(scope="session")
def kpg(two: Synth, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kpg") / "two.kpg"
    code, out, err = run_cli("keypackage", "export", str(two.image), str(path), "--vmk",
                             two.vmk)
    assert code == EXIT_OK, err
    assert "Key package written" in out
    return path


def _wrecked(s: Synth, tmp_path: Path) -> Path:
    img = s.copy(tmp_path / "in.img")
    damage(img, zero=[(0, 512)] + [(o, REGION) for o in s.layout["metadata_offsets"]])
    return img


def _dataset(s: Synth) -> bytes:
    """The dataset (header + datums) of the image's first metadata copy, as Windows has it."""
    data = s.image.read_bytes()
    off = s.layout["metadata_offsets"][0]
    size = int.from_bytes(data[off + 64:off + 68], "little")
    return data[off + 64:off + 64 + size]


def test_export_and_show(two: Synth, kpg: Path) -> None:
    data = kpg.read_bytes()
    assert data[:8] == MAGIC and len(data) > HEADER_SIZE
    pkg = read_key_package(kpg)
    assert pkg.kind == "bdekit"
    info = pkg.describe()
    assert {p["type"] for p in info["protectors"]} == {"recovery-password", "password"}
    assert info["volume_guid"] == two.manifest.volume_guid.upper().strip("{}")
    assert info["encryption_method"] == "aes-xts-256"
    assert info["sector_size"] == 512
    assert info["volume_size"] == two.volume_size and info["volume_size_verified"]
    assert info["relocated_header"] == [two.layout["relocated_offset"], 8192]
    assert info["metadata_offsets"] == two.layout["metadata_offsets"]
    code, out, _e = run_cli("keypackage", "show", str(kpg), "--json")
    assert code == EXIT_OK and json.loads(out)["fvek_datums"] == 1


def test_export_recovery_only_and_refusals(two: Synth, kpg: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.kpg"
    code, _o, err = run_cli("keypackage", "export", str(two.image), str(out), "--vmk", two.vmk,
                            "--recovery-only")
    assert code == EXIT_OK, err
    assert [p["type"] for p in read_key_package(out).describe()["protectors"]] == [
        "recovery-password"]
    code, _o, err = run_cli("keypackage", "export", str(two.image), str(out), "--vmk", two.vmk)
    assert code == EXIT_USAGE and "--force" in err
    # without a key: layout facts only, no volume size
    code, _o, err = run_cli("keypackage", "export", str(two.image), str(out), "-f")
    assert code == EXIT_OK and "no key given" in err
    assert read_key_package(out).volume_size is None


def test_package_decrypts_wrecked_image_with_password(two: Synth, kpg: Path,
                                                      tmp_path: Path) -> None:
    img = _wrecked(two, tmp_path)
    out = tmp_path / "out.img"
    code, _o, err = run_cli("repair", str(img), str(out), "-pw", "hunter2!", "-kp", str(kpg),
                            "-f")
    assert code == EXIT_OK, err
    check_repaired(out, two.reference, [])


def test_damaged_package_is_still_read(two: Synth, kpg: Path, tmp_path: Path) -> None:
    """Header CRC32 fails (a byte of the volume GUID field): no header fact is used - the
    block header names the state and the copies' offsets, so every range they steer is
    reported as a guess - but the dataset CRC32 still holds, so its datums serve."""
    data = bytearray(kpg.read_bytes())
    data[20] ^= 0xFF
    broken = tmp_path / "broken.kpg"
    broken.write_bytes(data)
    pkg = read_key_package(broken)
    assert not pkg.intact and pkg.block_header is None and pkg.volume_size is None
    assert len(pkg.vmks) == 2 and len(pkg.fveks) == 1
    assert pkg.virtualization == (two.layout["relocated_offset"], 8192)  # dataset CRC holds
    assert "header CRC32 fails" in " ".join(pkg.notes)
    img = _wrecked(two, tmp_path)
    out = tmp_path / "out.img"
    code, _o, err = run_cli("repair", str(img), str(out), "--vmk", two.vmk, "-kp", str(broken),
                            "-f", "--report", str(tmp_path / "r.json"))
    assert code == EXIT_PARTIAL, err
    assert_honest(code, out, two.reference, tmp_path / "r.json")


def _our_header(dataset: bytes, *, flags: int = 0, block_header: bytes = bytes(64)) -> bytes:
    """A bdekit package header (layout in the keypackage module docstring) with both CRC32s
    right, built here independently of the writer."""
    head = bytearray(HEADER_SIZE)
    head[0:8] = MAGIC
    struct.pack_into("<HHI", head, 8, 1, HEADER_SIZE, HEADER_SIZE + len(dataset))
    struct.pack_into("<II", head, 32, flags, 512)
    head[72:136] = block_header
    struct.pack_into("<I", head, 152, zlib.crc32(dataset))
    struct.pack_into("<I", head, 156, zlib.crc32(bytes(head[:156])))
    return bytes(head) + dataset


def test_package_whose_checksums_hold_but_parts_do_not_parse() -> None:
    """CRC32s right, but a 20-byte dataset (shorter than its 48-byte header), or a block
    header flagged present that is not one: a FormatError naming the file, not a traceback."""
    for data in (_our_header(b"\x01" * 20),
                 _our_header(bytes(48), flags=1, block_header=b"\xff" * 64)):
        with pytest.raises(FormatError) as err:
            parse_key_package(data, "crafted.kpg")
        assert err.value.path == "crafted.kpg"


def test_not_a_package(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"nothing to see here" * 100)
    with pytest.raises(FormatError):
        read_key_package(junk)
    code, _o, err = run_cli("keypackage", "show", str(junk))
    assert code == EXIT_FORMAT and "key package" in err


def _foreign_variants(s: Synth) -> dict[str, bytes]:
    ds = _dataset(s)
    b64 = base64.b64encode(ds).decode()
    ldif = ["dn: CN={8CDFE1DD-AE48-4B5E-A1E3-3C05D5A5D3A1},CN=PC01,OU=Laptops,DC=corp,"
            "DC=example", "objectClass: msFVE-RecoveryInformation",
            "msFVE-KeyPackage:: " + b64[:57]]
    rest = b64[57:]
    while rest:
        ldif.append(" " + rest[:76])
        rest = rest[76:]
    hex_text = ("KeyPackage : " + ds.hex().upper() + "\r\n").encode("utf-16")
    return {
        "raw": b"\x00" * 13 + ds + b"\xff" * 7,
        "ldif": ("\n".join(ldif) + "\n").encode(),
        "utf16-hex": hex_text,
    }


@pytest.mark.parametrize("variant", ["raw", "ldif", "utf16-hex"])
def test_foreign_datum_set(two: Synth, tmp_path: Path, variant: str) -> None:
    path = tmp_path / f"pkg.{variant}"
    path.write_bytes(_foreign_variants(two)[variant])
    pkg = read_key_package(path)
    assert pkg.kind == "datum set" and not pkg.intact
    assert pkg.volume_guid is not None and pkg.method == two.manifest.method_id
    assert len(pkg.vmks) == 2 and len(pkg.fveks) == 1
    # nothing checksums a bare dataset: its virtualization datum is a hint the image confirms
    assert pkg.virtualization is None
    assert pkg.hints["relocated"] == [two.layout["relocated_offset"]]
    img = _wrecked(two, tmp_path)
    out = tmp_path / "out.img"
    report = tmp_path / "r.json"
    code, _o, err = run_cli("repair", str(img), str(out), "--vmk", two.vmk, "-kp", str(path),
                            "-f", "--report", str(report))
    # no copy offsets nor conversion state in a datum set: the copies' regions and the
    # sectors whose state their bytes do not prove are reported, not served as plaintext
    assert code == EXIT_PARTIAL, err
    assert_honest(code, out, two.reference, report)
    notes = " ".join(json.loads(report.read_text())["notes"])
    assert "offsets unknown" in notes and "judged by its own bytes" in notes


def test_loose_datums_relocated_block_found_by_search(two: Synth, tmp_path: Path) -> None:
    """Only a VMK datum and the FVEK datum: no dataset header, no virtualization datum; the
    relocated header block is found by decrypting the image, the method comes from the FVEK."""
    datums = parse_datums(_dataset(two)[48:], 0)
    keep = [d for d in datums if d.type in (DatumType.VOLUME_MASTER_KEY,
                                            DatumType.AES_CCM_ENCRYPTED_KEY)][-2:]
    path = tmp_path / "loose.bin"
    path.write_bytes(b"".join(d.raw for d in keep))
    pkg = read_key_package(path)
    assert pkg.virtualization is None and pkg.method is None
    img = _wrecked(two, tmp_path)
    out = tmp_path / "out.img"
    report = tmp_path / "r.json"
    code, _o, err = run_cli("repair", str(img), str(out), "-pw", "hunter2!", "-kp", str(path),
                            "-f", "--report", str(report), "-lf", str(tmp_path / "log"))
    assert code == EXIT_PARTIAL, err
    assert "found by brute force" in (tmp_path / "log").read_text()
    rep = json.loads(report.read_text())
    assert rep["method"] == "aes-xts-256"
    assert_honest(code, out, two.reference, report)


def test_package_of_another_volume_is_skipped(two: Synth, tmp_path: Path,
                                              tmp_path_factory: pytest.TempPathFactory) -> None:
    other = synth_image(tmp_path_factory, "xts", method="aes-xts-128")
    kpg_other = tmp_path / "other.kpg"
    assert run_cli("keypackage", "export", str(other.image), str(kpg_other), "--vmk",
                   other.vmk)[0] == EXIT_OK
    img = two.copy(tmp_path / "in.img")
    # all copies garbled but parseable enough to name the volume GUID? zero two, garble the
    # datums of the third (its header still names the volume)
    offs = two.layout["metadata_offsets"]
    damage(img, zero=[(offs[0], REGION), (offs[1], REGION)], garble=[(offs[2] + 200, 400)])
    out = tmp_path / "out.img"
    code, _o, _err = run_cli("repair", str(img), str(out), "--vmk", other.vmk, "-kp",
                            str(kpg_other), "-f", "-lf", str(tmp_path / "log"))
    assert code != EXIT_OK
    assert "is for volume" in (tmp_path / "log").read_text()


def test_parse_roundtrip_in_memory(kpg: Path) -> None:
    pkg = parse_key_package(kpg.read_bytes(), "mem")
    assert pkg.path == "mem" and pkg.block_header is not None
    assert int(pkg.block_header.version) == 2


def test_key_package_directory(two: Synth, kpg: Path, tmp_path: Path) -> None:
    """-kp DIR: every key package in the directory is tried; other files are skipped."""
    folder = tmp_path / "escrow"
    folder.mkdir()
    (folder / "readme.txt").write_text("not a package")
    (folder / "vol.kpg").write_bytes(kpg.read_bytes())
    img = _wrecked(two, tmp_path)
    out = tmp_path / "out.img"
    code, _o, err = run_cli("repair", str(img), str(out), "--vmk", two.vmk, "-KeyPackage",
                            str(folder), "-f")
    assert code == EXIT_OK, err
    check_repaired(out, two.reference, [])


def test_vista_key_package_verified_by_mft(tmp_path: Path) -> None:
    """Vista: no relocated block; the package's key is checked on the first MFT record."""
    import shutil
    import subprocess

    if shutil.which("mkntfs") is None:
        pytest.skip("mkntfs is not installed")
    raw = tmp_path / "ntfs.raw"
    with open(raw, "wb") as fh:
        fh.truncate(24 << 20)
    subprocess.run(["mkntfs", "-F", "-Q", "-s", "512", str(raw)], check=True,
                   capture_output=True)
    img = tmp_path / "vista.img"
    manifest = synth.build(img, source=raw, vista=True, method="aes-cbc-128-diffuser",
                           seed="vista")
    kpg = tmp_path / "v.kpg"
    assert run_cli("keypackage", "export", str(img), str(kpg), "--vmk", manifest.vmk)[0] \
        == EXIT_OK
    assert run_cli("synth", "damage", str(img), "--zero-copies", "1,2,3")[0] == EXIT_OK
    out = tmp_path / "out.img"
    log = tmp_path / "log"
    code, _o, err = run_cli("repair", str(img), str(out), "--vmk", manifest.vmk, "-kp",
                            str(kpg), "-lf", str(log))
    assert code == EXIT_OK, err
    assert out.read_bytes() == raw.read_bytes()
    assert "could not be checked" not in log.read_text()
