"""Certificate protectors (Data Recovery Agent, smart card): load a certificate, unwrap the VMK.

A certificate protector is a VMK datum whose nested datums include a *public key info* datum
(type 14) and an *asymmetric encrypted key* datum (type 12). Their layout is **not publicly
documented** and no real Windows sample was available to this project, so this module does two
different things:

Decoding (any layout that is plausible)
    The thumbprint (SHA-1 of the certificate's DER, upper-case hex, as ``certutil`` and the
    certificate MMC show it) is read from the public key info datum: a DER certificate anywhere in
    its body is hashed; else a leading 20-byte SHA-1; else a thumbprint written as 40 hex
    characters (UTF-16LE or ASCII). A certificate whose thumbprint differs from a known protector
    thumbprint is rejected without trying it (a wrong certificate is a key error, exit 4).

    To unwrap, every plausible variant is tried and the one whose AES-CCM MAC verifies is kept:

    * the RSA ciphertext: the whole type-12 body, or a modulus-sized window of it (first or last
      bytes, or after a 4, 8, 12 or 16-byte header), each big-endian (PKCS#1) and byte-reversed
      (little-endian, as Windows CryptoAPI's ``CryptEncrypt`` writes RSA ciphertext);
    * the padding: RSA-OAEP with SHA-1, RSA-OAEP with SHA-256, PKCS#1 v1.5;
    * the plaintext: a raw 32-byte key, or a key datum (type 1) holding 32 bytes;
    * its use: as the key that unwraps the protector's AES-CCM VMK datum (the MAC must verify),
      or as the VMK itself (it must then unwrap the FVEK datum: its MAC must verify).

Encoding (the one layout the synthetic builder writes: :class:`CertificateSpec` for
:func:`bdekit.synth.build`, :func:`build_protector_datum`)
    VMK datum (role 2, protection 0x0400 "public key" by default; 0x1000 can be asked for)
    with nested datums:

    1. public key info (type 14, role 0): body = SHA-1 thumbprint (20 bytes) followed by the
       certificate's DER;
    2. asymmetric encrypted key (type 12, role 0): body = RSA-OAEP (SHA-1, MGF1-SHA-1)
       encryption of a random 32-byte *intermediate key*, byte-reversed (little-endian as
       CryptoAPI writes it), exactly the modulus size (the OAEP seed comes from the builder's
       seeded stream, so the same seed gives the same image);
    3. AES-CCM encrypted key (type 5, role 0): the VMK key datum (type 1, key type 0x2003) wrapped
       under the intermediate key, as a startup key protector wraps it.

    This is the layout a real Windows volume is *expected* to resemble (section 8 of the format
    notes); it has not been confirmed against a real DRA- or smart-card-protected volume.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import secrets as _secrets
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from construct import Container
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

from bdekit.crypto import keys
from bdekit.errors import (
    BdeError,
    FormatError,
    MissingKeyError,
    UnsupportedCertificate,
    UsageError,
    WrongKeyError,
)
from bdekit.format.certificate import datum_payload, thumbprint_from_datum, try_der_certificate
from bdekit.format.constants import DatumType, KeyType, ProtectionType
from bdekit.format.datum_build import key_datum, raw_datum, vmk_datum
from bdekit.format.metadata import Metadata, parse_datums
from bdekit.format.protector import Protector
from bdekit.unlock.vmk import decrypt_fvek, unwrap_protector, wrap_key

log = logging.getLogger(__name__)

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)


# --------------------------------------------------------------------------------------------
# Loading certificates
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Certificate:
    """An X.509 certificate with (if given) its RSA private key."""

    certificate: x509.Certificate
    private_key: rsa.RSAPrivateKey | None = dataclasses.field(default=None, repr=False)
    path: str = "certificate"

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def thumbprint(self) -> str:
        return thumbprint(self.certificate)

    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()

    def describe(self) -> dict[str, Any]:
        return {"path": self.path, "subject": self.subject, "thumbprint": self.thumbprint,
                "has_private_key": self.private_key is not None}


def thumbprint(cert: x509.Certificate) -> str:
    """SHA-1 of the certificate's DER, upper-case hex (how Windows shows a thumbprint)."""
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()


