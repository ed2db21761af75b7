"""Key files of other tools (read and written) and the secrets escrowed under the VMK.

Written files round-trip through the peers: the dislocker file through dislocker-file and
dissect.fve, the libbde ``FVEK[:TWEAK]`` text through bdemount (skipped when absent). Read
files are built here from the published layouts. The escrowed recovery password and startup
key are compared with the real images' README and BEK file.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from bdekit.escrow import keyfiles
from bdekit.volume.bde import open_volume
from tests.conftest import (
    FIXTURES,
    REAL_DIR,
    REAL_IMAGES,
    REAL_PASSWORD,
    REAL_RP,
    requires_real,
    run_cli,
)

METHOD_FIXTURES = ["xts128-rp", "xts256-pw", "cbc128-bek", "cbc256-clear", "diffuser128-rp",
                   "diffuser256-pw"]


def fixture(name: str) -> tuple[Path, dict]:  # type: ignore[type-arg]
    path = FIXTURES / f"{name}.img"
    return path, json.loads(Path(f"{path}.manifest.json").read_text())


def plaintext(path: Path, manifest: dict, length: int = 1 << 20) -> bytes:  # type: ignore[type-arg]
    return open_volume(path, fvek=manifest["fvek"]).read(length)


def export(path: Path, fmt: str, out: Path, *extra: str) -> None:
    _, manifest = fixture(path.name[:-4])
    code, _o, err = run_cli("keys", "export", str(path), "--vmk", manifest["vmk"], "--format",
                            fmt, "--output", str(out), *extra)
    assert code == 0, err
    assert out.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("name", METHOD_FIXTURES)
def test_dislocker_file_round_trip(name: str, tmp_path: Path) -> None:
    path, manifest = fixture(name)
    out = tmp_path / "key.fvek"
    export(path, "dislocker", out)
    data = out.read_bytes()
    assert len(data) == 66 and struct.unpack("<H", data[:2])[0] == manifest["method_id"]
    expected = plaintext(path, manifest)
    bde = pytest.importorskip("dissect.fve.bde")
    size = len(bytes.fromhex(manifest["fvek"]))
    with open(path, "rb") as fh:
        vol = bde.BDE(fh)
        vol.unlock_with_fvek(data[2:2 + size])  # dislocker too reads by the volume's method
        stream = vol.open()
        stream.seek(0)
        assert stream.read(1 << 20) == expected
    if shutil.which("dislocker-file"):
        plain = tmp_path / "plain"
        subprocess.run(["dislocker-file", "-V", str(path), "-k", str(out), "--", str(plain)],
                       check=True, capture_output=True, timeout=120)
        assert plain.read_bytes()[8192:1 << 20] == expected[8192:]
    # and bdekit reads its own file back
    code, _o, err = run_cli("info", str(path), "--fvek-file", str(out))
    assert code == 0, err


@pytest.mark.parametrize("name", METHOD_FIXTURES)
def test_libbde_text_round_trip(name: str, tmp_path: Path) -> None:
    if shutil.which("bdemount") is None or not os.path.exists("/dev/fuse"):
        pytest.skip("bdemount (libbde-utils) or FUSE is absent")
    path, manifest = fixture(name)
    out = tmp_path / "key.txt"
    export(path, "libbde", out)
    text = out.read_text().strip()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(["bdemount", "-k", text, str(path), str(mnt)], capture_output=True,
                          timeout=60)
    if done.returncode != 0:
        pytest.skip(f"bdemount cannot mount here: {done.stderr.decode()[-200:]}")
    try:
        theirs = (mnt / "bde1").read_bytes()[:1 << 20]
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True) \
            if shutil.which("fusermount3") else subprocess.run(["fusermount", "-u", str(mnt)])
    assert theirs[8192:] == plaintext(path, manifest)[8192:len(theirs)]


def _unlocks(path: Path, keyfile: Path, manifest: dict) -> str:  # type: ignore[type-arg]
    out = keyfile.parent / "out.img"
    code, _o, err = run_cli("decrypt", str(path), str(out), "--fvek-file", str(keyfile))
    assert code == 0, err
    assert out.read_bytes()[:1 << 20] == plaintext(path, manifest)
    out.unlink()
    return err


def test_read_mislabelled_memprocfs_file(tmp_path: Path) -> None:
    """MemProcFS writes 0x8005 for XTS-128: the volume's method is used, and said."""
    path, manifest = fixture("xts128-rp")
    key = tmp_path / "ffffe0011234.fvek"
    key.write_bytes(struct.pack("<H", 0x8005) + bytes.fromhex(manifest["fvek"]) + bytes(32))
    err = _unlocks(path, key, manifest)
    assert "names method aes-xts-256 (0x8005)" in err and "using the volume's" in err


