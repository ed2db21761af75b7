"""What a certificate protector's datums say about its certificate: thumbprint and public key.

Reading and building only; unwrapping the VMK with the certificate's private key is
:mod:`bdekit.unlock.certificates`.

The layout Windows 10 writes for a smart-card protector (protection 0x1000; seen on the real
``smart_card.img``, format notes section 10), the VMK datum's nested datums in this order:

* type 0x000C (asymmetric encrypted key), role 0: the RSA ciphertext, modulus-sized (256 bytes
  for 2048 bits);
* type 0x000D (exported key), role 0x000C: the public key as a CNG ``BCRYPT_RSAKEY_BLOB``
  (:func:`parse_rsa_public_blob`): magic ``RSA1``, u32 bit length, u32 public exponent length,
  u32 modulus length, u32 0, u32 0 (the prime lengths of a private blob), then the exponent and
  the modulus, both big-endian. No certificate;
* type 0x000E (public key info), role 0: the thumbprint record (:func:`parse_thumbprint_record`):
  tag ``gsin``, u32 37 (the record's length), u32 2 (meaning unknown), u32 20 (the hash length),
  the certificate's 20-byte SHA-1 thumbprint, one zero byte;
* type 0x0004 (use key), key type 0x2006: an AES-CCM datum holding, under the VMK, the 32-byte
  key of the last datum (escrow copy; checked on the real volume with its recovery password);
* type 0x0005 (AES-CCM): the VMK key datum under that 32-byte key.

Older guesses that this project's synthetic images used (a type-14 body holding a bare
thumbprint, a thumbprint written as hex text, or a DER certificate) are still read by
:func:`thumbprint_from_datum`, so that other layouts (e.g. a Data Recovery Agent's, which no
public sample shows) are at least recognised.

Thumbprints are lower-case hex, as ``manage-bde -protectors -get`` prints them; compare them with
:func:`same_thumbprint`. The public key fingerprint is the SHA-256 of the key's DER
SubjectPublicKeyInfo (what ``openssl pkey -pubin -outform DER | sha256sum`` prints), so a
responder can find the certificate in a PKI even without its thumbprint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import struct
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric import rsa

from bdekit.format.constants import DatumType
from bdekit.format.metadata import Datum

if TYPE_CHECKING:  # x509 costs tens of milliseconds of start-up: loaded when a DER is parsed
    from cryptography import x509

THUMBPRINT_SIZE = 20
#: Tag of the thumbprint record (type 0x000E datum body).
THUMBPRINT_TAG = b"gsin"
#: Magic of a CNG RSA public key blob (``BCRYPT_RSAPUBLIC_MAGIC``).
RSA_PUBLIC_MAGIC = b"RSA1"
#: Role of the type 0x000D datum that holds the public key.
PUBLIC_KEY_ROLE = 0x000C
_BLOB_HEADER = struct.Struct("<4s5I")
_RECORD_HEADER = struct.Struct("<4s3I")
_HEX40 = re.compile(r"[0-9A-Fa-f]{40}")


@dataclasses.dataclass(frozen=True)
class RsaPublicKey:
    """An RSA public key as a protector records it."""

    exponent: int
    modulus: int

    @property
    def bits(self) -> int:
        return self.modulus.bit_length()

    def key(self) -> rsa.RSAPublicKey:
        return rsa.RSAPublicNumbers(self.exponent, self.modulus).public_key()

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the DER SubjectPublicKeyInfo, lower-case hex."""
        return public_key_fingerprint(self.key())


