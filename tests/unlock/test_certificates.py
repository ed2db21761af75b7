"""Certificate (smart card / DRA) protectors: load .pfx / PEM, show thumbprints, unlock, refuse
wrong ones.

The real Windows 10 smart-card volume (``../shared/real-images/smart_card.img.gz``; its
certificate's private key is not public) gives the layout: its protector is read (thumbprint from
the README, key size, public key parsed here independently of bdekit), the volume is opened with
its recovery password, and the synthetic layout (``bdekit.synth.certificate``) is compared with
it field by field. Synthetic volumes then test unlocking end to end; the decoder is also checked
against the other plausible RSA paddings / byte orders / plaintext forms it accepts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from construct import Container, ListContainer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from bdekit import synth
from bdekit.crypto import keys
from bdekit.errors import (
    EXIT_KEY,
    EXIT_OK,
    EXIT_UNSUPPORTED,
    MissingKeyError,
    UnsupportedCertificate,
    UnsupportedError,
    WrongKeyError,
)
from bdekit.format import structs
from bdekit.format.constants import DatumRole, DatumType
from bdekit.format.metadata import MetadataCopy, parse_datum
from bdekit.format.protector import Protector
from bdekit.synth.certificate import pkcs1v15_encrypt
from bdekit.unlock import certificates
from tests.conftest import run_cli as run
from tests.unlock.certs import DRA_USAGE, make_cert

PFX_PASSWORD = "pfx-secret-1"


@pytest.fixture(autouse=True)
def audit_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "audit.jsonl"
    monkeypatch.setenv("BDEKIT_AUDIT_LOG", str(path))
    monkeypatch.delenv("BDEKIT_CERTIFICATE_PASSWORD", raising=False)
    return path


@pytest.fixture(scope="module")
def dra() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    return make_cert("BitLocker DRA", usage=DRA_USAGE)


@pytest.fixture(scope="module")
def other() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    return make_cert("Someone else", usage=DRA_USAGE)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: rsa.RSAPrivateKey, password: bytes | None = None) -> bytes:
    enc: Any = (serialization.BestAvailableEncryption(password) if password
                else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def write_pfx(path: Path, key: rsa.RSAPrivateKey, cert: x509.Certificate,
              password: str = PFX_PASSWORD) -> Path:
    path.write_bytes(pkcs12.serialize_key_and_certificates(
        b"dra", key, cert, None, serialization.BestAvailableEncryption(password.encode())))
    return path


def thumb(cert: x509.Certificate) -> str:
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory, dra) -> tuple[Path, Any]:  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("cert") / "dra.img"
    manifest = synth.build(out, size="8M", seed="dra",
                           protectors=[synth.PasswordSpec("user pw"),
                                       synth.CertificateSpec(dra[1])])
    return out, manifest


# --------------------------------------------------------------------------------------------
# Through the command line
# --------------------------------------------------------------------------------------------

def test_info_shows_thumbprint_without_unlocking(volume, dra) -> None:  # type: ignore[no-untyped-def]
    image, manifest = volume
    code, out, err = run("info", str(image), "--json")
    assert code == EXIT_OK, err
    data = json.loads(out)
    cert_prot = [p for p in data["protectors"] if p.get("thumbprint")]
    assert [p["thumbprint"] for p in cert_prot] == [thumb(dra[1])]
    assert data["unlocked"] is None
    assert manifest.protectors[1]["thumbprint"] == thumb(dra[1])
    code, out, _err = run("info", str(image))
    assert f"certificate thumbprint: {thumb(dra[1])}" in out


def test_unlock_with_pfx(volume, dra, tmp_path: Path, audit_log: Path) -> None:  # type: ignore[no-untyped-def]
    image, manifest = volume
    pfx = write_pfx(tmp_path / "dra.pfx", *dra)
    code, out, err = run("info", str(image), "--certificate", str(pfx),
                         "--certificate-password", PFX_PASSWORD, "--json", "--show-keys")
    assert code == EXIT_OK, err
    unlocked = json.loads(out)["unlocked"]
    assert unlocked["via"] == "certificate"
    assert unlocked["protector"] == manifest.protectors[1]["guid"]
    assert unlocked["fvek"] == manifest.fvek
    assert f"unlocked with certificate from {pfx}" in err
    assert "rotate" not in err
    (rec,) = [json.loads(line) for line in audit_log.read_text().splitlines()]
    assert (rec["key_kind"], rec["key_source"], rec["outcome"]) == (
        "certificate", str(pfx), "unlocked")
    text = audit_log.read_text()
    assert PFX_PASSWORD not in text and manifest.vmk not in text and manifest.fvek not in text


def test_unlock_with_pem_key_and_certificate_in_one_file(volume, dra, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    image, manifest = volume
    both = tmp_path / "dra.pem"
    both.write_bytes(key_pem(dra[0]) + pem(dra[1]))
    code, out, err = run("info", str(image), "--certificate", str(both), "--json")
    assert code == EXIT_OK, err
    assert json.loads(out)["unlocked"]["protector"] == manifest.protectors[1]["guid"]


def test_unlock_with_pem_and_separate_encrypted_key(volume, dra, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    image, _manifest = volume
    cert_file = tmp_path / "dra.crt"
    cert_file.write_bytes(pem(dra[1]))
    key_file = tmp_path / "dra.key"
    key_file.write_bytes(key_pem(dra[0], b"keypw"))
    code, out, err = run("info", str(image), "--certificate", str(cert_file),
                         "--certificate-key", str(key_file),
                         env={"BDEKIT_CERTIFICATE_PASSWORD": "keypw"})
    assert code == EXIT_OK, err
    assert "Unlocked:             with certificate" in out
    code, _out, err = run("info", str(image), "--certificate", str(cert_file),
                          "--certificate-key", str(key_file))
    assert code == EXIT_KEY
    assert "encrypted" in err and "--certificate-password" in err


def test_decrypt_with_pfx(volume, dra, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    image, manifest = volume
    pfx = write_pfx(tmp_path / "dra.pfx", *dra)
    out_path = tmp_path / "plain.img"
    code, _out, err = run("-q", "decrypt", str(image), str(out_path), "--certificate", str(pfx),
                          "--certificate-password", PFX_PASSWORD)
    assert code == EXIT_OK, err
    digest = hashlib.sha256(out_path.read_bytes()[:1 << 20]).hexdigest()
    assert digest == manifest.windows[0]


def test_wrong_certificate_is_a_key_error(volume, other, tmp_path: Path,  # type: ignore[no-untyped-def]
                                          audit_log: Path) -> None:
    image, manifest = volume
    pfx = write_pfx(tmp_path / "other.pfx", *other)
    code, _out, err = run("info", str(image), "--certificate", str(pfx),
                          "--certificate-password", PFX_PASSWORD)
    assert code == EXIT_KEY
    line = next(x for x in err.splitlines() if x.startswith("bdekit: error:"))
    assert "wrong key" in line and thumb(other[1]) in line
    assert f"is not the one of protector {manifest.protectors[1]['key_id']}" in line
    (rec,) = [json.loads(x) for x in audit_log.read_text().splitlines()]
    assert rec["outcome"] == "wrong key"


def test_wrong_pfx_password_and_missing_key(volume, dra, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    image, _manifest = volume
    pfx = write_pfx(tmp_path / "dra.pfx", *dra)
    code, _out, err = run("info", str(image), "--certificate", str(pfx),
                          "--certificate-password", "nope")
    assert code == EXIT_KEY and "wrong --certificate-password" in err
    code, _out, err = run("info", str(image), "--certificate", str(pfx))
    assert code == EXIT_KEY and "without a password: give --certificate-password" in err
    cert_only = tmp_path / "dra.crt"
    cert_only.write_bytes(pem(dra[1]))
    code, _out, err = run("info", str(image), "--certificate", str(cert_only))
    assert code == EXIT_KEY and "has no private key" in err


def test_keys_find_matches_certificate_by_thumbprint(volume, dra, other, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    image, _manifest = volume
    good = tmp_path / "dra.crt"
    good.write_bytes(pem(dra[1]))
    bad = tmp_path / "other.crt"
    bad.write_bytes(pem(other[1]))
    code, out, err = run("keys", "find", str(image), "--certificate", str(good),
                         "--certificate", str(bad), "--json")
    assert code == EXIT_OK, err
    prots = json.loads(out)["protectors"]
    assert [c["source"] for p in prots for c in p["candidates"]] == [str(good)]
    code, _out, _err = run("keys", "find", str(image), "--certificate", str(bad))
    assert code == EXIT_KEY


def test_synthetic_certificate_volume_is_deterministic(dra, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    images = []
    for name in ("a.img", "b.img"):
        synth.build(tmp_path / name, size="4M", seed=7,
                    protectors=[synth.CertificateSpec(dra[1])])
        images.append((tmp_path / name).read_bytes())
    assert images[0] == images[1]


# --------------------------------------------------------------------------------------------
# Loading and decoding (library)
# --------------------------------------------------------------------------------------------

def test_load_certificate_formats(dra, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key, cert = dra
    pfx = write_pfx(tmp_path / "a.p12", key, cert)
    loaded = certificates.load_certificate(pfx, PFX_PASSWORD)
    assert loaded.thumbprint == thumb(cert) and loaded.private_key is not None
    both = tmp_path / "both.pem"
    both.write_bytes(pem(cert) + key_pem(key, b"k"))
    assert certificates.load_certificate(both, "k").private_key is not None
    der = tmp_path / "a.cer"
    der.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    assert certificates.load_certificate(der).private_key is None
    with pytest.raises(WrongKeyError):
        certificates.load_certificate(pfx, "wrong")
    with pytest.raises(MissingKeyError):
        certificates.load_certificate(both)


def test_pkcs1v15_encoder_matches_the_standard(dra) -> None:  # type: ignore[no-untyped-def]
    key, cert = dra
    secret = bytes(range(32))
    ct = pkcs1v15_encrypt(cert.public_key(), secret, b"s" * 20)
    assert len(ct) == 256
    assert key.decrypt(ct, padding.PKCS1v15()) == secret  # OpenSSL decrypts it (big-endian)
    assert pkcs1v15_encrypt(cert.public_key(), secret, b"s" * 20) == ct
    assert pkcs1v15_encrypt(cert.public_key(), secret, b"t" * 20) != ct


VMK = bytes(range(100, 132))
FVEK = bytes(range(32))
NONCE = keys.make_nonce(0x01D7BC5E00000000, 1)


def key_datum(key: bytes, key_type: int = 0x2003) -> Container:
    return Container(role=0, type=DatumType.KEY, version=1,
                     body=Container(key_type=key_type, key_flags=0, key=key))


def ccm(key: bytes, inner: Container, role: int = 0) -> Container:
    mac, data = keys.aes_ccm_encrypt(key, NONCE, structs.DATUM.build(inner))
    return Container(role=role, type=DatumType.AES_CCM_ENCRYPTED_KEY, version=1,
                     body=Container(nonce=NONCE, mac=mac, data=data))


class FakeMetadata:
    """Just enough metadata for the FVEK check of the 'VMK directly' layout."""

    def __init__(self) -> None:
        raw = structs.DATUM.build(ccm(VMK, key_datum(FVEK, 0x8004),
                                      DatumRole.FULL_VOLUME_ENCRYPTION_KEY))
        self.fvek = parse_datum(raw, 0)
        # one copy holding the FVEK datum: every copy's version is tried when unwrapping
        self.best = MetadataCopy(index=1, offset=0, dataset_header=Container(),
                                 datums=[self.fvek])
        self.copies = [self.best]
        self.vote_copy = None

    def find(self, type_: int, role: int | None = None) -> Any:
        return self.fvek if type_ == DatumType.AES_CCM_ENCRYPTED_KEY else None


def protector(children: list[Container]) -> Protector:
    vmk = Container(role=2, type=DatumType.VOLUME_MASTER_KEY, version=1,
                    body=Container(guid=uuid.UUID(int=5), modified_time=0, unknown=0,
                                   protection=0x1000, datums=ListContainer(children)))
    return Protector(parse_datum(structs.DATUM.build(vmk), 0))


def raw(type_: int, data: bytes) -> Container:
    return Container(role=0, type=type_, version=1, body=Container(data=data))


def oaep1(cert: x509.Certificate, data: bytes) -> bytes:
    return cert.public_key().encrypt(  # type: ignore[union-attr]
        data, padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None))


def pkcs1(cert: x509.Certificate, data: bytes) -> bytes:
    return cert.public_key().encrypt(data, padding.PKCS1v15())  # type: ignore[union-attr]


def oaep256(cert: x509.Certificate, data: bytes) -> bytes:
    return cert.public_key().encrypt(  # type: ignore[union-attr]
        data, padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None))


@pytest.mark.parametrize("layout", ["pkcs1-be-keydatum-wraps", "oaep256-header-raw-wraps",
                                    "oaep1-le-vmk-direct", "pkcs1-le-keydatum-vmk-direct"])
def test_decoder_finds_other_plausible_layouts(layout: str, dra, other) -> None:  # type: ignore[no-untyped-def]
    key, cert = dra
    inter = bytes(range(200, 232))
    der = cert.public_bytes(serialization.Encoding.DER)
    datum_plain = structs.DATUM.build(key_datum(inter if "wraps" in layout else VMK, 0x2002))
    secret = inter if "wraps" in layout else VMK
    if layout == "pkcs1-be-keydatum-wraps":
        body = pkcs1(cert, datum_plain)
        info = der  # certificate only
    elif layout == "oaep256-header-raw-wraps":
        body = (256).to_bytes(4, "little") + b"\x01\x00\x00\x00" + oaep256(cert, secret)
        info = bytes.fromhex(thumb(cert))  # thumbprint only
    elif layout == "oaep1-le-vmk-direct":
        body = oaep1(cert, secret)[::-1]
        info = thumb(cert).upper().encode("utf-16-le") + b"\0\0"  # thumbprint as text
    else:
        body = pkcs1(cert, datum_plain)[::-1]
        info = b"\x01\x00\x00\x00" + der
    children = [raw(DatumType.PUBLIC_KEY_INFO, info), raw(DatumType.ASYMMETRIC_ENCRYPTED_KEY,
                                                           body)]
    if "wraps" in layout:
        children.append(ccm(inter, key_datum(VMK)))
    prot = protector(children)
    assert prot.thumbprint == thumb(cert)
    loaded = certificates.Certificate(cert, key, "dra")
    assert certificates.unwrap_vmk(prot, loaded, metadata=FakeMetadata()) == VMK
    with pytest.raises(WrongKeyError):
        certificates.unwrap_vmk(prot, certificates.Certificate(other[1], other[0], "x"),
                                metadata=FakeMetadata())


def test_unknown_thumbprint_layout_still_tries_the_key(dra, other) -> None:  # type: ignore[no-untyped-def]
    key, cert = dra
    inter = bytes(32)
    prot = protector([raw(DatumType.PUBLIC_KEY_INFO, b"\x00" * 7),
                      raw(DatumType.ASYMMETRIC_ENCRYPTED_KEY, oaep1(cert, inter)[::-1]),
                      ccm(inter, key_datum(VMK))])
    assert prot.thumbprint is None
    assert certificates.unwrap_vmk(prot, certificates.Certificate(cert, key)) == VMK
    with pytest.raises(WrongKeyError, match="no RSA padding"):
        certificates.unwrap_vmk(prot, certificates.Certificate(other[1], other[0]))


def test_synth_create_certificate_option(dra, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cert_file = tmp_path / "dra.crt"
    cert_file.write_bytes(pem(dra[1]))
    image = tmp_path / "cli.img"
    code, out, err = run("synth", "create", str(image), "--size", "4M", "--seed", "c",
                         "--certificate", str(cert_file), "--json")
    assert code == EXIT_OK, err
    (entry,) = json.loads(out)["protectors"]
    assert entry["type"] == "certificate" and entry["thumbprint"] == thumb(dra[1])
    both = tmp_path / "dra.pem"
    both.write_bytes(pem(dra[1]) + key_pem(dra[0]))
    code, out, err = run("info", str(image), "--certificate", str(both), "--json")
    assert code == EXIT_OK, err
    assert json.loads(out)["unlocked"]["protector"] == entry["guid"]


# --------------------------------------------------------------------------------------------
# Certificates whose key is not RSA: unsupported (exit 5), never an internal error
# --------------------------------------------------------------------------------------------

def make_ec_cert(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .sign(key, hashes.SHA256()))
    return key, cert


@pytest.fixture(scope="module")
def ec_dra() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    return make_ec_cert("EC card")


def test_ec_certificate_is_unsupported_on_the_command_line(volume, ec_dra, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    image, _manifest = volume
    both = tmp_path / "ec.pem"
    both.write_bytes(pem(ec_dra[1]) + key_pem(ec_dra[0]))  # type: ignore[arg-type]
    code, _out, err = run("info", str(image), "--certificate", str(both))
    assert code == EXIT_UNSUPPORTED, err
    (line,) = [x for x in err.splitlines() if x.startswith("bdekit: error:")]
    assert str(both) in line and "EC (secp256r1)" in line and "use RSA" in line
    assert "Traceback" not in err


def test_rsa_key_with_an_ec_certificate_is_unsupported(ec_dra, dra, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cert_file = tmp_path / "ec.crt"
    cert_file.write_bytes(pem(ec_dra[1]))
    key_file = tmp_path / "rsa.key"
    key_file.write_bytes(key_pem(dra[0]))
    with pytest.raises(UnsupportedCertificate, match="certificate's key is EC") as info:
        certificates.load_certificate(cert_file, key_path=key_file)
    assert info.value.exit_code == EXIT_UNSUPPORTED
    assert isinstance(info.value, UnsupportedError)
    assert info.value.path == str(cert_file)


def test_ec_certificate_without_key_cannot_open_a_protector(ec_dra, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    der = tmp_path / "ec.cer"
    der.write_bytes(ec_dra[1].public_bytes(serialization.Encoding.DER))
    loaded = certificates.load_certificate(der)  # a thumbprint to match: loads
    assert loaded.thumbprint == thumb(ec_dra[1]) and loaded.private_key is None
    prot = protector([raw(DatumType.PUBLIC_KEY_INFO, b"\x00" * 7),
                      raw(DatumType.ASYMMETRIC_ENCRYPTED_KEY, bytes(256))])
    with pytest.raises(UnsupportedCertificate, match="use RSA"):
        certificates.unwrap_vmk(prot, loaded)
