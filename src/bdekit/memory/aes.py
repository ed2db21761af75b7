"""The AES key expansion (FIPS-197 section 5.2) and MixColumns, for finding key schedules.

Words are the schedule's 32-bit columns as they lie in memory, read as little-endian u32: byte
0 of a word is row 0. An expanded key has ``4 * (rounds + 1)`` words: 44 for AES-128 (Nk = 4,
10 rounds), 60 for AES-256 (Nk = 8, 14 rounds). Word ``i >= Nk`` is
``w[i - Nk] ^ g(w[i - 1])`` where ``g`` is ``SubWord(RotWord(x)) ^ Rcon[i / Nk]`` when ``i`` is
a multiple of Nk, ``SubWord(x)`` when Nk = 8 and ``i % 8 == 4``, and the identity otherwise.

Decryption schedules (the "equivalent inverse cipher") hold the same round keys in reverse
order with InvMixColumns applied to all but the first and last; MixColumns undoes that. Both
transforms are linear over GF(2), which the search relies on (see :mod:`.schedule`).
"""

from __future__ import annotations

import numpy as np

NK = {16: 4, 32: 8}
ROUNDS = {16: 10, 32: 14}


def _sbox() -> np.ndarray:
    box = np.zeros(256, dtype=np.uint8)
    p = q = 1
    while True:
        # p runs over the multiplicative group (generator 3), q over the inverses
        p = p ^ ((p << 1) & 0xFF) ^ (0x1B if p & 0x80 else 0)
        q ^= q << 1
        q ^= q << 2
        q ^= q << 4
        q &= 0xFF
        if q & 0x80:
            q ^= 0x09
        x = q ^ _rotl8(q, 1) ^ _rotl8(q, 2) ^ _rotl8(q, 3) ^ _rotl8(q, 4)
        box[p] = (x ^ 0x63) & 0xFF
        if p == 1:
            break
    box[0] = 0x63
    return box


def _rotl8(x: int, shift: int) -> int:
    return ((x << shift) | (x >> (8 - shift))) & 0xFF


SBOX = _sbox()
RCON = [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x1B, 0x36]
_XTIME = np.array([((b << 1) ^ (0x1B if b & 0x80 else 0)) & 0xFF for b in range(256)],
                  dtype=np.uint8)


def sub_word(words: np.ndarray) -> np.ndarray:
    """SubWord on an array of u32 words (each byte through the S-box)."""
    as_bytes = words.astype("<u4").view(np.uint8)
    return SBOX[as_bytes].view("<u4").reshape(words.shape)


def rot_word(words: np.ndarray) -> np.ndarray:
    """RotWord: bytes (a0, a1, a2, a3) become (a1, a2, a3, a0); byte 0 is the low byte."""
    w = words.astype(np.uint32)
    return (w >> np.uint32(8)) | (w << np.uint32(24))


def g_function(prev: np.ndarray, index: int, nk: int) -> np.ndarray:
    """What word ``index`` of a schedule XORs onto ``w[index - nk]`` (``prev`` = w[index-1])."""
    if index % nk == 0:
        return sub_word(rot_word(prev)) ^ np.uint32(RCON[index // nk - 1])
    if nk == 8 and index % nk == 4:
        return sub_word(prev)
    return prev.astype(np.uint32)


def expand_key(key: bytes) -> bytes:
    """The expanded encryption key schedule of a 16- or 32-byte AES key."""
    nk = NK[len(key)]
    total = 4 * (ROUNDS[len(key)] + 1)
    words = list(np.frombuffer(key, dtype="<u4").astype(np.uint32))
    for i in range(nk, total):
        words.append(np.uint32(words[i - nk] ^ g_function(np.array([words[i - 1]]), i, nk)[0]))
    return np.array(words, dtype="<u4").tobytes()


def _mul(a: np.ndarray, factor: int) -> np.ndarray:
    out = np.zeros_like(a)
    power = a
    while factor:
        if factor & 1:
            out = out ^ power
        power = _XTIME[power]
        factor >>= 1
    return out


def _mix(words: np.ndarray, coeffs: tuple[int, int, int, int]) -> np.ndarray:
    cols = words.astype("<u4").view(np.uint8).reshape(*words.shape, 4)
    out = np.zeros_like(cols)
    for row in range(4):
        acc = np.zeros(cols.shape[:-1], dtype=np.uint8)
        for j in range(4):
            acc = acc ^ _mul(cols[..., j], coeffs[(j - row) % 4])
        out[..., row] = acc
    return out.reshape(-1).view("<u4").reshape(words.shape)


def mix_columns(words: np.ndarray) -> np.ndarray:
    """MixColumns applied to each u32 word (column) of an array."""
    return _mix(words, (2, 3, 1, 1))


def inv_mix_columns(words: np.ndarray) -> np.ndarray:
    """InvMixColumns applied to each u32 word (column) of an array."""
    return _mix(words, (14, 11, 13, 9))


def decryption_schedule(schedule: bytes) -> bytes:
    """The equivalent-inverse-cipher schedule: round keys reversed, InvMixColumns on the middle
    ones (what OpenSSL-style and CNG implementations keep next to the encryption schedule)."""
    rounds = np.frombuffer(schedule, dtype="<u4").reshape(-1, 4)[::-1].copy()
    rounds[1:-1] = inv_mix_columns(rounds[1:-1])
    return rounds.astype("<u4").tobytes()
