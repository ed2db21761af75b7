"""TPM protectors opened offline from the secret the TPM released (sniffed off the bus or
taken from memory), with the PIN and startup key where the protector needs them.

The protector type (VMK datum protection value) decides, never the mere presence of a datum:

* TPM only (0x0100): the VMK datum holds only the TPM-encoded (sealed) datum. The TPM releases
  a key datum whose 32 bytes *are* the VMK; it is confirmed by the FVEK datum's AES-CCM tag.
* TPM + startup key (0x0300): TPM-encoded datum, use key (the startup key under the VMK), and
  the VMK under ``released key XOR startup key`` (the 32 bytes of the ``{GUID}.BEK``).
* TPM + PIN (0x0500): description ``TPMAndPin``; stretch key (type 0x2004, flags 0x0010:
  salt, and SHA-256 of the UTF-16LE PIN under the VMK); datums of types 0x10, 0x12
  (``BitLockerAuthData``), TPM-encoded, 0x11, 0x13 (their roles are unknown); the VMK under the
  *intermediate key*. The TPM releases a 0x50-byte AES-CCM datum; the PIN, hashed as a
  password is (SHA-256 twice of UTF-16LE, no terminator) and stretched with the stretch key's
  salt (1,048,576 SHA-256 rounds, as for passwords), decrypts it to a key datum holding the
  intermediate key. There is no XOR with the PIN.
* TPM + PIN + startup key (0x0700): as TPM + PIN (description ``TPMAndPinAndStartupKey``),
  plus a use key; the VMK is under ``intermediate key XOR startup key``.

The VMK is always the protector's *direct* AES-CCM child, not the one inside the stretch key.
Every step is checked by an AES-CCM tag; a secret of the wrong form for the protector, or a
PIN / startup key that is missing, is named in the error.

Not possible offline, so refused: unsealing the TPM-encoded datum itself (only the machine's TPM
can, under its PCR policy), TPM 1.2 captures (no public layout), and protection types whose
layout is not public (e.g. 0x0400 alone). PINs are encoded as UTF-16LE without normalisation,
as every public implementation does; enhanced PINs with non-ASCII characters are untested.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from bdekit.crypto import keys
from bdekit.errors import BdeError, FormatError, MissingKeyError, UnsupportedError, WrongKeyError
from bdekit.escrow.secrets import TpmSecret
from bdekit.format.bek import BekFile
from bdekit.format.constants import DatumType, KeyType, ProtectionType
from bdekit.format.metadata import Metadata, parse_datums
from bdekit.format.protector import Protector
from bdekit.format.tpm import Unsealed
from bdekit.unlock.vmk import decrypt_fvek, unwrap_protector

log = logging.getLogger(__name__)

_NEEDS_BEK = (ProtectionType.TPM_STARTUP_KEY, ProtectionType.TPM_PIN_STARTUP_KEY)
_NEEDS_PIN = (ProtectionType.TPM_PIN, ProtectionType.TPM_PIN_STARTUP_KEY)

#: What opens each protector type offline (``bdekit info`` shows it).
OPENS_WITH: dict[int, str] = {
    ProtectionType.CLEAR_KEY: "nothing: the clear key is on the volume (protection suspended)",
    ProtectionType.TPM: "the key the TPM releases (--tpm-secret, the 0x2c-byte key datum "
                        "sniffed or dumped; it is the VMK, so --vmk takes it too)",
    ProtectionType.STARTUP_KEY: "the startup key file {GUID}.BEK (--bek), or the external key "
                                "an auto-unlocking OS volume keeps (--auto-unlock-from + "
                                "--system-hive or --auto-unlock-data)",
    ProtectionType.TPM_STARTUP_KEY: "the key the TPM releases (--tpm-secret, 0x2c bytes) and "
                                    "the startup key file {GUID}.BEK (--bek)",
    ProtectionType.TPM_PIN: "the blob the TPM releases (--tpm-secret, the 0x50-byte AES-CCM "
                            "datum) and the PIN (--pin)",
    ProtectionType.TPM_PIN_STARTUP_KEY: "the blob the TPM releases (--tpm-secret, 0x50 bytes), "
                                        "the PIN (--pin) and the startup key file {GUID}.BEK "
                                        "(--bek)",
    ProtectionType.RECOVERY_PASSWORD: "the 48-digit recovery password (--recovery-password, "
                                      "or an escrow export: --keyring)",
    ProtectionType.CERTIFICATE: "the certificate's private key (--certificate: .pfx/.p12 or "
                                "PEM with the key; match it with keys find --certificate)",
    ProtectionType.PASSWORD: "the user password (--password)",
}


def opens_with(protector: Protector) -> str:
    """What would open ``protector`` offline, in words (for ``bdekit info``)."""
    text = OPENS_WITH.get(protector.protection)
    if text is None:
        if protector.datum.find(DatumType.ASYMMETRIC_ENCRYPTED_KEY) is not None:
            return OPENS_WITH[ProtectionType.CERTIFICATE]
        return "nothing known: the layout of this protection type is not public"
    return text.replace("{GUID}", "{" + str(protector.guid).upper() + "}")


def open_tpm_protector(metadata: Metadata, protector: Protector, given: TpmSecret) -> bytes:
    """The VMK of a TPM protector from the TPM's secret (module docstring).

    :class:`WrongKeyError` when a tag does not verify or the secret has the wrong form for the
    protector, :class:`MissingKeyError` when a PIN or startup key it needs was not given,
    :class:`UnsupportedError` for a protection type without a public layout.
    """
    protection = protector.protection
    unsealed = given.unsealed
    if protection == ProtectionType.TPM:
        _want(unsealed, "key", protector)
        return _tpm_only(metadata, protector, unsealed.key)
    if protection not in (*_NEEDS_BEK, *_NEEDS_PIN):
        raise UnsupportedError(f"protector {protector.key_id}: TPM protection type "
                               f"0x{protection:04x} has no public layout")
    if protection in _NEEDS_PIN:
        _want(unsealed, "blob", protector)
        keys_ = list(_intermediate_keys(protector, unsealed, given.pins))
    else:
        _want(unsealed, "key", protector)
        keys_ = [("the TPM's key", unsealed.key)]
    if protection in _NEEDS_BEK:
        keys_ = list(_with_startup_key(protector, keys_, given.beks))
    for what, key in keys_:
        try:
            vmk = unwrap_protector(protector, key)
        except WrongKeyError:
            continue
        log.info("TPM protector %s opened with %s", protector.key_id, what)
        return vmk
    raise WrongKeyError(f"TPM protector {protector.key_id}: the VMK datum does not open with "
                        f"{', '.join(w for w, _ in keys_)} (AES-CCM authentication failed: a "
                        "secret from another volume or protector)")


def _want(unsealed: Unsealed, form: str, protector: Protector) -> None:
    if unsealed.form == form:
        return
    need = ("the 0x2c-byte key datum" if form == "key" else
            "the 0x50-byte AES-CCM datum (TPM+PIN)")
    raise WrongKeyError(f"{protector.type_name} protector {protector.key_id} needs {need} "
                        f"the TPM releases; --tpm-secret is a {unsealed.label}")


def _tpm_only(metadata: Metadata, protector: Protector, key: bytes) -> bytes:
    """TPM only: the released key is the VMK, confirmed by the FVEK datum's tag."""
    try:
        decrypt_fvek(metadata, key)
    except WrongKeyError:
        raise WrongKeyError(f"TPM protector {protector.key_id}: the released key does not "
                            "decrypt the FVEK (AES-CCM authentication failed)") from None
    return key


