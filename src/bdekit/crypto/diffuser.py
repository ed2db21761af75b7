"""The Elephant diffuser of AES-CBC + diffuser volumes (Vista / Windows 7), pure numpy path.

A sector is seen as ``n = sector_size / 4`` little-endian u32 words. Diffuser A (5 cycles) and
B (3 cycles) each update word i from two other words of the same sector, in sequence, so one
sector is inherently serial; sectors are independent, though. This module transposes a tile
of sectors to word-major order (row i = word i of every sector) and runs each diffuser step as
a few numpy operations over whole rows, as many rows at once as the dependencies allow (pairs
of rows where a step reads words updated earlier in the same cycle, runs of many rows where it
only reads words not yet updated). The sequence of numpy calls is recorded once per tile width
("plan") and replayed. The native kernel (:mod:`bdekit.crypto.native`) does the same work in
one C pass; this path stays as the reference and the fallback.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import numpy as np

from bdekit.crypto.purebase import _U32, _offset_blocks, _PureCipher, _Scratch
from bdekit.format.constants import EncryptionMethod

#: One recorded numpy call of a diffuser plan: function and positional arguments.
Step: TypeAlias = tuple[Callable[..., Any], tuple[Any, ...]]
#: (word offsets step i reads, rotation of the second word by i mod 4, cycles)
Diffuser: TypeAlias = tuple[tuple[int, int], tuple[int, ...], int]

#: Tile of the diffuser path, bytes and sectors (whichever is larger): its cost is mostly per
#: numpy call over one word row of the tile, and 4096-byte sectors have 8 times more rows.
_DIFFUSER_TILE = (1 << 22, 4096)
#: Sectors per block of the blocked transposition into word-major order.
_TRANSPOSE_SECTORS = 64
#: Word rows per block of the blocked transposition back to sector order.
_TRANSPOSE_ROWS = 8
#: Diffuser plans kept per thread (one per tile width and direction; building one takes ms).
_PLAN_CACHE = 8
#: Narrowest diffuser tile: below this the cost is per numpy call, not per sector.
_DIFFUSER_MIN_WIDTH = 64
#: Most word rows one vectorised diffuser step covers (bounds its scratch).
_DIFFUSER_ROWS = 16

#: Elephant diffuser A as (word offsets step i reads: i+a and i+b mod n, rotation of word i+b
#: by i mod 4, cycles): d[i] += d[i-2] ^ rotl(d[i-5], (9, 0, 13, 0)[i % 4]) when decrypting.
_DIFFUSER_A: Diffuser = ((-2, -5), (9, 0, 13, 0), 5)
#: Elephant diffuser B: d[i] += d[i+2] ^ rotl(d[i+5], (0, 10, 0, 25)[i % 4]) when decrypting.
_DIFFUSER_B: Diffuser = ((2, 5), (0, 10, 0, 25), 3)


def _diffuser_groups(n: int, refs: tuple[int, int], *, descending: bool,
                     max_rows: int) -> list[range]:
    """Split one diffuser cycle into maximal runs of steps that can run as one vector step.

    The cycle is sequential: step i updates word i from words i+refs[0] and i+refs[1]
    (mod n) as they are *at that moment*.  A run of consecutive steps can be computed at once
    from the values before the run as long as no step reads a word written by an earlier step
    of the same run (words written by later steps are still old when read sequentially).
    Runs are cut at ``max_rows`` steps (any prefix of a valid run is valid) to bound the
    scratch and keep it in cache."""
    order = range(n - 1, -1, -1) if descending else range(n)
    groups: list[range] = []
    current: list[int] = []
    for i in order:
        if current and (len(current) >= max_rows
                        or any((i + r) % n in current for r in refs)):
            groups.append(range(min(current), max(current) + 1))
            current = []
        current.append(i)
    groups.append(range(min(current), max(current) + 1))
    return groups


class _DiffuserPlan:
    """The numpy calls of a whole diffuser pass (A then B, or B then A) over one word-major
    (n, m) table: built once per (m, direction) and thread, then replayed per tile."""

    def __init__(self, table: np.ndarray, *, encrypt: bool) -> None:
        n, m = table.shape
        self.table = table
        groups: list[tuple[range, tuple[int, int], tuple[int, ...]]] = []
        passes = (_DIFFUSER_A, _DIFFUSER_B) if encrypt else (_DIFFUSER_B, _DIFFUSER_A)
        for refs, rotations, cycles in passes:
            cycle = _diffuser_groups(n, refs, descending=encrypt, max_rows=_DIFFUSER_ROWS)
            for _ in range(cycles):
                groups.extend((g, refs, rotations) for g in cycle)
        rows = max(len(g) for g, _, _ in groups)
        self.rot = np.empty((rows, m), dtype=_U32)
        self.tmp = np.empty((rows, m), dtype=_U32)
        self.gather = (np.empty((rows, m), dtype=_U32), np.empty((rows, m), dtype=_U32))
        self.steps: list[Step] = []
        for g, refs, rotations in groups:
            self._add_group(n, g, refs, rotations, subtract=encrypt)

    def _rows(self, idx: np.ndarray, which: int) -> np.ndarray:
        """Rows ``idx`` of the table: a view when contiguous, else gathered into scratch."""
        if np.all(np.diff(idx) == 1):
            return self.table[idx[0]:idx[-1] + 1]
        out = self.gather[which][: len(idx)]
        self.steps.append((np.take, (self.table, idx, 0, out)))
        return out

    def _add_group(self, n: int, g: range, refs: tuple[int, int], rotations: Sequence[int],
                   *, subtract: bool) -> None:
        c = len(g)
        idx = np.arange(g.start, g.stop)
        near = self._rows((idx + refs[0]) % n, 0)
        far = self._rows((idx + refs[1]) % n, 1)
        r = [rotations[i % 4] for i in idx.tolist()]
        acc = self.rot[:c]
        tmp = self.tmp[:c]
        steps = self.steps
        # acc = near ^ rotl(far, r), one batch of calls per rotation amount: the rows with the
        # same amount are every 2nd or 4th row (a strided view), and a rotation by 0 is free.
        for amount in sorted(set(r)):
            sl = _row_slice([k for k in range(c) if r[k] == amount])
            if amount == 0:
                steps.append((np.bitwise_xor, (far[sl], near[sl], acc[sl])))
                continue
            steps.append((np.left_shift, (far[sl], np.uint32(amount), acc[sl])))
            steps.append((np.right_shift, (far[sl], np.uint32(32 - amount), tmp[sl])))
            steps.append((np.bitwise_or, (acc[sl], tmp[sl], acc[sl])))
            steps.append((np.bitwise_xor, (acc[sl], near[sl], acc[sl])))
        target = self.table[g.start:g.stop]
        steps.append((np.subtract if subtract else np.add, (target, acc, target)))

    def run(self) -> None:
        for fn, args in self.steps:
            fn(*args)


def _row_slice(rows: list[int]) -> slice:
    """The slice selecting exactly ``rows`` (an arithmetic progression)."""
    step = rows[1] - rows[0] if len(rows) > 1 else 1
    if rows != list(range(rows[0], rows[-1] + 1, step)):
        raise ValueError(f"rows {rows} are not evenly spaced")
    return slice(rows[0], rows[-1] + 1, step)


class _DiffuserCipher(_PureCipher):
    """AES-CBC + Elephant diffuser (Vista / Windows 7 volumes)."""

    def __init__(self, method: EncryptionMethod, cbc: _PureCipher, tweak_key: bytes,
                 sector_size: int) -> None:
        super().__init__(method, sector_size)
        self._cbc = cbc  # the pure AES-CBC cipher with the data key
        self._tweak_key = tweak_key

    def _plan(self, scratch: _Scratch, m: int, *, encrypt: bool) -> _DiffuserPlan:
        """The plan for a tile of ``m`` sectors; its table has a power-of-two number of columns
        >= m (extra columns are don't-care), so few distinct plans are ever built."""
        width = max(_DIFFUSER_MIN_WIDTH, 1 << (m - 1).bit_length())
        plan: _DiffuserPlan | None = scratch.plans.pop((width, encrypt), None)
        if plan is None:
            while len(scratch.plans) >= _PLAN_CACHE:
                scratch.plans.pop(next(iter(scratch.plans)))  # least recently used
            table = scratch.array("table", (self.sector_size // 4, width), _U32)
            plan = _DiffuserPlan(table, encrypt=encrypt)
        scratch.plans[(width, encrypt)] = plan
        return plan

    def _sector_keys(self, scratch: _Scratch, offset: int, m: int, out: np.ndarray) -> None:
        """``out`` (8, m) u32 = the 32-byte sector keys of m sectors, word-major."""
        ss = self.sector_size
        first = _offset_blocks(scratch, "skey0", self._tweak_key, offset, ss, m)
        second = _offset_blocks(scratch, "skey1", self._tweak_key, offset, ss, m,
                                high=0x80 << 56)
        np.copyto(out[0:4], first.view(_U32).T)
        np.copyto(out[4:8], second.view(_U32).T)

    def _run(self, src: np.ndarray, dst: np.ndarray, offset: int, *, encrypt: bool) -> None:
        scratch = self._scratch()
        ss = self.sector_size
        n = ss // 4
        for k, s, d in self._tiles(src, dst, self._tile_bytes(*_DIFFUSER_TILE)):
            m = s.shape[0]
            tile_offset = offset + k * ss
            plan = self._plan(scratch, m, encrypt=encrypt)
            table = plan.table[:, :m]
            by_key_word = plan.table.reshape(n // 8, 8, -1)[:, :, :m]
            keys = scratch.array("keys", (8, m), _U32)
            self._sector_keys(scratch, tile_offset, m, keys)
            if encrypt:
                _to_word_major(s.view(_U32), table)
                np.bitwise_xor(by_key_word, keys, out=by_key_word)
                plan.run()
                _to_sector_major(table, d.view(_U32))
                self._cbc._run(d.reshape(-1), d.reshape(-1), tile_offset, encrypt=True)
            else:
                self._cbc._run(s.reshape(-1), d.reshape(-1), tile_offset, encrypt=False)
                _to_word_major(d.view(_U32), table)
                plan.run()
                np.bitwise_xor(by_key_word, keys, out=by_key_word)
                _to_sector_major(table, d.view(_U32))


def _to_word_major(words: np.ndarray, table: np.ndarray) -> None:
    """(m, n) sector-major words -> (n, m) word-major table, transposed block by block."""
    m = words.shape[0]
    step = _TRANSPOSE_SECTORS
    for k in range(0, m, step):
        np.copyto(table[:, k:k + step], words[k:k + step].T)


def _to_sector_major(table: np.ndarray, words: np.ndarray) -> None:
    n = table.shape[0]
    step = _TRANSPOSE_ROWS
    for r in range(0, n, step):
        np.copyto(words[:, r:r + step], table[r:r + step].T)
