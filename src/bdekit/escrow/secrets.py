"""Secrets a user holds, and which key protector each one can open.

* :class:`SecretKind` names a kind of secret (a recovery password, a user password, a BEK file,
  a certificate, a raw FVEK or VMK); :class:`UnlockVia` says how a volume was opened (a kind of
  secret, the clear key of a suspended volume, or nothing needed: a decrypted volume). Their
  values are the strings the JSON output and the audit log show.
* :class:`KeyCandidate` is one secret with where it came from (``command line``, a file and the
  entry in it) and, when escrowed, the protector it was escrowed for (full GUID or 8-character
  key ID). :class:`Secrets` is what one command was given.
* :func:`match_protector` is the one rule that says whether a secret can open a protector, and
  how it was matched: the protection type must fit the kind of secret (a recovery password only
  a recovery password protector, a BEK only the protector of the same GUID, a certificate only a
  protector holding an asymmetric encrypted key, a captured TPM secret only a TPM protector, an
  auto-unlock external key only the startup key protector whose GUID its FVEAutoUnlock value
  names) and, when the secret carries an identifier, the
  identifier must be the protector's. The keyring, the unlock loop, the typo search and
  ``bdekit keys find`` all ask it; it compares kinds and identifiers only (no cryptography).
* :class:`UnlockResult` is what an unlock found: the FVEK, the method, the VMK if known, how
  and through which protector.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from bdekit.crypto import keys
from bdekit.format.bek import BekFile
from bdekit.format.certificate import same_thumbprint
from bdekit.format.constants import DatumType, ProtectionType
from bdekit.format.protector import TPM_TYPES, Protector
from bdekit.format.tpm import Unsealed

log = logging.getLogger(__name__)


class SecretKind(enum.StrEnum):
    """What kind of secret a candidate (or a keyring entry) is."""

    RECOVERY_PASSWORD = "recovery-password"
    PASSWORD = "password"
    BEK = "bek"
    FVEK = "fvek"
    VMK = "vmk"
    CERTIFICATE = "certificate"
    #: a keyring entry holding only a key package (no secret that unlocks)
    KEY_PACKAGE = "key-package"
    #: a captured TPM secret (with the PINs and startup keys given: :class:`TpmSecret`)
    TPM = "tpm"
    #: an external key recovered from an FVEAutoUnlock value (a :class:`BekFile`)
    AUTO_UNLOCK = "auto-unlock"


class UnlockVia(enum.StrEnum):
    """How a volume was opened: a kind of secret, its clear key, or nothing (decrypted)."""

    RECOVERY_PASSWORD = "recovery-password"
    PASSWORD = "password"
    BEK = "bek"
    FVEK = "fvek"
    VMK = "vmk"
    CERTIFICATE = "certificate"
    CLEAR_KEY = "clear-key"
    DECRYPTED = "decrypted"
    TPM = "tpm"
    AUTO_UNLOCK = "auto-unlock"
    NONE = ""


class Match(enum.StrEnum):
    """How a secret was matched to a protector."""

    GUID = "guid"
    KEY_ID = "key id"
    THUMBPRINT = "thumbprint"
    #: no identifier came with the secret; the protector type fits
    UNIDENTIFIED = "unidentified"


class AttemptOutcome(enum.StrEnum):
    """What trying a secret did (the audit log's ``outcome``)."""

    UNLOCKED = "unlocked"
    WRONG_KEY = "wrong key"
    USED = "used"
    #: a key found in a memory image and checked against the volume
    FOUND_IN_MEMORY = "found in memory"
    #: a key written to a key file for another tool
    EXPORTED = "exported"
    #: an escrowed secret shown to the user
    DISCLOSED = "disclosed"


#: The protection type each password-like kind of secret opens.
_PROTECTION_OF = {
    SecretKind.RECOVERY_PASSWORD: ProtectionType.RECOVERY_PASSWORD,
    SecretKind.PASSWORD: ProtectionType.PASSWORD,
}


def match_protector(protector: Protector, kind: SecretKind | str, *,
                    guid: uuid.UUID | None = None, key_id: str | None = None,
                    thumbprint: str | None = None) -> Match | None:
    """How a secret of ``kind`` fits ``protector``, or ``None`` when it cannot open it.

    ``guid`` / ``key_id``: the protector the secret was escrowed for (for a BEK file: the GUID
    in the file, which is its protector's); ``thumbprint``: a certificate's, to match it by
    thumbprint rather than by protector type alone. Identified matches are
    :attr:`Match.GUID`, :attr:`Match.KEY_ID` or :attr:`Match.THUMBPRINT`; a secret without any
    identifier whose kind fits the protector type is :attr:`Match.UNIDENTIFIED`.
    """
    kind = SecretKind(kind)
    if kind in (SecretKind.BEK, SecretKind.AUTO_UNLOCK):
        # a BEK (or an auto-unlock external key) names its protector: nothing else identifies
        # it; TPM+startup key protectors need the TPM's secret too (SecretKind.TPM)
        if kind == SecretKind.AUTO_UNLOCK and protector.protection != ProtectionType.STARTUP_KEY:
            return None
        fits = guid is not None and guid == protector.guid
        return Match.GUID if fits and protector.protection not in TPM_TYPES else None
    if kind == SecretKind.CERTIFICATE:
        if protector.datum.find(DatumType.ASYMMETRIC_ENCRYPTED_KEY) is None:
            return None
        if thumbprint is not None:
            fits = same_thumbprint(thumbprint, protector.thumbprint)
            return Match.THUMBPRINT if fits else None
    elif kind == SecretKind.TPM:
        if protector.protection not in TPM_TYPES:
            return None
    elif _PROTECTION_OF.get(kind) != protector.protection:
        return None
    if guid is not None:
        return Match.GUID if guid == protector.guid else None
    if key_id is not None:
        return Match.KEY_ID if key_id.upper() == protector.key_id else None
    return Match.UNIDENTIFIED


@dataclasses.dataclass
class KeyCandidate:
    """A secret with where it came from (for the audit trail; never the secret itself)."""

    kind: SecretKind
    value: Any = dataclasses.field(repr=False)  # str, BekFile, Certificate or bytes
    source: str = "command line"
    guid: uuid.UUID | None = None  # the protector it is escrowed for, if known
    key_id: str | None = None

    def __post_init__(self) -> None:
        self.kind = SecretKind(self.kind)
        if self.kind in (SecretKind.BEK, SecretKind.AUTO_UNLOCK) and self.guid is None \
                and isinstance(self.value, BekFile):
            self.guid = self.value.guid

    def match(self, protector: Protector) -> Match | None:
        """How this secret fits ``protector`` (:func:`match_protector`)."""
        return match_protector(protector, self.kind, guid=self.guid, key_id=self.key_id)


class HeldCertificate(Protocol):
    """What this layer needs of a loaded certificate (:mod:`bdekit.unlock.certificates`)."""

    @property
    def path(self) -> str: ...

    @property
    def thumbprint(self) -> str: ...


@dataclasses.dataclass
class TpmSecret:
    """A captured TPM secret (``--tpm-secret``), where it came from, and what a TPM protector
    may need with it: the PINs and startup keys the command was given (filled in by
    :meth:`Secrets.all_candidates`; :mod:`bdekit.unlock.tpm` picks what the protector type
    needs)."""

    unsealed: Unsealed = dataclasses.field(repr=False)
    source: str = "--tpm-secret"
    pins: list[str] = dataclasses.field(default_factory=list, repr=False)
    beks: list[BekFile] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Secrets:
    """Everything one command was given to unlock with."""

    recovery_passwords: list[str] = dataclasses.field(default_factory=list)
    passwords: list[str] = dataclasses.field(default_factory=list, repr=False)
    beks: list[BekFile] = dataclasses.field(default_factory=list)
    fvek: bytes | None = dataclasses.field(default=None, repr=False)
    vmk: bytes | None = dataclasses.field(default=None, repr=False)
    candidates: list[KeyCandidate] = dataclasses.field(default_factory=list)
    #: loaded certificates (:class:`bdekit.unlock.certificates.Certificate`)
    certificates: list[HeldCertificate] = dataclasses.field(default_factory=list)
    #: captured TPM secrets and TPM PINs (:mod:`bdekit.unlock.tpm`)
    tpm_secrets: list[TpmSecret] = dataclasses.field(default_factory=list)
    pins: list[str] = dataclasses.field(default_factory=list, repr=False)
    #: where a typed recovery password or password came from, by value (default
    #: ``command line``): ``--password-file FILE``, ``$BDEKIT_PASSWORD``, ``prompt``, ...
    sources: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)

    def source_of(self, value: str) -> str:
        return self.sources.get(value, "command line")

    def all_candidates(self) -> list[KeyCandidate]:
        out = list(self.candidates)
        out += [KeyCandidate(SecretKind.RECOVERY_PASSWORD, rp, source=self.source_of(rp))
                for rp in self.recovery_passwords]
        out += [KeyCandidate(SecretKind.PASSWORD, pw, source=self.source_of(pw))
                for pw in self.passwords]
        out += [KeyCandidate(SecretKind.BEK, bek, source=bek.path, guid=bek.guid)
                for bek in self.beks]
        out += [KeyCandidate(SecretKind.CERTIFICATE, cert, source=cert.path)
                for cert in self.certificates]
        for tpm in self.tpm_secrets:  # the same object each time (the policy compares them)
            tpm.pins[:] = self.pins
            tpm.beks[:] = self.beks
            out.append(KeyCandidate(SecretKind.TPM, tpm, source=tpm.source))
        return out

    @property
    def empty(self) -> bool:
        return not (self.all_candidates() or self.fvek or self.vmk or self.pins)


