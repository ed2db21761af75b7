"""Salvage without metadata (issue 11): ``repair --fvek`` when every metadata copy is destroyed
or the capture stops before the first one. The method is inferred (or ``--method``), the boot
sector found by trial decryption, every guess reported: exit 6, and every byte that differs
from the plaintext is in the damage list and the mapfile.

References are independent of bdekit's decryptor: the NTFS image the synthetic volume was
built around, and the peer tools' window digests of the real images."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from bdekit.errors import EXIT_KEY, EXIT_PARTIAL, EXIT_USAGE
from bdekit.escrow.secrets import Secrets
from bdekit.recovery.method_guess import guess_method
from bdekit.volume.bde import open_bde
from tests.conftest import (
    REAL_IMAGES,
    REAL_PASSWORD,
    reference_digests,
    requires_real,
    run_cli,
    window_digests,
)
from tests.recovery.conftest import MiB, NtfsVolume, build_ntfs_volume
from tests.recovery.rule import assert_honest, unflagged
from tests.repair_support import damage

REGION = 64 << 10


def _destroy_metadata(vol: NtfsVolume, img: Path, *, header: bool = True) -> None:
    zero = [(o, REGION) for o in vol.layout["metadata_offsets"]]
    damage(img, zero=[(0, 512), *zero] if header else zero)


def _salvage(img: Path, out: Path, fvek: str, *extra: str) -> tuple[int, str, dict]:  # type: ignore[type-arg]
    report = out.with_suffix(".json")
    code, _o, err = run_cli("repair", str(img), str(out), "--fvek", fvek, "--report",
                            str(report), "-f", *extra)
    return code, err, json.loads(report.read_text()) if report.exists() else {}


@pytest.mark.parametrize("method", ["aes-xts-128", "aes-cbc-256-diffuser", "aes-cbc-128"])
def test_every_copy_destroyed_method_inferred(method: str, tmp_path: Path,
                                              tmp_path_factory: pytest.TempPathFactory) -> None:
    vol = build_ntfs_volume(tmp_path_factory, method)
    img = vol.copy(tmp_path / "in.img")
    _destroy_metadata(vol, img)
    out = tmp_path / "out.img"
    code, err, rep = _salvage(img, out, vol.fvek)
    assert code == EXIT_PARTIAL, err
    assert_honest(code, out, vol.raw, out.with_suffix(".json"))
    assert rep["method"] == method
    notes = " ".join(rep["notes"])
    assert f"method {method}" in notes and "inferred" in notes
    assert f"relocated header block found at offset {vol.layout['relocated_offset']}" in notes
    # the file system's structure proves most sectors: they are not reported
    assert unflagged(out, out.with_suffix(".json")) > 12 * MiB
    reasons = {d["reason"] for d in rep["damaged"]}
    assert any("all-zero ciphertext" in r for r in reasons)  # the destroyed copies
    assert any("relocated header block" in r for r in reasons)  # its extent is a guess


def test_4k_sectors_inferred(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """4096-byte sectors: under XTS only the right sector size decrypts (the tweak is the
    sector number); the relocated boot sector confirms it."""
    vol = build_ntfs_volume(tmp_path_factory, "aes-xts-256", sector_size=4096)
    img = vol.copy(tmp_path / "in.img")
    _destroy_metadata(vol, img)
    out = tmp_path / "out.img"
    code, err, rep = _salvage(img, out, vol.fvek)
    assert code == EXIT_PARTIAL, err
    assert_honest(code, out, vol.raw, out.with_suffix(".json"))
    assert "aes-xts-256, 4096-byte sectors" in " ".join(rep["notes"])
    assert unflagged(out, out.with_suffix(".json")) > 12 * MiB


def test_relocated_block_destroyed_too(tmp_path: Path,
                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    """Header, copies and the relocated header block zeroed: the NTFS backup boot sector in
    the volume's last sector, found by trial decryption, gives sector 0 and the size."""
    vol = build_ntfs_volume(tmp_path_factory, "aes-xts-128")
    img = vol.copy(tmp_path / "in.img")
    _destroy_metadata(vol, img)
    damage(img, zero=[(vol.layout["relocated_offset"], 8192)])
    out = tmp_path / "out.img"
    code, err, rep = _salvage(img, out, vol.fvek)
    assert code == EXIT_PARTIAL, err
    assert_honest(code, out, vol.raw, out.with_suffix(".json"))
    assert out.read_bytes()[:512] == vol.raw.read_bytes()[:512]
    assert rep["volume_size"] == vol.raw.stat().st_size
    assert any("backup" in r for r in rep["repairs"])


