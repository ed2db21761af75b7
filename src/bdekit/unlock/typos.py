"""Repair a mistyped recovery password by testing its likely corrections in parallel processes.

:func:`bdekit.keys.typo_candidates` lists the valid recovery passwords one typing error per
block away from what was typed (level 1: blocks that fail their check digit; level 2: also the
errors a check digit cannot see, in blocks that pass). Each candidate costs a full stretch
(1,048,576 SHA-256 rounds, about 0.45 s here), so :func:`search`:

* counts the candidates first and refuses more than ``max_candidates`` (a usage error that says
  how many there are);
* hands candidates to a :class:`concurrent.futures.ProcessPoolExecutor` (one process per core
  by default), a few at a time so that it can stop early; a worker gets the candidate and, per
  recovery password protector, the stretch salt and the wrapped VMK datum bytes, stretches, and
  checks the AES-CCM MAC itself: it returns the index of the protector whose MAC verified and
  the VMK, or nothing;
* stops at the first candidate that verifies, then the parent unwraps the FVEK with that VMK
  as a normal unlock would.

Candidates are tried in the order :func:`~bdekit.keys.typo_candidates` yields them (most likely
corrections first); with several processes, the first to verify wins. Every candidate tried is
reported to ``on_attempt`` (the audit trail), never with the candidate itself.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import os
from collections.abc import Callable, Iterator

from bdekit.crypto import keys
from bdekit.errors import BdeError, FormatError, UsageError, WrongKeyError
from bdekit.escrow.secrets import (
    AttemptHook,
    AttemptOutcome,
    KeyCandidate,
    SecretKind,
    UnlockResult,
    UnlockVia,
    match_protector,
)
from bdekit.format.constants import DatumType
from bdekit.format.metadata import Metadata, parse_datums
from bdekit.format.protector import Protector, protectors_of
from bdekit.unlock.vmk import decrypt_fvek

log = logging.getLogger(__name__)

#: Default bound on the number of candidates (about 8 minutes on 2 free cores at 0.45 s a stretch).
DEFAULT_MAX_CANDIDATES = 2000

# (salt, [(nonce, mac, ciphertext), ...]) per recovery password protector: all a worker needs.
Target = tuple[bytes, list[tuple[bytes, bytes, bytes]]]


@dataclasses.dataclass
class TypoResult:
    password: str = dataclasses.field(repr=False)  # the corrected recovery password (secret)
    result: UnlockResult
    tried: int
    total: int


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _targets(protectors: list[Protector]) -> list[Target]:
    out: list[Target] = []
    for p in protectors:
        salt = p.salt
        if salt is None:
            raise FormatError("recovery password protector has no stretch key",
                              offset=p.datum.offset)
        wrapped = [(bytes(w.body.nonce), bytes(w.body.mac), bytes(w.body.data))
                   for w in p.wrapped_vmks]
        out.append((salt, wrapped))
    return out


def try_candidate(candidate: str, targets: list[Target]) -> tuple[int | None, bytes | None]:
    """Worker: stretch ``candidate`` per protector salt and check the MAC.

    Returns (protector index, AES-CCM plaintext) for the first protector whose wrapped VMK
    verifies, else (None, None).
    """
    initial = keys.recovery_password_hash(keys.parse_recovery_password(candidate))
    stretched: dict[bytes, bytes] = {}
    for index, (salt, wrapped) in enumerate(targets):
        key = stretched.get(salt)
        if key is None:
            key = stretched[salt] = keys.stretch_key(initial, salt)
        for nonce, mac, data in wrapped:
            try:
                return index, keys.aes_ccm_decrypt(key, nonce, mac, data)
            except WrongKeyError:
                continue
    return None, None


def _run(candidate: str, targets: list[Target]) -> tuple[str, int | None, bytes | None]:
    index, plain = try_candidate(candidate, targets)
    return candidate, index, plain


def _vmk_from_plain(plain: bytes) -> bytes | None:
    try:
        datums = parse_datums(plain, 0)
    except BdeError:
        return None
    if datums and datums[0].type == DatumType.KEY and len(datums[0].body.key) == 32:
        return bytes(datums[0].body.key)
    return None


def plan(typed: str, level: int, max_candidates: int) -> int:
    """Count the candidates (raises UsageError over ``max_candidates``)."""
    total = keys.count_typo_candidates(typed, level)
    if total > max_candidates:
        raise UsageError(f"--fix-typos={level}: {total} candidate corrections of the recovery "
                         f"password exceed --max-candidates {max_candidates}; raise "
                         "--max-candidates (each costs one full key stretch, about 0.5 s per "
                         "core) or correct the obviously wrong blocks by hand")
    return total


def search(metadata: Metadata, typed: str, *, level: int = 1,
           max_candidates: int = DEFAULT_MAX_CANDIDATES, workers: int | None = None,
           protectors: list[Protector] | None = None, on_attempt: AttemptHook | None = None,
           source: str = "command line", announce: Callable[[str], None] | None = None,
           progress: Callable[[int, int], None] | None = None,
           path: str | None = None) -> TypoResult:
    """Find the correction of ``typed`` that unlocks (see the module docstring).

    Raises :class:`UsageError` for more than ``max_candidates`` candidates (or text that is not
    8 blocks), :class:`WrongKeyError` when no candidate unlocks.
    """
    if protectors is None:
        protectors = [p for p in protectors_of(metadata)
                      if match_protector(p, SecretKind.RECOVERY_PASSWORD) is not None]
    if not protectors:
        raise WrongKeyError("--fix-typos: the volume has no recovery password protector",
                            path=path)
    total = plan(typed, level, max_candidates)
    if total == 0:
        hint = ("every block passes its check digit; --fix-typos=2 also tries the errors "
                "a check digit cannot see") if level == 1 else None
        raise WrongKeyError(f"--fix-typos={level}: no valid recovery password is one typing "
                            "error per block away from the one given", path=path, hint=hint)
    workers = max(1, min(workers or cpu_count(), total))
    if announce:
        announce(f"bdekit: testing {total} correction{'s' if total != 1 else ''} of the "
                 f"recovery password on {workers} process{'es' if workers != 1 else ''} "
                 f"(about {total * 0.45 / workers:.0f} s at most)")
    targets = _targets(protectors)
    attempt_source = f"{source} (typo correction)"
    found: tuple[str, int, bytes] | None = None
    tried = 0

    def report(candidate: str, index: int | None) -> None:
        nonlocal tried
        tried += 1
        if on_attempt is not None:
            cand = KeyCandidate(SecretKind.RECOVERY_PASSWORD, None, source=attempt_source)
            outcome = AttemptOutcome.WRONG_KEY if index is None else AttemptOutcome.UNLOCKED
            for i, protector in enumerate(protectors):
                if index is None or i == index:
                    on_attempt(cand, protector, outcome)
        if progress is not None:
            progress(tried, total)

    candidates: Iterator[str] = keys.typo_candidates(typed, level)
    if workers == 1:
        for candidate in candidates:
            index, plain = try_candidate(candidate, targets)
            report(candidate, index)
            if index is not None and plain is not None:
                found = (candidate, index, plain)
                break
    else:
        found = _parallel(candidates, targets, workers, report)
    if found is None:
        raise WrongKeyError(f"--fix-typos={level}: none of the {tried} corrections of the "
                            "recovery password unlocks the volume", path=path)
    candidate, index, plain = found
    vmk = _vmk_from_plain(plain)
    if vmk is None:
        raise FormatError("the VMK datum decrypted but holds no 32-byte key", path=path)
    fvek, key_type = decrypt_fvek(metadata, vmk)
    protector = protectors[index]
    log.info("typo correction %d of %d unlocks protector %s", tried, total, protector.guid)
    result = UnlockResult(fvek, key_type or metadata.method, vmk, UnlockVia.RECOVERY_PASSWORD,
                          protector, attempt_source)
    return TypoResult(candidate, result, tried, total)


def _parallel(candidates: Iterator[str], targets: list[Target], workers: int,
              report: Callable[[str, int | None], None]) -> tuple[str, int, bytes] | None:
    """Run candidates on ``workers`` processes, a bounded window at a time; first hit wins.

    Candidates still running when one verifies finish (and are reported); queued ones are
    cancelled.
    """
    window = workers * 2
    found: tuple[str, int, bytes] | None = None
    executor = cf.ProcessPoolExecutor(max_workers=workers)
    pending: set[cf.Future[tuple[str, int | None, bytes | None]]] = set()
    try:
        def fill() -> None:
            while len(pending) < window:
                candidate = next(candidates, None)
                if candidate is None:
                    return
                pending.add(executor.submit(_run, candidate, targets))

        fill()
        while pending and found is None:
            done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for future in done:
                candidate, index, plain = future.result()
                report(candidate, index)
                if index is not None and plain is not None and found is None:
                    found = (candidate, index, plain)
            if found is None:
                fill()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    for future in pending:
        if future.done() and not future.cancelled() and future.exception() is None:
            candidate, index, _plain = future.result()
            report(candidate, index)
    return found


__all__ = ["DEFAULT_MAX_CANDIDATES", "TypoResult", "cpu_count", "plan", "search",
           "try_candidate"]
