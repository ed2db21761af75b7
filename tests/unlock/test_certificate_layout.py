"""The certificate protector as Windows 10 writes it (the real smart-card volume), and ours.

Expected values come from the real volume's README (thumbprint, recovery password, NTFS serial)
and from the bytes themselves, parsed here with ``struct`` and checked with ``cryptography``
(AES-CCM, RSA public numbers) independently of bdekit's parsers.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import struct
import uuid
from pathlib import Path
from typing import Any

import pytest
from construct import Container, ListContainer
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from cryptography.hazmat.primitives.serialization import pkcs12

from bdekit import open_volume, synth
from bdekit.errors import EXIT_KEY, EXIT_OK, WrongKeyError
from bdekit.format import structs
from bdekit.format.certificate import build_rsa_public_blob
from bdekit.format.metadata import Datum, parse_datum
from bdekit.format.protector import Protector
from bdekit.unlock import certificates
from bdekit.volume.bde import open_bde
from tests.conftest import REAL_DIR
from tests.conftest import run_cli as run
from tests.unlock.certs import make_cert

REAL_RP = "538329-080597-399190-348700-323345-161062-279807-230978"
REAL_THUMBPRINT = "fb23e268a833a7f330d1b427cf2ef6c8dbe14e0f"
REAL_SERIAL = 0xC4EC5396EC53819A

#: (type, role, size) of the nested datums, from the format notes (section 10)
REAL_CHILDREN = [(0x000C, 0, 264), (0x000D, 0x000C, 291), (0x000E, 0, 45), (0x0004, 0, 92),
                 (0x0005, 0, 80)]


@pytest.fixture(scope="module")
def smart_card(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = REAL_DIR / "smart_card.img.gz"
    if not source.is_file():
        pytest.skip("smart_card.img.gz is absent")
    out = tmp_path_factory.mktemp("smart") / "smart_card.img"
    with gzip.open(source, "rb") as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    out.chmod(0o444)
    return out


@pytest.fixture(scope="module")
def card() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    return make_cert("Smart card user")


@pytest.fixture(scope="module")
def other() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    return make_cert("Someone else")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory, card) -> tuple[Path, Any]:  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("synthcard") / "card.img"
    manifest = synth.build(out, size="4M", seed="card",
                           protectors=[synth.CertificateSpec(card[1]),
                                       synth.RecoveryPasswordSpec()])
    return out, manifest


def pem_file(path: Path, cert: x509.Certificate, key: rsa.RSAPrivateKey | None = None) -> Path:
    data = cert.public_bytes(serialization.Encoding.PEM)
    if key is not None:
        data += key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    path.write_bytes(data)
    return path


def cert_protector(image: Path) -> Protector:
    (prot,) = [p for p in open_bde(image).protectors if p.protection == 0x1000]
    return prot


def ccm_open(key: bytes, datum: bytes) -> bytes:
    """An AES-CCM datum's plaintext: nonce at 8, MAC at 20, ciphertext from 36."""
    return AESCCM(key, tag_length=16).decrypt(datum[8:20], datum[36:] + datum[20:36], None)


def children(prot: Protector) -> list[bytes]:
    return [c.raw for c in prot.datum.children]


def header(raw: bytes) -> tuple[int, int, int, int]:
    return struct.unpack_from("<4H", raw)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# The real volume
# --------------------------------------------------------------------------------------------