def test_method_given_and_wrong_method(tmp_path: Path,
                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    vol = build_ntfs_volume(tmp_path_factory, "aes-xts-128")
    img = vol.copy(tmp_path / "in.img")
    _destroy_metadata(vol, img)
    out = tmp_path / "out.img"
    code, err, rep = _salvage(img, out, vol.fvek, "--method", "aes-xts-128")
    assert code == EXIT_PARTIAL, err
    assert_honest(code, out, vol.raw, out.with_suffix(".json"))
    assert "(given)" in " ".join(rep["notes"])
    # the same 32 bytes as an AES-256-CBC key decrypt nothing to structure: refused
    out2 = tmp_path / "out2.img"
    code, err, _rep = _salvage(img, out2, vol.fvek, "--method", "aes-cbc-256")
    assert code == EXIT_KEY and "wrong FVEK" in err
    assert not out2.exists()


def test_fvek_file_and_only_copies_destroyed(tmp_path: Path,
                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    """The FVEK from a raw key file; the volume header survives (it names the copies'
    regions, reported as guesses) while every copy is zeroed."""
    vol = build_ntfs_volume(tmp_path_factory, "aes-xts-128")
    img = vol.copy(tmp_path / "in.img")
    _destroy_metadata(vol, img, header=False)
    key = tmp_path / "key.fvek"
    key.write_bytes(bytes.fromhex(vol.fvek))
    out = tmp_path / "out.img"
    report = tmp_path / "r.json"
    code, _o, err = run_cli("repair", str(img), str(out), "--fvek-file", str(key),
                            "--report", str(report))
    assert code == EXIT_PARTIAL, err
    assert_honest(code, out, vol.raw, report)
    rep = json.loads(report.read_text())
    for off in vol.layout["metadata_offsets"]:
        assert any(d["offset"] <= off < d["offset"] + d["length"] for d in rep["damaged"])
    assert "metadata regions at" in " ".join(rep["notes"])


def test_truncated_before_the_first_copy(tmp_path: Path,
                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    """The volume header survives, every copy and the relocated block lie beyond the end of
    the capture: no boot sector, the size is the image's, the first 8 KiB are lost."""
    vol = build_ntfs_volume(tmp_path_factory, "aes-xts-128")
    img = vol.copy(tmp_path / "in.img")
    cut = vol.layout["metadata_offsets"][0] - 4 * MiB
    os.truncate(img, cut)
    out = tmp_path / "out.img"
    code, err, rep = _salvage(img, out, vol.fvek)
    assert code == EXIT_PARTIAL, err
    assert rep["volume_size"] == cut
    assert_honest(code, out, vol.raw.read_bytes()[:cut], out.with_suffix(".json"))
    head = [d for d in rep["damaged"] if d["offset"] < 8192]
    assert head[0]["offset"] == 0 and head[-1]["offset"] + head[-1]["length"] >= 8192
    assert sum(d["length"] for d in head) >= 8192
    assert unflagged(out, out.with_suffix(".json")) > cut // 2


def test_no_structure_anywhere_asks_for_the_method(tmp_path: Path) -> None:
    """Random bytes: no candidate method decrypts anything to structure; a 32-byte key could
    be several methods, so nothing is guessed and nothing is written."""
    img = tmp_path / "noise.img"
    img.write_bytes(os.urandom(2 * MiB))
    out = tmp_path / "out.img"
    code, err, _rep = _salvage(img, out, "11" * 32)
    assert code in (EXIT_KEY, EXIT_USAGE) and not out.exists(), err


def test_guess_method_scores(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The sample decides among the methods a 64-byte key may belong to."""
    vol = build_ntfs_volume(tmp_path_factory, "aes-cbc-256-diffuser")
    data = vol.image.read_bytes()
    winner, ranked = guess_method(lambda o, n: data[o:o + n], len(data),
                                  bytes.fromhex(vol.fvek))
    assert winner is not None and winner.method.label == "aes-cbc-256-diffuser"
    assert winner.sector_size == 512
    others = [c for c in ranked if c.method != winner.method]
    assert others and all(c.score == 0 for c in others)


def _real_fvek(name: str, src: Path) -> str:
    """The README's FVEK; for the used-space-only image (none listed), the one its password
    unlocks (AES-CCM authenticates it)."""
    listed = REAL_IMAGES[name][2]
    if listed:
        return listed
    volume = open_bde(str(src))
    return volume.unlock(Secrets(passwords=[REAL_PASSWORD])).fvek.hex()


@requires_real
@pytest.mark.real
@pytest.mark.parametrize("name", ["aes-xts_128", "aes_256", "aes_128_diffuser", "eow_partial"])
def test_real_image_every_copy_destroyed(name: str, tmp_path: Path,
                                         real_image: Callable[[str], Path]) -> None:
    """Windows' own images, header and copies zeroed, the FVEK from their README: every
    sector whose ciphertext was written decrypts as libbde and dissect.fve decrypt it (on the
    partly encrypted used-space-only image nothing decrypts to structure: its plaintext
    boot sector and its EOW bitmaps carry the salvage)."""
    src = real_image(name)
    code, info, _e = run_cli("info", str(src), "--json")
    offsets = [c["offset"] for c in json.loads(info)["metadata_copies"]]
    img = tmp_path / "in.img"
    img.write_bytes(src.read_bytes())
    damage(img, zero=[(0, 512)] + [(o, REGION) for o in offsets])
    out = tmp_path / "out.img"
    code, err, rep = _salvage(img, out, _real_fvek(name, src))
    assert code == EXIT_PARTIAL, err
    assert rep["method"] == REAL_IMAGES[name][1]
    data = out.read_bytes()
    got = window_digests(src, lambda o, n: data[o:o + n])
    assert got == reference_digests()[name]["windows"]
