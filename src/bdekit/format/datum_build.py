"""Building datums and dataset headers: construct containers ready for ``structs.DATUM.build``.

The one place that spells out the fields of the datums bdekit writes (the synthetic image
builder, the certificate protector layout, key packages).  Pure functions: no key is
encrypted here; :func:`bdekit.unlock.vmk.wrap_key` encrypts a datum and wraps it with
:func:`encrypted_key_datum`.

Every datum: 8-byte header (size of the whole datum, role, type, version) and a body whose
layout depends on the type (``structs.DATUM``; sizes are computed when building):

* key (1): key type u16 (:class:`~bdekit.format.constants.KeyType`, or the encryption method
  for the FVEK), key flags u16 0, the key bytes.  Windows writes version 1 in the clear (clear
  key, BEK file) and version 0 for the key datum inside an AES-CCM datum (:func:`payload_key`).
* unicode (2): UTF-16LE text with a terminating NUL.
* stretch key (3): stretch type u16 (:class:`~bdekit.format.constants.StretchType`), flags 0,
  16-byte salt, nested datums.
* use key (4): key type u16, flags 0, nested datums.
* AES-CCM encrypted key (5): 12-byte nonce (FILETIME + counter), 16-byte MAC, ciphertext.
* VMK (8, role 2): protector GUID, modification FILETIME, u16 0, protection type, nested datums.
* external key (9, role 6 in a BEK file): GUID, FILETIME, nested datums.
* virtualization info (15, role 15): offset and size (u64 each) of the relocated header block.

A dataset header (48 bytes): size of the dataset (header + datums), version 1, header size 48,
copy size (= size), volume GUID, next nonce counter, encryption method, method flags, creation
FILETIME.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from construct import Container, ListContainer

from bdekit.format import structs
from bdekit.format.constants import DatumRole, DatumType


def key_datum(key: bytes, key_type: int, role: int = 0, version: int = 1) -> Container:
    """A key datum (type 1): version 1 in the clear (clear key, BEK file)."""
    return Container(role=role, type=int(DatumType.KEY), version=version,
                     body=Container(key_type=int(key_type), key_flags=0, key=bytes(key)))


def payload_key(key: bytes, key_type: int) -> Container:
    """The key datum inside an AES-CCM datum: Windows writes these with version 0."""
    return key_datum(key, key_type, version=0)


def unicode_datum(text: str, role: int = 0) -> Container:
    """A unicode datum (type 2, version 1): UTF-16LE with a terminating NUL."""
    return Container(role=role, type=int(DatumType.UNICODE), version=1,
                     body=Container(data=(text + "\0").encode("utf-16-le")))


def encrypted_key_datum(nonce: bytes, mac: bytes, data: bytes, role: int = 0) -> Container:
    """An AES-CCM encrypted key datum (type 5, version 1) from its nonce, MAC and ciphertext."""
    return Container(role=role, type=int(DatumType.AES_CCM_ENCRYPTED_KEY), version=1,
                     body=Container(nonce=bytes(nonce), mac=bytes(mac), data=bytes(data)))


def stretch_key_datum(stretch_type: int, salt: bytes, children: Sequence[Container]
                      ) -> Container:
    """A stretch key datum (type 3, role 0, version 1) with its salt and nested datums."""
    return Container(role=0, type=int(DatumType.STRETCH_KEY), version=1, body=Container(
        key_type=int(stretch_type), key_flags=0, salt=bytes(salt),
        datums=ListContainer(children)))


def use_key_datum(key_type: int, children: Sequence[Container]) -> Container:
    """A use key datum (type 4, role 0, version 1) with its nested datums."""
    return Container(role=0, type=int(DatumType.USE_KEY), version=1, body=Container(
        key_type=int(key_type), key_flags=0, datums=ListContainer(children)))


def vmk_datum(guid: uuid.UUID, modified_time: int, protection: int,
              children: Sequence[Container], version: int = 1) -> Container:
    """A VMK protector datum (role 2, type 8)."""
    return Container(role=int(DatumRole.VOLUME_MASTER_KEY), type=int(DatumType.VOLUME_MASTER_KEY),
                     version=version,
                     body=Container(guid=guid, modified_time=modified_time, unknown=0,
                                    protection=int(protection), datums=ListContainer(children)))


def external_key_datum(guid: uuid.UUID, modified_time: int, children: Sequence[Container],
                       role: int = DatumRole.STARTUP_KEY) -> Container:
    """An external key datum (type 9, version 1; role 6 in a BEK file)."""
    return Container(role=int(role), type=int(DatumType.EXTERNAL_KEY), version=1,
                     body=Container(guid=guid, modified_time=modified_time,
                                    datums=ListContainer(children)))


def virtualization_datum(offset: int, size: int) -> Container:
    """The virtualization info datum (role 15, type 15, version 1) without Windows 10's 76
    trailing bytes (their meaning is unknown; readers ignore them)."""
    return Container(role=int(DatumRole.VIRTUALIZATION_INFO),
                     type=int(DatumType.VIRTUALIZATION_INFO), version=1,
                     body=Container(offset=offset, size=size, rest=b""))


def raw_datum(datum_type: int, data: bytes, role: int = 0) -> Container:
    """A datum (version 1) whose body is opaque bytes (e.g. public key info, type 14)."""
    return Container(role=role, type=int(datum_type), version=1, body=Container(data=data))


def dataset_header(volume_guid: uuid.UUID, *, nonce_counter: int, method: int,
                   creation_time: int, body_size: int = 0, method_flags: int = 0) -> Container:
    """A dataset header (version 1) for ``body_size`` bytes of datums: size = copy size =
    48 + ``body_size``."""
    size = structs.DATASET_HEADER.sizeof() + body_size
    return Container(size=size, version=1, header_size=structs.DATASET_HEADER.sizeof(),
                     copy_size=size, volume_guid=volume_guid, nonce_counter=nonce_counter,
                     method=method, method_flags=method_flags, creation_time=creation_time)


__all__ = ["dataset_header", "encrypted_key_datum", "external_key_datum", "key_datum",
           "payload_key", "raw_datum", "stretch_key_datum", "unicode_datum", "use_key_datum",
           "virtualization_datum", "vmk_datum"]
