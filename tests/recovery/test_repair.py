"""``bdekit repair`` on damaged images: metadata, header, boot sector, truncation, conversion.

Synthetic images come from the synthetic builder; their reference plaintext is decrypted from
the undamaged image (and checked against the builder's manifest). Every case checks that the
repaired output equals the reference outside the ranges its mapfile marks ``-``, is zero
inside, and that the mapfile lists exactly the damaged ranges.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bdekit.errors import EXIT_FORMAT, EXIT_KEY, EXIT_OK, EXIT_PARTIAL
from bdekit.image.ranges import MISSING
from bdekit.recovery.layout import LOST_BOOT_CODE, LOST_BOOT_SECTOR
from bdekit.recovery.repair import command_line
from tests.conftest import REAL_RP, reference_digests, requires_real, window_digests
from tests.repair_support import (
    MiB,
    Synth,
    check_repaired,
    damage,
    damage_json,
    run_cli,
    synth_image,
)

REGION = 64 << 10


@pytest.fixture(scope="session")
def diffuser(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return synth_image(tmp_path_factory, "diffuser", method="aes-cbc-128-diffuser")


@pytest.fixture(scope="session")
def partial(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    # conversion stopped at 21 MiB: below it encrypted, above it plaintext
    return synth_image(tmp_path_factory, "partial", method="aes-xts-256",
                       state=f"partial:{21 * MiB}")


def repair(img: Path, out: Path, s: Synth, *extra: str) -> tuple[int, str, dict]:  # type: ignore[type-arg]
    report = out.with_suffix(".json")
    code, _out, err = run_cli("repair", str(img), str(out), "--vmk", s.vmk, "-f",
                              "--report", str(report), "-lf", str(out) + ".log", *extra)
    data = json.loads(report.read_text()) if report.exists() else {}
    return code, err, data


def copies(s: Synth) -> list[int]:
    return list(s.layout["metadata_offsets"])


# --------------------------------------------------------------------------------------------
# metadata copies
# --------------------------------------------------------------------------------------------


def test_undamaged(xts: Synth, tmp_path: Path) -> None:
    out = tmp_path / "out.img"
    code, _err, rep = repair(xts.image, out, xts)
    assert code == EXIT_OK
    check_repaired(out, xts.reference, [])
    assert rep["damaged"] == [] and rep["metadata_copy"] == 1
    assert rep["metadata_source"] == "volume"
    assert [c["integrity"] for c in rep["metadata_copies"]] == ["ok", "ok", "ok"]
    assert not (tmp_path / "out.img.bdekit-journal").exists()
    assert not (tmp_path / "out.img.bdekit-partial").exists()


@pytest.mark.parametrize(("zeroed", "garbled", "serving"), [
    ((1,), (), 2),
    ((1, 2), (), 3),
    ((), (1,), 2),
    ((2,), (1,), 3),
    ((1, 3), (), 2),
])
def test_copies_zeroed_or_garbled(xts: Synth, tmp_path: Path, zeroed: tuple[int, ...],
                                  garbled: tuple[int, ...], serving: int) -> None:
    img = xts.copy(tmp_path / "in.img")
    offs = copies(xts)
    damage(img, zero=[(offs[i - 1], REGION) for i in zeroed],
           garble=[(offs[i - 1], 2048) for i in garbled])
    out = tmp_path / "out.img"
    code, _err, rep = repair(img, out, xts)
    assert code == EXIT_OK
    check_repaired(out, xts.reference, [])
    assert rep["metadata_copy"] == serving and rep["metadata_source"] == "volume"
    log = (tmp_path / "out.img.log").read_text()
    assert f"copy {serving} at offset {offs[serving - 1]} serves" in log


def test_garbled_datum_with_valid_crc_switches_by_sha256(xts: Synth, tmp_path: Path) -> None:
    """A copy whose CRC holds but whose SHA-256 does not (the datums changed and the CRC was
    recomputed) is replaced by a copy that verifies."""
    import zlib

    img = xts.copy(tmp_path / "in.img")
    off = copies(xts)[0]
    data = bytearray(img.read_bytes()[off:off + REGION])
    size = int.from_bytes(data[8:10], "little") * 16
    # the description datum (first datum, at 112): change one character of its text
    data[112 + 8 + 2] ^= 0x01
    data[size + 4:size + 8] = zlib.crc32(bytes(data[:size])).to_bytes(4, "little")
    damage(img)
    with open(img, "r+b") as fh:
        fh.seek(off)
        fh.write(data)
    out = tmp_path / "out.img"
    code, _err, rep = repair(img, out, xts)
    assert code == EXIT_OK
    check_repaired(out, xts.reference, [])
    assert rep["metadata_copy"] == 2
    states = {c["index"]: (c["crc_ok"], c["integrity"]) for c in rep["metadata_copies"]}
    assert states[1] == (True, "mismatch") and states[2] == (True, "ok")
    assert "fails its SHA-256 integrity check" in (tmp_path / "out.img.log").read_text()


def test_all_copies_zeroed_needs_key_package(xts: Synth, tmp_path: Path) -> None:
    kpg = tmp_path / "vol.kpg"
    code, _o, err = run_cli("keypackage", "export", str(xts.image), str(kpg), "--vmk", xts.vmk)
    assert code == EXIT_OK, err
    img = xts.copy(tmp_path / "in.img")
    damage(img, zero=[(o, REGION) for o in copies(xts)])
    out = tmp_path / "out.img"
    code, err, _rep = repair(img, out, xts)
    assert code == EXIT_FORMAT
    assert "key package" in err and not out.exists()
    # with the package and the recovery password (a real stretch)
    report = tmp_path / "r.json"
    code, _o, err = run_cli("repair", str(img), str(out), "-rp", xts.recovery_password,
                            "-kp", str(kpg), "-f", "--report", str(report))
    assert code == EXIT_OK, err
    check_repaired(out, xts.reference, [])
    rep = json.loads(report.read_text())
    assert rep["metadata_source"] == "key package" and rep["key_package"] == str(kpg)
    assert rep["unlocked_via"] == "recovery-password"


def test_volume_header_zeroed_found_by_scan(xts: Synth, tmp_path: Path) -> None:
    img = xts.copy(tmp_path / "in.img")
    damage(img, zero=[(0, 512)])
    out = tmp_path / "out.img"
    code, _err, rep = repair(img, out, xts)
    assert code == EXIT_OK
    check_repaired(out, xts.reference, [])
    assert rep["metadata_source"] == "scan" and rep["metadata_copy"] == 1


def test_header_and_two_copies_gone(cbc4k: Synth, tmp_path: Path) -> None:
    """4096-byte sectors: the sector size comes back from the relocated boot sector."""
    img = cbc4k.copy(tmp_path / "in.img")
    offs = copies(cbc4k)
    damage(img, zero=[(0, 4096), (offs[0], REGION)], garble=[(offs[1], 4096)])
    out = tmp_path / "out.img"
    code, _err, rep = repair(img, out, cbc4k)
    assert code == EXIT_OK
    check_repaired(out, cbc4k.reference, [])
    assert rep["metadata_source"] == "scan" and rep["metadata_copy"] == 3


def test_header_and_all_copies_gone_with_key_package(diffuser: Synth, tmp_path: Path) -> None:
    kpg = tmp_path / "vol.kpg"
    assert run_cli("keypackage", "export", str(diffuser.image), str(kpg), "--vmk",
                   diffuser.vmk)[0] == EXIT_OK
    img = diffuser.copy(tmp_path / "in.img")
    damage(img, zero=[(0, 512)], garble=[(o, REGION) for o in copies(diffuser)])
    out = tmp_path / "out.img"
    code, _err, rep = repair(img, out, diffuser, "-kp", str(kpg))
    assert code == EXIT_OK
    check_repaired(out, diffuser.reference, [])
    assert rep["metadata_source"] == "key package"


def test_wrong_key_is_reported_without_scanning(xts: Synth, tmp_path: Path) -> None:
    out = tmp_path / "out.img"
    code, _o, err = run_cli("repair", str(xts.image), str(out), "--vmk", "00" * 32, "-f",
                            "-lf", str(tmp_path / "log"))
    assert code == EXIT_KEY, err
    assert "scanning" not in (tmp_path / "log").read_text()


# --------------------------------------------------------------------------------------------
# boot sector, truncation, conversion state
# --------------------------------------------------------------------------------------------


def test_relocated_header_zeroed_boot_sector_rebuilt(xts: Synth, tmp_path: Path) -> None:
    img = xts.copy(tmp_path / "in.img")
    reloc = xts.layout["relocated_offset"]
    damage(img, zero=[(reloc, 8192)])
    out = tmp_path / "out.img"
    code, err, rep = repair(img, out, xts)
    assert code == EXIT_PARTIAL
    # sector 0 comes back from the backup; sectors 1-15 (boot code) are lost
    check_repaired(out, xts.reference, [(512, 8192 - 512)])
    assert rep["damaged"] == [{"offset": 512, "length": 8192 - 512, "reason": LOST_BOOT_CODE}]
    assert any("rebuilt from its backup" in r for r in rep["repairs"])
    assert rep["volume_size"] == xts.volume_size and "rebuilt" in err


def test_relocated_header_garbled_4k(cbc4k: Synth, tmp_path: Path) -> None:
    img = cbc4k.copy(tmp_path / "in.img")
    reloc = cbc4k.layout["relocated_offset"]
    damage(img, garble=[(reloc, 8192)])
    out = tmp_path / "out.img"
    code, _err, _rep = repair(img, out, cbc4k)
    assert code == EXIT_PARTIAL
    check_repaired(out, cbc4k.reference, [(4096, 4096)])


def test_truncated_image(xts: Synth, tmp_path: Path) -> None:
    img = xts.copy(tmp_path / "in.img")
    cut = 23 * MiB + 4096
    os.truncate(img, cut)
    out = tmp_path / "out.img"
    code, _err, rep = repair(img, out, xts)
    assert code == EXIT_PARTIAL
    # missing: everything past the end except the metadata region that reads as zeros anyway
    third = copies(xts)[2]
    expected = [(cut, third - cut), (third + REGION, xts.volume_size - third - REGION)]
    check_repaired(out, xts.reference, expected)
    assert {d["reason"] for d in rep["damaged"]} == {MISSING}


def test_truncated_and_relocated_header_zeroed(xts: Synth, tmp_path: Path) -> None:
    """No backup boot sector in a truncated image: the whole relocated block is lost; the
    volume size comes from the block header's state offset."""
    img = xts.copy(tmp_path / "in.img")
    os.truncate(img, 30 * MiB)
    damage(img, zero=[(xts.layout["relocated_offset"], 8192)])
    out = tmp_path / "out.img"
    code, _err, rep = repair(img, out, xts)
    assert code == EXIT_PARTIAL
    check_repaired(out, xts.reference, [(0, 8192), (30 * MiB, 2 * MiB)])
    assert rep["volume_size"] == xts.volume_size
    assert LOST_BOOT_SECTOR in {d["reason"] for d in rep["damaged"]}


