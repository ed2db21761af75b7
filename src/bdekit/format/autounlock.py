"""The ``Data`` value of an auto-unlocked data volume (``FVEAutoUnlock``), and its parts.

An operating system volume carries a top-level AES-CCM datum of role 0x000b, wrapped under the
OS volume's VMK, whose plaintext is a key datum (key type 0x2002) holding the 32-byte
*auto-unlock key*. A data volume set to unlock automatically gets an external key protector
(protection 0x0200, description ``ExternalKey``); its 32-byte external key, wrapped under the
auto-unlock key, is kept by the OS in the registry: REG_BINARY ``Data`` under
``HKLM\\SYSTEM\\CurrentControlSet\\Control\\FVEAutoUnlock\\{GUID}`` (fixed drives). The value,
112 bytes (the layout three public registry dumps share):

==== ==== ================================================================================
off  size field
==== ==== ================================================================================
0    4    u32 total size, 0x70
4    4    u32 9 (meaning unknown)
8    16   GUID of the external key protector on the data volume
24   8    FILETIME
32   80   AES-CCM datum (``50 00 00 00 05 00 01 00``, nonce, MAC, 44 bytes): the external key
          (key datum, key type 0x2002) under the auto-unlock key
==== ==== ================================================================================

Not public, so refused rather than guessed (:class:`~bdekit.errors.UnsupportedError`): values
of any other size or header (e.g. a DPAPI blob, as removable drives' per-user values under
``HKCU`` may be). Which GUID names the registry key is not documented either; bdekit matches the
protector by the GUID inside the value. There is no public end-to-end sample (OS volume +
value + data volume), so this support is experimental: every AES-CCM tag is checked.
"""

from __future__ import annotations

import dataclasses
import struct
import uuid

from bdekit.errors import UnsupportedError
from bdekit.format.constants import DatumType

DATA_SIZE = 0x70
DATA_VERSION = 9
_HEAD = struct.Struct("<II16sQ")
_DATUM = struct.Struct("<4H")
_DPAPI_MAGIC = bytes.fromhex("01000000d08c9ddf0115d1118c7a00c04fc297eb")
#: Where Windows keeps the values of fixed data drives (below the SYSTEM hive's control set).
REGISTRY_PATH = r"Control\FVEAutoUnlock"


@dataclasses.dataclass(frozen=True)
class AutoUnlockData:
    """One parsed ``Data`` value."""

    guid: uuid.UUID
    filetime: int
    nonce: bytes
    mac: bytes
    ciphertext: bytes = dataclasses.field(repr=False)
    source: str = "--auto-unlock-data"


def parse_data_value(data: bytes, source: str = "--auto-unlock-data") -> AutoUnlockData:
    """Parse a ``Data`` value (module docstring); refuse any layout that is not the known one."""
    if data.startswith(_DPAPI_MAGIC[:4]) and _DPAPI_MAGIC[4:] in data[:64]:
        raise UnsupportedError("a DPAPI blob (removable drives' per-user auto-unlock "
                               "values): its layout is not public", path=source)
    if len(data) != DATA_SIZE:
        raise UnsupportedError(f"{len(data)} bytes; the only known FVEAutoUnlock Data "
                               f"layout has {DATA_SIZE} (size, 9, GUID, FILETIME, AES-CCM datum)",
                               path=source)
    size, version, guid, filetime = _HEAD.unpack_from(data)
    dsize, _role, dtype, _dversion = _DATUM.unpack_from(data, _HEAD.size)
    if size != DATA_SIZE or dsize != DATA_SIZE - _HEAD.size \
            or dtype != DatumType.AES_CCM_ENCRYPTED_KEY:
        raise UnsupportedError(f"size field {size}, datum at offset 32 of size {dsize} "
                               f"and type {dtype}: expected 112 and an 80-byte AES-CCM datum "
                               "(type 5); no other layout is public", path=source, offset=0)
    if version != DATA_VERSION:
        raise UnsupportedError(f"version field {version}; only {DATA_VERSION} is known",
                               path=source, offset=4)
    body = data[_HEAD.size + _DATUM.size:]
    return AutoUnlockData(uuid.UUID(bytes_le=guid), filetime, body[:12], body[12:28], body[28:],
                          source)


def build_data_value(guid: uuid.UUID, filetime: int, datum: bytes) -> bytes:
    """The ``Data`` value for the external key protector ``guid``; ``datum`` is the built
    80-byte AES-CCM datum of the external key under the auto-unlock key."""
    if len(datum) != DATA_SIZE - _HEAD.size:
        raise ValueError("the AES-CCM datum of a Data value has 80 bytes")
    return _HEAD.pack(DATA_SIZE, DATA_VERSION, guid.bytes_le, filetime) + datum


__all__ = ["DATA_SIZE", "REGISTRY_PATH", "AutoUnlockData", "build_data_value",
           "parse_data_value"]
