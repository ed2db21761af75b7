"""Sector ciphers on the native kernel (:mod:`bdekit.crypto._sector`, C, optional).

Same interface and results as the pure numpy ciphers (:mod:`bdekit.crypto.pure` and
:mod:`bdekit.crypto.diffuser`, which stay the reference), fewer passes and fewer Python calls.
A chunk is cut into tiles; per tile:

* the per-sector 16-byte values (IVs, XTS tweaks, sector keys) are written by
  ``_sector.counters`` and encrypted in place by one AES-ECB call (OpenSSL, ``cryptography``);
* XTS: ``xts_xor`` (source XOR tweak masks, computed on the fly by doubling in GF(2^128))
  into the tile scratch, one ECB call in place, ``xts_xor`` into the destination;
* CBC decrypt: one ECB call into the scratch, ``cbc_decrypt`` (chaining XOR) into the
  destination; CBC encrypt walks the block index j: ``cbc_encrypt_step`` gathers block j of
  every sector XOR the previous ciphertext block, one ECB call encrypts that row in place;
* CBC + diffuser decrypt: one ECB call, then ``diffuser_decrypt`` does the chaining XOR,
  diffuser B and A and the sector-key XOR in one pass; encrypt runs ``diffuser_encrypt`` then
  CBC encryption.

The C functions release the GIL for tiles of 64 KiB and more; ``cryptography``'s
``update_into`` does not, so threads overlap everything but the AES itself. Buffers pass
through the buffer protocol (no numpy, no copies), which keeps a 4 KiB read to about five
calls; nothing here imports numpy (the argument checks on memoryviews are
:mod:`bdekit.crypto.sectorbase`'s). Scratch buffers and OpenSSL contexts are per thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import ModuleType

from cryptography.hazmat.primitives.ciphers import CipherContext

from bdekit.crypto.sectorbase import (
    ReadableBuffer,
    SectorCipher,
    WritableBuffer,
    _check_views,
    _ecb_context,
)
from bdekit.format.constants import EncryptionMethod

_sector: ModuleType | None
try:
    from bdekit.crypto import _sector  # type: ignore[attr-defined,no-redef]
except ImportError:  # not built (no compiler at install time): the pure path serves
    _sector = None

__all__ = ["available", "make_native", "zero_test"]

#: Bytes per tile of the decrypt paths and XTS (measured: 1 MiB beats 64-512 KiB, fewer calls
#: per chunk, and a whole 4 MiB chunk no longer fits the caches).
_TILE_BYTES = 1 << 20
#: Tile of CBC encryption (bytes, sectors; whichever is larger): two calls per block index j.
_ENCRYPT_TILE = (1 << 21, 1024)
#: High 64 bits of the second half of a diffuser sector key: u128le(offset) | 0x80 << 120.
_SECTOR_KEY_HIGH = 0x80 << 56


def available() -> bool:
    """Whether the native kernel was built and imports."""
    return _sector is not None


def zero_test() -> Callable[[memoryview], bool] | None:
    """The kernel's all-zero test of a buffer (``_sector.all_zero``: stops at the first
    nonzero 64-byte block, GIL released for large buffers), or None when it is not built."""
    return None if _sector is None else _sector.all_zero


class _Local(threading.local):
    """Per-thread scratch: growable buffers (with the block of slack ``update_into`` wants)
    and the cipher's OpenSSL ECB contexts."""

    def __init__(self, keys: tuple[tuple[bytes, bool], ...]) -> None:
        self.contexts = tuple(_ecb_context(key, encrypt=enc) for key, enc in keys)
        self.buffers: dict[str, memoryview] = {}

    def buffer(self, name: str, nbytes: int) -> memoryview:
        view = self.buffers.get(name)
        if view is None or len(view) < nbytes + 16:
            view = self.buffers[name] = memoryview(bytearray(max(nbytes + 16, 4096)))
        return view


