"""Protectors of a synthetic volume: the VMK datums they write, their secrets, their files.

Protector datums (VMK datum: GUID, FILETIME, u16 0, protection; nested datums)
    Every wrapped key is an AES-CCM datum whose plaintext is a key datum (role 0, type 1,
    version 0 -- Windows writes version 0 inside AES-CCM datums, version 1 in the clear).
    Key types (:class:`~bdekit.format.constants.KeyType`) as Windows writes them: VMK 0x2003,
    escrowed stretched key 0x2007 (password) / 0x2008 (recovery password), recovery key 0x1000
    (16 bytes), external key 0x2002, clear key 0x2000, SHA-256 validation 0x2005, FVEK = the
    method.  Besides the VMK wrapped under the protector key, each protector escrows its own
    secret under the VMK (so that Windows can show a recovery password or re-create a BEK from
    the VMK).

    * recovery password (0x0800): unicode ``DiskPassword``; stretch key (stretch type 0x1000,
      salt) holding the 16-byte recovery key (role 18) and the stretched key (role 19), both
      under the VMK; the VMK under the stretched key.
    * password (0x2000): stretch key (stretch type 0x1001, salt) holding the stretched key under
      the VMK; the VMK under the stretched key.
    * startup key (0x0200): unicode ``ExternalKey``; use key (type 4, key type 0x2002) holding
      the external key under the VMK; the VMK under the external key.  The ``{GUID}.BEK`` file
      (:func:`build_bek`): dataset header (size, version 1, header size 48, copy size, GUID =
      protector GUID, nonce counter 1, method 0, FILETIME) + external key datum (role 6, type 9:
      GUID, FILETIME, unicode ``ExternalKey``, key datum 0x2002 with the 32-byte key).
    * clear key (0x0000, VMK datum version 3; suspended protection): the clear key (key datum
      0x2000) and the VMK under it.
    * any object with ``guid``, ``protection``, ``build_datum(vmk, nonces)`` and ``manifest()``
      (see :class:`SynthProtector`), e.g. :class:`bdekit.synth.certificate.CertificateSpec`,
      :class:`bdekit.synth.tpm.TpmSpec`, :class:`bdekit.synth.autounlock.AutoUnlockSpec`.

A *spec* (:class:`RecoveryPasswordSpec` ...) is what a caller asks for; :func:`prepare_protector`
draws its GUID, salt and keys from the seed (one stream per protector index) and returns the
prepared protector the builder calls.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from construct import Container

from bdekit.crypto import keys
from bdekit.errors import OutputExistsError, UsageError
from bdekit.format import structs
from bdekit.format.constants import EscrowRole, KeyType, ProtectionType, StretchType
from bdekit.format.datum_build import (
    dataset_header,
    external_key_datum,
    key_datum,
    payload_key,
    stretch_key_datum,
    unicode_datum,
    use_key_datum,
    vmk_datum,
)
from bdekit.image.files import write_atomic
from bdekit.synth.seeded import NonceSource, SeededRandom


@runtime_checkable
class SynthProtector(Protocol):
    """What :func:`bdekit.synth.build` needs of a protector (the extension point).

    ``build_datum`` returns the VMK datum (role 2, type 8) as a construct ``Container``; it
    wraps the VMK under its own key with ``nonces.wrap(key, payload_key(vmk, 0x2003))`` (or draws
    nonces by calling ``nonces()``).  ``manifest()`` returns the protector's manifest entry
    (``type``, ``guid`` and the secret).  Optional: ``check_files(force)`` before the build and
    ``write_files(manifest_dir)`` after it, for protectors that write files.
    """

    guid: uuid.UUID
    protection: int

    def build_datum(self, vmk: bytes, nonces: NonceSource) -> Container: ...

    def manifest(self) -> dict[str, Any]: ...


def guid_text(guid: uuid.UUID) -> str:
    """A GUID as Windows shows it: upper case, no braces."""
    return str(guid).upper()


def build_bek(guid: uuid.UUID, key: bytes, filetime: int) -> bytes:
    """A startup key file (``{GUID}.BEK``) in Windows' layout."""
    external = external_key_datum(guid, filetime, [unicode_datum("ExternalKey"),
                                                   key_datum(key, KeyType.EXTERNAL)])
    body = structs.DATUM.build(external)
    header = dataset_header(guid, nonce_counter=1, method=0, creation_time=filetime,
                            body_size=len(body))
    return structs.DATASET_HEADER.build(header) + body