@pytest.mark.parametrize("content", [
    "{key}:{tweak}\n",  # bdemount -k FVEK:TWEAK
    "[FVEK] Cipher: AES 128-bit with Diffuser\n[FVEK] FVEK: {key}\n[FVEK] TWEAK: {tweak}\n",
    "raw",
    "dislocker34",
])
def test_read_diffuser_key_files(content: str, tmp_path: Path) -> None:
    path, manifest = fixture("diffuser128-rp")
    fvek = bytes.fromhex(manifest["fvek"])
    data_key, tweak = fvek[:16], fvek[32:48]
    key = tmp_path / "key"
    if content == "raw":
        key.write_bytes(data_key + tweak)  # Volatility --dump-dir: FVEK then tweak key
    elif content == "dislocker34":
        key.write_bytes(struct.pack("<H", 0x8000) + data_key + tweak)
    else:
        key.write_text(content.format(key=data_key.hex(), tweak=tweak.hex()))
    _unlocks(path, key, manifest)


def test_read_vmk_files(tmp_path: Path) -> None:
    path, manifest = fixture("xts256-pw")
    vmk = bytes.fromhex(manifest["vmk"])
    for data in (vmk, (manifest["vmk"] + "\n").encode(),
                 struct.pack("<6H", 0x2C, 0, 1, 0, 0x2003, 0) + vmk):
        key = tmp_path / "vmk"
        key.write_bytes(data)
        code, _out, err = run_cli("info", str(path), "--vmk-file", str(key), "--json")
        assert code == 0, err
    bad = tmp_path / "bad"
    bad.write_bytes(b"no key here")
    code, _o, err = run_cli("info", str(path), "--vmk-file", str(bad))
    assert code == 3 and str(bad) in err


def test_export_formats_and_refusals(tmp_path: Path) -> None:
    path, manifest = fixture("xts128-rp")
    out = tmp_path / "k.json"
    audit = tmp_path / "audit.jsonl"
    export(path, "json", out, "--audit-log", str(audit))
    doc = json.loads(out.read_text())
    assert doc["fvek"] == manifest["fvek"] and doc["vmk"] == manifest["vmk"]
    assert manifest["fvek"] not in audit.read_text() and "exported" in audit.read_text()
    code, _o, err = run_cli("keys", "export", str(path), "--vmk", manifest["vmk"], "--output",
                            str(path))
    assert code == 2 and "input" in err
    code, out_text, _e = run_cli("keys", "export", str(path), "--vmk", manifest["vmk"])
    assert out_text.split() == ["FVEK", manifest["fvek"], "VMK", manifest["vmk"]]


def test_escrowed_recovery_password_of_fixture() -> None:
    path, manifest = fixture("xts128-rp")
    code, out, err = run_cli("keys", "export", str(path), "--vmk", manifest["vmk"],
                             "--print-recovery-password")
    assert code == 0, err
    assert out.split()[0] == manifest["protectors"][0]["recovery_password"]
    assert "verified" in out
    code, _o, err = run_cli("keys", "export", str(path), "--fvek", manifest["fvek"],
                            "--print-recovery-password")
    assert code == 4 and "VMK" in err


@requires_real
@pytest.mark.real
def test_escrowed_secrets_of_real_images(real_image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run_cli("keys", "export", str(real_image("recovery_password")), "-pw",
                             REAL_PASSWORD, "--print-recovery-password")
    assert code == 0, err
    assert out.split()[0] == REAL_RP
    beks = tmp_path / "beks"
    code, _o, err = run_cli("keys", "export", str(real_image("startup_key")), "-pw",
                            REAL_PASSWORD, "--write-bek", str(beks))
    assert code == 0, err
    written = list(beks.iterdir())
    assert [p.name for p in written] == ["{B3411A58-3400-420A-8B7E-9B5F706425C0}.BEK"]
    assert written[0].read_bytes() == (REAL_DIR / "startup_key.bek").read_bytes()
    assert written[0].stat().st_mode & 0o777 == 0o600


@requires_real
@pytest.mark.real
def test_real_fvek_in_dislocker_file(real_image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fvek = bytes.fromhex(REAL_IMAGES["aes_128_diffuser"][2] or "")
    key = tmp_path / "k.fvek"
    key.write_bytes(struct.pack("<H", 0x8000) + fvek)
    code, _o, err = run_cli("info", str(real_image("aes_128_diffuser")), "--fvek-file",
                            str(key))
    assert code == 0, err
    assert keyfiles.read_fvek_file(key).format == "dislocker"


def test_fvek_file_on_damaged_volume_for_repair(tmp_path: Path) -> None:
    """No volume header: the file's own method serves and repair checks the key itself."""
    path, manifest = fixture("xts128-rp")
    damaged = tmp_path / "damaged.img"
    damaged.write_bytes(bytes(512) + path.read_bytes()[512:])
    key = tmp_path / "k.fvek"
    key.write_bytes(struct.pack("<H", 0x8004) + bytes.fromhex(manifest["fvek"]).ljust(64, b"\0"))
    out = tmp_path / "out.img"
    code, _o, err = run_cli("repair", str(damaged), str(out), "--fvek-file", str(key))
    assert code == 0, err
    assert out.read_bytes() == plaintext(path, manifest, manifest["volume_size"])