@pytest.mark.real
def test_real_protector_shows_thumbprint_key_size_and_public_key(smart_card: Path) -> None:
    prot = cert_protector(smart_card)
    raw = prot.datum.raw
    assert len(raw) == 808 and struct.unpack_from("<H", raw, 34)[0] == 0x1000
    kids = children(prot)
    assert [(header(k)[2], header(k)[1], len(k)) for k in kids] == REAL_CHILDREN
    blob = kids[1][8:]
    magic, bits, exp_len, mod_len, p1, p2 = struct.unpack_from("<4s5I", blob)
    assert (magic, bits, exp_len, mod_len, p1, p2) == (b"RSA1", 2048, 3, 256, 0, 0)
    exponent = int.from_bytes(blob[24:27], "big")
    modulus = int.from_bytes(blob[27:283], "big")
    spki = rsa.RSAPublicNumbers(exponent, modulus).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert kids[2][8:12] == b"gsin" and kids[2][8 + 16:8 + 36].hex() == REAL_THUMBPRINT
    code, out, err = run("info", str(smart_card), "--json")
    assert code == EXIT_OK, err
    (row,) = [p for p in json.loads(out)["protectors"] if p["type"] == "certificate"]
    assert row["thumbprint"] == REAL_THUMBPRINT
    assert row["key_size"] == 2048
    assert row["public_key_fingerprint"] == hashlib.sha256(spki).hexdigest()
    assert "--certificate" in row["opens_with"]
    code, out, _err = run("info", str(smart_card))
    assert f"certificate thumbprint: {REAL_THUMBPRINT}" in out and "RSA 2048 bits" in out


@pytest.mark.real
def test_real_volume_opens_with_its_recovery_password(smart_card: Path) -> None:
    code, out, err = run("info", str(smart_card), "-rp", REAL_RP, "--json", "--show-keys")
    assert code == EXIT_OK, err
    unlocked = json.loads(out)["unlocked"]
    assert unlocked["via"] == "recovery-password"
    vmk = bytes.fromhex(unlocked["vmk"])
    # the escrow copy (use key 0x2006) holds, under the VMK, the key that opens the VMK datum
    kids = children(cert_protector(smart_card))
    use_key = kids[3]
    assert struct.unpack_from("<I", use_key, 8)[0] == 0x2006
    escrowed = ccm_open(vmk, use_key[12:])
    assert escrowed[:12] == bytes.fromhex("2c00000001000000" "06200000")
    assert ccm_open(escrowed[12:], kids[4])[12:] == vmk
    # the RSA ciphertext is not textbook RSA of that key (README, format notes)
    blob = kids[1][8:]
    exponent, modulus = int.from_bytes(blob[24:27], "big"), int.from_bytes(blob[27:283], "big")
    for message in (escrowed[12:], escrowed):
        for order in ("big", "little"):
            textbook = pow(int.from_bytes(message, order), exponent, modulus).to_bytes(256, "big")
            assert kids[0][8:] not in (textbook, textbook[::-1])
    with open_volume(smart_card, recovery_password=REAL_RP) as volume:
        boot = volume.read(512)
    assert struct.unpack_from("<Q", boot, 0x48)[0] == REAL_SERIAL