@dataclasses.dataclass
class RecoveryPasswordSpec:
    """A recovery password protector; ``value=None`` generates one from the seed."""

    value: str | None = None

    def prepare(self, rng: SeededRandom) -> _RecoveryPasswordProtector:
        guid = rng.guid()
        salt = rng.bytes(16)
        generated = keys.format_recovery_password(rng.bytes(16))
        text = self.value if self.value is not None else generated
        recovery_key = keys.parse_recovery_password(text)
        return _RecoveryPasswordProtector(guid, keys.format_recovery_password(recovery_key),
                                          recovery_key, salt)


@dataclasses.dataclass
class PasswordSpec:
    """A user password protector."""

    password: str

    def prepare(self, rng: SeededRandom) -> _PasswordProtector:
        if not self.password:
            raise UsageError("a password protector needs a non-empty password")
        return _PasswordProtector(rng.guid(), self.password, rng.bytes(16))


@dataclasses.dataclass
class StartupKeySpec:
    """A startup key protector; its ``{GUID}.BEK`` file is written into ``directory``."""

    directory: str | os.PathLike[str]

    def prepare(self, rng: SeededRandom) -> _StartupKeyProtector:
        return _StartupKeyProtector(rng.guid(), rng.bytes(32), Path(self.directory))


@dataclasses.dataclass
class ClearKeySpec:
    """A clear key (protection suspended): the VMK is readable without any secret."""

    def prepare(self, rng: SeededRandom) -> _ClearKeyProtector:
        return _ClearKeyProtector(rng.guid(), rng.bytes(32))


@dataclasses.dataclass
class _RecoveryPasswordProtector:
    guid: uuid.UUID
    password: str
    recovery_key: bytes
    salt: bytes
    protection: int = ProtectionType.RECOVERY_PASSWORD
    key: bytes = b""

    def build_datum(self, vmk: bytes, nonces: NonceSource) -> Container:
        self.key = keys.stretch_key(keys.recovery_password_hash(self.recovery_key), self.salt)
        stretch = stretch_key_datum(StretchType.RECOVERY_PASSWORD, self.salt, [
            nonces.wrap(vmk, payload_key(self.recovery_key, KeyType.RECOVERY_KEY),
                        EscrowRole.RECOVERY_KEY),
            nonces.wrap(vmk, payload_key(self.key, KeyType.RECOVERY_ESCROW),
                        EscrowRole.STRETCHED_KEY)])
        children = [unicode_datum("DiskPassword"), stretch,
                    nonces.wrap(self.key, payload_key(vmk, KeyType.VMK))]
        return vmk_datum(self.guid, nonces.tick(), self.protection, children)

    def manifest(self) -> dict[str, Any]:
        return {"type": "recovery-password", "guid": guid_text(self.guid),
                "key_id": keys.key_id(self.guid), "protection": int(self.protection),
                "recovery_password": self.password, "recovery_key": self.recovery_key.hex(),
                "salt": self.salt.hex(), "protector_key": self.key.hex()}