def _intermediate_keys(protector: Protector, unsealed: Unsealed, pins: list[str]
                       ) -> Iterator[tuple[str, bytes]]:
    """The intermediate key, from the released blob and each PIN (stretched with the salt)."""
    if not pins:
        raise MissingKeyError(f"{protector.type_name} protector {protector.key_id} needs the PIN "
                              "as well as the TPM's secret: give --pin (or $BDEKIT_PIN)")
    salt = protector.salt
    if salt is None:
        raise FormatError(f"TPM+PIN protector {protector.key_id} has no stretch key (salt)",
                          offset=protector.datum.offset)
    wrong = 0
    for n, pin in enumerate(pins, 1):
        stretched = keys.stretch_key(keys.password_hash(pin), salt)
        try:
            plain = keys.aes_ccm_decrypt(stretched, unsealed.nonce, unsealed.mac,
                                         unsealed.ciphertext)
        except WrongKeyError:
            wrong += 1
            continue
        key = _key_of(plain)
        if key is not None:
            yield f"PIN {n}", key
    if wrong == len(pins):
        raise WrongKeyError(f"wrong PIN for {protector.type_name} protector {protector.key_id} "
                            "(the TPM's blob does not decrypt under the stretched PIN; or the "
                            "blob is from another volume)")


def _key_of(plain: bytes) -> bytes | None:
    """The 32 key bytes of a decrypted key datum (its version is not checked)."""
    try:
        datums = parse_datums(plain, 0)
    except BdeError:
        return None
    if datums and datums[0].type == DatumType.KEY and len(datums[0].body.key) == 32:
        if int(datums[0].body.key_type) != KeyType.TPM_INTERMEDIATE:
            log.warning("TPM blob holds key type 0x%04x (0x2000 expected)",
                        int(datums[0].body.key_type))
        return bytes(datums[0].body.key)
    return None


def _with_startup_key(protector: Protector, keys_: list[tuple[str, bytes]],
                      beks: list[BekFile]) -> Iterator[tuple[str, bytes]]:
    """Each key XOR each startup key given (the protector's own GUID first)."""
    if not beks:
        raise MissingKeyError(f"{protector.type_name} protector {protector.key_id} needs the "
                              f"startup key {protector.bek_name} (--bek) as well")
    ordered = sorted(beks, key=lambda b: b.guid != protector.guid)
    for what, key in keys_:
        for bek in ordered:
            yield (f"{what} XOR {bek.path}",
                   bytes(a ^ b for a, b in zip(key, bek.key, strict=True)))


__all__ = ["OPENS_WITH", "open_tpm_protector", "opens_with"]