class _NativeCipher(SectorCipher):
    """The tile loop over memoryviews (no numpy) and per-thread state."""

    backend = "native"

    def __init__(self, method: EncryptionMethod, sector_size: int,
                 keys: tuple[tuple[bytes, bool], ...]) -> None:
        super().__init__(method, sector_size)
        self._tile = max(sector_size, _TILE_BYTES // sector_size * sector_size)
        self._encrypt_tile = max(_ENCRYPT_TILE[0], _ENCRYPT_TILE[1] * sector_size)
        # the per-thread state holds the keys, not the cipher: no reference cycle, so a cipher
        # and its buffers go as soon as the last reference does
        self._tls = _Local(keys)

    def decrypt(self, src: ReadableBuffer, dst: WritableBuffer, offset: int) -> None:
        if src is dst and type(dst) is memoryview and self._small_in_place(dst, offset):
            self._decrypt_tile(self._tls, dst, dst, offset)  # a volume's small read
            return
        s, d = self._views(src, dst, offset)
        n = s.nbytes
        tile = self._tile
        if n <= tile:
            if n:
                self._decrypt_tile(self._tls, s, d, offset)
            return
        for a in range(0, n, tile):
            self._decrypt_tile(self._tls, s[a:a + tile], d[a:a + tile], offset + a)

    def encrypt(self, src: ReadableBuffer, dst: WritableBuffer, offset: int) -> None:
        s, d = self._views(src, dst, offset)
        tile = self._encrypt_tile
        for a in range(0, s.nbytes, tile):
            self._encrypt_tile_at(self._tls, s[a:a + tile], d[a:a + tile], offset + a)

    def _small_in_place(self, view: memoryview, offset: int) -> bool:
        """Whether ``view`` passes every check of :meth:`_views` as one tile decrypted in
        place: a writable flat byte view of whole sectors at a sector offset."""
        n = view.nbytes
        ss = self.sector_size
        return (0 < n <= self._tile and view.format == "B" and view.ndim == 1
                and view.c_contiguous and not view.readonly and not n % ss
                and offset >= 0 and not offset % ss and offset + n <= 1 << 64)

    def _decrypt_tile(self, t: _Local, s: memoryview, d: memoryview, offset: int) -> None:
        raise NotImplementedError

    def _encrypt_tile_at(self, t: _Local, s: memoryview, d: memoryview, offset: int) -> None:
        raise NotImplementedError

    def _views(self, src: ReadableBuffer, dst: WritableBuffer,
               offset: int) -> tuple[memoryview, memoryview]:
        """Flat byte views of the buffers after the checks of every cipher (in place,
        ``src is dst``, is the common case of a volume read: one view, no overlap test)."""
        s, d = _check_views(src, dst, offset, self.sector_size)
        if s is not d and _kernel().alias(s, d) == 2:
            s = memoryview(bytes(s))  # partial overlap: the kernels handle src is dst only
        return s, d

    def _cbc_encrypt(self, t: _Local, s: memoryview, d: memoryview, ivs: memoryview,
                     ctx: CipherContext) -> None:
        """CBC-encrypt the sectors of ``s`` into ``d`` (may be ``s``) with ``ivs``."""
        k = _kernel()
        ss = self.sector_size
        m16 = s.nbytes // ss * 16
        row = t.buffer("row", m16)
        part = row[:m16]
        blocks = ss // 16
        for j in range(blocks):
            k.cbc_encrypt_step(row, s, d, ivs, j, ss)
            ctx.update_into(part, row)
        k.cbc_encrypt_step(row, s, d, ivs, blocks, ss)


def _kernel() -> ModuleType:
    if _sector is None:  # make_native never builds a native cipher without it
        raise RuntimeError("the native sector kernel is not built")
    return _sector


class _CbcNative(_NativeCipher):
    """AES-CBC per sector with IV = AES-ECB(key, u128le(byte offset))."""

    def __init__(self, method: EncryptionMethod, key: bytes, sector_size: int) -> None:
        super().__init__(method, sector_size, ((key, True), (key, False)))

    def _ivs(self, t: _Local, offset: int, m16: int) -> memoryview:
        ivs = t.buffer("ivs", m16)
        _kernel().counters(ivs[:m16], offset, self.sector_size)
        t.contexts[0].update_into(ivs[:m16], ivs)
        return ivs

    def _decrypt_tile(self, t: _Local, s: memoryview, d: memoryview, offset: int) -> None:
        n = s.nbytes
        ivs = self._ivs(t, offset, n // self.sector_size * 16)
        data = t.buffer("data", n)
        t.contexts[1].update_into(s, data)
        _kernel().cbc_decrypt(data, s, ivs, d, self.sector_size)

    def _encrypt_tile_at(self, t: _Local, s: memoryview, d: memoryview, offset: int) -> None:
        ivs = self._ivs(t, offset, s.nbytes // self.sector_size * 16)
        self._cbc_encrypt(t, s, d, ivs, t.contexts[0])


class _XtsNative(_NativeCipher):
    """AES-XTS, one data unit per sector: contexts are E(K1), D(K1), E(K2)."""

    def __init__(self, method: EncryptionMethod, key: bytes, sector_size: int) -> None:
        half = len(key) // 2
        super().__init__(method, sector_size,
                         ((key[:half], True), (key[:half], False), (key[half:], True)))
        self._encrypt_tile = self._tile  # XTS encryption is as parallel as decryption

    def _run_tile(self, t: _Local, s: memoryview, d: memoryview, offset: int,
                  ctx: CipherContext) -> None:
        k = _kernel()
        ss = self.sector_size
        n = s.nbytes
        m16 = n // ss * 16
        tweaks = t.buffer("tweaks", m16)
        k.counters(tweaks[:m16], offset // ss, 1)
        t.contexts[2].update_into(tweaks[:m16], tweaks)
        data = t.buffer("data", n)
        k.xts_xor(s, data, tweaks, ss)
        ctx.update_into(data[:n], data)
        k.xts_xor(data[:n], d, tweaks, ss)

    def _decrypt_tile(self, t: _Local, s: memoryview, d: memoryview, offset: int) -> None:
        self._run_tile(t, s, d, offset, t.contexts[1])

    def _encrypt_tile_at(self, t: _Local, s: memoryview, d: memoryview, offset: int) -> None:
        self._run_tile(t, s, d, offset, t.contexts[0])


class _DiffuserNative(_NativeCipher):
    """AES-CBC + Elephant diffuser: contexts are E(data key), D(data key), E(tweak key)."""

    def __init__(self, method: EncryptionMethod, data_key: bytes, tweak_key: bytes,
                 sector_size: int) -> None:
        super().__init__(method, sector_size,
                         ((data_key, True), (data_key, False), (tweak_key, True)))

    def _ivs_and_keys(self, t: _Local, offset: int, m: int) -> tuple[memoryview, memoryview]:
        k = _kernel()
        ss = self.sector_size
        ivs = t.buffer("ivs", 16 * m)
        k.counters(ivs[:16 * m], offset, ss)
        t.contexts[0].update_into(ivs[:16 * m], ivs)
        keys = t.buffer("keys", 32 * m)
        k.counters(keys[:32 * m], offset, ss, _SECTOR_KEY_HIGH, True)
        t.contexts[2].update_into(keys[:32 * m], keys)
        return ivs, keys

    def _decrypt_tile(self, t: _Local, s: memoryview, d: memoryview, offset: int) -> None:
        n = s.nbytes
        ivs, keys = self._ivs_and_keys(t, offset, n // self.sector_size)
        data = t.buffer("data", n)
        t.contexts[1].update_into(s, data)
        _kernel().diffuser_decrypt(data, s, ivs, keys, d, self.sector_size)

    def _encrypt_tile_at(self, t: _Local, s: memoryview, d: memoryview, offset: int) -> None:
        ivs, keys = self._ivs_and_keys(t, offset, s.nbytes // self.sector_size)
        _kernel().diffuser_encrypt(s, keys, d, self.sector_size)
        self._cbc_encrypt(t, d, d, ivs, t.contexts[0])


def make_native(method: EncryptionMethod, key: bytes, sector_size: int) -> SectorCipher | None:
    """The native cipher of ``method`` with its (already checked) key material, or None when
    the kernel is not built or the method has no native path (NONE)."""
    if _sector is None:
        return None
    if method == EncryptionMethod.AES_128_CBC:
        return _CbcNative(method, key[:16], sector_size)
    if method == EncryptionMethod.AES_256_CBC:
        return _CbcNative(method, key, sector_size)
    if method in (EncryptionMethod.AES_128_XTS, EncryptionMethod.AES_256_XTS):
        return _XtsNative(method, key, sector_size)
    if method in (EncryptionMethod.AES_128_CBC_DIFFUSER, EncryptionMethod.AES_256_CBC_DIFFUSER):
        size = 16 if method == EncryptionMethod.AES_128_CBC_DIFFUSER else 32
        return _DiffuserNative(method, key[:size], key[32:32 + size], sector_size)
    return None
