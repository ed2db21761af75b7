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

Two implementations give the same bytes (the tests hold them to each other and to independent
references):

* the **native kernel** (:mod:`bdekit.crypto.native`, C in ``_sector.c``): the default when it
  was built (setuptools builds it when a C compiler is present);
* the **pure path** (numpy + OpenSSL, this module and :mod:`bdekit.crypto.diffuser`): the
  reference, used when the kernel is absent or ``BDEKIT_PURE=1`` is set.

Both make a constant number of Python calls per chunk, never one per sector: no library
implements BitLocker's Elephant diffuser, and the general-purpose ones take one IV or tweak per
call (a fresh OpenSSL context per 512-byte sector, a few MB/s). The per-sector IVs, tweaks and
sector keys come from *one* AES-ECB call over the chunk's counters, the bulk AES is one ECB call
(OpenSSL, through ``cryptography``) over the whole tile, and the chaining is done around it.
On the pure path:

* CBC decrypt = ECB-decrypt everything, XOR with the chunk shifted by one block (the IV for the
  first block of each sector).  CBC encrypt is sequential inside a sector, so it walks the
  block index j and encrypts block j of *all* sectors in one ECB call.
* XTS = the tweak masks ``E(K2, sector) * alpha^j`` are built by GF(2^128) shifts vectorised over
  (sector, j) with numpy, then XOR, one ECB call, XOR.
* the diffuser: see :mod:`bdekit.crypto.diffuser` (word-major tiles, recorded numpy plans).

Objects are immutable after construction; scratch buffers and OpenSSL contexts live in
thread-local storage, so one cipher may be used from several threads at once.

Single-thread decrypt throughput, 4 MiB chunks of 512-byte sectors, on the (shared, loaded)
2-core development VM, ``tools/bench_ciphers.py``: native about 2.5-3 GB/s for XTS, 4 GB/s for
CBC and 1.5-2.9 GB/s with the diffuser; pure about 0.7-1.1, 1.8 and 0.3-0.4 GB/s.
"""

from __future__ import annotations

import os

import numpy as np

from bdekit.crypto import native
from bdekit.crypto.diffuser import _DiffuserCipher
from bdekit.crypto.sectorbase import (
    _U64,
    _V16,
    ReadableBuffer,
    SectorCipher,
    WritableBuffer,
    _ecb,
    _offset_blocks,
    _PlainCipher,
    _Scratch,
)
from bdekit.errors import UnsupportedError, UsageError
from bdekit.format.constants import EncryptionMethod

__all__ = ["ReadableBuffer", "SectorCipher", "WritableBuffer", "make_cipher", "native_available",
           "use_native"]

#: Bytes per tile of the CBC decrypt and XTS paths: their scratch stays in the L2 cache.
_TILE_BYTES = 1 << 19
#: Tile of CBC encryption, bytes and sectors (whichever is larger): it makes a few numpy calls
#: per AES block index and tile, so tiles should hold many sectors.
_CBC_ENCRYPT_TILE = (1 << 22, 2048)
_XTS_J = 32  # tweak-mask columns derived by one broadcast shift (shifts < 64 - 7)
_GF_POLY_SHIFTS = (1, 2, 7)  # x^128 = x^7 + x^2 + x + 1


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


# -- factory ----------------------------------------------------------------------------------

_KEY_SIZES: dict[EncryptionMethod, tuple[int, ...]] = {
    EncryptionMethod.AES_128_CBC: (16, 32),
    EncryptionMethod.AES_256_CBC: (32,),
    EncryptionMethod.AES_128_XTS: (32,),
    EncryptionMethod.AES_256_XTS: (64,),
    EncryptionMethod.AES_128_CBC_DIFFUSER: (64,),
    EncryptionMethod.AES_256_CBC_DIFFUSER: (64,),
}


def native_available() -> bool:
    """Whether the native kernel is built (whether it is *used* also depends on BDEKIT_PURE)."""
    return native.available()


def use_native() -> bool:
    """Whether :func:`make_cipher` picks the native kernel by default: it is built and the
    environment does not ask for the pure path (``BDEKIT_PURE=1``)."""
    return native.available() and os.environ.get("BDEKIT_PURE", "") in ("", "0")


def make_cipher(method: int | EncryptionMethod, fvek: bytes, sector_size: int = 512, *,
                pure: bool | None = None) -> SectorCipher:
    """The sector cipher of ``method`` keyed with the FVEK key material ``fvek``.

    ``pure`` forces the numpy path (True) or the native kernel (False, :class:`UsageError` when
    it is not built); None picks the native kernel unless ``BDEKIT_PURE=1``. Raises
    :class:`UnsupportedError` for an unknown method and :class:`UsageError` for a key of the
    wrong length or an impossible sector size."""
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
    if pure is False and not native.available():
        raise UsageError("the native sector kernel is not built (no C compiler at install "
                         "time?)")
    if not pure and (pure is False or use_native()):
        made = native.make_native(meth, key, sector_size)
        if made is not None:
            return made
    if meth == EncryptionMethod.AES_128_CBC:
        return _CbcCipher(meth, key[:16], sector_size)
    if meth == EncryptionMethod.AES_256_CBC:
        return _CbcCipher(meth, key, sector_size)
    if diffuser:
        size = 16 if meth == EncryptionMethod.AES_128_CBC_DIFFUSER else 32
        cbc = _CbcCipher(meth, key[:size], sector_size)
        return _DiffuserCipher(meth, cbc, key[32:32 + size], sector_size)
    return _XtsCipher(meth, key, sector_size)
