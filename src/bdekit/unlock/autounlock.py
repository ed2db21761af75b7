"""Auto-unlocked data volumes: the external key, from the OS volume and its registry value.

Two steps (the layouts are in :mod:`bdekit.format.autounlock`):

1. :func:`auto_unlock_key`: with the *OS volume's* VMK, the top-level AES-CCM datum of role
   0x000b opens to a key datum (key type 0x2002) holding the 32-byte auto-unlock key. Every
   metadata copy's version is tried; the tag must verify.
2. :func:`external_keys`: the auto-unlock key opens each FVEAutoUnlock ``Data`` value (an
   AES-CCM datum under it) to the external key (key datum, key type 0x2002) of the data volume's
   startup key protector (0x0200) whose GUID the value names. The result is a
   :attr:`~bdekit.escrow.secrets.SecretKind.AUTO_UNLOCK` candidate (a :class:`BekFile` in
   effect), which opens that protector as a ``.BEK`` would.

A value whose tag does not verify under the key belongs to another OS installation; it is
skipped with a warning, and when none verifies the error says so (exit 4). Experimental: no
public sample pairs an OS volume with a registry value and its data volume.
"""

from __future__ import annotations

import logging

from bdekit.crypto import keys
from bdekit.errors import BdeError, MissingKeyError, WrongKeyError
from bdekit.escrow.secrets import KeyCandidate, SecretKind
from bdekit.format.autounlock import AutoUnlockData
from bdekit.format.bek import BekFile
from bdekit.format.constants import DatumRole, DatumType, KeyType
from bdekit.format.filetime import filetime_to_datetime
from bdekit.format.metadata import Metadata, parse_datums
from bdekit.format.protector import datum_versions
from bdekit.unlock.vmk import unwrap_key

log = logging.getLogger(__name__)


def auto_unlock_key(metadata: Metadata, vmk: bytes, path: str | None = None) -> bytes:
    """The OS volume's auto-unlock key (role 0x000b datum under its VMK)."""
    versions = datum_versions(metadata, DatumType.AES_CCM_ENCRYPTED_KEY, DatumRole.AUTO_UNLOCK)
    if not versions:
        raise MissingKeyError("the OS volume holds no auto-unlock key datum (AES-CCM, role "
                              "0x000b): it is not the operating system volume that keeps "
                              "auto-unlock keys", path=path)
    for datum in versions:
        try:
            inner = unwrap_key(datum, vmk)
        except BdeError:
            log.warning("auto-unlock key datum at offset %d does not open under the VMK",
                        datum.offset)
            continue
        if inner.type == DatumType.KEY and len(inner.body.key) == 32:
            if int(inner.body.key_type) != KeyType.EXTERNAL:
                log.warning("auto-unlock key datum holds key type 0x%04x (0x2002 expected)",
                            int(inner.body.key_type))
            return bytes(inner.body.key)
    raise WrongKeyError("the OS volume's auto-unlock key datum (role 0x000b) does not open "
                        "under its VMK (AES-CCM authentication failed)", path=path,
                        offset=versions[0].offset)


def _external_key(value: AutoUnlockData, key: bytes) -> bytes | None:
    """The external key inside one ``Data`` value, or None when its tag does not verify."""
    try:
        plain = keys.aes_ccm_decrypt(key, value.nonce, value.mac, value.ciphertext)
    except WrongKeyError:
        return None
    try:
        inner = parse_datums(plain, 0)
    except BdeError:
        inner = []
    if not inner or inner[0].type != DatumType.KEY or len(inner[0].body.key) != 32:
        log.warning("%s: FVEAutoUnlock value decrypts but holds no 32-byte key datum",
                    value.source)
        return None
    if int(inner[0].body.key_type) != KeyType.EXTERNAL:
        log.warning("%s: FVEAutoUnlock value holds key type 0x%04x (0x2002 expected)",
                    value.source, int(inner[0].body.key_type))
    return bytes(inner[0].body.key)


def external_keys(key: bytes, values: list[AutoUnlockData]) -> list[KeyCandidate]:
    """The external keys the auto-unlock ``key`` opens from ``values`` (module docstring).

    Raises :class:`WrongKeyError` when values were given and none opens under the key, and
    :class:`MissingKeyError` when there are none.
    """
    if not values:
        raise MissingKeyError("no FVEAutoUnlock Data value: give --system-hive (the OS "
                              "volume's SYSTEM hive) or --auto-unlock-data HEX")
    out: list[KeyCandidate] = []
    for value in values:
        external = _external_key(value, key)
        if external is None:
            log.warning("%s: FVEAutoUnlock value for protector {%s} does not open under this "
                        "OS volume's auto-unlock key", value.source, str(value.guid).upper())
            continue
        bek = BekFile(value.guid, external, value.source, filetime_to_datetime(value.filetime))
        out.append(KeyCandidate(SecretKind.AUTO_UNLOCK, bek, source=value.source,
                                guid=value.guid))
    if not out:
        raise WrongKeyError(f"none of the {len(values)} FVEAutoUnlock Data values opens under "
                            "the OS volume's auto-unlock key (AES-CCM authentication failed): "
                            "the values belong to another OS installation")
    return out


__all__ = ["auto_unlock_key", "external_keys"]
