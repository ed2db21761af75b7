"""vmk: split from bdekit.protectors (TODO docstring)."""

from __future__ import annotations

import logging

from bdekit.crypto import keys
from bdekit.errors import (
    BdeError,
    FormatError,
    UnsupportedError,
    UsageError,
    WrongKeyError,
)
from bdekit.escrow.secrets import KeyCandidate
from bdekit.format.constants import (
    DatumRole,
    DatumType,
    EncryptionMethod,
    ProtectionType,
    enum_label,
)
from bdekit.format.metadata import Datum, Metadata, parse_datums
from bdekit.format.protector import Protector

log = logging.getLogger(__name__)


def unwrap_key(datum: Datum, key: bytes) -> Datum:
    """AES-CCM-decrypt ``datum`` with ``key``; the plaintext is a key datum."""
    body = datum.body
    plain = keys.aes_ccm_decrypt(key, bytes(body.nonce), bytes(body.mac), bytes(body.data))
    # the plaintext is a datum (usually a key datum); parse leniently
    try:
        inner = parse_datums(plain, 0)
    except BdeError:
        inner = []
    if not inner:
        raise FormatError("AES-CCM datum decrypted but holds no datum", offset=datum.offset)
    return inner[0]


def _unwrap_vmk(protector: Protector, key: bytes) -> bytes:
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
    """Unwrap the FVEK (role 3) with the VMK: (key bytes, method from the key type)."""
    datum = metadata.find(DatumType.AES_CCM_ENCRYPTED_KEY, DatumRole.FULL_VOLUME_ENCRYPTION_KEY)
    if datum is None:
        raise FormatError("metadata holds no FVEK datum (AES-CCM, role 3)")
    inner = unwrap_key(datum, vmk)
    if inner.type != DatumType.KEY:
        raise FormatError(f"FVEK datum decrypts to a {inner.type_name} datum, expected a key",
                          offset=datum.offset)
    return bytes(inner.body.key), int(inner.body.key_type)


def _protector_key(protector: Protector, cand: KeyCandidate) -> bytes | None:
    """The key that unwraps this protector's VMK, or None if the secret does not fit it."""
    ptype = protector.protection
    if cand.kind == "recovery-password" and ptype == ProtectionType.RECOVERY_PASSWORD:
        salt = protector.salt
        if salt is None:
            raise FormatError("recovery password protector has no stretch key",
                              offset=protector.datum.offset)
        return keys.recovery_password_key(cand.value, salt)
    if cand.kind == "password" and ptype == ProtectionType.PASSWORD:
        salt = protector.salt
        if salt is None:
            raise FormatError("password protector has no stretch key",
                              offset=protector.datum.offset)
        return keys.password_key(cand.value, salt)
    if cand.kind == "bek" and protector.guid == cand.value.guid:
        return bytes(cand.value.key)
    return None


def fits(protector: Protector, cand: KeyCandidate) -> bool:
    """Whether a secret can be tried against a protector (type and, if known, GUID)."""
    if cand.guid is not None and cand.guid != protector.guid:
        return False
    if cand.key_id is not None and cand.key_id.upper() != protector.key_id:
        return False
    ptype = protector.protection
    return (
        (cand.kind == "recovery-password" and ptype == ProtectionType.RECOVERY_PASSWORD)
        or (cand.kind == "password" and ptype == ProtectionType.PASSWORD)
        or (cand.kind == "bek" and protector.guid == cand.value.guid)
        or (cand.kind == "certificate" and protector.datum.find(
            DatumType.ASYMMETRIC_ENCRYPTED_KEY) is not None)
    )


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

