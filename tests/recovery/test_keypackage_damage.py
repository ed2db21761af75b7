"""Damaged key packages (issue 11, class 7): a package whose checksum fails is used only for
what verifies (CRC32s that hold, AES-CCM MACs), never trusted after a warning; a garbage
``-kp`` never stops a repair the volume's own metadata can do.

The reference plaintext is the NTFS image the synthetic volume was built around."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bdekit.errors import EXIT_FORMAT, EXIT_KEY, EXIT_OK, EXIT_PARTIAL
from bdekit.escrow.keypackage import HEADER_SIZE, read_key_package
from bdekit.format.constants import DatumType
from bdekit.format.metadata import parse_datums
from tests.conftest import run_cli
from tests.recovery.conftest import NtfsVolume, build_ntfs_volume
from tests.recovery.rule import assert_honest, unflagged, verdict
from tests.repair_support import damage

REGION = 64 << 10


@pytest.fixture(scope="module")
def vol(tmp_path_factory: pytest.TempPathFactory) -> NtfsVolume:
    return build_ntfs_volume(tmp_path_factory, "aes-xts-128")


@pytest.fixture(scope="module")
def package(vol: NtfsVolume, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("kpg") / "v.kpg"
    code, _o, err = run_cli("keypackage", "export", str(vol.image), str(path), "--vmk",
                            vol.manifest.vmk)
    assert code == EXIT_OK, err
    return path.read_bytes()


@pytest.fixture(scope="module")
def wrecked(vol: NtfsVolume, tmp_path_factory: pytest.TempPathFactory) -> Path:
    img = vol.copy(tmp_path_factory.mktemp("wrecked") / "in.img")
    damage(img, zero=[(0, 512)] + [(o, REGION) for o in vol.layout["metadata_offsets"]])
    return img


def _repair(img: Path, pkg: bytes, tmp_path: Path, *secret: str) -> tuple[int, str, Path]:
    path = tmp_path / "p.kpg"
    path.write_bytes(pkg)
    out = tmp_path / "out.img"
    for stale in (out, tmp_path / "r.json", tmp_path / "out.img.map"):
        stale.unlink(missing_ok=True)
    code, _o, err = run_cli("repair", str(img), str(out), "-kp", str(path),
                            "--report", str(tmp_path / "r.json"), *secret)
    return code, err, out


def _datum_spans(pkg: bytes) -> dict[int, tuple[int, int]]:
    """(offset, size) in the package file of its VMK (8) and FVEK (5) datums."""
    size = int.from_bytes(pkg[HEADER_SIZE:HEADER_SIZE + 4], "little")
    datums = parse_datums(pkg[HEADER_SIZE + 48:HEADER_SIZE + size], HEADER_SIZE + 48)
    return {int(d.type): (d.offset, d.size) for d in datums
            if d.type in (DatumType.VOLUME_MASTER_KEY, DatumType.AES_CCM_ENCRYPTED_KEY)}


def _variants(pkg: bytes, count: int, seed: int) -> list[tuple[str, bytes]]:
    """One byte changed, or four bytes cut out, at seeded positions (every part: header,
    block header copy, dataset header, datums)."""
    rng = random.Random(seed)
    out = []
    for pos in sorted(rng.sample(range(len(pkg) - 4), count)):
        flipped = bytearray(pkg)
        flipped[pos] ^= 0x01 << rng.randrange(8)
        out.append((f"flip@{pos}", bytes(flipped)))
        out.append((f"cut4@{pos}", pkg[:pos] + pkg[pos + 4:]))
    return out


def test_damaged_packages_obey_the_rule(vol: NtfsVolume, package: bytes, wrecked: Path,
                                        tmp_path: Path) -> None:
    """Every variant: exit 0 with the exact plaintext, or exit 6 with every wrong byte
    reported, or a refusal that leaves nothing behind - and never "wrong key" (exit 4): the
    VMK given is right."""
    failures = []
    for name, data in _variants(package, 14, seed=11):
        code, _err, out = _repair(wrecked, data, tmp_path, "--vmk", vol.manifest.vmk)
        result = verdict(code, out, vol.raw, tmp_path / "r.json")
        if not result.ok:
            failures.append(f"{name}: exit {code}: {result.outcome}")
    assert not failures, "\n".join(failures)


def test_block_header_byte_changed_is_not_trusted(vol: NtfsVolume, package: bytes,
                                                  wrecked: Path, tmp_path: Path) -> None:
    """A byte of the block header copy in the package header (its copy-offset and state
    fields steer reads): the header CRC32 fails, so none of it is used."""
    data = bytearray(package)
    data[72 + 33] ^= 0x01  # offset of copy 1, second byte
    pkg = read_key_package(_write(tmp_path, bytes(data)))
    assert not pkg.intact and pkg.block_header is None
    assert pkg.hints["metadata_offsets"][0] != vol.layout["metadata_offsets"][0]
    code, err, out = _repair(wrecked, bytes(data), tmp_path, "--vmk", vol.manifest.vmk)
    assert code == EXIT_PARTIAL, err
    assert_honest(code, out, vol.raw, tmp_path / "r.json")
    # NTFS structure proves most sectors even so
    assert unflagged(out, tmp_path / "r.json") > 8 << 20


def test_dataset_damaged_header_intact(vol: NtfsVolume, package: bytes, wrecked: Path,
                                       tmp_path: Path) -> None:
    """A byte of the description datum: the dataset CRC32 fails, the header's holds; its
    layout facts serve and the VMK / FVEK datums verify by AES-CCM: exact output."""
    size = int.from_bytes(package[HEADER_SIZE:HEADER_SIZE + 4], "little")
    datums = parse_datums(package[HEADER_SIZE + 48:HEADER_SIZE + size], HEADER_SIZE + 48)
    desc = next(d for d in datums if d.type == DatumType.UNICODE)
    data = bytearray(package)
    data[desc.offset + 10] ^= 0x01
    pkg = read_key_package(_write(tmp_path, bytes(data)))
    assert not pkg.intact and pkg.block_header is not None
    assert {d.type for d in pkg.datums} == {DatumType.VOLUME_MASTER_KEY,
                                            DatumType.AES_CCM_ENCRYPTED_KEY}
    code, err, out = _repair(wrecked, bytes(data), tmp_path, "--vmk", vol.manifest.vmk)
    assert code in (EXIT_OK, EXIT_PARTIAL), err
    assert_honest(code, out, vol.raw, tmp_path / "r.json")


def test_damaged_fvek_datum_is_damage_not_a_wrong_key(vol: NtfsVolume, package: bytes,
                                                      wrecked: Path, tmp_path: Path) -> None:
    """The FVEK datum's ciphertext changed: the recovery password opens the VMK datum (its
    MAC holds), so the failing FVEK datum is damage (exit 3), not a wrong key (exit 4)."""
    off, size = _datum_spans(package)[int(DatumType.AES_CCM_ENCRYPTED_KEY)]
    data = bytearray(package)
    data[off + size - 3] ^= 0x40
    code, err, out = _repair(wrecked, bytes(data), tmp_path, "-rp", vol.recovery_password())
    assert code == EXIT_FORMAT and code != EXIT_KEY, err
    assert not out.exists()


def test_garbage_package_does_not_stop_a_repair(vol: NtfsVolume, tmp_path: Path) -> None:
    """The volume's own metadata is intact: a -kp file that holds no package is skipped
    with a warning and the repair goes on."""
    garbage = tmp_path / "garbage.kpg"
    garbage.write_bytes(b"BDEKITKP" + bytes(range(256)) * 3)
    out = tmp_path / "out.img"
    code, _o, err = run_cli("repair", str(vol.image), str(out), "-kp", str(garbage),
                            "--vmk", vol.manifest.vmk, "-f")
    assert code == EXIT_OK, err
    assert "key package skipped" in err
    assert out.read_bytes() == vol.raw.read_bytes()


def test_garbage_package_named_when_nothing_unlocks(wrecked: Path, vol: NtfsVolume,
                                                    tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.kpg"
    garbage.write_bytes(b"not a package at all" * 50)
    out = tmp_path / "out.img"
    code, _o, err = run_cli("repair", str(wrecked), str(out), "-kp", str(garbage),
                            "--vmk", vol.manifest.vmk)
    assert code == EXIT_FORMAT and "garbage.kpg" in err and not out.exists()


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "probe.kpg"
    path.write_bytes(data)
    return path