def _password_bytes(password: str | bytes | None) -> bytes | None:
    if password is None:
        return None
    return password.encode("utf-8") if isinstance(password, str) else bytes(password)


def _load_pem_key(block: bytes, password: bytes | None, path: str) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(block, password)
    except TypeError:
        if password is None:
            raise MissingKeyError("the private key is encrypted: give --certificate-password "
                                  "(or $BDEKIT_CERTIFICATE_PASSWORD)", path=path) from None
        # a password given for an unencrypted key: use it without
        return serialization.load_pem_private_key(block, None)
    except ValueError:
        raise WrongKeyError("cannot decrypt the private key: wrong --certificate-password",
                            path=path) from None


def _load_key_file(path: str, password: bytes | None) -> PrivateKeyTypes:
    data = _read(path)
    blocks = [m.group(0) for m in _PEM_BLOCK.finditer(data) if b"PRIVATE KEY" in m.group(1)]
    if blocks:
        return _load_pem_key(blocks[0], password, path)
    try:
        return serialization.load_der_private_key(data, password)
    except TypeError:
        raise MissingKeyError("the private key is encrypted: give --certificate-password",
                              path=path) from None
    except ValueError:
        raise UsageError("not a private key (PEM or DER) or wrong --certificate-password",
                         path=path) from None


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read certificate file: {exc.strerror}", path=path) from None


_Loaded = tuple[x509.Certificate, PrivateKeyTypes | None]
_PEM_CERTIFICATES = (b"CERTIFICATE", b"TRUSTED CERTIFICATE", b"X509 CERTIFICATE")


def _load_pem(data: bytes, password: bytes | None, path: str) -> _Loaded:
    """The first certificate and the first private key of a PEM file."""
    cert: x509.Certificate | None = None
    key: PrivateKeyTypes | None = None
    for m in _PEM_BLOCK.finditer(data):
        label, block = m.group(1), m.group(0)
        if label in _PEM_CERTIFICATES and cert is None:
            try:
                cert = x509.load_pem_x509_certificate(block)
            except ValueError:
                raise UsageError(f"malformed {label.decode()} block in this PEM file",
                                 path=path, offset=m.start()) from None
        elif b"PRIVATE KEY" in label and key is None:
            key = _load_pem_key(block, password, path)
    if cert is None:
        raise UsageError("no certificate in this PEM file (expected a CERTIFICATE block)",
                         path=path)
    return cert, key


def _load_pkcs12(data: bytes, password: bytes | None, path: str) -> _Loaded:
    """A PKCS#12 file's certificate and key (without a password: none, then empty)."""
    for attempt in ([password] if password is not None else [None, b""]):
        try:
            key, cert, _extra = pkcs12.load_key_and_certificates(data, attempt)
        except ValueError:
            continue
        if cert is None:
            raise UsageError("the PKCS#12 file holds no certificate", path=path)
        return cert, key
    if password is None:
        raise MissingKeyError("cannot open the PKCS#12 file without a password: give "
                              "--certificate-password (or $BDEKIT_CERTIFICATE_PASSWORD)",
                              path=path)
    raise WrongKeyError("cannot open the PKCS#12 file: wrong --certificate-password (or not a "
                        ".pfx/.p12 file)", path=path)