@dataclasses.dataclass
class UnlockResult:
    fvek: bytes = dataclasses.field(repr=False)
    method: int
    vmk: bytes | None = dataclasses.field(default=None, repr=False)
    via: UnlockVia = UnlockVia.NONE  # kind of secret
    protector: Protector | None = None
    source: str = ""

    def __post_init__(self) -> None:
        self.via = UnlockVia(self.via)

    @property
    def fingerprint(self) -> str:
        return keys.fvek_fingerprint(self.fvek)

    def describe(self, show_keys: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "via": str(self.via),
            "protector": str(self.protector.guid).upper() if self.protector else None,
            "key_id": self.protector.key_id if self.protector else None,
            "source": self.source,
            "fvek_fingerprint": self.fingerprint,
        }
        if show_keys:
            out["fvek"] = self.fvek.hex()
            out["vmk"] = self.vmk.hex() if self.vmk else None
        return out


#: ``on_attempt`` hook of an unlock: (secret tried, protector, outcome).
AttemptHook = Callable[[KeyCandidate, "Protector | None", AttemptOutcome], None]

__all__ = ["AttemptHook", "AttemptOutcome", "HeldCertificate", "KeyCandidate", "Match",
           "SecretKind", "Secrets", "TpmSecret", "UnlockResult", "UnlockVia",
           "match_protector"]
