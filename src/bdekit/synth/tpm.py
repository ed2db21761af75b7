"""TPM protectors of a synthetic volume, and the secret a TPM would release for each.

The nested datums, in the order and sizes seen on real Windows volumes (published TPM sniffing
captures; see :mod:`bdekit.unlock.tpm` for how each is opened):

* TPM (0x0100): TPM-encoded datum only (0x10e bytes).
* TPM + startup key (0x0300): TPM-encoded datum; use key (key type 0x2002: the startup key under
  the VMK); the VMK under ``released key XOR startup key``.
* TPM + PIN (0x0500): unicode ``TPMAndPin``; stretch key (type 0x2004, flags 0x0010, salt;
  SHA-256(UTF-16LE PIN) as key datum 0x2004/0x0010 under the VMK); types 0x10 (u32 0), 0x12
  (``BitLockerAuthData`` + 3 NULs), TPM-encoded (0x146 bytes), 0x11 (u32 0), 0x13 (u32 0); the
  VMK under the intermediate key.
* TPM + PIN + startup key (0x0700): as TPM + PIN with ``TPMAndPinAndStartupKey``, then a use key
  before the VMK, which is under ``intermediate key XOR startup key``.

The TPM-encoded datum cannot be real: it would be a TPM 2.0 sealed object only a TPM opens.
bdekit writes the PCR bit map 0x880 (PCRs 7 and 11) and seeded bytes of the real size, marked
as a placeholder in the manifest. The manifest's ``tpm_secret`` is what the TPM would release:
the 0x2c-byte key datum (TPM: key type 0x2003 with the VMK; TPM + startup key: 0x2000 with the
released key), or for the PIN variants the 0x50-byte AES-CCM datum (version 0, its nonce
between the stretch key's and the VMK's) holding the intermediate key (key type 0x2000) under
the stretched PIN. Startup key variants also write ``{GUID}.BEK`` as a startup key protector
does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

from construct import Container, ListContainer

from bdekit.crypto import keys
from bdekit.errors import UsageError
from bdekit.format import structs
from bdekit.format.constants import DatumType, KeyType, ProtectionType, StretchType, enum_label
from bdekit.format.datum_build import (
    payload_key,
    raw_datum,
    unicode_datum,
    use_key_datum,
    vmk_datum,
)
from bdekit.synth.protectors import StartupKeySpec, guid_text
from bdekit.synth.seeded import NonceSource, SeededRandom

#: Key flags of the PIN's stretch key and PIN hash datums (the u32 0x00102004).
PIN_FLAGS = 0x0010
#: PCR bit map of the placeholder sealed object (PCRs 7 and 11, as on Secure Boot machines).
PCR_BITMAP = 0x880
_SEALED_SIZE = {False: 0x10E - 12, True: 0x146 - 12}


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _u32_datum(datum_type: int) -> Container:
    return raw_datum(datum_type, bytes(4))


def _key_container(key: bytes, key_type: int, flags: int = 0, version: int = 0) -> Container:
    return Container(role=0, type=int(DatumType.KEY), version=version,
                     body=Container(key_type=int(key_type), key_flags=flags, key=bytes(key)))


@dataclasses.dataclass
class TpmSpec:
    """A TPM protector: TPM only, with ``pin`` TPM + PIN, with ``startup_key`` (a directory for
    the ``{GUID}.BEK``) TPM + startup key, with both TPM + PIN + startup key."""

    pin: str | None = None
    startup_key: str | os.PathLike[str] | None = None

    def prepare(self, rng: SeededRandom) -> TpmProtector:
        if self.pin is not None and not self.pin:
            raise UsageError("a TPM+PIN protector needs a non-empty PIN")
        guid = rng.guid()
        tpm_key, bek_key, salt = rng.bytes(32), rng.bytes(32), rng.bytes(16)
        sealed = rng.bytes(_SEALED_SIZE[self.pin is not None])
        startup = None
        if self.startup_key is not None:
            startup = StartupKeySpec(self.startup_key).prepare(rng)
            startup.guid, startup.key = guid, bek_key
        return TpmProtector(guid, self.pin, tpm_key, salt, sealed, startup)


@dataclasses.dataclass
class TpmProtector:
    """A prepared TPM protector (the builder's ``SynthProtector`` protocol)."""

    guid: uuid.UUID
    pin: str | None = dataclasses.field(repr=False)
    key: bytes = dataclasses.field(repr=False)  # released key / intermediate key
    salt: bytes
    sealed: bytes = dataclasses.field(repr=False)
    startup: Any = None  # the startup key part (synth.protectors' startup key protector)
    released: bytes = dataclasses.field(default=b"", repr=False)

    @property
    def protection(self) -> int:
        value = ProtectionType.TPM | (0x0400 if self.pin is not None else 0)
        return value | (ProtectionType.STARTUP_KEY if self.startup is not None else 0)

    def build_datum(self, vmk: bytes, nonces: NonceSource) -> Container:
        sealed = Container(role=0, type=int(DatumType.TPM_ENCODED_KEY), version=1,
                           body=Container(unknown=PCR_BITMAP, data=self.sealed))
        if self.pin is None and self.startup is None:
            self.released = structs.DATUM.build(payload_key(vmk, KeyType.VMK))
            return vmk_datum(self.guid, nonces.tick(), self.protection, [sealed])
        children: list[Container] = []
        if self.pin is not None:
            children = self._pin_children(vmk, nonces, sealed)
        else:
            self.released = structs.DATUM.build(payload_key(self.key, KeyType.TPM_INTERMEDIATE))
            children = [sealed]
        vmk_key = self.key
        if self.startup is not None:
            self.startup.filetime = nonces.filetime
            children.append(use_key_datum(KeyType.EXTERNAL, [
                nonces.wrap(vmk, payload_key(self.startup.key, KeyType.EXTERNAL))]))
            vmk_key = _xor(self.key, self.startup.key)
        children.append(nonces.wrap(vmk_key, payload_key(vmk, KeyType.VMK)))
        return vmk_datum(self.guid, nonces.tick(), self.protection, children)

    def _pin_children(self, vmk: bytes, nonces: NonceSource, sealed: Container
                      ) -> list[Container]:
        """Description .. 0x13 of the PIN variants; sets :attr:`released` (the blob)."""
        assert self.pin is not None
        pin_hash = _key_container(hashlib.sha256(self.pin.encode("utf-16-le")).digest(),
                                  KeyType.PIN_HASH, PIN_FLAGS)
        stretch = Container(role=0, type=int(DatumType.STRETCH_KEY), version=1, body=Container(
            key_type=int(StretchType.TPM_PIN), key_flags=PIN_FLAGS, salt=self.salt,
            datums=ListContainer([nonces.wrap(vmk, pin_hash)])))
        stretched = keys.stretch_key(keys.password_hash(self.pin), self.salt)
        blob = nonces.wrap(stretched, payload_key(self.key, KeyType.TPM_INTERMEDIATE))
        blob.version = 0  # as the TPM releases it
        self.released = structs.DATUM.build(blob)
        text = "TPMAndPinAndStartupKey" if self.startup is not None else "TPMAndPin"
        return [unicode_datum(text), stretch, _u32_datum(DatumType.SIMPLE_1),
                raw_datum(DatumType.CONCAT_HASH_KEY, b"BitLockerAuthData\0\0\0"), sealed,
                _u32_datum(DatumType.SIMPLE_2), _u32_datum(DatumType.SIMPLE_3)]

    def check_files(self, force: bool) -> None:
        if self.startup is not None:
            self.startup.check_files(force)

    def write_files(self, manifest_dir: Path) -> None:
        if self.startup is not None:
            self.startup.write_files(manifest_dir)

    def manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": enum_label(ProtectionType, self.protection), "guid": guid_text(self.guid),
            "key_id": keys.key_id(self.guid), "protection": int(self.protection),
            "tpm_secret": self.released.hex(),
            "sealed_object": "placeholder (seeded bytes, not a TPM object)"}
        if self.pin is not None:
            out.update(pin=self.pin, salt=self.salt.hex(), intermediate_key=self.key.hex())
        elif self.startup is not None:
            out["released_key"] = self.key.hex()
        if self.startup is not None:
            startup = self.startup.manifest()
            out.update(bek_file=startup["bek_file"], bek_name=startup["bek_name"],
                       external_key=startup["external_key"])
        return out


__all__ = ["TpmProtector", "TpmSpec"]
