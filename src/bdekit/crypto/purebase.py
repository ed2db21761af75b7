"""The numpy machinery of the pure sector ciphers (:mod:`bdekit.crypto.pure`,
:mod:`bdekit.crypto.diffuser`): the :class:`_PureCipher` base with its checks on numpy views and
its tile loop, per-thread scratch arrays and OpenSSL ECB contexts, and AES-ECB over arrays.

Everything that needs many AES blocks (IVs, tweaks, sector keys, the bulk data) makes one
AES-ECB call through ``cryptography`` over a contiguous buffer; ``update_into`` wants one block
of slack after its output, which the scratch buffers here always have.

Only the pure path imports this module (and so numpy): :func:`bdekit.crypto.ciphers.make_cipher`
loads it when it first builds a pure cipher.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import CipherContext

from bdekit.crypto.sectorbase import (
    ReadableBuffer,
    SectorCipher,
    WritableBuffer,
    _check_layout,
    _ecb_context,
)
from bdekit.errors import UsageError
from bdekit.format.constants import EncryptionMethod

_U8 = np.dtype(np.uint8)
_U32 = np.dtype("<u4")
_U64 = np.dtype("<u8")
_V16 = np.dtype("V16")  # one AES block, for moving blocks around


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


class _Scratch:
    """Per-thread scratch: growable byte arrays and cached OpenSSL ECB contexts."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.contexts: dict[tuple[bytes, bool], CipherContext] = {}
        self.plans: dict[tuple[int, bool], Any] = {}  # diffuser plans (diffuser.py)
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
    ctx.update_into(src.reshape(-1).view(_U8).data, out.data)


def _offset_blocks(scratch: _Scratch, name: str, key: bytes, start: int, step: int,
                   count: int, high: int = 0) -> np.ndarray:
    """AES-ECB(key, u128le(start + k*step) | high << 64) for k < count, as (count, 2) u64."""
    blocks = scratch.array(name, (count, 2), _U64)
    np.multiply(scratch.arange(count), np.uint64(step), out=blocks[:, 0])
    np.add(blocks[:, 0], np.uint64(start), out=blocks[:, 0])
    blocks[:, 1] = high
    _ecb(scratch.ecb(key, encrypt=True), blocks, blocks)
    return blocks


class _PureCipher(SectorCipher):
    """A pure numpy cipher: checks on numpy views, then :meth:`_run` over the whole chunk."""

    backend = "pure"

    def __init__(self, method: EncryptionMethod, sector_size: int) -> None:
        super().__init__(method, sector_size)
        self._local = threading.local()

    def decrypt(self, src: ReadableBuffer, dst: WritableBuffer, offset: int) -> None:
        s, d = self._check(src, dst, offset)
        if s.size:
            self._run(s, d, offset, encrypt=False)

    def encrypt(self, src: ReadableBuffer, dst: WritableBuffer, offset: int) -> None:
        s, d = self._check(src, dst, offset)
        if s.size:
            self._run(s, d, offset, encrypt=True)

    def _run(self, src: np.ndarray, dst: np.ndarray, offset: int, *, encrypt: bool) -> None:
        raise NotImplementedError

    def _check(self, src: ReadableBuffer, dst: WritableBuffer,
               offset: int) -> tuple[np.ndarray, np.ndarray]:
        s = _as_bytes_array(src, writable=False, what="source buffer")
        d = _as_bytes_array(dst, writable=True, what="destination buffer")
        _check_layout(s.size, d.size, offset, self.sector_size)
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
