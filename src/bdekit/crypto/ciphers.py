"""Sector ciphers of BitLocker: decrypt and encrypt whole chunks of sectors at once.

A :class:`SectorCipher` turns a chunk of N consecutive sectors (``N * sector_size`` bytes whose
first sector lies at byte ``offset`` of the volume) into plaintext or back.  The layouts handled:

* **AES-CBC** (0x8002 / 0x8003): each sector is one CBC message; its IV is
  ``AES-ECB(FVEK, u128le(byte offset of the sector))``.
* **AES-CBC + Elephant diffuser** (0x8000 / 0x8001): the 64-byte FVEK is a 32-byte data key and a
  32-byte tweak key (AES-128 uses the first 16 bytes of each).  Decryption is CBC as above with
  the data key, then diffuser B, then diffuser A (both in their decrypt direction) over the
  sector seen as ``n = sector_size / 4`` little-endian u32 words, then an XOR with the 32-byte
  sector key ``AES-ECB(tweak, u128le(offset)) || AES-ECB(tweak, u128le(offset) | 0x80 << 120)``
  repeated over the sector.  Encryption runs the exact inverse.
* **AES-XTS** (0x8004 / 0x8005, IEEE 1619): data unit = one sector, tweak = u128le(sector
  number); no ciphertext stealing is ever needed as sectors are multiples of 16 bytes.

The offset is always the *physical* position of the ciphertext in the volume.

Why hand-written over numpy + OpenSSL: no library implements BitLocker's Elephant diffuser, and
the general-purpose ones take one IV or tweak per call, which costs a Python call (and a fresh
OpenSSL context) per 512-byte sector, i.e. a few MB/s.  Here every path makes a constant number
of calls per chunk: the per-sector IVs, tweaks and sector keys come from *one* AES-ECB call over
a numpy array of offsets, the bulk AES is one ECB call (OpenSSL, through ``cryptography``) over
the whole chunk, and the chaining is done by numpy XORs:

* CBC decrypt = ECB-decrypt everything, XOR with the chunk shifted by one block (the IV for the
  first block of each sector).  CBC encrypt is sequential inside a sector, so it walks the
  block index j and encrypts block j of *all* sectors in one ECB call.
* XTS = the tweak masks ``E(K2, sector) * alpha^j`` are built by GF(2^128) shifts vectorised over
  (sector, j) with numpy, then XOR, one ECB call, XOR.
* The diffuser has a sequential dependency along the words of one sector, but sectors are
  independent: the chunk is transposed to word-major order (row i = word i of every sector) and
  each diffuser step is a few numpy operations over whole rows, as many rows at once as the
  dependencies allow: pairs of rows where a step reads words updated earlier in the same cycle
  (A decrypt, B encrypt), runs of many rows where it only reads words not yet updated (B
  decrypt, A encrypt).  The sequence of calls is recorded once per tile width ("plan") and
  replayed.  The cost is O(n * cycles) numpy calls per tile whatever its width, so callers
  should pass big chunks (several MiB).

Objects are immutable after construction; scratch buffers and OpenSSL contexts live in
thread-local storage, so one cipher may be used from several threads at once (OpenSSL and numpy
release the GIL during the bulk work, but the many short numpy calls of the diffuser and XTS
paths leave little to gain from a second thread).

Single-thread throughput, 4 MiB chunks of 512-byte sectors, on the 2-core development VM
(``tools/bench_ciphers.py``; raw OpenSSL AES-ECB runs at about 12 GB/s there): CBC decrypt
about 4 GB/s, XTS about 1.8 GB/s, CBC + diffuser decrypt about 0.8 GB/s.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeAlias

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from bdekit.errors import UnsupportedError, UsageError
from bdekit.format.constants import EncryptionMethod

__all__ = ["SectorCipher", "make_cipher"]

ReadableBuffer: TypeAlias = bytes | bytearray | memoryview | np.ndarray
WritableBuffer: TypeAlias = bytearray | memoryview | np.ndarray
#: One recorded numpy call of a diffuser plan: function and positional arguments.
Step: TypeAlias = tuple[Callable[..., Any], tuple[Any, ...]]

_U8 = np.dtype(np.uint8)
_U32 = np.dtype("<u4")
_U64 = np.dtype("<u8")
_V16 = np.dtype("V16")  # one AES block, for moving blocks around

#: Bytes per tile of the CBC decrypt and XTS paths: their scratch stays in the L2 cache.
_TILE_BYTES = 1 << 19
#: Tile of CBC encryption, bytes and sectors (whichever is larger): it makes a few numpy calls
#: per AES block index and tile, so tiles should hold many sectors.
_CBC_ENCRYPT_TILE = (1 << 22, 2048)
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
_DIFFUSER_A = ((-2, -5), (9, 0, 13, 0), 5)
#: Elephant diffuser B: d[i] += d[i+2] ^ rotl(d[i+5], (0, 10, 0, 25)[i % 4]) when decrypting.
_DIFFUSER_B = ((2, 5), (0, 10, 0, 25), 3)

_XTS_J = 32  # tweak-mask columns derived by one broadcast shift (shifts < 64 - 7)
_GF_POLY_SHIFTS = (1, 2, 7)  # x^128 = x^7 + x^2 + x + 1


def _as_bytes_array(buf: ReadableBuffer, *, writable: bool, what: str) -> np.ndarray:
    """A flat uint8 numpy view of ``buf`` (no copy)."""
    try:
        arr = np.frombuffer(buf, dtype=_U8) if not isinstance(buf, np.ndarray) else buf
    except (TypeError, ValueError, BufferError) as exc:
        raise UsageError(f"{what} must be a contiguous bytes-like buffer: {exc}") from None
    if isinstance(buf, np.ndarray):
        if not arr.flags.c_contiguous:
            raise UsageError(f"{what} must be C-contiguous")
        arr = arr.reshape(-1).view(_U8)
    if writable and not arr.flags.writeable:
        raise UsageError(f"{what} is read-only")
    return arr


def _ecb_context(key: bytes, *, encrypt: bool) -> CipherContext:
    cipher = Cipher(algorithms.AES(key), modes.ECB())
    return cipher.encryptor() if encrypt else cipher.decryptor()


class _Scratch:
    """Per-thread scratch: growable byte arrays and cached OpenSSL ECB contexts."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.contexts: dict[tuple[bytes, bool], CipherContext] = {}
        self.plans: dict[tuple[int, bool], _DiffuserPlan] = {}
        self.ramp = np.arange(0, dtype=_U64)

    def arange(self, count: int) -> np.ndarray:
        """0, 1, ..., count - 1 as u64 (cached)."""
        if self.ramp.size < count:
            self.ramp = np.arange(max(count, 2 * self.ramp.size), dtype=_U64)
        return self.ramp[:count]

    def array(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A C-contiguous array of ``shape``; its buffer is followed by >= 16 spare bytes, so
        OpenSSL may encrypt it in place (``update_into`` wants one block of slack)."""
        nbytes = math.prod(shape) * dtype.itemsize
        raw = self.arrays.get(name)
        if raw is None or raw.size < nbytes + 16:
            raw = np.empty(max(nbytes + 16, 4096), dtype=_U8)
            self.arrays[name] = raw
        return raw[:nbytes].view(dtype).reshape(shape)

    def ecb(self, key: bytes, *, encrypt: bool) -> CipherContext:
        ctx = self.contexts.get((key, encrypt))
        if ctx is None:
            ctx = self.contexts[(key, encrypt)] = _ecb_context(key, encrypt=encrypt)
        return ctx


def _ecb(ctx: CipherContext, src: np.ndarray, dst: np.ndarray) -> None:
    """AES-ECB from ``src`` into ``dst`` (same size, both C-contiguous; may be the same array).

    ``dst`` must be a view into a :meth:`_Scratch.array` buffer: ``update_into`` insists on one
    block of slack after the output, and the scratch buffers have it, so the output view is
    widened over those spare bytes (OpenSSL writes exactly ``src.nbytes`` bytes for ECB)."""
    flat = dst.reshape(-1).view(_U8)
    out = np.lib.stride_tricks.as_strided(flat, shape=(flat.size + 16,), strides=(1,))
    ctx.update_into(src.reshape(-1).view(_U8), out)


class SectorCipher:
    """Decrypts / encrypts chunks of whole sectors for one (method, FVEK, sector size)."""

    method: EncryptionMethod
    sector_size: int

    def __init__(self, method: EncryptionMethod, sector_size: int) -> None:
        self.method = method
        self.sector_size = sector_size
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.method.label} sector_size={self.sector_size}>"

    # -- public API ---------------------------------------------------------------------------

    def decrypt(self, src: ReadableBuffer, dst: WritableBuffer, offset: int) -> None:
        """Decrypt the sectors of ``src`` (ciphertext at volume byte ``offset``) into ``dst``.

        ``src`` and ``dst`` have the same length, a multiple of the sector size; they may be
        the same buffer."""
        s, d = self._check(src, dst, offset)
        if s.size:
            self._run(s, d, offset, encrypt=False)

    def encrypt(self, src: ReadableBuffer, dst: WritableBuffer, offset: int) -> None:
        """Encrypt the plaintext sectors of ``src`` into ``dst`` for volume byte ``offset``."""
        s, d = self._check(src, dst, offset)
        if s.size:
            self._run(s, d, offset, encrypt=True)

    # -- internals ----------------------------------------------------------------------------

    def _run(self, src: np.ndarray, dst: np.ndarray, offset: int, *, encrypt: bool) -> None:
        raise NotImplementedError

    def _check(self, src: ReadableBuffer, dst: WritableBuffer,
               offset: int) -> tuple[np.ndarray, np.ndarray]:
        s = _as_bytes_array(src, writable=False, what="source buffer")
        d = _as_bytes_array(dst, writable=True, what="destination buffer")
        ss = self.sector_size
        if s.size != d.size:
            raise UsageError(f"source ({s.size} bytes) and destination ({d.size} bytes) "
                             "differ in size")
        if s.size % ss:
            raise UsageError(f"buffer of {s.size} bytes is not a whole number of "
                             f"{ss}-byte sectors")
        if offset < 0 or offset % ss:
            raise UsageError(f"offset {offset} is not a multiple of the sector size {ss}")
        if offset + s.size > 1 << 64:
            raise UsageError(f"offset {offset} is beyond the 64-bit range")
        if s.size and np.may_share_memory(s, d) and s.ctypes.data != d.ctypes.data:
            s = s.copy()  # partial overlap: the tile loops only handle src is dst exactly
        return s, d

    def _scratch(self) -> _Scratch:
        scratch: _Scratch | None = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = _Scratch()
        return scratch

    def _tile_bytes(self, nbytes: int, sectors: int) -> int:
        return max(nbytes, sectors * self.sector_size)

    def _tiles(self, src: np.ndarray, dst: np.ndarray,
               tile_bytes: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(first sector index, src tile, dst tile) as (sectors, sector_size) uint8 arrays."""
        ss = self.sector_size
        total = src.size // ss
        per = max(1, tile_bytes // ss)
        s2 = src.reshape(total, ss)
        d2 = dst.reshape(total, ss)
        for k in range(0, total, per):
            yield k, s2[k:k + per], d2[k:k + per]


class _PlainCipher(SectorCipher):
    """Method NONE: the "ciphertext" is the plaintext."""

    def _run(self, src: np.ndarray, dst: np.ndarray, offset: int, *, encrypt: bool) -> None:
        if src.ctypes.data != dst.ctypes.data:
            np.copyto(dst, src)


class _CbcCipher(SectorCipher):
    """AES-CBC per sector with IV = AES-ECB(key, u128le(byte offset))."""

    def __init__(self, method: EncryptionMethod, key: bytes, sector_size: int) -> None:
        super().__init__(method, sector_size)
        self._key = key

    def _run(self, src: np.ndarray, dst: np.ndarray, offset: int, *, encrypt: bool) -> None:
        scratch = self._scratch()
        ss = self.sector_size
        fn = self._encrypt_tile if encrypt else self._decrypt_tile
        tile = self._tile_bytes(*_CBC_ENCRYPT_TILE) if encrypt else _TILE_BYTES
        for k, s, d in self._tiles(src, dst, tile):
            fn(scratch, s, d, offset + k * ss)

    def _ivs(self, scratch: _Scratch, offset: int, count: int) -> np.ndarray:
        """(count, 2) u64: the IVs of ``count`` sectors from byte ``offset``."""
        return _offset_blocks(scratch, "iv", self._key, offset, self.sector_size, count)

    def _decrypt_tile(self, scratch: _Scratch, s: np.ndarray, d: np.ndarray,
                      offset: int) -> None:
        m = s.shape[0]
        words = self.sector_size // 8
        iv = self._ivs(scratch, offset, m)
        buf = scratch.array("cbc", (m, words), _U64)
        _ecb(scratch.ecb(self._key, encrypt=False), s, buf)
        s64 = s.view(_U64)
        if s.ctypes.data == d.ctypes.data:
            np.bitwise_xor(buf[:, 2:], s64[:, :-2], out=buf[:, 2:])
            np.bitwise_xor(buf[:, :2], iv, out=buf[:, :2])
            np.copyto(d.view(_U64), buf)
        else:
            d64 = d.view(_U64)
            np.bitwise_xor(buf[:, 2:], s64[:, :-2], out=d64[:, 2:])
            np.bitwise_xor(buf[:, :2], iv, out=d64[:, :2])

    def _encrypt_tile(self, scratch: _Scratch, s: np.ndarray, d: np.ndarray,
                      offset: int) -> None:
        # CBC encryption is sequential inside a sector: transpose the tile to block-major
        # order (16-byte elements move fast), then encrypt block j of every sector at once.
        m = s.shape[0]
        blocks = self.sector_size // 16
        ctx = scratch.ecb(self._key, encrypt=True)
        iv = self._ivs(scratch, offset, m)
        by_block = scratch.array("cbc", (blocks, m), _V16)
        np.copyto(by_block, s.view(_V16).T)
        rows = by_block.view(_U64).reshape(blocks, m, 2)
        prev = iv
        for j in range(blocks):
            np.bitwise_xor(rows[j], prev, out=rows[j])
            _ecb(ctx, rows[j], rows[j])
            prev = rows[j]
        np.copyto(d.view(_V16), by_block.T)


def _offset_blocks(scratch: _Scratch, name: str, key: bytes, start: int, step: int,
                   count: int, high: int = 0) -> np.ndarray:
    """AES-ECB(key, u128le(start + k*step) | high << 64) for k < count, as (count, 2) u64."""
    blocks = scratch.array(name, (count, 2), _U64)
    np.multiply(scratch.arange(count), np.uint64(step), out=blocks[:, 0])
    np.add(blocks[:, 0], np.uint64(start), out=blocks[:, 0])
    blocks[:, 1] = high
    _ecb(scratch.ecb(key, encrypt=True), blocks, blocks)
    return blocks


def _gf_mul_xpow(lo: np.ndarray, hi: np.ndarray, shift: np.ndarray | int,
                 out_lo: np.ndarray, out_hi: np.ndarray, t1: np.ndarray,
                 t2: np.ndarray) -> None:
    """(out_lo, out_hi) = (lo, hi) * x^shift in GF(2^128) (XTS convention), 1 <= shift <= 56.

    Arrays broadcast; ``t1`` and ``t2`` are scratch of the output shape."""
    rshift = np.uint64(64) - np.asarray(shift, dtype=_U64)
    sh = np.asarray(shift, dtype=_U64)
    np.right_shift(hi, rshift, out=t1)  # the bits shifted out: t1 * x^128 = t1 * 0x87
    np.left_shift(hi, sh, out=out_hi)
    np.right_shift(lo, rshift, out=t2)
    np.bitwise_or(out_hi, t2, out=out_hi)
    np.left_shift(lo, sh, out=out_lo)
    np.bitwise_xor(out_lo, t1, out=out_lo)
    for k in _GF_POLY_SHIFTS:
        np.left_shift(t1, np.uint64(k), out=t2)
        np.bitwise_xor(out_lo, t2, out=out_lo)


class _XtsCipher(SectorCipher):
    """AES-XTS with one data unit per sector (IEEE 1619, no ciphertext stealing needed)."""

    def __init__(self, method: EncryptionMethod, key: bytes, sector_size: int) -> None:
        super().__init__(method, sector_size)
        half = len(key) // 2
        self._key1 = key[:half]
        self._key2 = key[half:]
        blocks = sector_size // 16
        self._cols = min(blocks, _XTS_J)
        self._bases = -(-blocks // self._cols)
        self._shifts = np.arange(1, self._cols, dtype=_U64).reshape(-1, 1)

    def _run(self, src: np.ndarray, dst: np.ndarray, offset: int, *, encrypt: bool) -> None:
        scratch = self._scratch()
        ss = self.sector_size
        sector0 = offset // ss
        ctx = scratch.ecb(self._key1, encrypt=encrypt)
        for k, s, d in self._tiles(src, dst, _TILE_BYTES):
            masks = self._masks(scratch, sector0 + k, s.shape[0])
            buf = scratch.array("xts", masks.shape, _U64)
            np.bitwise_xor(s.view(_U64).reshape(masks.shape), masks, out=buf)
            _ecb(ctx, buf, buf)
            np.bitwise_xor(buf, masks, out=d.view(_U64).reshape(masks.shape))

    def _masks(self, scratch: _Scratch, sector0: int, m: int) -> np.ndarray:
        """(m, blocks, 2) u64: the tweak of block j of sector k is E(K2, sector) * alpha^j.

        Computed as alpha^(32 b + j) = base b (a short chain of x^32 steps) times x^j with
        0 <= j < 32, the latter for all j at once by broadcast shifts.  numpy is only fast with
        long inner loops, so the shifts work on planar, j-major (lo, hi) arrays whose inner axis
        is the sector, and the result is interleaved into the sector-major mask at the end."""
        blocks = self.sector_size // 16
        cols, bases = self._cols, self._bases
        t0 = _offset_blocks(scratch, "tweak", self._key2, sector0, 1, m)
        full = scratch.array("masks", (m, bases, cols, 2), _U64)
        base = scratch.array("mask_base", (2, bases, m), _U64)
        np.copyto(base[:, 0], t0.T)
        if bases > 1:
            t1 = scratch.array("mask_t1", (m,), _U64)
            t2 = scratch.array("mask_t2", (m,), _U64)
            for b in range(1, bases):
                _gf_mul_xpow(base[0, b - 1], base[1, b - 1], cols, base[0, b], base[1, b],
                             t1, t2)
        np.copyto(full[:, :, 0, :], base.transpose(2, 1, 0))
        if cols > 1:
            shape = (bases, cols - 1, m)
            lo = scratch.array("mask_lo", shape, _U64)
            hi = scratch.array("mask_hi", shape, _U64)
            t1 = scratch.array("mask_t1", shape, _U64)
            t2 = scratch.array("mask_t2", shape, _U64)
            _gf_mul_xpow(base[0, :, None, :], base[1, :, None, :], self._shifts, lo, hi,
                         t1, t2)
            np.copyto(full[:, :, 1:, 0], lo.transpose(2, 0, 1))
            np.copyto(full[:, :, 1:, 1], hi.transpose(2, 0, 1))
        return full.reshape(m, bases * cols, 2)[:, :blocks]


# -- Elephant diffuser ------------------------------------------------------------------------


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
        r = [rotations[i % 4] for i in idx]
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


class _DiffuserCipher(SectorCipher):
    """AES-CBC + Elephant diffuser (Vista / Windows 7 volumes)."""

    def __init__(self, method: EncryptionMethod, key: bytes, sector_size: int) -> None:
        super().__init__(method, sector_size)
        size = 16 if method == EncryptionMethod.AES_128_CBC_DIFFUSER else 32
        cbc_method = (EncryptionMethod.AES_128_CBC if size == 16 else EncryptionMethod.AES_256_CBC)
        self._cbc = _CbcCipher(cbc_method, key[:size], sector_size)
        self._tweak_key = key[32:32 + size]

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


# -- factory ----------------------------------------------------------------------------------

_KEY_SIZES: dict[EncryptionMethod, tuple[int, ...]] = {
    EncryptionMethod.AES_128_CBC: (16, 32),
    EncryptionMethod.AES_256_CBC: (32,),
    EncryptionMethod.AES_128_XTS: (32,),
    EncryptionMethod.AES_256_XTS: (64,),
    EncryptionMethod.AES_128_CBC_DIFFUSER: (64,),
    EncryptionMethod.AES_256_CBC_DIFFUSER: (64,),
}


def make_cipher(method: int | EncryptionMethod, fvek: bytes,
                sector_size: int = 512) -> SectorCipher:
    """The sector cipher of ``method`` keyed with the FVEK key material ``fvek``.

    Raises :class:`UnsupportedError` for an unknown method and :class:`UsageError` for a key
    of the wrong length or an impossible sector size."""
    try:
        meth = EncryptionMethod(method)
    except ValueError:
        shown = f"0x{method:04x}" if isinstance(method, int) else repr(method)
        raise UnsupportedError(f"unknown encryption method {shown}") from None
    diffuser = meth in (EncryptionMethod.AES_128_CBC_DIFFUSER,
                        EncryptionMethod.AES_256_CBC_DIFFUSER)
    unit = 32 if diffuser else 16
    if not isinstance(sector_size, int) or sector_size <= 0 or sector_size % unit:
        raise UsageError(f"sector size {sector_size!r} is not a positive multiple of {unit}")
    if meth == EncryptionMethod.NONE:
        return _PlainCipher(meth, sector_size)
    key = bytes(fvek)
    sizes = _KEY_SIZES[meth]
    if len(key) not in sizes:
        raise UsageError(f"{meth.label} needs a key of "
                         + " or ".join(str(s) for s in sizes)
                         + f" bytes, got {len(key)}")
    if meth == EncryptionMethod.AES_128_CBC:
        return _CbcCipher(meth, key[:16], sector_size)
    if meth == EncryptionMethod.AES_256_CBC:
        return _CbcCipher(meth, key, sector_size)
    if diffuser:
        return _DiffuserCipher(meth, key, sector_size)
    return _XtsCipher(meth, key, sector_size)
