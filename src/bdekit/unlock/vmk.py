"""Unwrapping keys: the VMK of a protector with the protector's key, the FVEK with the VMK.

Every wrapped key is an AES-CCM encrypted key datum (type 5: nonce, MAC, ciphertext) whose
plaintext is itself a datum, normally a key datum (type 1) holding the key:

* :func:`protector_key` derives the key that opens a protector from a secret: the stretched
  recovery password or user password (the protector's stretch key datum gives the salt), or the
  32-byte key of a BEK file;
* :func:`unwrap_protector` opens the protector's AES-CCM datum with it: a 32-byte VMK;
* :func:`decrypt_fvek` opens the top-level AES-CCM datum of role 3 with the VMK; the key type of
  the key datum inside is the encryption method;
* :func:`normalise_fvek` lays out a raw FVEK given on the command line as the key datum would.

A wrong key shows as an AES-CCM authentication failure (:class:`WrongKeyError`). Which secret
may be tried against which protector is :func:`bdekit.escrow.secrets.match_protector`'s rule.
"""

from __future__ import annotations

import logging

from construct import Container

from bdekit.crypto import keys
from bdekit.errors import (
    BdeError,
    FormatError,
    MetadataError,
    UnsupportedError,
    UsageError,
    WrongKeyError,
)
from bdekit.escrow.secrets import KeyCandidate, SecretKind
from bdekit.format import structs
from bdekit.format.constants import (
    DatumRole,
    DatumType,
    EncryptionMethod,
    enum_label,
)
from bdekit.format.datum_build import encrypted_key_datum
from bdekit.format.metadata import Datum, Metadata, parse_datums
from bdekit.format.protector import Protector, datum_versions

log = logging.getLogger(__name__)


def unwrap_key(datum: Datum, key: bytes) -> Datum:
    """AES-CCM-decrypt ``datum`` with ``key``; the plaintext is a key datum. A datum that is
    not an AES-CCM datum (damage can change its type) is a :class:`FormatError`."""
    body = datum.body
    if datum.type != DatumType.AES_CCM_ENCRYPTED_KEY or body is None or "nonce" not in body:
        raise FormatError(f"expected an AES-CCM encrypted key datum, found {datum.type_name}",
                          offset=datum.offset)
    plain = keys.aes_ccm_decrypt(key, bytes(body.nonce), bytes(body.mac), bytes(body.data))
    # the plaintext is a datum (usually a key datum); parse leniently
    try:
        inner = parse_datums(plain, 0)
    except BdeError:
        inner = []
    if not inner:
        raise FormatError("AES-CCM datum decrypted but holds no datum", offset=datum.offset)
    return inner[0]


def wrap_key(key: bytes, nonce: bytes, inner: Container, role: int = 0) -> Container:
    """The AES-CCM datum (type 5, version 1) of the datum ``inner`` encrypted under ``key``
    with ``nonce``: the inverse of :func:`unwrap_key` (used by the writers of datums)."""
    mac, data = keys.aes_ccm_encrypt(key, nonce, structs.DATUM.build(inner))
    return encrypted_key_datum(nonce, mac, data, role)


def unwrap_protector(protector: Protector, key: bytes) -> bytes:
    """The VMK of ``protector``, unwrapped with the protector key (raises WrongKeyError)."""
    last: BdeError | None = None
    for wrapped in protector.wrapped_vmks:
        try:
            inner = unwrap_key(wrapped, key)
        except WrongKeyError as exc:
            last = exc
            continue
        if inner.type == DatumType.KEY and len(inner.body.key) == 32:
            return bytes(inner.body.key)
    raise last or FormatError("protector holds no AES-CCM wrapped VMK",
                              offset=protector.datum.offset)


