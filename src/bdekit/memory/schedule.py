"""Finding expanded AES key schedules in memory, vectorised with numpy.

What is searched: AES-128 (176 bytes) and AES-256 (240 bytes) expanded keys at any byte offset,
stored as encryption schedules (round keys 0..Nr in order, as CNG and OpenSSL keep them), or
as decryption schedules (round keys in reverse order), each with or without InvMixColumns on
the middle round keys. A few flipped bits are tolerated, as aeskeyfind tolerates them.

How (three stages, the first over every byte, the others over its rare hits):

1. Linear relations. Within a schedule, ``w[i] = w[i - Nk] ^ w[i - 1]`` for every word that is
   not at a multiple of 4 (AES-256 also at 4 mod 8 excepted), i.e. three consecutive words out
   of every four. With the chunk read as u32 words ``W`` (at its own alignment only) this means
   ``W[k] ^ W[k + a] ^ W[k + b] == 0`` with (a, b) = (3, 4) for AES-128 and (7, 8) for AES-256
   encryption schedules, (1, 5) and (1, 9) for reversed ones. InvMixColumns is linear, so the
   middle of a decryption schedule keeps the relations. Byte-wise, every round key gives a run
   of 12 bytes that satisfy the relation; a 12-byte run always contains an aligned u32, so one
   aligned pass finds schedules at all four byte alignments. Words that are zero are skipped
   (zero-filled memory satisfies every linear relation). One bad bit spoils at most a few of
   the ten-odd runs of a schedule.
2. Runs. Around each hit the byte-wise relation pins down where the 12-byte run starts, and so
   the schedule start modulo 16; the candidate starts are the few that put the run at one of
   the schedule's run positions.
3. Full check. Each candidate is read as a schedule (undoing the reverse order and the
   InvMixColumns where the layout says so) and every derived word is compared with what the
   key expansion makes of the stored words before it (SubWord, RotWord, Rcon included): the sum
   of differing bits must stay within ``max_errors``. The key is the first Nk words; with bit
   errors, keys re-derived backwards from later round keys are offered as well (the volume
   decides which one is right).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bdekit.memory import aes

#: Default budget of differing bits in stage 3 (aeskeyfind's default threshold).
MAX_ERRORS = 10


@dataclasses.dataclass(frozen=True)
class _Relation:
    name: str
    size: int  # key bytes
    reverse: bool
    shifts: tuple[int, int]  # word shifts a, b of W[k] ^ W[k+a] ^ W[k+b]
    runs: tuple[int, ...]  # byte offsets of the 12-byte runs from the schedule start

    @property
    def length(self) -> int:
        return 16 * (aes.ROUNDS[self.size] + 1)


RELATIONS = (
    _Relation("aes-128", 16, False, (3, 4), tuple(16 * r - 12 for r in range(1, 11))),
    _Relation("aes-256", 32, False, (7, 8), tuple(16 * q - 28 for q in range(2, 15))),
    _Relation("aes-128", 16, True, (1, 5), tuple(16 * m for m in range(10))),
    _Relation("aes-256", 32, True, (1, 9), tuple(16 * m for m in range(13))),
)
#: Bytes a schedule can reach beyond its start: the overlap chunked readers must keep.
MAX_SPAN = 240


@dataclasses.dataclass(frozen=True)
class ScheduleHit:
    """An expanded key found at ``offset`` (of the buffer searched)."""

    offset: int
    size: int  # 16 or 32
    layout: str  # "encryption", "encryption+imc", "decryption", "decryption+imc"
    errors: int  # bits that disagree with the key expansion
    keys: tuple[bytes, ...]  # the stored key first, then re-derived ones (bit errors only)

    @property
    def length(self) -> int:
        return 16 * (aes.ROUNDS[self.size] + 1)


class ScheduleSearch:
    """Searches buffers; keeps its scratch arrays between calls (bounded by the chunk size)."""

    def __init__(self, max_errors: int = MAX_ERRORS) -> None:
        self.max_errors = max_errors
        self._scratch: list[np.ndarray] = []
        self.stage1_hits = 0

    def _buffers(self, n: int) -> list[np.ndarray]:
        if not self._scratch or len(self._scratch[0]) < n:
            self._scratch = [np.empty(n, np.uint32), np.empty(n, np.uint32),
                             np.empty(n, np.bool_), np.empty(n, np.bool_)]
        return self._scratch

    def search(self, data: bytes | bytearray | memoryview, limit: int | None = None
               ) -> list[ScheduleHit]:
        """Schedules in ``data`` starting before ``limit`` (default: anywhere)."""
        buf = np.frombuffer(data, dtype=np.uint8)
        limit = len(buf) if limit is None else limit
        hits = self._stage1(buf)
        self.stage1_hits += len(hits)
        if not len(hits):
            return []
        found: dict[int, ScheduleHit] = {}
        words = buf[:len(buf) // 4 * 4].view("<u4")
        for rel in RELATIONS:
            starts = _candidate_starts(buf, _confirm(words, hits, rel), rel)
            starts = starts[(starts < limit) & (starts + rel.length <= len(buf))]
            for hit in self._check(buf, starts, rel):
                old = found.get(hit.offset)
                if old is None or hit.errors < old.errors:
                    found[hit.offset] = hit
        return [found[k] for k in sorted(found)]

    def _stage1(self, buf: np.ndarray) -> np.ndarray:
        """Word indexes k where some relation holds at k and at k + 4 (two round keys)."""
        words = len(buf) // 4
        if words < 32:
            return np.zeros(0, dtype=np.int64)
        w = buf[:words * 4].view("<u4")
        n = words - 13
        p, acc, mask, tmp = self._buffers(words)
        pairs = np.bitwise_xor(w[:n + 12], w[1:n + 13], out=p[:n + 12])
        rel = acc[:n + 4]
        m = mask[:n]
        t = tmp[:n + 4]
        m[:] = False
        for shift, first_is_pair in ((3, False), (7, False), (5, True), (9, True)):
            if first_is_pair:
                np.bitwise_xor(pairs[:n + 4], w[shift:n + 4 + shift], out=rel)
            else:
                np.bitwise_xor(w[:n + 4], pairs[shift:n + 4 + shift], out=rel)
            np.equal(rel, 0, out=t)
            np.logical_and(t[:n], t[4:n + 4], out=t[:n])
            np.logical_or(m, t[:n], out=m)
        np.not_equal(w[:n], 0, out=t[:n])
        np.logical_and(m, t[:n], out=m)
        return np.flatnonzero(m)

    def _check(self, buf: np.ndarray, starts: np.ndarray, rel: _Relation) -> list[ScheduleHit]:
        if not len(starts):
            return []
        length = rel.length
        idx = starts[:, None] + np.arange(length)[None, :]
        rounds = buf[idx].view("<u4").reshape(len(starts), -1, 4)
        if rel.reverse:
            rounds = rounds[:, ::-1, :]
        out: list[ScheduleHit] = []
        plain = rounds.reshape(len(starts), -1)
        unmixed = rounds.copy()
        unmixed[:, 1:-1, :] = aes.mix_columns(unmixed[:, 1:-1, :])
        mixed = unmixed.reshape(len(starts), -1)
        base = "decryption" if rel.reverse else "encryption"
        nk = aes.NK[rel.size]
        for layout, sched in ((base, plain), (base + "+imc", mixed)):
            errors = residual_bits(sched, nk)
            for row in np.flatnonzero(errors <= self.max_errors):
                words = sched[row]
                out.append(ScheduleHit(int(starts[row]), rel.size, layout, int(errors[row]),
                                       recover_keys(words, nk, int(errors[row]))))
        return out


def _confirm(words: np.ndarray, hits: np.ndarray, rel: _Relation) -> np.ndarray:
    """The stage-1 hits where ``rel`` holds at k and k + 4 over distinct non-zero words
    (periodic data satisfies the relations through equal or zero words)."""
    a, b = rel.shifts
    hits = hits[hits + 4 + b < len(words)]
    keep = np.ones(len(hits), dtype=bool)
    for base in (hits, hits + 4):
        x, y, z = words[base], words[base + a], words[base + b]
        keep &= ((x ^ y ^ z) == 0) & (x != 0) & (y != 0) & (z != 0) & (x != y)
    return hits[keep]


def _candidate_starts(buf: np.ndarray, hits: np.ndarray, rel: _Relation) -> np.ndarray:
    """Schedule starts consistent with a 12-byte run of ``rel`` around each stage-1 hit."""
    a, b = rel.shifts
    window = np.arange(-8, 12)
    pos = hits[:, None] * 4 + window[None, :]
    ok = (pos >= 0) & (pos + 4 * b < len(buf))
    pos = np.clip(pos, 0, len(buf) - 1 - 4 * b)
    zero = ((buf[pos] ^ buf[pos + 4 * a] ^ buf[pos + 4 * b]) == 0) & ok
    # run_ok[:, j]: the 12 bytes from window position j (run start 4k - 8 + j) are all zero
    run_ok = np.ones((len(hits), 9), dtype=bool)
    for j in range(12):
        run_ok &= zero[:, j:j + 9]
    rows, cols = np.nonzero(run_ok)
    if not len(rows):
        return np.zeros(0, dtype=np.int64)
    run_starts = hits[rows] * 4 - 8 + cols
    offsets = np.asarray(rel.runs, dtype=np.int64)
    starts = (run_starts[:, None] - offsets[None, :]).reshape(-1)
    return np.unique(starts[starts >= 0])


def residual_bits(sched: np.ndarray, nk: int) -> np.ndarray:
    """Per row of u32 words: bits in which each derived word differs from the expansion of the
    stored words before it (0 for an intact schedule)."""
    sched = sched.astype(np.uint32)
    total = np.zeros(len(sched), dtype=np.int64)
    for i in range(nk, sched.shape[1]):
        expect = sched[:, i - nk] ^ aes.g_function(sched[:, i - 1], i, nk)
        total += np.bitwise_count(sched[:, i] ^ expect).astype(np.int64)
    return total


def recover_keys(words: np.ndarray, nk: int, errors: int) -> tuple[bytes, ...]:
    """The stored key, and with bit errors the keys re-derived backwards from each later
    window of Nk words, most frequent first."""
    stored = words[:nk].astype("<u4").tobytes()
    if errors == 0:
        return (stored,)
    counts: dict[bytes, int] = {stored: 1}
    for start in range(4, len(words) - nk + 1, 4):
        key = _invert(words[start:start + nk].astype(np.uint32), start, nk)
        counts[key] = counts.get(key, 0) + 1
    return tuple(sorted(counts, key=lambda k: -counts[k]))


def _invert(window: np.ndarray, start: int, nk: int) -> bytes:
    """The key (words 0..Nk-1) from the Nk consecutive words that start at word ``start``."""
    w = {start + j: np.uint32(window[j]) for j in range(nk)}
    for j in range(start + nk - 1, nk - 1, -1):
        prev = np.array([w[j - 1]], dtype=np.uint32)
        w[j - nk] = np.uint32(w[j] ^ aes.g_function(prev, j, nk)[0])
    return np.array([w[j] for j in range(nk)], dtype="<u4").tobytes()
