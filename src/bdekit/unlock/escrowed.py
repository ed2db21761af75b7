"""Secrets Windows escrows under the VMK inside a protector, recovered after any unlock.

* Recovery password protector (0x0800): its stretch key datum holds, besides the salt, two
  AES-CCM datums wrapped under the VMK: role 0x12, a key datum (key type 0x1000) with the
  16-byte recovery key (the recovery password's 8 blocks / 11 as little-endian u16), and role
  0x13, the stretched key. The recovery key gives the 48-digit recovery password back.
* Startup key protector (0x0200): a use key datum (type 4) holds the external key (key type
  0x2002) wrapped under the VMK: the 32-byte key of the ``{GUID}.BEK`` file. The file is
  rebuilt in Windows' layout: dataset header (size, version 1, header size 48, copy size,
  GUID = protector GUID, nonce counter 1, method 0, FILETIME) and an external key datum (role
  6, type 9: GUID, FILETIME, unicode ``ExternalKey``, key datum 0x2002); the FILETIME is the
  protector's.

Every secret is checked before it is returned: the recovery password is stretched with the
protector's salt and must open the protector's own wrapped VMK (AES-CCM MAC); the external key
must open it directly. The direct AES-CCM children of the protector are the wrapped VMKs; only
the datums nested in the stretch key or use key are escrow.
"""

from __future__ import annotations

import dataclasses

from construct import Container, ListContainer

from bdekit.crypto import keys
from bdekit.errors import BdeError
from bdekit.escrow.secrets import SecretKind
from bdekit.format import structs
from bdekit.format.constants import DatumRole, DatumType, ProtectionType
from bdekit.format.metadata import Datum, Metadata
from bdekit.format.protector import Protector, protectors_of
from bdekit.unlock.vmk import unwrap_key, unwrap_protector

KEY_TYPE_RECOVERY_KEY = 0x1000
KEY_TYPE_EXTERNAL = 0x2002


@dataclasses.dataclass(frozen=True)
class Escrowed:
    """A secret recovered for ``protector``; ``verified``: it opens the protector's VMK."""

    protector: Protector
    kind: SecretKind  # RECOVERY_PASSWORD or BEK
    value: str | bytes = dataclasses.field(repr=False)
    verified: bool


def _escrow_keys(container: Datum | None, vmk: bytes, key_type: int, size: int) -> list[bytes]:
    if container is None:
        return []
    out = []
    for child in container.find_all(DatumType.AES_CCM_ENCRYPTED_KEY):
        try:
            inner = unwrap_key(child, vmk)
        except BdeError:
            continue
        if inner.type == DatumType.KEY and int(inner.body.key_type) == key_type \
                and len(inner.body.key) == size:
            out.append(bytes(inner.body.key))
    return out


def _opens(protector: Protector, key: bytes, vmk: bytes) -> bool:
    try:
        return unwrap_protector(protector, key) == vmk
    except BdeError:
        return False


def recovery_passwords(metadata: Metadata, vmk: bytes, *, verify: bool = True
                       ) -> list[Escrowed]:
    """The recovery password of every recovery-password protector (see module docstring)."""
    out = []
    for protector in protectors_of(metadata):
        if protector.protection != ProtectionType.RECOVERY_PASSWORD:
            continue
        stretch = protector.datum.find(DatumType.STRETCH_KEY)
        for key16 in _escrow_keys(stretch, vmk, KEY_TYPE_RECOVERY_KEY, 16):
            password = keys.format_recovery_password(key16)
            ok = False
            if verify and protector.salt is not None:
                ok = _opens(protector, keys.recovery_password_key(password, protector.salt),
                            vmk)
            out.append(Escrowed(protector, SecretKind.RECOVERY_PASSWORD, password, ok))
    return out


def startup_keys(metadata: Metadata, vmk: bytes) -> list[Escrowed]:
    """The ``{GUID}.BEK`` file of every startup-key protector (see module docstring)."""
    out = []
    for protector in protectors_of(metadata):
        if protector.bek_name is None:
            continue
        use = protector.datum.find(DatumType.USE_KEY)
        for key in _escrow_keys(use, vmk, KEY_TYPE_EXTERNAL, 32):
            data = build_bek(protector, key)
            out.append(Escrowed(protector, SecretKind.BEK, data, _opens(protector, key, vmk)))
    return out


def build_bek(protector: Protector, key: bytes) -> bytes:
    """A ``{GUID}.BEK`` file holding ``key`` for ``protector`` (Windows' layout)."""
    filetime = int(protector.datum.body.modified_time)
    datums = ListContainer([
        Container(role=0, type=int(DatumType.UNICODE), version=1,
                  body=Container(data="ExternalKey\0".encode("utf-16-le"))),
        Container(role=0, type=int(DatumType.KEY), version=1,
                  body=Container(key_type=KEY_TYPE_EXTERNAL, key_flags=0, key=key)),
    ])
    external = Container(role=int(DatumRole.STARTUP_KEY), type=int(DatumType.EXTERNAL_KEY),
                         version=1, body=Container(guid=protector.guid, modified_time=filetime,
                                                   datums=datums))
    body = structs.DATUM.build(external)
    size = structs.DATASET_HEADER.sizeof() + len(body)
    header = Container(size=size, version=1, header_size=48, copy_size=size,
                       volume_guid=protector.guid, nonce_counter=1, method=0, method_flags=0,
                       creation_time=filetime)
    return bytes(structs.DATASET_HEADER.build(header)) + bytes(body)