def decrypt_fvek(metadata: Metadata, vmk: bytes) -> tuple[bytes, int]:
    """Unwrap the FVEK (role 3) with the VMK: (key bytes, method from the key type).

    Every copy's version of the FVEK datum is tried (and the majority's): a damaged one fails
    its AES-CCM check and the next is tried. When none opens, a VMK that opens any copy's
    validation datum is right, so the FVEK datums are damaged (:class:`MetadataError`, exit
    3); otherwise the VMK is wrong (:class:`WrongKeyError`).
    """
    versions = datum_versions(metadata, DatumType.AES_CCM_ENCRYPTED_KEY,
                              DatumRole.FULL_VOLUME_ENCRYPTION_KEY)
    if not versions:
        raise MetadataError("metadata holds no FVEK datum (AES-CCM, role 3)")
    for datum in versions:
        try:
            inner = unwrap_key(datum, vmk)
        except (WrongKeyError, FormatError):
            log.warning("FVEK datum at offset %d does not open under the VMK", datum.offset)
            continue
        if inner.type == DatumType.KEY:
            return bytes(inner.body.key), int(inner.body.key_type)
    if _vmk_is_authentic(metadata, vmk):
        offsets = ", ".join(str(d.offset) for d in versions)
        raise MetadataError("the FVEK datum is damaged in every metadata copy (datums at "
                            f"offsets {offsets} fail their AES-CCM check under a VMK that "
                            "the copies' validation datums confirm)")
    raise WrongKeyError("the FVEK datum does not open under this VMK (AES-CCM authentication "
                        "failed)", offset=versions[0].offset)


def _vmk_is_authentic(metadata: Metadata, vmk: bytes) -> bool:
    """Does ``vmk`` open any copy's validation datum (an AES-CCM MAC under the VMK)?"""
    for copy in [*metadata.copies, metadata.vote_copy]:
        if copy is None or copy.validation is None:
            continue
        try:
            unwrap_key(copy.validation, vmk)
        except (WrongKeyError, FormatError):
            continue
        return True
    return False


def protector_key(protector: Protector, cand: KeyCandidate) -> bytes | None:
    """The key that unwraps this protector's VMK from a secret that matches it.

    ``None`` for a kind of secret that has no protector key of its own (a certificate:
    :mod:`bdekit.unlock.certificates`). Call only for a secret :meth:`KeyCandidate.match`
    accepts for this protector.
    """
    if cand.kind in (SecretKind.RECOVERY_PASSWORD, SecretKind.PASSWORD):
        salt = protector.salt
        if salt is None:
            what = str(cand.kind).replace("-", " ")
            raise FormatError(f"{what} protector has no stretch key",
                              offset=protector.datum.offset)
        if cand.kind == SecretKind.RECOVERY_PASSWORD:
            return keys.recovery_password_key(cand.value, salt)
        return keys.password_key(cand.value, salt)
    if cand.kind in (SecretKind.BEK, SecretKind.AUTO_UNLOCK):
        return bytes(cand.value.key)
    return None


def normalise_fvek(fvek: bytes, method: int, path: str | None = None) -> bytes:
    """A raw FVEK as the key datum would hold it for ``method``.

    Besides the datum's own layout this accepts what memory forensics tools print: for
    AES-128 + diffuser the 16-byte key and 16-byte tweak key joined (32 bytes; the datum keeps
    each in a 32-byte half), and for AES-128-CBC the datum's 32 bytes (the first 16 are used).
    """
    try:
        expected = EncryptionMethod(method).fvek_size
    except ValueError:
        raise UnsupportedError(f"unknown encryption method 0x{method:04x}", path=path) from None
    if len(fvek) == expected:
        return fvek
    if method == EncryptionMethod.AES_128_CBC and len(fvek) == 32:
        return fvek
    if method == EncryptionMethod.AES_128_CBC_DIFFUSER and len(fvek) == 32:
        return fvek[:16] + bytes(16) + fvek[16:] + bytes(16)
    raise UsageError(f"--fvek has {len(fvek)} bytes; {enum_label(EncryptionMethod, method)} "
                     f"needs {expected}", path=path)