def test_stopped_mid_conversion(partial: Synth, tmp_path: Path) -> None:
    img = partial.copy(tmp_path / "in.img")
    offs = copies(partial)
    damage(img, zero=[(0, 512), (offs[0], REGION)])
    out = tmp_path / "out.img"
    code, _err, rep = repair(img, out, partial)
    assert code == EXIT_OK
    check_repaired(out, partial.reference, [])
    assert rep["bytes_plain"] > 0 and rep["metadata_source"] == "scan"


def test_stopped_mid_conversion_key_package(partial: Synth, tmp_path: Path) -> None:
    kpg = tmp_path / "vol.kpg"
    assert run_cli("keypackage", "export", str(partial.image), str(kpg), "--vmk",
                   partial.vmk)[0] == EXIT_OK
    img = partial.copy(tmp_path / "in.img")
    damage(img, zero=[(0, 512)] + [(o, REGION) for o in copies(partial)])
    out = tmp_path / "out.img"
    code, _err, _rep = repair(img, out, partial, "-kp", str(kpg))
    assert code == EXIT_OK
    check_repaired(out, partial.reference, [])


# --------------------------------------------------------------------------------------------
# repair-bde command line, log, report
# --------------------------------------------------------------------------------------------


def test_repair_bde_command_line(xts: Synth, tmp_path: Path) -> None:
    img = xts.copy(tmp_path / "in.img")
    damage(img, zero=[(copies(xts)[0], REGION)])
    out = tmp_path / "out.img"
    out.write_bytes(b"old output")
    log = tmp_path / "log.txt"
    code, _o, err = run_cli("repair", str(img), str(out), "-rp", xts.recovery_password,
                            "-lf", str(log), "-f")
    assert code == EXIT_OK, err
    check_repaired(out, xts.reference, [])
    text = log.read_text()
    assert "copy 1 at offset" in text and "copy 2 at offset" in text and "serves" in text
    assert xts.recovery_password not in text
    # Windows spellings
    code, _o, err = run_cli("repair", str(img), str(out), "-RecoveryPassword",
                            xts.recovery_password, "-LogFile", str(log), "-Force")
    assert code == EXIT_OK, err


