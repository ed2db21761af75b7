"""Common ground of the sector ciphers, without numpy: the :class:`SectorCipher` interface,
the argument checks on memoryviews, OpenSSL ECB contexts and the "plain" cipher of method NONE.

A :class:`SectorCipher` turns a chunk of N consecutive sectors (``N * sector_size`` bytes whose
first sector lies at byte ``offset`` of the volume) into plaintext or back; the layouts of the
methods are described in :mod:`bdekit.crypto.ciphers`, which builds the ciphers: the native
ones (:mod:`bdekit.crypto.native`) and the plain one from this module, and the pure numpy ones
(:mod:`bdekit.crypto.pure`, :mod:`bdekit.crypto.diffuser` on :mod:`bdekit.crypto.purebase`).

Nothing here imports numpy, so a native cipher never loads it (numpy takes tens of ms to
import, which a command line tool pays at every start); the pure path loads it when it is first
built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from bdekit.errors import UsageError
from bdekit.format.constants import EncryptionMethod

if TYPE_CHECKING:
    import numpy as np

    ReadableBuffer: TypeAlias = bytes | bytearray | memoryview | np.ndarray
    WritableBuffer: TypeAlias = bytearray | memoryview | np.ndarray
else:  # the same at run time, minus numpy arrays (any C-contiguous buffer is accepted)
    ReadableBuffer: TypeAlias = bytes | bytearray | memoryview
    WritableBuffer: TypeAlias = bytearray | memoryview

__all__ = ["ReadableBuffer", "SectorCipher", "WritableBuffer"]


def _ecb_context(key: bytes, *, encrypt: bool) -> CipherContext:
    cipher = Cipher(algorithms.AES(key), modes.ECB())
    return cipher.encryptor() if encrypt else cipher.decryptor()


class SectorCipher:
    """Decrypts / encrypts chunks of whole sectors for one (method, FVEK, sector size)."""

    method: EncryptionMethod
    sector_size: int
    #: "pure" (numpy, the reference; also the plain cipher of method NONE) or "native"
    #: (the C kernel)
    backend = "pure"

    def __init__(self, method: EncryptionMethod, sector_size: int) -> None:
        self.method = method
        self.sector_size = sector_size

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.method.label} sector_size={self.sector_size}>"

    def decrypt(self, src: ReadableBuffer, dst: WritableBuffer, offset: int) -> None:
        """Decrypt the sectors of ``src`` (ciphertext at volume byte ``offset``) into ``dst``.

        ``src`` and ``dst`` are C-contiguous buffers of the same length, a multiple of the
        sector size; they may be the same buffer, or overlap (as if ``src`` were copied
        first). Raises :class:`UsageError` for bad buffers or offsets."""
        raise NotImplementedError

    def encrypt(self, src: ReadableBuffer, dst: WritableBuffer, offset: int) -> None:
        """Encrypt the plaintext sectors of ``src`` into ``dst`` for volume byte ``offset``
        (the same rules as :meth:`decrypt`)."""
        raise NotImplementedError


def _check_layout(src_bytes: int, dst_bytes: int, offset: int, sector_size: int) -> None:
    """The size and offset checks every cipher makes (:class:`UsageError` if one fails)."""
    if src_bytes != dst_bytes:
        raise UsageError(f"source ({src_bytes} bytes) and destination ({dst_bytes} bytes) "
                         "differ in size")
    if src_bytes % sector_size:
        raise UsageError(f"buffer of {src_bytes} bytes is not a whole number of "
                         f"{sector_size}-byte sectors")
    if offset < 0 or offset % sector_size:
        raise UsageError(f"offset {offset} is not a multiple of the sector size {sector_size}")
    if offset + src_bytes > 1 << 64:
        raise UsageError(f"offset {offset} is beyond the 64-bit range")


def _byte_view(buf: ReadableBuffer) -> memoryview:
    """A flat unsigned-byte view of a C-contiguous buffer (TypeError / ValueError if not)."""
    # (numpy's stubs give ndarray its __buffer__ on Python 3.12+ only; it has the protocol)
    view = memoryview(buf)  # type: ignore[arg-type]
    if not view.c_contiguous:
        raise ValueError("not C-contiguous")
    if view.ndim != 1 or view.itemsize != 1 or view.format != "B":
        view = view.cast("B")
    return view


def _check_views(src: ReadableBuffer, dst: WritableBuffer, offset: int,
                 sector_size: int) -> tuple[memoryview, memoryview]:
    """Flat byte views of the buffers after the checks of :meth:`SectorCipher.decrypt`; when
    ``src is dst`` (a volume read, in place) both are one view. Buffers that overlap partially
    are left to the caller."""
    try:
        d = _byte_view(dst)
        s = d if src is dst else _byte_view(src)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"buffers must be C-contiguous and bytes-like: {exc}") from None
    if d.readonly:
        raise UsageError("destination buffer is read-only")
    _check_layout(s.nbytes, d.nbytes, offset, sector_size)
    return s, d


class _PlainCipher(SectorCipher):
    """Method NONE: the "ciphertext" is the plaintext, so both directions copy."""

    def decrypt(self, src: ReadableBuffer, dst: WritableBuffer, offset: int) -> None:
        self._copy(src, dst, offset)

    def encrypt(self, src: ReadableBuffer, dst: WritableBuffer, offset: int) -> None:
        self._copy(src, dst, offset)

    def _copy(self, src: ReadableBuffer, dst: WritableBuffer, offset: int) -> None:
        s, d = _check_views(src, dst, offset, self.sector_size)
        if s is not d:
            d[:] = s  # memoryview assignment moves overlapping bytes correctly (memmove)
