"""Judging each sector by its own bytes where the layout that should decide is not known.

Salvage without metadata (an FVEK and nothing else) and key packages whose layout facts no
checksum vouches for leave unknown what normally steers every read: which sectors are
encrypted (the conversion state, a partly converted volume), and where the metadata copies lie
(their regions read as zeros). :class:`SectorJudge` wraps the chunk reader of such a volume
and judges every sector the plan decrypts by the statistics of its ciphertext and its
plaintext (:func:`bdekit.crypto.plausibility.classify`). The ciphertext is not read twice: the
decrypted chunk is encrypted back, in memory.

========================  ==================================================================
verdict                   what is written, and whether the range is reported
========================  ==================================================================
ciphertext all zeros      zeros, reported: never written, or wiped (a destroyed metadata
                          copy reads so; its region reads as zeros in the real volume)
ciphertext random,        the decrypted sector, not reported: the sector was encrypted and
plaintext structured      the key and its position are right
ciphertext structured,    the sector as it is on disk, reported: it was not encrypted (a
plaintext random          partly converted volume) or is metadata
both random, or both      the decrypted sector, reported as a guess: compressed or random
structured                data gives no evidence either way
========================  ==================================================================

A sector is only ever left unreported when its own bytes prove its plaintext; every other
range lands in the damage list and the output mapfile with one of the reasons below.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from bdekit.crypto.plausibility import Verdict, classify
from bdekit.image.ranges import Damage
from bdekit.volume.bde import BdeVolume
from bdekit.volume.planner import RunKind

log = logging.getLogger(__name__)

UNWRITTEN = ("guess: all-zero ciphertext (never written, or wiped: a destroyed metadata copy "
             "reads so); written as zeros")
PLAIN = ("guess: reads as plaintext (a part left unencrypted, or metadata); copied as it is "
         "on disk")
UNDECIDED = ("guess: encryption state undecided (ciphertext and plaintext look alike: "
             "compressed or random data); decrypted")
#: a region taken to read as zeros (a metadata copy, the relocated block) from unverified facts
GUESSED_ZERO = ("guess: taken for a region that reads as zeros (a metadata copy or the "
                "relocated header block) from facts nothing verifies; written as zeros")

_REASONS = {int(Verdict.UNWRITTEN): UNWRITTEN, int(Verdict.PLAIN): PLAIN,
            int(Verdict.UNDECIDED): UNDECIDED}

#: what :class:`~bdekit.pipeline.decrypt.decrypt_to` calls for each chunk
ChunkFn = Callable[[int, memoryview], "list[Damage] | None"]


class SectorJudge:
    """A chunk reader that judges every decrypted sector (see module docstring)."""

    def __init__(self, inner: ChunkFn, volume: BdeVolume) -> None:
        self.inner = inner
        self.volume = volume

    def __call__(self, offset: int, buf: memoryview) -> list[Damage]:
        damage = list(self.inner(offset, buf) or [])
        cipher = self.volume.cipher
        if cipher is None:
            return damage
        ss = self.volume.sector_size
        for run in self.volume.plan(offset, len(buf)):
            if not run.encrypted or run.kind not in (RunKind.ENCRYPTED, RunKind.RELOCATED):
                continue
            lo = run.offset - offset
            n = run.length - run.length % ss
            if n <= 0:
                continue
            view = buf[lo:lo + n]
            raw = bytearray(n)
            cipher.encrypt(view, raw, run.source)
            damage += judge_sectors(raw, view, ss, run.offset)
        return damage


def judge_sectors(raw: bytearray, plain: memoryview, ss: int, at: int) -> list[Damage]:
    """Judge the sectors of ``plain`` (decrypted ``raw``, volume offset ``at``); rewrite the
    ones not to be trusted as decrypted (zeros, or the bytes on disk); their damage."""
    verdicts = classify(raw, plain, ss)
    suspect = verdicts != Verdict.ENCRYPTED
    if not suspect.any():
        return []
    out = np.frombuffer(plain, dtype=np.uint8).reshape(-1, ss)
    disk = np.frombuffer(raw, dtype=np.uint8).reshape(-1, ss)
    out[verdicts == Verdict.UNWRITTEN] = 0
    is_plain = verdicts == Verdict.PLAIN
    out[is_plain] = disk[is_plain]
    return _runs(verdicts, suspect, ss, at)


def _runs(verdicts: np.ndarray, suspect: np.ndarray, ss: int, at: int) -> list[Damage]:
    """One damage record per run of equal suspect verdicts."""
    marked = np.where(suspect, verdicts.astype(np.int16), -1)
    edges = np.flatnonzero(np.diff(marked)) + 1
    starts = np.concatenate(([0], edges)).tolist()
    ends = np.concatenate((edges, [len(marked)])).tolist()
    out: list[Damage] = []
    for a, b in zip(starts, ends, strict=True):
        kind = int(marked[a])
        if kind >= 0:
            out.append(Damage(at + a * ss, (b - a) * ss, _REASONS[kind]))
    return out


__all__ = ["GUESSED_ZERO", "PLAIN", "UNDECIDED", "UNWRITTEN", "SectorJudge", "judge_sectors"]