@pytest.mark.real
def test_real_volume_refuses_another_certificate(smart_card: Path, other, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    both = pem_file(tmp_path / "other.pem", other[1], other[0])
    code, _out, err = run("info", str(smart_card), "--certificate", str(both))
    assert code == EXIT_KEY
    assert REAL_THUMBPRINT in err
    code, _out, _err = run("keys", "find", str(smart_card), "--certificate", str(both))
    assert code == EXIT_KEY


@pytest.mark.real
def test_synthetic_layout_matches_the_real_one(smart_card: Path, synthetic) -> None:  # type: ignore[no-untyped-def]
    image, manifest = synthetic
    real, ours = cert_protector(smart_card), cert_protector(image)
    assert (len(ours.datum.raw), ours.protection, ours.datum.version) == (
        len(real.datum.raw), real.protection, real.datum.version)
    real_kids, our_kids = children(real), children(ours)
    assert [(*header(k), len(k)) for k in our_kids] == [(*header(k), len(k)) for k in real_kids]
    assert our_kids[1][8:32] == real_kids[1][8:32]  # RSA1, bits, lengths, zeros (not the key)
    assert our_kids[1][32:35] == real_kids[1][32:35]  # exponent 65537
    assert our_kids[2][8:24] == real_kids[2][8:24] and our_kids[2][-1:] == real_kids[2][-1:]
    assert our_kids[3][:12] == real_kids[3][:12]  # use key header, key type 0x2006
    assert header(our_kids[3][12:]) == header(real_kids[3][12:])
    vmk = bytes.fromhex(manifest.vmk)
    escrowed = ccm_open(vmk, our_kids[3][12:])
    assert escrowed[:12] == bytes.fromhex("2c00000001000000" "06200000")
    assert escrowed[12:].hex() == manifest.protectors[0]["protector_key"]
    assert ccm_open(escrowed[12:], our_kids[4])[:12] == bytes.fromhex("2c00000001000000"
                                                                       "03200000")
    for kids in (real_kids, our_kids):  # escrow first, then the VMK, same write session
        inner, last = kids[3][12:], kids[4]
        assert inner[8:16] == last[8:16]
        assert struct.unpack_from("<I", last, 16)[0] == struct.unpack_from("<I", inner, 16)[0] + 1


# --------------------------------------------------------------------------------------------
# Synthetic volumes: unlocking, matching
# --------------------------------------------------------------------------------------------

def test_synthetic_card_opens_with_its_key(synthetic, card, other, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    image, manifest = synthetic
    both = pem_file(tmp_path / "card.pem", card[1], card[0])
    code, out, err = run("info", str(image), "--certificate", str(both), "--json", "--show-keys")
    assert code == EXIT_OK, err
    unlocked = json.loads(out)["unlocked"]
    assert (unlocked["via"], unlocked["fvek"]) == ("certificate", manifest.fvek)
    wrong = pem_file(tmp_path / "other.pem", other[1], other[0])
    code, _out, err = run("info", str(image), "--certificate", str(wrong))
    assert code == EXIT_KEY and "is not the one of protector" in err
    # the RSA ciphertext is PKCS#1 v1.5, big-endian, of the raw protector key (our guess)
    body = children(cert_protector(image))[0][8:]
    assert card[0].decrypt(body, certificates.padding.PKCS1v15()).hex() == \
        manifest.protectors[0]["protector_key"]


def test_keys_find_searches_a_certificate_directory(synthetic, card, other, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    image, manifest = synthetic
    folder = tmp_path / "pki"
    (folder / "sub").mkdir(parents=True)
    pem_file(folder / "sub" / "card.crt", card[1])
    pem_file(folder / "other.pem", other[1])
    (folder / "locked.pfx").write_bytes(pkcs12.serialize_key_and_certificates(
        b"x", other[0], other[1], None, serialization.BestAvailableEncryption(b"pw")))
    (folder / "notes.txt").write_text("not a certificate")
    code, out, err = run("keys", "find", str(image), "--certificate", str(folder), "--json")
    assert code == EXIT_OK, err
    rows = {p["guid"]: p for p in json.loads(out)["protectors"]}
    (cand,) = rows[manifest.protectors[0]["guid"]]["candidates"]
    assert cand["source"] == str(folder / "sub" / "card.crt") and cand["match"] == "thumbprint"
    assert "locked.pfx" in err  # skipped with a warning


def _vmk_container(kids: list[Container]) -> Protector:
    vmk = Container(role=2, type=8, version=1, body=Container(
        guid=uuid.UUID(int=9), modified_time=0, unknown=0, protection=0x1000,
        datums=ListContainer(kids)))
    return Protector(parse_datum(structs.DATUM.build(vmk), 0))


def test_a_protector_without_thumbprint_matches_by_public_key(synthetic, card, other) -> None:  # type: ignore[no-untyped-def]
    _image, manifest = synthetic
    real_layout = cert_protector(_image)
    kept: list[Datum] = [c for c in real_layout.datum.children if c.type != 0x000E]
    prot = _vmk_container([structs.DATUM.parse(c.raw) for c in kept])
    assert prot.thumbprint is None
    assert prot.datum.children[1].raw[8:] == build_rsa_public_blob(card[1].public_key())  # type: ignore[arg-type]
    mine = certificates.Certificate(card[1], card[0], "card")
    theirs = certificates.Certificate(other[1], other[0], "other")
    assert certificates.match_certificate(prot, mine) == "public key"
    assert certificates.match_certificate(prot, theirs) is None
    assert certificates.unwrap_vmk(prot, mine).hex() == manifest.vmk
    with pytest.raises(WrongKeyError, match="public key differs"):
        certificates.unwrap_vmk(prot, theirs)