def _key_name(key: object) -> str:
    """``EC (secp256r1)``, ``Ed25519``, ``DSA``: the kind of a key, for messages."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return f"EC ({key.curve.name})"
    return type(key).__name__.removesuffix("PrivateKey").removesuffix("PublicKey")


def _rsa_key(cert: x509.Certificate, key: PrivateKeyTypes, path: str) -> rsa.RSAPrivateKey:
    """``key`` once it is known to be the RSA key of ``cert`` (BitLocker uses RSA)."""
    public = cert.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        raise UnsupportedCertificate(f"the certificate's key is {_key_name(public)}; BitLocker "
                                     "certificate protectors use RSA", path=path)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise UnsupportedCertificate(f"the private key is {_key_name(key)}; BitLocker "
                                     "certificate protectors use RSA", path=path)
    if key.public_key().public_numbers() != public.public_numbers():
        raise UsageError("the private key does not belong to the certificate", path=path)
    return key


def load_certificate(path: str | os.PathLike[str], password: str | bytes | None = None,
                     key_path: str | os.PathLike[str] | None = None) -> Certificate:
    """Load a PKCS#12 (.pfx/.p12) file, a PEM file (certificate, optionally with its key) or a
    DER certificate (.cer, without key).

    ``key_path`` names a separate private key file (PEM or DER). A PKCS#12 file that cannot be
    opened with ``password`` is a :class:`WrongKeyError` (exit 4); a private key that is not
    RSA, or that belongs to a certificate whose key is not RSA, an
    :class:`UnsupportedCertificate` (exit 5).
    """
    spath = os.fspath(path)
    data = _read(spath)
    pw = _password_bytes(password)
    key: PrivateKeyTypes | None = None
    if b"-----BEGIN" in data:
        cert, key = _load_pem(data, pw, spath)
    else:
        der = try_der_certificate(data)  # a bare DER certificate (.cer), without key
        cert, key = (der, None) if der is not None else _load_pkcs12(data, pw, spath)
    if key_path is not None:
        key = _load_key_file(os.fspath(key_path), pw)
    rsa_key = _rsa_key(cert, key, spath) if key is not None else None
    log.info("certificate %s: %s, thumbprint %s%s", spath, cert.subject.rfc4514_string(),
             thumbprint(cert), "" if rsa_key is not None else " (no private key)")
    return Certificate(cert, rsa_key, spath)


# --------------------------------------------------------------------------------------------
# Reading the protector
# --------------------------------------------------------------------------------------------


def protector_thumbprint(protector: Protector) -> str | None:
    info = protector.datum.find(DatumType.PUBLIC_KEY_INFO)
    return thumbprint_from_datum(info) if info is not None else None


def _ciphertexts(body: bytes, size: int) -> Iterator[tuple[str, bytes]]:
    """Modulus-sized windows of the type-12 body, each as stored and byte-reversed."""
    seen: set[bytes] = set()
    windows: list[tuple[str, bytes]] = []
    if len(body) == size:
        windows.append(("whole body", body))
    elif len(body) > size:
        windows.append(("last bytes", body[-size:]))
        for skip in (0, 4, 8, 12, 16):
            if skip + size <= len(body):
                windows.append((f"after {skip} bytes", body[skip:skip + size]))
    for label, window in windows:
        for order, data in (("little-endian", window[::-1]), ("big-endian", window)):
            if data not in seen:
                seen.add(data)
                yield f"{label}, {order}", data


_PADDINGS: list[tuple[str, Callable[[], AsymmetricPadding]]] = [
    ("RSA-OAEP-SHA1", lambda: padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)),
    ("RSA-OAEP-SHA256", lambda: padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(),
                                             None)),
    ("RSA-PKCS1v15", padding.PKCS1v15),
]


def _plain_keys(plain: bytes) -> Iterator[tuple[str, bytes]]:
    if len(plain) == 32:
        yield "raw key", plain
    try:
        datums = parse_datums(plain, 0)
    except BdeError:
        return
    for top in datums:
        for datum in top.walk():
            if datum.type == DatumType.KEY and len(datum.body.key) == 32:
                yield "key datum", bytes(datum.body.key)
                return


def _verify_fvek(metadata: Metadata, vmk: bytes) -> bool:
    try:
        decrypt_fvek(metadata, vmk)
    except (WrongKeyError, FormatError):
        return False
    return True


def unwrap_vmk(protector: Protector, cert: Certificate, metadata: Metadata | None = None
               ) -> bytes:
    """The VMK of a certificate protector, trying every plausible layout (module docstring).

    Raises :class:`WrongKeyError` for a certificate that is not the protector's (thumbprint
    differs, or no variant verifies), :class:`UnsupportedCertificate` for a certificate whose
    key is not RSA and :class:`MissingKeyError` without a private key.
    """
    wanted = protector_thumbprint(protector)
    if wanted is not None and wanted != cert.thumbprint:
        raise WrongKeyError(f"certificate {cert.thumbprint} is not the one of protector "
                            f"{protector.key_id} (thumbprint {wanted})")
    public = cert.certificate.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        raise UnsupportedCertificate(f"certificate {cert.path} ({cert.thumbprint}) has a "
                                     f"{_key_name(public)} key; BitLocker certificate "
                                     "protectors use RSA")
    if cert.private_key is None:
        raise MissingKeyError(f"certificate {cert.path} ({cert.thumbprint}) has no private key "
                              "(give a .pfx, a PEM file with the key, or --certificate-key)")
    asym = protector.datum.find(DatumType.ASYMMETRIC_ENCRYPTED_KEY)
    if asym is None:
        raise FormatError("protector holds no asymmetric encrypted key datum (type 12)",
                          offset=protector.datum.offset)
    vmk = _try_layouts(protector, cert.private_key, datum_payload(asym), metadata)
    if vmk is None:
        raise WrongKeyError(f"certificate {cert.thumbprint} does not decrypt protector "
                            f"{protector.key_id}: no RSA padding / byte order / key form "
                            "verifies (wrong certificate, or an unknown protector layout)")
    return vmk


def _try_layouts(protector: Protector, key: rsa.RSAPrivateKey, body: bytes,
                 metadata: Metadata | None) -> bytes | None:
    """The VMK from the first variant (window, padding, key form, use) that verifies."""
    size = (key.key_size + 7) // 8
    has_wrapped = bool(protector.wrapped_vmks)
    for window, ciphertext in _ciphertexts(body, size):
        for pad_name, make_padding in _PADDINGS:
            try:
                plain = key.decrypt(ciphertext, make_padding())
            except ValueError:
                continue
            for form, candidate in _plain_keys(plain):
                if has_wrapped:
                    try:
                        vmk = unwrap_protector(protector, candidate)
                    except (WrongKeyError, FormatError):
                        pass
                    else:
                        log.info("certificate protector %s: %s, %s, %s unwraps the VMK datum",
                                 protector.key_id, pad_name, window, form)
                        return vmk
                if metadata is not None and _verify_fvek(metadata, candidate):
                    log.info("certificate protector %s: %s, %s, %s is the VMK itself",
                             protector.key_id, pad_name, window, form)
                    return candidate
    return None


# --------------------------------------------------------------------------------------------
# Writing the synthetic layout
# --------------------------------------------------------------------------------------------


def public_key_info_body(cert: x509.Certificate) -> bytes:
    """Synthetic layout of the type-14 body: SHA-1 thumbprint (20 bytes) + certificate DER."""
    der = cert.public_bytes(serialization.Encoding.DER)
    return hashlib.sha1(der).digest() + der


def _mgf1_sha1(seed: bytes, length: int) -> bytes:
    out = b"".join(hashlib.sha1(seed + i.to_bytes(4, "big")).digest()
                   for i in range((length + 19) // 20))
    return out[:length]


def oaep_sha1_encrypt(public: rsa.RSAPublicKey, message: bytes, seed: bytes) -> bytes:
    """RSAES-OAEP (RFC 8017, SHA-1, MGF1-SHA-1, empty label) with a given 20-byte seed.

    The same as ``public.encrypt(message, OAEP(SHA-1))`` except that the random seed is the
    caller's, so that a synthetic image is the same bytes for the same seed. Big-endian result.
    """
    numbers = public.public_numbers()
    k = (numbers.n.bit_length() + 7) // 8
    if len(seed) != 20:
        raise ValueError("the OAEP seed has 20 bytes")
    if len(message) > k - 2 * 20 - 2:
        raise ValueError("message too long for RSA-OAEP with this key")
    db = hashlib.sha1(b"").digest() + bytes(k - len(message) - 42) + b"\x01" + message
    masked_db = bytes(x ^ y for x, y in zip(db, _mgf1_sha1(seed, k - 21), strict=True))
    masked_seed = bytes(x ^ y for x, y in zip(seed, _mgf1_sha1(masked_db, 20), strict=True))
    em = int.from_bytes(b"\x00" + masked_seed + masked_db, "big")
    return pow(em, numbers.e, numbers.n).to_bytes(k, "big")


def encrypt_for_certificate(cert: x509.Certificate, key32: bytes, seed: bytes | None = None
                            ) -> bytes:
    """Synthetic layout of the type-12 body: RSA-OAEP-SHA1 of ``key32``, little-endian."""
    public = cert.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        raise UnsupportedCertificate("certificate protectors need an RSA certificate")
    return oaep_sha1_encrypt(public, bytes(key32), seed or _secrets.token_bytes(20))[::-1]


def build_protector_datum(cert: x509.Certificate, vmk: bytes, nonce: bytes, *,
                          guid: uuid.UUID | None = None, modified_time: int = 0,
                          protection: int = ProtectionType.PUBLIC_KEY,
                          intermediate: bytes | None = None, oaep_seed: bytes | None = None
                          ) -> Container:
    """A certificate protector VMK datum in the synthetic layout (module docstring)."""
    inter = intermediate if intermediate is not None else _secrets.token_bytes(32)
    children = [
        raw_datum(DatumType.PUBLIC_KEY_INFO, public_key_info_body(cert)),
        raw_datum(DatumType.ASYMMETRIC_ENCRYPTED_KEY,
                  encrypt_for_certificate(cert, inter, oaep_seed)),
        # the VMK key datum is version 1 here (Windows' payload keys are version 0)
        wrap_key(inter, nonce, key_datum(vmk, KeyType.VMK)),
    ]
    return vmk_datum(guid or uuid.uuid4(), modified_time, protection, children)


CertificateSource = x509.Certificate | Certificate | str | os.PathLike[str]


def _as_x509(cert: CertificateSource) -> x509.Certificate:
    if isinstance(cert, Certificate):
        return cert.certificate
    if isinstance(cert, x509.Certificate):
        return cert
    return load_certificate(cert).certificate  # a path


@dataclasses.dataclass
class CertificateSpec:
    """Synthetic image builder spec (:func:`bdekit.synth.build`): a certificate protector.

    ``cert`` is an ``x509.Certificate``, a :class:`Certificate` or a path to one (PEM, DER or
    a password-less .pfx; only the public certificate is needed). ``prepare(rng)`` draws the
    protector GUID, the intermediate key and the OAEP seed from the builder's seeded stream,
    so the image is deterministic; the layout is the one in the module docstring.
    """

    cert: CertificateSource
    protection: int = ProtectionType.PUBLIC_KEY

    def prepare(self, rng: Any) -> CertificateProtector:
        return CertificateProtector(_as_x509(self.cert), rng.guid(), rng.bytes(32),
                                    rng.bytes(20), self.protection)


@dataclasses.dataclass
class CertificateProtector:
    """A prepared certificate protector (the builder's ``SynthProtector`` protocol)."""

    cert: x509.Certificate
    guid: uuid.UUID = dataclasses.field(default_factory=uuid.uuid4)
    intermediate: bytes = dataclasses.field(default_factory=lambda: _secrets.token_bytes(32),
                                            repr=False)
    oaep_seed: bytes = dataclasses.field(default_factory=lambda: _secrets.token_bytes(20),
                                         repr=False)
    protection: int = ProtectionType.PUBLIC_KEY

    def build_datum(self, vmk: bytes, nonces: Any) -> Container:
        nonce = _next_nonce(nonces)
        modified = nonces.tick() if hasattr(nonces, "tick") else 0
        return build_protector_datum(self.cert, vmk, nonce, guid=self.guid,
                                     modified_time=modified, protection=self.protection,
                                     intermediate=self.intermediate, oaep_seed=self.oaep_seed)

    def manifest(self) -> dict[str, Any]:
        return {"type": "certificate", "guid": str(self.guid).upper(),
                "key_id": keys.key_id(self.guid), "protection": int(self.protection),
                "thumbprint": thumbprint(self.cert),
                "subject": self.cert.subject.rfc4514_string(),
                "intermediate_key": self.intermediate.hex(),
                "layout": "public key info (14) = SHA-1 thumbprint + certificate DER; "
                          "asymmetric encrypted key (12) = RSA-OAEP-SHA1(intermediate key), "
                          "byte-reversed; AES-CCM VMK datum under the intermediate key"}


def _next_nonce(source: Any) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    for name in ("next", "__call__", "__next__"):
        method = getattr(source, name, None)
        if callable(method):
            return bytes(method())
    raise TypeError(f"cannot draw a nonce from {source!r}")


__all__ = ["Certificate", "CertificateProtector", "CertificateSpec", "UnsupportedCertificate",
           "build_protector_datum", "encrypt_for_certificate", "load_certificate",
           "oaep_sha1_encrypt", "public_key_info_body", "thumbprint", "thumbprint_from_datum",
           "unwrap_vmk"]
