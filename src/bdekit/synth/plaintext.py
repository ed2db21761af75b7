"""The plaintext a synthetic volume encrypts: generated from the seed, or read from a file.

Generated plaintext (:class:`GeneratedPlaintext`, no ``source``)
    An NTFS-like boot sector at offset 0 and its backup in the last sector
    (:func:`~bdekit.synth.boot_sectors.ntfs_boot_sector`), so readers take the volume size
    from it; random bytes everywhere else, or with ``used_only`` only in eight "used" areas
    (size / 64, between 16 KiB and 960 KiB each, at k/8 of the volume) and zeros elsewhere --
    which is what makes a 16 GiB used-only image build in seconds.  The random bytes are an
    AES-CTR keystream keyed by the seed with counter = offset / 16, so any range can be
    produced on its own (random access).

Source volume (:class:`FilePlaintext`, ``source=``)
    A plaintext volume image (e.g. made by ``mkntfs -F -Q``), read with ``pread`` and never
    written; its size is the volume size.

Both answer the questions the layout planner and the streaming pipeline ask
(:class:`PlaintextSource`): may this range hold data, fill this buffer, is this range zero.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Protocol

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from bdekit.errors import UsageError
from bdekit.format.layout import round_down
from bdekit.synth.boot_sectors import ntfs_boot_sector
from bdekit.synth.options import CHUNK, SPARSE_BLOCK, ZEROS, MiB
from bdekit.synth.seeded import SeededRandom


class PlaintextSource(Protocol):
    """What the builder reads the plaintext volume through."""

    size: int

    def describe(self) -> dict[str, Any]:
        """The manifest's ``source`` entry."""
        ...

    def maybe_nonzero(self, pos: int, n: int) -> bool:
        """False only when ``[pos, pos + n)`` is certainly all zero (cheap)."""
        ...

    def fill(self, pos: int, buf: np.ndarray) -> bool:
        """Fill ``buf`` with the plaintext at ``pos``; False when it is certainly all zero."""
        ...

    def read(self, pos: int, n: int) -> bytes:
        """``n`` bytes of plaintext at ``pos`` (zeros past the end)."""
        ...

    def is_zero(self, pos: int, n: int) -> bool:
        """Whether ``[pos, pos + n)`` is all zero (reads it when needed)."""
        ...


class GeneratedPlaintext:
    """Deterministic plaintext: a boot sector, its backup, random bytes in the used areas."""

    def __init__(self, seed: int | str, size: int, sector_size: int, used_only: bool) -> None:
        self.size = size
        self.sector_size = sector_size
        key = hashlib.sha256(f"bdekit-synth:plaintext:{seed}".encode()).digest()
        self._aes = algorithms.AES(key)
        serial = int.from_bytes(SeededRandom(seed, "serial").bytes(8), "little")
        self.boot = ntfs_boot_sector(size, sector_size, serial)
        if used_only:
            length = min(960 << 10, max(16 << 10, round_down(size // 64, 16 << 10)))
            starts = sorted({round_down(size * k // 8, SPARSE_BLOCK) for k in range(8)})
            areas = [(s, min(s + length, size)) for s in starts]
        else:
            areas = [(0, size)]
        self.areas = areas
        self.patches = [(0, self.boot), (size - sector_size, self.boot)]

    def describe(self) -> dict[str, Any]:
        return {"kind": "generated", "random_areas": [[a, b - a] for a, b in self.areas]}

    def maybe_nonzero(self, pos: int, n: int) -> bool:
        end = pos + n
        return (any(a < end and pos < b for a, b in self.areas)
                or any(off < end and pos < off + len(d) for off, d in self.patches))

    def fill(self, pos: int, buf: np.ndarray) -> bool:
        n = len(buf)
        end = pos + n
        any_data = False
        cursor = pos
        for a, b in self.areas:
            lo, hi = max(a, pos), min(b, end)
            if lo >= hi:
                continue
            if cursor < lo:
                buf[cursor - pos:lo - pos] = 0
            self._keystream(lo, hi, buf[lo - pos:hi - pos])
            cursor = hi
            any_data = True
        if cursor < end:
            buf[cursor - pos:] = 0
        for off, data in self.patches:
            lo, hi = max(off, pos), min(off + len(data), end)
            if lo < hi:
                buf[lo - pos:hi - pos] = np.frombuffer(data, np.uint8)[lo - off:hi - off]
                any_data = True
        return any_data

    def _keystream(self, lo: int, hi: int, out: np.ndarray) -> None:
        """The random bytes of ``[lo, hi)`` (AES-CTR, counter = offset / 16) into ``out``."""
        enc = Cipher(self._aes, modes.CTR((lo // 16).to_bytes(16, "big"))).encryptor()
        for piece in range(lo, hi, CHUNK):
            stop = min(piece + CHUNK, hi)
            # update_into wants 15 bytes of slack after the output: the last block of the
            # piece goes through update() instead
            body = max(0, stop - piece - 16)
            if body:
                enc.update_into(ZEROS[:body], out[piece - lo:stop - lo].data)
            out[piece - lo + body:stop - lo] = np.frombuffer(
                enc.update(ZEROS[:stop - piece - body]), np.uint8)

    def read(self, pos: int, n: int) -> bytes:
        buf = np.empty(n, np.uint8)
        self.fill(pos, buf)
        return buf.tobytes()

    def is_zero(self, pos: int, n: int) -> bool:
        return not self.maybe_nonzero(pos, n)


class FilePlaintext:
    """Plaintext from a volume image file (read with ``pread``; never written)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        try:
            self.fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise UsageError(f"cannot open source volume: {exc.strerror}", path=path) from None
        self.size = os.fstat(self.fd).st_size

    def close(self) -> None:
        os.close(self.fd)

    def describe(self) -> dict[str, Any]:
        return {"kind": "file", "path": self.path, "size": self.size}

    def maybe_nonzero(self, pos: int, n: int) -> bool:
        return True

    def fill(self, pos: int, buf: np.ndarray) -> bool:
        got = os.preadv(self.fd, [buf.data], pos)
        if got < len(buf):
            buf[got:] = 0
        return bool(buf.any())

    def read(self, pos: int, n: int) -> bytes:
        return os.pread(self.fd, n, pos).ljust(n, b"\0")

    def is_zero(self, pos: int, n: int) -> bool:
        step = MiB
        for off in range(pos, pos + n, step):
            if any(self.read(off, min(step, pos + n - off))):
                return False
        return True