def public_key_fingerprint(key: rsa.RSAPublicKey) -> str:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 (start-up time)

    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def same_thumbprint(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a.lower() == b.lower()


def try_der_certificate(data: bytes) -> x509.Certificate | None:
    from cryptography import x509  # noqa: PLC0415 (see the TYPE_CHECKING import)

    try:
        return x509.load_der_x509_certificate(data)
    except ValueError:
        return None


def datum_payload(datum: Datum) -> bytes:
    body = datum.body
    if body is not None and "data" in body:
        return bytes(body.data)
    return bytes(datum.raw[8:])


# --------------------------------------------------------------------------------------------
# The public key (type 0x000D, role 0x000C): BCRYPT_RSAKEY_BLOB
# --------------------------------------------------------------------------------------------


def parse_rsa_public_blob(data: bytes) -> RsaPublicKey | None:
    """The key of a CNG ``BCRYPT_RSAKEY_BLOB`` with magic ``RSA1``; None if ``data`` is not one."""
    if len(data) < _BLOB_HEADER.size:
        return None
    magic, bits, exp_len, mod_len, _p1, _p2 = _BLOB_HEADER.unpack_from(data)
    end = _BLOB_HEADER.size + exp_len + mod_len
    if magic != RSA_PUBLIC_MAGIC or not 0 < exp_len <= 8 or not 0 < mod_len <= 2048 \
            or end > len(data):
        return None
    exponent = int.from_bytes(data[_BLOB_HEADER.size:_BLOB_HEADER.size + exp_len], "big")
    modulus = int.from_bytes(data[_BLOB_HEADER.size + exp_len:end], "big")
    if modulus.bit_length() != bits or exponent < 3:
        return None
    try:  # numbers OpenSSL would refuse (even modulus, exponent >= modulus ...) are no key
        rsa.RSAPublicNumbers(exponent, modulus).public_key()
    except ValueError:
        return None
    return RsaPublicKey(exponent, modulus)


def build_rsa_public_blob(key: rsa.RSAPublicKey) -> bytes:
    """A ``BCRYPT_RSAKEY_BLOB`` (``RSA1``) of ``key``, as Windows writes it in the protector."""
    numbers = key.public_numbers()
    exp = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
    mod = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
    return _BLOB_HEADER.pack(RSA_PUBLIC_MAGIC, numbers.n.bit_length(), len(exp), len(mod),
                             0, 0) + exp + mod


# --------------------------------------------------------------------------------------------
# The thumbprint (type 0x000E): the ``gsin`` record, or an older guessed layout
# --------------------------------------------------------------------------------------------


def parse_thumbprint_record(data: bytes) -> bytes | None:
    """The 20-byte SHA-1 thumbprint of a ``gsin`` record; None if ``data`` is not one."""
    if len(data) < _RECORD_HEADER.size + THUMBPRINT_SIZE:
        return None
    tag, length, _kind, hash_len = _RECORD_HEADER.unpack_from(data)
    start = _RECORD_HEADER.size
    if tag != THUMBPRINT_TAG or hash_len != THUMBPRINT_SIZE or length > len(data) \
            or length < start + hash_len:
        return None
    return data[start:start + hash_len]


def build_thumbprint_record(thumbprint: bytes) -> bytes:
    """The ``gsin`` record of a 20-byte thumbprint (37 bytes, as on the real volume)."""
    if len(thumbprint) != THUMBPRINT_SIZE:
        raise ValueError("a SHA-1 thumbprint has 20 bytes")
    size = _RECORD_HEADER.size + THUMBPRINT_SIZE + 1
    return _RECORD_HEADER.pack(THUMBPRINT_TAG, size, 2, THUMBPRINT_SIZE) + thumbprint + b"\0"


def _find_der_certificate(data: bytes) -> bytes | None:
    """The first DER X.509 certificate found anywhere in ``data``."""
    start = 0
    while True:
        i = data.find(b"\x30\x82", start)
        if i < 0 or i + 4 > len(data):
            return None
        length = int.from_bytes(data[i + 2:i + 4], "big") + 4
        if i + length <= len(data):
            der = data[i:i + length]
            if try_der_certificate(der) is not None:
                return der
        start = i + 1


def thumbprint_from_datum(datum: Datum) -> str | None:
    """The thumbprint (lower-case hex) a public key info datum (type 14) names, if readable:
    the ``gsin`` record Windows writes; else a DER certificate in it; else a bare 20-byte
    SHA-1; else 40 hex characters (UTF-16LE or ASCII)."""
    data = datum_payload(datum)
    record = parse_thumbprint_record(data)
    if record is not None:
        return record.hex()
    der = _find_der_certificate(data)
    if der is not None:
        return hashlib.sha1(der).hexdigest()
    if len(data) == THUMBPRINT_SIZE:
        return data.hex()
    for text in (data.decode("utf-16-le", errors="ignore"), data.decode("latin-1")):
        m = _HEX40.search(text)
        if m:
            return m.group(0).lower()
    return None


# --------------------------------------------------------------------------------------------
# Everything a protector says about its certificate
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CertificateInfo:
    """A certificate protector's thumbprint and public key (either may be missing)."""

    thumbprint: str | None
    public_key: RsaPublicKey | None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.thumbprint:
            out["thumbprint"] = self.thumbprint
        if self.public_key is not None:
            out["key_size"] = self.public_key.bits
            out["public_key_fingerprint"] = self.public_key.fingerprint
        return out


def public_key_of(vmk: Datum) -> RsaPublicKey | None:
    """The RSA public key a protector records: the ``RSA1`` blob of its type-13 datum, or the
    key of a DER certificate in its type-14 datum (an older guessed layout)."""
    for child in vmk.find_all(DatumType.EXPORTED_KEY):
        key = parse_rsa_public_blob(datum_payload(child))
        if key is not None:
            return key
    info = vmk.find(DatumType.PUBLIC_KEY_INFO)
    der = _find_der_certificate(datum_payload(info)) if info is not None else None
    cert = try_der_certificate(der) if der is not None else None
    public = cert.public_key() if cert is not None else None
    if isinstance(public, rsa.RSAPublicKey):
        numbers = public.public_numbers()
        return RsaPublicKey(numbers.e, numbers.n)
    return None


def certificate_info(vmk: Datum) -> CertificateInfo | None:
    """What the VMK datum ``vmk`` says about its certificate; None for other protectors."""
    if vmk.find(DatumType.ASYMMETRIC_ENCRYPTED_KEY) is None:
        return None
    info = vmk.find(DatumType.PUBLIC_KEY_INFO)
    thumb = thumbprint_from_datum(info) if info is not None else None
    return CertificateInfo(thumb, public_key_of(vmk))


__all__ = ["PUBLIC_KEY_ROLE", "CertificateInfo", "RsaPublicKey", "build_rsa_public_blob",
           "build_thumbprint_record", "certificate_info", "datum_payload",
           "parse_rsa_public_blob", "parse_thumbprint_record", "public_key_fingerprint",
           "public_key_of", "same_thumbprint", "thumbprint_from_datum", "try_der_certificate"]
