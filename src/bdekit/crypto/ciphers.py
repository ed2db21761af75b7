"""Sector ciphers of BitLocker (decrypt and encrypt whole chunks of sectors at once): the
factory :func:`make_cipher`, which picks the implementation, and the interface it returns.

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
* **NONE**: the plain cipher copies (:mod:`bdekit.crypto.sectorbase`).

The offset is always the *physical* position of the ciphertext in the volume.

Two implementations give the same bytes (the tests hold them to each other and to independent
references):

* the **native kernel** (:mod:`bdekit.crypto.native`, C in ``_sector.c``): the default when it
  was built (setuptools builds it when a C compiler is present);
* the **pure path** (numpy + OpenSSL, :mod:`bdekit.crypto.pure` and
  :mod:`bdekit.crypto.diffuser` on :mod:`bdekit.crypto.purebase`): the reference, used when the
  kernel is absent or ``BDEKIT_PURE=1`` is set. It is imported (with numpy) only when a pure
  cipher is first built, so a program on the native kernel never loads numpy for its ciphers.

Both make a constant number of Python calls per chunk, never one per sector: no library
implements BitLocker's Elephant diffuser, and the general-purpose ones take one IV or tweak per
call (a fresh OpenSSL context per 512-byte sector, a few MB/s). The per-sector IVs, tweaks and
sector keys come from *one* AES-ECB call over the chunk's counters, the bulk AES is one ECB call
(OpenSSL, through ``cryptography``) over the whole tile, and the chaining is done around it.

Objects are immutable after construction; scratch buffers and OpenSSL contexts live in
thread-local storage, so one cipher may be used from several threads at once.

Single-thread decrypt throughput, 4 MiB chunks of 512-byte sectors, on the (shared, loaded)
2-core development VM, ``tools/bench_ciphers.py``: native about 2.5-3 GB/s for XTS, 4 GB/s for
CBC and 1.5-2.9 GB/s with the diffuser; pure about 0.7-1.1, 1.8 and 0.3-0.4 GB/s.
"""

from __future__ import annotations

import os

from bdekit.crypto import native
from bdekit.crypto.sectorbase import ReadableBuffer, SectorCipher, WritableBuffer, _PlainCipher
from bdekit.errors import UnsupportedError, UsageError
from bdekit.format.constants import EncryptionMethod

__all__ = ["ReadableBuffer", "SectorCipher", "WritableBuffer", "make_cipher", "native_available",
           "use_native"]

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
    return _make_pure(meth, key, sector_size)


def _make_pure(meth: EncryptionMethod, key: bytes, sector_size: int) -> SectorCipher:
    """The pure numpy cipher of ``meth`` (not NONE) with its checked key material."""
    from bdekit.crypto.diffuser import _DiffuserCipher  # noqa: PLC0415 (numpy: pure path only)
    from bdekit.crypto.pure import _CbcCipher, _XtsCipher  # noqa: PLC0415

    if meth == EncryptionMethod.AES_128_CBC:
        return _CbcCipher(meth, key[:16], sector_size)
    if meth == EncryptionMethod.AES_256_CBC:
        return _CbcCipher(meth, key, sector_size)
    if meth in (EncryptionMethod.AES_128_CBC_DIFFUSER, EncryptionMethod.AES_256_CBC_DIFFUSER):
        size = 16 if meth == EncryptionMethod.AES_128_CBC_DIFFUSER else 32
        cbc = _CbcCipher(meth, key[:size], sector_size)
        return _DiffuserCipher(meth, cbc, key[32:32 + size], sector_size)
    return _XtsCipher(meth, key, sector_size)
