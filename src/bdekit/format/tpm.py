"""TPM protectors: what a captured TPM secret looks like, and what the sealed datum shows.

What the TPM releases (TPM2_Unseal output; established on real captures published by the TPM
sniffing projects, see the README's protector table):

* TPM only (protection 0x0100) and TPM + startup key (0x0300): a 0x2c-byte key datum
  ``2c 00 00 00 01 00 00 00`` + u16 key type + u16 flags + 32 key bytes. For TPM only the key
  type is 0x2003 and the 32 bytes are the VMK itself; for TPM + startup key it is 0x2000 and
  the 32 bytes are XORed with the startup key (.BEK) to give the key of the protector's
  AES-CCM datum.
* TPM + PIN (0x0500) and TPM + PIN + startup key (0x0700): a 0x50-byte AES-CCM datum
  ``50 00 00 00 05 00 00 00`` + nonce (12) + MAC (16) + 44 bytes of ciphertext, encrypted
  under the stretched PIN; its plaintext is a key datum (type 0x2000) holding the
  intermediate key.

:func:`parse_unsealed` accepts each in the forms seen in the wild: the bare bytes (32-byte
key, or 72-byte nonce + MAC + ciphertext), the datum with its 8-byte header (44 / 80 bytes),
or the TPM2B as sniffed off the bus (a big-endian u16 size ``00 2c`` / ``00 50`` first). The
datum version is not checked: unsealed datums carry 0 or 1.

The sealed object itself (TPM-encoded datum, type 6) is a TPM 2.0 sealed data object that only
the TPM can open. Its layout is not documented; what is inferred (u32 at offset 8 = PCR bit
map, then big-endian TPM2B_PRIVATE and TPM2B_PUBLIC) is only shown (:func:`describe_sealed`),
never acted upon.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

from bdekit.errors import UsageError
from bdekit.format.constants import DatumType
from bdekit.format.metadata import Datum

#: Size of the key datum a TPM releases (header 8, key type 4, key 32).
KEY_DATUM_SIZE = 0x2C
#: Size of the AES-CCM datum a TPM releases for PIN protectors (header 8, nonce 12, MAC 16,
#: ciphertext 44).
BLOB_DATUM_SIZE = 0x50
_HEADER = struct.Struct("<4H")


@dataclasses.dataclass(frozen=True)
class Unsealed:
    """A captured TPM secret, normalised: a key (``key_type`` + 32 bytes) or an AES-CCM blob
    (``nonce``, ``mac``, ``ciphertext``)."""

    form: str  # "key" or "blob"
    key: bytes = dataclasses.field(default=b"", repr=False)
    key_type: int | None = None
    nonce: bytes = b""
    mac: bytes = b""
    ciphertext: bytes = dataclasses.field(default=b"", repr=False)

    @property
    def label(self) -> str:
        if self.form == "key":
            kind = f"key type 0x{self.key_type:04x}" if self.key_type is not None else "bare"
            return f"0x2c-byte key datum ({kind})"
        return "0x50-byte AES-CCM blob (TPM+PIN)"


def _strip_tpm2b(data: bytes) -> bytes:
    """``data`` without a leading big-endian TPM2B size equal to the rest's length."""
    if len(data) in (KEY_DATUM_SIZE + 2, BLOB_DATUM_SIZE + 2) \
            and int.from_bytes(data[:2], "big") == len(data) - 2:
        return data[2:]
    return data


def parse_unsealed(data: bytes, source: str = "--tpm-secret") -> Unsealed:
    """The TPM secret in ``data`` (module docstring); :class:`UsageError` for anything else."""
    raw = _strip_tpm2b(bytes(data))
    if len(raw) == 32:
        return Unsealed("key", key=raw)
    if len(raw) == 72:
        return Unsealed("blob", nonce=raw[:12], mac=raw[12:28], ciphertext=raw[28:])
    if len(raw) in (KEY_DATUM_SIZE, BLOB_DATUM_SIZE):
        size, _role, dtype, _version = _HEADER.unpack_from(raw)
        if size == KEY_DATUM_SIZE == len(raw) and dtype == DatumType.KEY:
            return Unsealed("key", key=raw[12:], key_type=int.from_bytes(raw[8:10], "little"))
        if size == BLOB_DATUM_SIZE == len(raw) and dtype == DatumType.AES_CCM_ENCRYPTED_KEY:
            return Unsealed("blob", nonce=raw[8:20], mac=raw[20:36], ciphertext=raw[36:])
        raise UsageError(f"{len(raw)} bytes with datum header size {size}, type "
                         f"{dtype}: expected a key datum (2c 00 .. 00 01 00) or an AES-CCM "
                         "datum (50 00 .. 00 05 00)", path=source)
    raise UsageError(f"{len(data)} bytes is not a TPM secret: expected the 0x2c-byte "
                     "key datum (TPM, TPM+startup key; or the 32 bare key bytes) or the "
                     "0x50-byte AES-CCM datum (TPM+PIN; or its 72 bytes without header), "
                     "optionally with the big-endian TPM2B size in front", path=source)


def describe_sealed(vmk: Datum) -> dict[str, Any] | None:
    """What the TPM-encoded datum of a protector shows (inferred; for display only)."""
    sealed = vmk.find(DatumType.TPM_ENCODED_KEY)
    if sealed is None:
        return None
    bitmap = int(sealed.body.unknown)
    return {"sealed_object_bytes": len(sealed.body.data),
            "pcrs_inferred": [i for i in range(32) if bitmap >> i & 1]}


__all__ = ["BLOB_DATUM_SIZE", "KEY_DATUM_SIZE", "Unsealed", "describe_sealed", "parse_unsealed"]
