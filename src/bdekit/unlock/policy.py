"""Unlock policy: what bdekit does around trying secrets, for the CLI, repair and Python users.

:func:`bdekit.unlock.attempt.unlock` tries secrets against protectors. Every command that
unlocks does more, and :class:`UnlockPolicy` holds that *more* so that it does not depend on
the command line:

* **audit trail** — every key tried is recorded (:class:`bdekit.escrow.audit.AuditLog`, never
  the key itself), and so is a raw FVEK / VMK or the clear key of a suspended volume;
* **keyring narrowing** — of an escrow keyring (:class:`bdekit.escrow.keyring.Keyring`), only
  the keys that match a protector of this volume are tried; none matching (and nothing else
  given) is a :class:`MissingKeyError` that lists the protectors;
* **typo repair** — with ``fix_typos`` (1 or 2), recovery passwords that fail their check
  digits are set aside, and when no secret unlocks, the likely corrections of each typed
  recovery password are tested (:func:`bdekit.unlock.typos.search`, bounded by
  ``max_candidates``); without it, a malformed recovery password gets a hint that names
  ``--fix-typos``;
* **what happened** — :meth:`UnlockPolicy.unlock` returns an :class:`UnlockOutcome`: the
  :class:`UnlockResult`, the corrected recovery password if a typo search found one (a secret:
  the caller decides where to show it), and notes for the user (which escrow entry or file
  unlocked, and the reminder to rotate a recovery password or recovery key once used);
* **nothing passes silently** — a secret the user supplied (not a keyring entry) that did not
  open the volume gets a warning naming its kind, where it came from, why (wrong for a
  protector, fits no protector, or not checked because another key opened the volume first)
  and the protector that did unlock.

The caller checks its outputs *before* it calls :meth:`UnlockPolicy.unlock`, so the audit
trail's ``unlocked`` record and the rotation reminder only follow a run that will write.

Progress lines (the size of a typo search) go to the ``announce`` callback as they happen.
Every error raised names the image. The volume is anything with the members of
:class:`UnlockableVolume` (a :class:`bdekit.volume.bde.BdeVolume`, as the layers above pass).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from bdekit.crypto import keys
from bdekit.errors import BdeError, KeyError_, MissingKeyError, RecoveryPasswordFormatError
from bdekit.escrow import audit
from bdekit.escrow.secrets import (
    AttemptHook,
    AttemptOutcome,
    KeyCandidate,
    SecretKind,
    Secrets,
    UnlockResult,
    UnlockVia,
)
from bdekit.format.constants import ProtectionType
from bdekit.format.metadata import Metadata
from bdekit.format.protector import Protector
from bdekit.unlock import typos

if TYPE_CHECKING:  # a keyring is loaded by its caller; this module only narrows it
    from bdekit.escrow.keyring import Keyring

log = logging.getLogger(__name__)

#: Hint added to a malformed recovery password when ``fix_typos`` is off.
FIX_TYPOS_HINT = ("--fix-typos tests its likely corrections; `bdekit keys check` explains "
                  "each block")

#: Sources that are the user's own typing (no "unlocked with ... from ..." note for them).
_TYPED_SOURCES = ("command line", "--fvek", "--vmk", "prompt", "standard input",
                  "$BDEKIT_PASSWORD", "$BDEKIT_RECOVERY_PASSWORD")


class UnlockableVolume(Protocol):
    """What the policy needs of a volume (:class:`bdekit.volume.bde.BdeVolume` has it)."""

    @property
    def path(self) -> str | None: ...

    @property
    def metadata(self) -> Metadata: ...

    @property
    def protectors(self) -> Sequence[Protector]: ...

    def unlock(self, secrets: Secrets, *, on_attempt: AttemptHook | None = ...
               ) -> UnlockResult: ...

    def set_key(self, result: UnlockResult) -> None: ...


@dataclasses.dataclass
class UnlockOutcome:
    """What :meth:`UnlockPolicy.unlock` did."""

    result: UnlockResult
    #: the recovery password a typo search found (a secret: never logged)
    corrected: str | None = dataclasses.field(default=None, repr=False)
    #: lines for the user: which escrow entry or file unlocked, the rotation reminder
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class UnlockPolicy:
    """How to unlock: escrow keyring, typo repair, audit trail (see the module docstring)."""

    keyring: Keyring | None = None
    #: 1: correct blocks that fail their check digit; 2: also errors a check digit misses
    fix_typos: int | None = None
    #: bound on the corrections a typo search tests (default: typos.DEFAULT_MAX_CANDIDATES)
    max_candidates: int | None = None
    #: the audit log (None: $BDEKIT_AUDIT_LOG or the user's state directory)
    audit_log: str | os.PathLike[str] | None = None
    #: the command recorded in the audit log
    command: str = "bdekit"
    #: progress lines (e.g. how many corrections a typo search tests); None: silent
    announce: Callable[[str], None] | None = None
    #: processes of a typo search (None: one per core)
    workers: int | None = None

    def unlock(self, volume: UnlockableVolume, secrets: Secrets) -> UnlockOutcome:
        """Unlock ``volume`` (its key is set) or raise, naming the image."""
        try:
            return self._unlock(volume, secrets)
        except BdeError as exc:
            raise exc.with_context(path=volume.path) from None

    # -- the steps ----------------------------------------------------------------------------
    def _unlock(self, volume: UnlockableVolume, secrets: Secrets) -> UnlockOutcome:
        trail = audit.AuditLog(self.audit_log, command=self.command, image=volume.path,
                               volume_guid=volume.metadata.volume_guid)
        protectors = list(volume.protectors)
        narrowed = self.narrow(secrets, protectors)
        typed_bad = self._set_aside_mistyped(narrowed)
        corrected: str | None = None
        tried: list[tuple[KeyCandidate, Protector | None, AttemptOutcome]] = []

        def hook(cand: KeyCandidate, protector: Protector | None,
                 outcome: AttemptOutcome) -> None:
            tried.append((cand, protector, outcome))
            trail.attempt(cand, protector, outcome)

        try:
            if narrowed.empty and typed_bad and not _has_clear_key(protectors):
                raise MissingKeyError("only mistyped recovery passwords were given")
            result = volume.unlock(narrowed, on_attempt=hook)
        except RecoveryPasswordFormatError as exc:
            raise exc.with_hint(FIX_TYPOS_HINT) from None
        except KeyError_ as first_error:
            typed = typed_bad + narrowed.recovery_passwords
            if not self.fix_typos or not typed:
                raise
            found = self._search_typos(volume, typed, trail, first_error)
            volume.set_key(found.result)
            result, corrected = found.result, found.password
        if result.via in (UnlockVia.FVEK, UnlockVia.VMK, UnlockVia.CLEAR_KEY):
            trail.used(result.via, result.source, AttemptOutcome.UNLOCKED, result.protector)
        notes = unlock_notes(result)
        if corrected is None:
            notes += self._unused(narrowed, protectors, tried, result)
        return UnlockOutcome(result, corrected, notes)

    def _unused(self, secrets: Secrets, protectors: Sequence[Protector],
                tried: Sequence[tuple[KeyCandidate, Protector | None, AttemptOutcome]],
                result: UnlockResult) -> list[str]:
        """A warning for each secret the user supplied that did not open the volume."""
        escrowed = {c.source for c in self.keyring.candidates()} if self.keyring else set()
        opened = _opened_by(result)
        out: list[str] = []
        for cand in secrets.all_candidates():
            if cand.source in escrowed or _part_of_tpm_unlock(cand, result):
                continue
            outcomes = [(p, o) for c, p, o in tried if c is cand or _same_candidate(c, cand)]
            if any(o == AttemptOutcome.UNLOCKED for _p, o in outcomes):
                continue
            what = f"the {cand.kind} from {cand.source}"
            wrong = [p for p, o in outcomes if o == AttemptOutcome.WRONG_KEY and p is not None]
            if wrong:
                why = "is wrong: " + ", ".join(f"protector {{{_guid(p)}}} rejects it"
                                               for p in wrong)
            elif not any(cand.match(p) is not None for p in protectors):
                why = "fits no protector of this volume"
            else:
                why = "was not checked"
            out.append(f"bdekit: warning: {what} {why}; the volume was unlocked {opened}")
        return out

    def narrow(self, secrets: Secrets, protectors: Sequence[Protector]) -> Secrets:
        """A copy of ``secrets`` whose keyring keys are only those matching ``protectors``.

        Keys of the keyring found in ``secrets`` (a command adds them all, to know that it was
        given something) are replaced by the matching ones; other secrets stay.
        """
        if self.keyring is None:
            return dataclasses.replace(secrets, candidates=list(secrets.candidates))
        every = self.keyring.candidates()
        others = [c for c in secrets.candidates if c not in every]
        matching = self.keyring.candidates(protectors)
        log.info("keyring: %d of %d escrowed keys match a protector of this volume",
                 len(matching), len(self.keyring))
        narrowed = dataclasses.replace(secrets, candidates=matching + others)
        if not matching and narrowed.empty:
            listing = ", ".join(f"{p.type_name} {p.key_id}" for p in protectors) or "none"
            raise MissingKeyError(f"none of the {len(self.keyring)} escrowed keys in the "
                                  f"keyring matches a protector of this volume (protectors: "
                                  f"{listing})")
        return narrowed

    def _set_aside_mistyped(self, secrets: Secrets) -> list[str]:
        """With ``fix_typos``: remove (and return) the recovery passwords that cannot be
        right as typed, so that they go to the typo search rather than fail the unlock."""
        if not self.fix_typos:
            return []
        good: list[str] = []
        bad: list[str] = []
        for rp in secrets.recovery_passwords:
            try:
                keys.parse_recovery_password(rp)
            except RecoveryPasswordFormatError:
                bad.append(rp)
            else:
                good.append(rp)
        secrets.recovery_passwords = good
        return bad

    def _search_typos(self, volume: UnlockableVolume, typed: list[str], trail: audit.AuditLog,
                      first_error: KeyError_) -> typos.TypoResult:
        """The first typed recovery password whose corrections include one that unlocks."""
        level = int(self.fix_typos or 1)
        limit = self.max_candidates or typos.DEFAULT_MAX_CANDIDATES
        last: KeyError_ = first_error
        for text in typed:
            try:
                return typos.search(volume.metadata, text, level=level, max_candidates=limit,
                                    workers=self.workers, on_attempt=trail.attempt,
                                    path=volume.path, announce=self.announce)
            except KeyError_ as exc:
                last = exc
        raise last


def unlock_notes(result: UnlockResult) -> list[str]:
    """What to tell the user after an unlock: which file or escrow entry unlocked (not for
    what they typed), and the reminder to rotate a recovery password or key once used."""
    out: list[str] = []
    if result.source and result.source not in _TYPED_SOURCES \
            and result.via not in (UnlockVia.CLEAR_KEY, UnlockVia.DECRYPTED):
        who = (f" (protector {{{str(result.protector.guid).upper()}}})"
               if result.protector else "")
        out.append(f"bdekit: unlocked with {result.via} from {result.source}{who}")
    reminder = audit.rotation_reminder(result.via, result.protector)
    if reminder:
        out.append(reminder)
    return out


def _guid(protector: Protector) -> str:
    return str(protector.guid).upper()


def _opened_by(result: UnlockResult) -> str:
    if result.via == UnlockVia.CLEAR_KEY and result.protector is not None:
        return f"with the clear key of protector {{{_guid(result.protector)}}}"
    if result.protector is not None:
        return f"with {result.via} via protector {{{_guid(result.protector)}}}"
    return f"with {result.via or 'no key'} ({result.source or 'no protector'})"


def _part_of_tpm_unlock(cand: KeyCandidate, result: UnlockResult) -> bool:
    """A startup key that a TPM+startup key protector used with the TPM's secret."""
    return (result.via == UnlockVia.TPM and cand.kind == SecretKind.BEK
            and result.protector is not None and cand.guid == result.protector.guid)


def _same_candidate(a: KeyCandidate, b: KeyCandidate) -> bool:
    return a.kind == b.kind and a.source == b.source and a.value is b.value


def _has_clear_key(protectors: Sequence[Protector]) -> bool:
    return any(p.protection == ProtectionType.CLEAR_KEY for p in protectors)


__all__ = ["FIX_TYPOS_HINT", "UnlockOutcome", "UnlockPolicy", "UnlockableVolume", "unlock_notes"]
