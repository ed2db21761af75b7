"""secrets: split from bdekit.protectors (TODO docstring)."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable
from typing import Any

from bdekit.crypto import keys
from bdekit.format.bek import BekFile
from bdekit.format.protector import Protector

log = logging.getLogger(__name__)


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