@dataclasses.dataclass
class _PasswordProtector:
    guid: uuid.UUID
    password: str
    salt: bytes
    protection: int = ProtectionType.PASSWORD
    key: bytes = b""

    def build_datum(self, vmk: bytes, nonces: NonceSource) -> Container:
        self.key = keys.stretch_key(keys.password_hash(self.password), self.salt)
        stretch = stretch_key_datum(StretchType.PASSWORD, self.salt, [
            nonces.wrap(vmk, payload_key(self.key, KeyType.PASSWORD_ESCROW))])
        children = [stretch, nonces.wrap(self.key, payload_key(vmk, KeyType.VMK))]
        return vmk_datum(self.guid, nonces.tick(), self.protection, children)

    def manifest(self) -> dict[str, Any]:
        return {"type": "password", "guid": guid_text(self.guid),
                "key_id": keys.key_id(self.guid), "protection": int(self.protection),
                "password": self.password, "salt": self.salt.hex(),
                "protector_key": self.key.hex()}


@dataclasses.dataclass
class _StartupKeyProtector:
    guid: uuid.UUID
    key: bytes
    directory: Path
    protection: int = ProtectionType.STARTUP_KEY
    filetime: int = 0
    manifest_dir: Path | None = None

    @property
    def path(self) -> Path:
        return self.directory / ("{" + guid_text(self.guid) + "}.BEK")

    def build_datum(self, vmk: bytes, nonces: NonceSource) -> Container:
        self.filetime = nonces.filetime
        use = use_key_datum(KeyType.EXTERNAL, [
            nonces.wrap(vmk, payload_key(self.key, KeyType.EXTERNAL))])
        children = [unicode_datum("ExternalKey"), use,
                    nonces.wrap(self.key, payload_key(vmk, KeyType.VMK))]
        return vmk_datum(self.guid, nonces.tick(), self.protection, children)

    def bek(self) -> bytes:
        return build_bek(self.guid, self.key, self.filetime)

    def check_files(self, force: bool) -> None:
        if self.directory.exists() and not self.directory.is_dir():
            raise UsageError(f"startup key directory {self.directory} is not a directory")
        if self.path.exists() and not force and self.path.read_bytes() != self.bek():
            raise OutputExistsError(f"{self.path} exists with another key (use --force to "
                                    "overwrite)", path=self.path)

    def write_files(self, manifest_dir: Path) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, self.bek())
        self.manifest_dir = manifest_dir

    def manifest(self) -> dict[str, Any]:
        where = self.path
        if self.manifest_dir is not None:
            where = Path(os.path.relpath(self.path, self.manifest_dir))
        return {"type": "startup-key", "guid": guid_text(self.guid),
                "key_id": keys.key_id(self.guid), "protection": int(self.protection),
                "bek_file": str(where), "bek_name": self.path.name,
                "external_key": self.key.hex()}


@dataclasses.dataclass
class _ClearKeyProtector:
    guid: uuid.UUID
    key: bytes
    protection: int = ProtectionType.CLEAR_KEY

    def build_datum(self, vmk: bytes, nonces: NonceSource) -> Container:
        children = [key_datum(self.key, KeyType.CLEAR),
                    nonces.wrap(self.key, payload_key(vmk, KeyType.VMK))]
        return vmk_datum(self.guid, nonces.tick(), self.protection, children, version=3)

    def manifest(self) -> dict[str, Any]:
        return {"type": "clear-key", "guid": guid_text(self.guid),
                "key_id": keys.key_id(self.guid), "protection": int(self.protection),
                "clear_key": self.key.hex()}


def prepare_protector(spec: Any, seed: int | str, index: int) -> Any:
    """The prepared protector of ``spec`` (its ``prepare(rng)``, or ``spec`` itself when it is
    already a :class:`SynthProtector`)."""
    if hasattr(spec, "prepare"):
        return spec.prepare(SeededRandom(seed, f"protector:{index}"))
    if all(hasattr(spec, name) for name in ("guid", "protection", "build_datum", "manifest")):
        return spec
    raise UsageError(f"protector {spec!r} has neither prepare() nor guid/protection/"
                     "build_datum()/manifest()")
