"""Reading the sectors whose encryption state nothing proves: decide each one by its content.

Where the used-space-only bitmaps are damaged or missing (the read planner's ``GUESSED`` runs,
:mod:`bdekit.volume.planner`), each sector is read raw, decrypted into a scratch buffer, and
both are scored by :func:`bdekit.crypto.plausibility.classify`:

* ``UNWRITTEN`` (all-zero ciphertext: never written) -> zeros;
* ``ENCRYPTED`` (raw looks random, decrypted looks structured) -> the decrypted sector;
* ``PLAIN`` (raw looks structured, decrypted looks random) -> the raw sector;
* ``UNDECIDED`` -> the majority of the decided sectors of the same read, else the fallback
  (the state the bitmap that serves gives, or "encrypted" when there is none).

Every such range is reported as guessed (the volume lists them in ``BdeVolume.guessed``), so
a run that reads one exits 6 whatever the verdicts: a guess is never silent.

:func:`guessed_damage` turns the map's ``GUESSED`` runs into damage records, with the reason of
the doubt they come from (:data:`bdekit.image.ranges.GUESSED_REASONS`).
"""

from __future__ import annotations

import logging

from bdekit.crypto import ciphers
from bdekit.format.eow import Doubt, EowLayout
from bdekit.image.ranges import GUESSED_REASONS, Damage, merge_damage
from bdekit.volume.planner import Run, RunKind

log = logging.getLogger(__name__)


def decide_sectors(dst: memoryview, source: int, cipher: ciphers.SectorCipher | None,
                   sector_size: int, fallback: bool) -> None:
    """``dst`` holds the raw bytes read from ``source`` (whole sectors); replace each sector
    by its decrypted form where the content says it was encrypted (see module docstring)."""
    if cipher is None or not len(dst):
        return
    # numpy is loaded on the first guessed read only: an intact volume never pays for it
    import numpy as np  # noqa: PLC0415

    from bdekit.crypto.plausibility import Verdict, classify  # noqa: PLC0415

    raw = np.frombuffer(dst, dtype=np.uint8).reshape(-1, sector_size)
    dec_buf = bytearray(len(dst))
    cipher.decrypt(dst, dec_buf, source)
    dec = np.frombuffer(dec_buf, dtype=np.uint8).reshape(-1, sector_size)
    verdict = classify(dst, dec_buf, sector_size)
    encrypted = verdict == Verdict.ENCRYPTED
    plain = verdict == Verdict.PLAIN
    undecided = verdict == Verdict.UNDECIDED
    n_enc, n_plain = int(encrypted.sum()), int(plain.sum())
    default = n_enc > n_plain if n_enc != n_plain else fallback
    take = encrypted | (undecided & default)
    if take.any():
        raw[take] = dec[take]  # ``raw`` is a view of ``dst``: written in place
    log.debug("guessed %d sector(s) at %d: %d encrypted, %d plain, %d unwritten, %d undecided "
              "(taken as %s)", len(verdict), source, n_enc, n_plain,
              int((verdict == Verdict.UNWRITTEN).sum()), int(undecided.sum()),
              "encrypted" if default else "plain")


def _why(eow: EowLayout | None, source: int, length: int) -> Doubt:
    if eow is not None:
        for a, b, why in eow.doubts:
            if a < source + length and b > source:
                return why
    return Doubt.NO_BITMAP


def guessed_damage(runs: list[Run], eow: EowLayout | None) -> list[Damage]:
    """Damage records (volume ranges) of the ``GUESSED`` runs of a read plan."""
    out = [Damage(r.offset, r.length, GUESSED_REASONS[_why(eow, r.source, r.length)])
           for r in runs if r.kind == RunKind.GUESSED]
    return merge_damage(out)


__all__ = ["decide_sectors", "guessed_damage"]
