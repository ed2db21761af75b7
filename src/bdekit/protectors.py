"""Key protectors (VMK datums) and unlocking a volume with the secrets a user holds.

A protector is a top-level datum of type VMK (8), role 2: protector GUID, modification time,
protection type, then nested datums. How the VMK is wrapped depends on the type:

* recovery password (0x0800) and password (0x2000): a stretch key datum (salt) and an AES-CCM
  datum holding the VMK under the stretched key;
* startup key (0x0200): the 32-byte key of the ``{GUID}.BEK`` file (external key datum) unwraps
  the AES-CCM datum directly; the BEK's GUID is the protector GUID;
* clear key (0x0000, suspended protection): a key datum inside the protector is the key;
* TPM variants: need the original machine's TPM, unsupported offline.

The full volume encryption key (FVEK) is the top-level AES-CCM datum of role 3, wrapped by the
VMK; its plaintext key datum's key type is the encryption method.

A wrong secret shows as an AES-CCM authentication failure (:class:`WrongKeyError`); secrets that
fit no protector are never tried against it. Secrets are never logged.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bdekit import keys, structs
from bdekit.constants import (
    DatumRole,
    DatumType,
    EncryptionMethod,
    ProtectionType,
    enum_label,
)
from bdekit.errors import (
    BdeError,
    FormatError,
    MissingKeyError,
    UnsupportedError,
    UsageError,
    WrongKeyError,
)
from bdekit.metadata import Datum, Metadata, filetime_to_datetime, parse_datums, parse_struct

log = logging.getLogger(__name__)

TPM_TYPES = {ProtectionType.TPM, ProtectionType.TPM_PIN, ProtectionType.TPM_STARTUP_KEY,
             ProtectionType.TPM_PIN_STARTUP_KEY}


# --------------------------------------------------------------------------------------------
# BEK files
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BekFile:
    guid: uuid.UUID
    key: bytes = dataclasses.field(repr=False)
    path: str
    created: Any = None

    @property
    def key_id(self) -> str:
        return keys.key_id(self.guid)


def parse_bek(data: bytes, path: str = "<bek>") -> BekFile:
    """Parse a startup key / recovery key file (.BEK)."""
    if len(data) < 48 + 8:
        raise FormatError(f"{len(data)} bytes is too short for a BEK file (dataset header + "
                          "external key datum)", path=path, offset=0)
    header = parse_struct(structs.DATASET_HEADER, data[:48], "BEK dataset header", 0, path)
    if header.header_size != 48 or not 56 <= header.size <= len(data):
        raise FormatError(f"not a BEK file: dataset size {header.size}, header size "
                          f"{header.header_size} (expected 48)", path=path, offset=0)
    datums = parse_datums(data[48:header.size], 48, path)
    for datum in datums:
        if datum.type == DatumType.EXTERNAL_KEY:
            key_datum = datum.find(DatumType.KEY)
            if key_datum is None or len(key_datum.body.key) != 32:
                raise FormatError("BEK external key datum holds no 32-byte key", path=path,
                                  offset=datum.offset)
            return BekFile(datum.body.guid, bytes(key_datum.body.key), path,
                           filetime_to_datetime(datum.body.modified_time))
    raise FormatError("BEK file has no external key datum (type 9)", path=path, offset=48)


def read_bek(path: str | os.PathLike[str]) -> BekFile:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read BEK file: {exc.strerror}", path=path) from None
    return parse_bek(data, os.fspath(path))


# --------------------------------------------------------------------------------------------
# Protectors
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Protector:
    datum: Datum

    @property
    def guid(self) -> uuid.UUID:
        return self.datum.body.guid  # type: ignore[no-any-return]

    @property
    def key_id(self) -> str:
        return keys.key_id(self.guid)

    @property
    def protection(self) -> int:
        return int(self.datum.body.protection)

    @property
    def type_name(self) -> str:
        return enum_label(ProtectionType, self.protection)

    @property
    def modified(self) -> Any:
        return filetime_to_datetime(self.datum.body.modified_time)

    @property
    def salt(self) -> bytes | None:
        stretch = self.datum.find(DatumType.STRETCH_KEY)
        return bytes(stretch.body.salt) if stretch is not None else None

    @property
    def label(self) -> str:
        datum = self.datum.find(DatumType.UNICODE)
        return datum.text if datum else ""

    @property
    def wrapped_vmks(self) -> list[Datum]:
        """Direct AES-CCM children: the VMK wrapped under the protector key."""
        return self.datum.find_all(DatumType.AES_CCM_ENCRYPTED_KEY)

    @property
    def bek_name(self) -> str | None:
        if self.protection in (ProtectionType.STARTUP_KEY, ProtectionType.TPM_STARTUP_KEY,
                               ProtectionType.TPM_PIN_STARTUP_KEY):
            return "{" + str(self.guid).upper() + "}.BEK"
        return None

    @property
    def thumbprint(self) -> str | None:
        info = self.datum.find(DatumType.PUBLIC_KEY_INFO)
        if info is None:
            return None
        from bdekit import certificates  # optional layer, imported lazily

        return certificates.thumbprint_from_datum(info)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "guid": str(self.guid).upper(),
            "key_id": self.key_id,
            "type": self.type_name,
            "protection": self.protection,
            "modified": self.modified.isoformat() if self.modified else None,
        }
        if self.label:
            out["label"] = self.label
        if self.bek_name:
            out["bek_file"] = self.bek_name
        thumb = self.thumbprint
        if thumb:
            out["thumbprint"] = thumb
        return out


def protectors_of(metadata: Metadata) -> list[Protector]:
    return [Protector(d) for d in metadata.find_all(DatumType.VOLUME_MASTER_KEY,
                                                    DatumRole.VOLUME_MASTER_KEY)]


# --------------------------------------------------------------------------------------------
# Secrets and unlocking
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class KeyCandidate:
    """A secret with where it came from (for the audit trail; never the secret itself)."""

    kind: str  # "recovery-password", "password", "bek", "fvek", "vmk", "certificate"
    value: Any = dataclasses.field(repr=False)
    source: str = "command line"
    guid: uuid.UUID | None = None  # the protector it is escrowed for, if known
    key_id: str | None = None


@dataclasses.dataclass
class Secrets:
    recovery_passwords: list[str] = dataclasses.field(default_factory=list)
    passwords: list[str] = dataclasses.field(default_factory=list, repr=False)
    beks: list[BekFile] = dataclasses.field(default_factory=list)
    fvek: bytes | None = dataclasses.field(default=None, repr=False)
    vmk: bytes | None = dataclasses.field(default=None, repr=False)
    candidates: list[KeyCandidate] = dataclasses.field(default_factory=list)
    certificates: list[Any] = dataclasses.field(default_factory=list)

    def all_candidates(self) -> list[KeyCandidate]:
        out = list(self.candidates)
        out += [KeyCandidate("recovery-password", rp) for rp in self.recovery_passwords]
        out += [KeyCandidate("password", pw) for pw in self.passwords]
        out += [KeyCandidate("bek", bek, source=bek.path, guid=bek.guid) for bek in self.beks]
        out += [KeyCandidate("certificate", cert, source=getattr(cert, "path", "certificate"))
                for cert in self.certificates]
        return out

    @property
    def empty(self) -> bool:
        return not (self.all_candidates() or self.fvek or self.vmk)


@dataclasses.dataclass
class UnlockResult:
    fvek: bytes = dataclasses.field(repr=False)
    method: int
    vmk: bytes | None = dataclasses.field(default=None, repr=False)
    via: str = ""  # kind of secret
    protector: Protector | None = None
    source: str = ""

    @property
    def fingerprint(self) -> str:
        return keys.fvek_fingerprint(self.fvek)

    def describe(self, show_keys: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "via": self.via,
            "protector": str(self.protector.guid).upper() if self.protector else None,
            "key_id": self.protector.key_id if self.protector else None,
            "source": self.source,
            "fvek_fingerprint": self.fingerprint,
        }
        if show_keys:
            out["fvek"] = self.fvek.hex()
            out["vmk"] = self.vmk.hex() if self.vmk else None
        return out


AttemptHook = Callable[[KeyCandidate, "Protector | None", str], None]


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


def unlock(metadata: Metadata, secrets: Secrets, *, path: str | None = None,
           on_attempt: AttemptHook | None = None) -> UnlockResult:
    """Unlock with the first secret that fits a protector and verifies; see module docstring."""
    method = metadata.method
    protectors = protectors_of(metadata)
    if metadata.state == 1 and method == EncryptionMethod.NONE:
        return UnlockResult(fvek=b"", method=EncryptionMethod.NONE, via="decrypted")
    if secrets.fvek is not None:
        fvek = normalise_fvek(secrets.fvek, method, path)
        log.info("using the FVEK given (fingerprint %s)", keys.fvek_fingerprint(fvek))
        return UnlockResult(fvek=fvek, method=method, via="fvek", source="--fvek")
    if secrets.vmk is not None:
        try:
            fvek, key_type = decrypt_fvek(metadata, secrets.vmk)
        except WrongKeyError:
            raise WrongKeyError("the VMK given does not decrypt the FVEK (AES-CCM "
                                "authentication failed): wrong VMK", path=path) from None
        return UnlockResult(fvek=fvek, method=key_type or method, vmk=secrets.vmk, via="vmk",
                            source="--vmk")
    # Clear key: suspended protection, used without asking.
    for protector in protectors:
        if protector.protection == ProtectionType.CLEAR_KEY:
            clear = protector.datum.find(DatumType.KEY)
            if clear is None:
                continue
            try:
                vmk = _unwrap_vmk(protector, bytes(clear.body.key))
            except WrongKeyError:
                log.warning("clear key protector %s does not verify", protector.guid)
                continue
            fvek, key_type = decrypt_fvek(metadata, vmk)
            log.info("volume protection is suspended: unlocked with the clear key of protector "
                     "%s", protector.guid)
            return UnlockResult(fvek, key_type or method, vmk, "clear-key", protector,
                                "clear key on the volume")
    candidates = secrets.all_candidates()
    tried = 0
    wrong: list[str] = []
    for cand in candidates:
        for protector in protectors:
            if not fits(protector, cand):
                continue
            tried += 1
            try:
                if cand.kind == "certificate":
                    from bdekit import certificates

                    vmk = certificates.unwrap_vmk(protector, cand.value, metadata=metadata)
                else:
                    key = _protector_key(protector, cand)
                    if key is None:
                        continue
                    vmk = _unwrap_vmk(protector, key)
            except WrongKeyError as exc:
                reason = f" ({exc.message})" if cand.kind == "certificate" else ""
                wrong.append(f"{cand.kind} from {cand.source} against protector "
                             f"{protector.key_id}{reason}")
                if on_attempt:
                    on_attempt(cand, protector, "wrong key")
                continue
            fvek, key_type = decrypt_fvek(metadata, vmk)
            if on_attempt:
                on_attempt(cand, protector, "unlocked")
            log.info("unlocked with %s (%s) via protector %s", cand.kind, cand.source,
                     protector.guid)
            return UnlockResult(fvek, key_type or method, vmk, cand.kind, protector, cand.source)
    if tried:
        raise WrongKeyError("wrong key: " + "; ".join(wrong) + " (AES-CCM authentication "
                            "failed)", path=path)
    _raise_nothing_fits(protectors, candidates, path)
    raise AssertionError("unreachable")


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


def _raise_nothing_fits(protectors: Iterable[Protector], candidates: list[KeyCandidate],
                        path: str | None) -> None:
    plist = list(protectors)
    listing = ", ".join(f"{p.type_name} {{{str(p.guid).upper()}}}" for p in plist) or "none"
    offline = [p for p in plist if p.protection not in TPM_TYPES]
    if plist and not offline:
        raise UnsupportedError(f"only TPM protectors ({listing}); they need the original "
                               "machine's TPM and cannot be unlocked offline", path=path)
    if candidates:
        kinds = ", ".join(sorted({c.kind for c in candidates}))
        beks = [c for c in candidates if c.kind == "bek"]
        extra = ""
        if beks:
            extra = " (BEK file GUID " + ", ".join(
                "{" + str(c.value.guid).upper() + "}" for c in beks) + " matches no protector)"
        raise WrongKeyError(f"no protector accepts the secret given ({kinds}){extra}; "
                            f"protectors: {listing}", path=path)
    raise MissingKeyError(f"no key given; protectors: {listing} (use --recovery-password, "
                          "--password, --bek, --keyring, --certificate, --fvek or --vmk)",
                          path=path)
