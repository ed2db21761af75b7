"""The pure sector ciphers of AES-CBC and AES-XTS: numpy + OpenSSL, the reference path.

Used when the native kernel (:mod:`bdekit.crypto.native`) is not built, or when asked for
(``BDEKIT_PURE=1``, ``make_cipher(..., pure=True)``); the layouts are described in
:mod:`bdekit.crypto.ciphers`, the diffuser's pure path is :mod:`bdekit.crypto.diffuser` (which
runs :class:`_CbcCipher` around it). Like the native kernel, a chunk costs a constant number of
Python calls, never one per sector: the per-sector IVs and tweaks come from one AES-ECB call over
the chunk's counters, the bulk AES is one ECB call over a whole tile, and the chaining is done
around it with numpy:

* CBC decrypt = ECB-decrypt everything, XOR with the chunk shifted by one block (the IV for the
  first block of each sector).  CBC encrypt is sequential inside a sector, so it walks the
  block index j and encrypts block j of *all* sectors in one ECB call.
* XTS = the tweak masks ``E(K2, sector) * alpha^j`` are built by GF(2^128) shifts vectorised over
  (sector, j) with numpy, then XOR, one ECB call, XOR.
"""

from __future__ import annotations

import numpy as np

from bdekit.crypto.purebase import (
    _U64,
    _V16,
    _ecb,
    _offset_blocks,
    _PureCipher,
    _Scratch,
)
from bdekit.format.constants import EncryptionMethod

#: Bytes per tile of the CBC decrypt and XTS paths: their scratch stays in the L2 cache.
_TILE_BYTES = 1 << 19
#: Tile of CBC encryption, bytes and sectors (whichever is larger): it makes a few numpy calls
#: per AES block index and tile, so tiles should hold many sectors.
_CBC_ENCRYPT_TILE = (1 << 22, 2048)
_XTS_J = 32  # tweak-mask columns derived by one broadcast shift (shifts < 64 - 7)
_GF_POLY_SHIFTS = (1, 2, 7)  # x^128 = x^7 + x^2 + x + 1


class _CbcCipher(_PureCipher):
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


class _XtsCipher(_PureCipher):
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
