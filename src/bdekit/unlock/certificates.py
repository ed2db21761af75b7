"""Certificate protectors (smart card, Data Recovery Agent): load a certificate, unwrap the VMK.

The layout Windows 10 writes (protection 0x1000; read in :mod:`bdekit.format.certificate`, seen
on a real smart-card volume): an RSA ciphertext datum (type 12), the public key as a CNG
``RSA1`` blob (type 13, role 12), a ``gsin`` thumbprint record (type 14), a use key (key type
0x2006) escrowing a 32-byte key under the VMK, and the VMK wrapped (AES-CCM) under that 32-byte
key. The real volume confirms all of that, including that the escrowed 32-byte key unwraps the
VMK datum (checked with its recovery password). It cannot show (the card's private key is not
public) the RSA padding, the ciphertext's byte order, or the form of the RSA plaintext.

Matching
    A certificate whose thumbprint differs from the protector's, or (when the protector records
    one) whose public key differs from the protector's public key, is rejected without trying
    it: a wrong certificate is a key error (exit 4). A key that is not RSA is unsupported
    (exit 5). Thumbprints are SHA-1 of the certificate's DER, lower-case hex as
    ``manage-bde`` prints them, compared without regard to case.

Unwrapping: every plausible variant, kept only if an AES-CCM tag verifies
    * the RSA ciphertext: the whole type-12 body (on the real volume exactly the modulus size),
      or a modulus-sized window of a longer body (first or last bytes, or after a 4, 8, 12 or
      16-byte header), each big-endian (PKCS#1, CNG) and byte-reversed (CryptoAPI);
    * the padding: PKCS#1 v1.5, RSA-OAEP with SHA-1, RSA-OAEP with SHA-256;
    * the plaintext: a raw 32-byte key, or a key datum (type 1) holding 32 bytes;
    * its use: as the key that unwraps the protector's AES-CCM VMK datum (the tag must verify),
      or as the VMK itself (it must then unwrap the FVEK datum: its tag must verify).

The synthetic layout (:mod:`bdekit.synth.certificate`) is the real one with one plausible
choice for the unknowns.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from bdekit.errors import (
    BdeError,
    FormatError,
    MissingKeyError,
    UnsupportedCertificate,
    UsageError,
    WrongKeyError,
)
from bdekit.format.certificate import (
    RsaPublicKey,
    datum_payload,
    public_key_fingerprint,
    same_thumbprint,
    try_der_certificate,
)
from bdekit.format.constants import DatumType
from bdekit.format.metadata import Metadata, parse_datums
from bdekit.format.protector import Protector
from bdekit.image.bounded import read_bounded
from bdekit.unlock.vmk import decrypt_fvek, unwrap_protector

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

    @property
    def public_key(self) -> RsaPublicKey | None:
        """The RSA public key (None for other key types)."""
        public = self.certificate.public_key()
        if not isinstance(public, rsa.RSAPublicKey):
            return None
        numbers = public.public_numbers()
        return RsaPublicKey(numbers.e, numbers.n)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "subject": self.subject,
                               "thumbprint": self.thumbprint,
                               "has_private_key": self.private_key is not None}
        public = self.certificate.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            out["public_key_fingerprint"] = public_key_fingerprint(public)
        return out


def thumbprint(cert: x509.Certificate) -> str:
    """SHA-1 of the certificate's DER, lower-case hex (as ``manage-bde`` shows a thumbprint)."""
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


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
    return read_bounded(path, "certificate")


if TYPE_CHECKING:  # x509 (and pkcs12, which loads it) cost tens of milliseconds of start-up
    from cryptography import x509

    _Loaded = tuple[x509.Certificate, PrivateKeyTypes | None]
_PEM_CERTIFICATES = (b"CERTIFICATE", b"TRUSTED CERTIFICATE", b"X509 CERTIFICATE")


def _load_pem(data: bytes, password: bytes | None, path: str) -> _Loaded:
    """The first certificate and the first private key of a PEM file."""
    from cryptography import x509  # noqa: PLC0415 (see the TYPE_CHECKING import)

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
    from cryptography.hazmat.primitives.serialization import pkcs12  # noqa: PLC0415

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
    return protector.thumbprint


def protector_public_key(protector: Protector) -> RsaPublicKey | None:
    info = protector.certificate
    return info.public_key if info is not None else None


def match_certificate(protector: Protector, cert: Certificate) -> str | None:
    """How ``cert`` fits a certificate protector: ``"thumbprint"``, ``"public key"`` (the
    protector records no thumbprint), ``"unidentified"`` (it records neither) or None (it
    records another certificate)."""
    info = protector.certificate
    if info is None:
        return None
    if info.thumbprint is not None:
        return "thumbprint" if same_thumbprint(info.thumbprint, cert.thumbprint) else None
    if info.public_key is not None:
        return "public key" if info.public_key == cert.public_key else None
    return "unidentified"


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
        for order, data in (("big-endian", window), ("little-endian", window[::-1])):
            if data not in seen:
                seen.add(data)
                yield f"{label}, {order}", data


_PADDINGS: list[tuple[str, Callable[[], AsymmetricPadding]]] = [
    ("RSA-PKCS1v15", padding.PKCS1v15),
    ("RSA-OAEP-SHA1", lambda: padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)),
    ("RSA-OAEP-SHA256", lambda: padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(),
                                             None)),
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
    info = protector.certificate
    wanted = info.thumbprint if info is not None else None
    if wanted is not None and not same_thumbprint(wanted, cert.thumbprint):
        raise WrongKeyError(f"certificate {cert.thumbprint} is not the one of protector "
                            f"{protector.key_id} (thumbprint {wanted})")
    recorded = info.public_key if info is not None else None
    if recorded is not None and cert.public_key is not None and recorded != cert.public_key:
        raise WrongKeyError(f"certificate {cert.thumbprint} is not the one of protector "
                            f"{protector.key_id} (its public key differs from the protector's, "
                            f"fingerprint {recorded.fingerprint})")
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


__all__ = ["Certificate", "UnsupportedCertificate", "load_certificate", "match_certificate",
           "protector_public_key", "protector_thumbprint", "thumbprint", "unwrap_vmk"]
