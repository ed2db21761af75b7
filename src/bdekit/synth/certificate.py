"""Certificate (smart card) protectors of a synthetic volume, in the layout Windows 10 writes.

The VMK datum (role 2, type 8, protection **0x1000**) and its five nested datums, in this order
and with these sizes for a 2048-bit key (808 bytes in all), as on the real ``smart_card.img``
(format notes section 10; ``tests/test_certificates.py`` compares the two field by field):

1. type 0x000C, role 0 (264 bytes): the RSA encryption of the protector key ``K`` (32 bytes);
2. type 0x000D, role 0x000C (291 bytes): the certificate's public key as a CNG
   ``BCRYPT_RSAKEY_BLOB`` (``RSA1``, bit length, exponent and modulus lengths, two zero
   lengths, exponent and modulus big-endian);
3. type 0x000E, role 0 (45 bytes): the ``gsin`` record of the certificate's SHA-1 thumbprint;
4. use key, key type 0x2006 (92 bytes): an AES-CCM datum holding ``K`` (key datum, key type
   0x2006) under the VMK;
5. AES-CCM (80 bytes): the VMK key datum (key type 0x2003) under ``K``.

Confirmed by the real volume: the datum types, roles, order and sizes, the protection value,
the public key blob and the thumbprint record, the key types, and that the 32-byte key escrowed
in (4) unwraps (5) (the real volume opens with its recovery password, which gives the VMK).

A guess, because no private key of a real protector is public: how (1) is made. bdekit writes
PKCS#1 v1.5 (type 2 padding, the padding bytes drawn from the seed so that the same seed gives
the same image), big-endian as CNG writes RSA results, of the raw 32-byte ``K``. The unlocker
(:mod:`bdekit.unlock.certificates`) also accepts OAEP, little-endian and key-datum plaintexts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import uuid
from typing import Any

from construct import Container
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from bdekit.crypto import keys
from bdekit.errors import UnsupportedCertificate
from bdekit.format.certificate import (
    PUBLIC_KEY_ROLE,
    build_rsa_public_blob,
    build_thumbprint_record,
)
from bdekit.format.constants import DatumType, KeyType, ProtectionType
from bdekit.format.datum_build import payload_key, raw_datum, use_key_datum, vmk_datum
from bdekit.synth.seeded import NonceSource, SeededRandom
from bdekit.unlock.certificates import Certificate, load_certificate, thumbprint

LAYOUT = ("Windows 10 smart-card layout (protection 0x1000): RSA ciphertext (12), RSA1 public "
          "key blob (13, role 12), gsin thumbprint record (14), use key 0x2006 (protector key "
          "under the VMK), VMK under the protector key; guessed: RSA PKCS#1 v1.5, big-endian, of "
          "the raw 32-byte protector key")


def _nonzero_bytes(seed: bytes, n: int) -> bytes:
    """``n`` non-zero bytes expanded from ``seed`` (SHA-256 in counter mode, zeros dropped)."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        block = hashlib.sha256(seed + counter.to_bytes(4, "little")).digest()
        out += bytes(b for b in block if b)
        counter += 1
    return bytes(out[:n])


def pkcs1v15_encrypt(public: rsa.RSAPublicKey, message: bytes, seed: bytes) -> bytes:
    """RSAES-PKCS1-v1_5 (RFC 8017, 7.2.1) with padding bytes derived from ``seed``; big-endian.

    The same as ``public.encrypt(message, PKCS1v15())`` except that the padding is the caller's,
    so that a synthetic image is the same bytes for the same seed."""
    numbers = public.public_numbers()
    k = (numbers.n.bit_length() + 7) // 8
    if len(message) > k - 11:
        raise ValueError("message too long for RSA PKCS#1 v1.5 with this key")
    em = b"\x00\x02" + _nonzero_bytes(seed, k - 3 - len(message)) + b"\x00" + message
    return pow(int.from_bytes(em, "big"), numbers.e, numbers.n).to_bytes(k, "big")


def _rsa_public(cert: x509.Certificate) -> rsa.RSAPublicKey:
    public = cert.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        raise UnsupportedCertificate("certificate protectors need an RSA certificate")
    return public


def build_protector_datum(cert: x509.Certificate, vmk: bytes, nonces: NonceSource, *,
                          guid: uuid.UUID, protector_key: bytes, padding_seed: bytes
                          ) -> Container:
    """The VMK datum of a certificate protector (module docstring); draws two nonces."""
    public = _rsa_public(cert)
    thumb = bytes.fromhex(thumbprint(cert))
    children = [
        raw_datum(DatumType.ASYMMETRIC_ENCRYPTED_KEY,
                  pkcs1v15_encrypt(public, protector_key, padding_seed)),
        raw_datum(DatumType.EXPORTED_KEY, build_rsa_public_blob(public), role=PUBLIC_KEY_ROLE),
        raw_datum(DatumType.PUBLIC_KEY_INFO, build_thumbprint_record(thumb)),
        use_key_datum(KeyType.CERTIFICATE_ESCROW, [
            nonces.wrap(vmk, payload_key(protector_key, KeyType.CERTIFICATE_ESCROW))]),
        nonces.wrap(protector_key, payload_key(vmk, KeyType.VMK)),
    ]
    return vmk_datum(guid, nonces.tick(), ProtectionType.CERTIFICATE, children)


CertificateSource = x509.Certificate | Certificate | str | os.PathLike[str]


def _as_x509(cert: CertificateSource) -> x509.Certificate:
    if isinstance(cert, Certificate):
        return cert.certificate
    if isinstance(cert, x509.Certificate):
        return cert
    return load_certificate(cert).certificate  # a path


@dataclasses.dataclass
class CertificateSpec:
    """A certificate protector for :func:`bdekit.synth.build`.

    ``cert`` is an ``x509.Certificate``, a :class:`Certificate` or a path to one (PEM, DER or
    a password-less .pfx; only the public certificate is needed, and its key must be RSA).
    """

    cert: CertificateSource

    def prepare(self, rng: SeededRandom) -> CertificateProtector:
        cert = _as_x509(self.cert)
        _rsa_public(cert)
        return CertificateProtector(cert, rng.guid(), rng.bytes(32), rng.bytes(32))


@dataclasses.dataclass
class CertificateProtector:
    """A prepared certificate protector (the builder's ``SynthProtector`` protocol)."""

    cert: x509.Certificate
    guid: uuid.UUID
    protector_key: bytes = dataclasses.field(repr=False)
    padding_seed: bytes = dataclasses.field(repr=False)
    protection: int = ProtectionType.CERTIFICATE

    def build_datum(self, vmk: bytes, nonces: NonceSource) -> Container:
        return build_protector_datum(self.cert, vmk, nonces, guid=self.guid,
                                     protector_key=self.protector_key,
                                     padding_seed=self.padding_seed)

    def manifest(self) -> dict[str, Any]:
        return {"type": "certificate", "guid": str(self.guid).upper(),
                "key_id": keys.key_id(self.guid), "protection": int(self.protection),
                "thumbprint": thumbprint(self.cert),
                "subject": self.cert.subject.rfc4514_string(),
                "key_size": _rsa_public(self.cert).key_size,
                "protector_key": self.protector_key.hex(), "layout": LAYOUT}


__all__ = ["CertificateProtector", "CertificateSpec", "build_protector_datum",
           "pkcs1v15_encrypt"]