def test_refuses_existing_output_and_input(xts: Synth, tmp_path: Path) -> None:
    out = tmp_path / "out.img"
    out.write_bytes(b"x")
    code, _o, err = run_cli("repair", str(xts.image), str(out), "--vmk", xts.vmk)
    assert code == 2 and "--force" in err
    code, _o, err = run_cli("repair", str(xts.image), str(xts.image), "--vmk", xts.vmk, "-f")
    assert code == 2 and "input" in err


def test_command_line_masks_secrets() -> None:
    line = command_line(["bdekit", "repair", "a", "b", "-rp", "123", "--password=pw", "-pw",
                         "-f", "--vmk", "ab"])
    assert "123" not in line and "pw=" not in line.replace("--password=***", "")
    assert "ab" not in line.split("--vmk")[1]


# --------------------------------------------------------------------------------------------
# real images
# --------------------------------------------------------------------------------------------


def _digests_of(src: Path, out: Path) -> dict:  # type: ignore[type-arg]
    def read(offset: int, length: int) -> bytes:
        with open(out, "rb") as fh:
            fh.seek(offset)
            return fh.read(length)

    return window_digests(src, read)


@requires_real
def test_real_header_and_two_copies_gone(real_image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = real_image("recovery_password")
    img = tmp_path / "in.img"
    img.write_bytes(src.read_bytes())
    damage(img, zero=[(0, 512), (35586048, REGION)], garble=[(43278336, 4096)])
    out = tmp_path / "out.img"
    report = tmp_path / "r.json"
    code, _o, err = run_cli("repair", str(img), str(out), "-rp", REAL_RP, "-f", "--report",
                            str(report))
    assert code == EXIT_PARTIAL, err  # truncated capture: its tail is missing
    rep = json.loads(report.read_text())
    assert rep["metadata_source"] == "scan" and rep["metadata_copy"] == 3
    assert damage_json(report) == [(src.stat().st_size, 65994752 - src.stat().st_size)]
    assert _digests_of(src, out) == reference_digests()["recovery_password"]["windows"]


@requires_real
def test_real_all_copies_gone_key_package(real_image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = real_image("aes_128_diffuser")
    kpg = tmp_path / "vol.kpg"
    code, _o, err = run_cli("keypackage", "export", str(src), str(kpg), "-pw", "password12!@")
    assert code == EXIT_OK, err
    img = tmp_path / "in.img"
    img.write_bytes(src.read_bytes())
    damage(img, zero=[(0, 512), (35586048, REGION), (43278336, REGION), (50966528, REGION)])
    out = tmp_path / "out.img"
    code, _o, err = run_cli("repair", str(img), str(out), "-pw", "password12!@", "-kp",
                            str(kpg), "-f")
    assert code == EXIT_PARTIAL, err
    assert _digests_of(src, out) == reference_digests()["aes_128_diffuser"]["windows"]


@requires_real
def test_real_used_space_only_copy_gone(real_image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = real_image("eow_partial")
    img = tmp_path / "in.img"
    img.write_bytes(src.read_bytes())
    damage(img, zero=[(0, 512), (35586048, REGION)])
    out = tmp_path / "out.img"
    report = tmp_path / "r.json"
    code, _o, err = run_cli("repair", str(img), str(out), "-pw", "password12!@", "-f",
                            "--report", str(report))
    assert code == EXIT_PARTIAL, err
    assert json.loads(report.read_text())["metadata_source"] == "scan"
    assert _digests_of(src, out) == reference_digests()["eow_partial"]["windows"]


@requires_real
def test_real_vista_header_gone(real_image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import VISTA_RP

    src = real_image("vista")
    img = tmp_path / "in.img"
    img.write_bytes(src.read_bytes())
    damage(img, zero=[(0, 512)])
    out = tmp_path / "out.img"
    report = tmp_path / "r.json"
    code, _o, err = run_cli("repair", str(img), str(out), "-rp", VISTA_RP, "-f", "--report",
                            str(report))
    assert code == EXIT_PARTIAL, err
    # the Vista header *is* sector 0 of the volume: lost (no backup in a truncated capture);
    # the volume reaches at least the metadata copies (32 and 64 GB in): beyond the capture,
    # that is missing, not a smaller volume
    doc = json.loads(report.read_text())
    assert [(d["offset"], d["length"]) for d in doc["damaged"] if d["reason"] != MISSING] == [
        (0, 512)]
    assert doc["volume_size"] > 64 * 10**9
    got = _digests_of(src, out)
    want = reference_digests()["vista"]["windows"]
    assert {k: v for k, v in got.items() if k != "0"} == {k: v for k, v in want.items()
                                                          if k != "0"}


# --------------------------------------------------------------------------------------------
# a real NTFS (mkntfs) inside the synthetic volume
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ntfs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    import shutil
    import subprocess

    from bdekit import synth

    if shutil.which("mkntfs") is None:
        pytest.skip("mkntfs is not installed")
    work = tmp_path_factory.mktemp("ntfs")
    raw = work / "ntfs.raw"
    with open(raw, "wb") as fh:
        fh.truncate(24 * MiB)
    subprocess.run(["mkntfs", "-F", "-Q", "-s", "512", str(raw)], check=True,
                   capture_output=True)
    img = work / "ntfs.img"
    manifest = synth.build(img, source=raw, method="aes-cbc-128", seed="ntfs")
    return raw, img, manifest.vmk


def test_mkntfs_relocated_header_zeroed(ntfs: tuple[Path, Path, str], tmp_path: Path) -> None:
    raw, img0, vmk = ntfs
    img = tmp_path / "in.img"
    img.write_bytes(img0.read_bytes())
    from bdekit.volume.bde import open_bde

    vol = open_bde(str(img))
    reloc = vol.metadata.virtualization
    assert reloc is not None
    vol.source.close()
    damage(img, zero=[(reloc[0], reloc[1])])
    out = tmp_path / "out.img"
    code, _o, err = run_cli("repair", str(img), str(out), "--vmk", vmk, "-f")
    assert code == EXIT_PARTIAL, err
    # sectors 1-15 are reported lost; mkntfs left them zero, so the output is the volume
    check_repaired(out, raw, [(512, 8192 - 512)])
    assert out.read_bytes() == raw.read_bytes()


def test_mkntfs_everything_gone_with_key_package(ntfs: tuple[Path, Path, str],
                                                 tmp_path: Path) -> None:
    """Header, three copies and the relocated block destroyed: the key package and the backup
    boot sector bring the volume back."""
    raw, img0, vmk = ntfs
    kpg = tmp_path / "v.kpg"
    assert run_cli("keypackage", "export", str(img0), str(kpg), "--vmk", vmk)[0] == EXIT_OK
    from bdekit.escrow.keypackage import read_key_package

    info = read_key_package(kpg).describe()
    img = tmp_path / "in.img"
    img.write_bytes(img0.read_bytes())
    reloc = info["relocated_header"]
    damage(img, zero=[(0, 512), (reloc[0], reloc[1])],
           garble=[(o, REGION) for o in info["metadata_offsets"]])
    out = tmp_path / "out.img"
    code, _o, err = run_cli("repair", str(img), str(out), "--vmk", vmk, "-kp", str(kpg), "-f")
    assert code == EXIT_PARTIAL, err
    check_repaired(out, raw, [(512, 8192 - 512)])


def test_repair_bde_help_switch() -> None:
    code, out, _e = run_cli("repair", "-?")
    assert code == EXIT_OK and "-KeyPackage" in out and "-LogFile" in out


def test_fvek_with_relocated_header_zeroed(xts: Synth, tmp_path: Path) -> None:
    """A raw FVEK authenticates nothing: it is checked on the boot sector's backup."""
    img = xts.copy(tmp_path / "in.img")
    damage(img, zero=[(xts.layout["relocated_offset"], 8192)])
    out = tmp_path / "out.img"
    code, _o, err = run_cli("repair", str(img), str(out), "--fvek", xts.manifest.fvek, "-f")
    assert code == EXIT_PARTIAL, err
    check_repaired(out, xts.reference, [(512, 8192 - 512)])
    wrong = "11" * (len(xts.manifest.fvek) // 2)
    code, _o, err = run_cli("repair", str(img), str(out), "--fvek", wrong, "-f")
    assert code == EXIT_KEY and "wrong FVEK" in err
