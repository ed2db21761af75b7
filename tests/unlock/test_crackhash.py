"""``bdekit hash``: every line is checked by an independent key derivation written here
(hashlib stretch, cryptography's AES-CCM) with the real images' known passwords and recovery
passwords; the checker itself is first checked on the published hashcat and John examples."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from tests.conftest import (
    FIXTURES,
    REAL_PASSWORD,
    REAL_RP,
    VISTA_RP,
    requires_real,
    run_cli,
)

HASHCAT_EXAMPLE = (  # hashcat module 22100 self-test hash, password "hashcat"
    "$bitlocker$1$16$6f972989ddc209f1eccf07313a7266a2$1048576$12$3a33a8eaff5e6f81d907b591$60"
    "$316b0f6d4cb445fb056f0e3e0633c413526ff4481bbf588917b70a4e8f8075f5ceb45958a800b42cb7ff9b7f"
    "5e17c6145bf8561ea86f52d3592059fb")
JOHN_RP_EXAMPLE = (  # John the Ripper's recovery password test vector
    "$bitlocker$2$16$432dd19f37dd413a88552225628c8ae5$1048576$12$a0da3fc75f6cd30106000000$60"
    "$3e57c68216ef3d2b8139fdb0ec74254bdf453e688401e89b41cae7c250739a8b36edd4fe86a597b5823cf3e0"
    "f41c98f623b528960a4bee00c42131ef", "111683-110022-683298-209352-468105-648483-571252-334455")


def initial_hash(secret: str, recovery: bool) -> bytes:
    if recovery:
        blocks = [int(b) // 11 for b in secret.split("-")]
        return hashlib.sha256(struct.pack("<8H", *blocks)).digest()
    return hashlib.sha256(hashlib.sha256(secret.encode("utf-16-le")).digest()).digest()


def stretch(initial: bytes, salt: bytes, rounds: int) -> bytes:
    last = bytes(32)
    for count in range(rounds):
        last = hashlib.sha256(last + initial + salt + struct.pack("<Q", count)).digest()
    return last


def verify(line: str, secret: str) -> bytes:
    """The VMK the line's ciphertext holds, if ``secret`` opens it (AES-CCM MAC checked)."""
    parts = line.split("$")
    assert parts[1] == "bitlocker" and parts[3] == "16" and parts[6] == "12" \
        and parts[8] == "60"
    attack, salt, rounds = int(parts[2]), bytes.fromhex(parts[4]), int(parts[5])
    nonce, data = bytes.fromhex(parts[7]), bytes.fromhex(parts[9])
    key = stretch(initial_hash(secret, attack >= 2), salt, rounds)
    plain = AESCCM(key, tag_length=16).decrypt(nonce, data[16:] + data[:16], None)
    size, _role, kind = struct.unpack_from("<3H", plain)
    assert (size, kind, len(plain)) == (0x2C, 1, 44)
    assert plain[9] == 0x20  # key type 0x20xx
    return plain[12:]


def test_checker_accepts_published_examples() -> None:
    verify(HASHCAT_EXAMPLE, "hashcat")
    verify(*JOHN_RP_EXAMPLE)
    with pytest.raises(Exception):  # noqa: B017 - cryptography's InvalidTag
        verify(HASHCAT_EXAMPLE, "hashcaT")


def hashes(image: Path) -> list[dict]:  # type: ignore[type-arg]
    code, out, err = run_cli("hash", "--json", str(image))
    assert code == 0, err
    return json.loads(out)["hashes"]  # type: ignore[no-any-return]


@requires_real
@pytest.mark.real
@pytest.mark.parametrize("name, secrets", [
    ("aes-xts_128", {"password": REAL_PASSWORD}),
    ("recovery_password", {"recovery-password": REAL_RP, "password": REAL_PASSWORD}),
    ("vista", {"recovery-password": VISTA_RP}),
])
def test_hash_lines_verify(real_image, name: str, secrets: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    rows = hashes(real_image(name))
    assert {r["type"] for r in rows} == set(secrets)
    for row in rows:
        assert row["attack_type"] in ((0, 1) if row["type"] == "password" else (2, 3))
    checked = {}
    for row in rows:
        if row["attack_type"] in (1, 3):
            checked[row["type"]] = verify(row["hash"], secrets[row["type"]])
    assert set(checked) == set(secrets)
    # the fast (0/2) line is the same hash with the other type digit
    for row in rows:
        twin = row["hash"].replace(f"$bitlocker${row['attack_type']}$",
                                   f"$bitlocker${row['attack_type'] | 1}$", 1)
        assert twin in {r["hash"] for r in rows}


def test_hash_fixture_recovery_password() -> None:
    path = FIXTURES / "xts128-rp.img"
    manifest = json.loads(Path(f"{path}.manifest.json").read_text())
    rows = hashes(path)
    assert [r["attack_type"] for r in rows] == [2, 3]
    assert rows[0]["protector"] == manifest["protectors"][0]["guid"]
    vmk = verify(rows[1]["hash"], manifest["protectors"][0]["recovery_password"])
    assert vmk.hex() == manifest["vmk"]


def test_hash_without_crackable_protector() -> None:
    code, out, err = run_cli("hash", str(FIXTURES / "cbc128-bek.img"))
    assert code == 5 and out == "" and "startup-key" in err


@requires_real
@pytest.mark.real
def test_hash_on_sparse_2tb_and_damaged_header(real_image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    big = tmp_path / "big.img"
    shutil.copyfile(real_image("recovery_password"), big)
    os.truncate(big, 2 << 40)
    started = time.perf_counter()
    rows = hashes(big)
    assert time.perf_counter() - started < 20 and len(rows) == 4
    damaged = tmp_path / "damaged.img"
    shutil.copyfile(real_image("recovery_password"), damaged)
    with open(damaged, "r+b") as fh:
        fh.write(bytes(512))  # the volume header is gone: the scan finds the metadata
    code, out, err = run_cli("hash", str(damaged))
    assert code == 0, err
    assert sorted(out.split()) == sorted(r["hash"] for r in rows)
