"""Writing the image of a synthetic volume: encryption, overlays and sparse output, in chunks.

Every byte of the volume that is not overlaid (volume header block, metadata copies,
relocated header block) is the ciphertext of the plaintext at the same offset, encrypted with
:func:`encrypt_sectors` (the one encryption path of the builder: the Windows-compatibility
tests re-encrypt the real images' plaintext through it).  Bytes at or above the conversion
boundary (``state=partial:OFFSET``) stay plaintext.

``used_only``
    Every all-zero plaintext sector is left unencrypted, i.e. zero on disk (a used-space-only
    volume that never wrote its free space); readers decrypt such sectors to noise, as Windows
    does.  The manifest lists them (``zero_on_disk``; overlaid sectors never are).

Streaming
    The volume is processed in chunks (4 MiB) by a pool of threads (OpenSSL, numpy and hashlib
    release the GIL), written in order with ``pwrite``; all-zero 64 KiB blocks are skipped so
    the output stays sparse; at most ``2 x threads`` chunks are in flight.  The image is written
    under a temporary name and renamed when complete.  Each chunk also yields the plaintext
    digests of its windows (see :mod:`bdekit.synth.manifest`) and, unless ``used_only``, feeds
    the SHA-256 of the whole decrypted volume.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import cast

import numpy as np
import numpy.typing as npt

from bdekit.crypto import ciphers
from bdekit.format.layout import round_up
from bdekit.image.files import pwrite_all
from bdekit.synth.layout import Layout
from bdekit.synth.options import CHUNK, HEADER_BLOCK, SPARSE_BLOCK, WINDOW, ZEROS
from bdekit.synth.plaintext import PlaintextSource

_ZERO_WINDOW = hashlib.sha256(bytes(WINDOW)).hexdigest()

_U64 = np.dtype("<u8")

#: ``progress(done, total)`` after each chunk.
Progress = Callable[[int, int], None]


def encrypt_sectors(cipher: ciphers.SectorCipher, plaintext: ciphers.ReadableBuffer,
                    offset: int) -> bytes:
    """Ciphertext of whole sectors whose first lies at physical byte ``offset`` of the volume.

    The one encryption path of the builder (the Windows-compatibility tests re-encrypt the
    real images' plaintext through it)."""
    size = plaintext.nbytes if isinstance(plaintext, np.ndarray) else memoryview(plaintext).nbytes
    out = bytearray(size)
    cipher.encrypt(plaintext, out, offset)
    return bytes(out)


@dataclasses.dataclass
class ChunkResult:
    """One processed chunk of the volume."""

    pos: int
    n: int
    digests: list[str]
    view: np.ndarray | None  # plaintext view (None: all zero)
    writes: list[tuple[int, memoryview]]
    zero_runs: list[tuple[int, int]]


@dataclasses.dataclass
class StreamResult:
    """What streaming the whole volume yields for the manifest."""

    windows: list[str]
    zero_runs: list[tuple[int, int]]
    volume_sha256: str | None  # None on used-only volumes


class Streamer:
    """Turns one chunk of plaintext into the bytes on disk (thread safe: no shared state)."""

    def __init__(self, *, content: PlaintextSource, layout: Layout,
                 cipher: ciphers.SectorCipher, overlays: list[tuple[int, bytes]],
                 used_only: bool, chunk: int) -> None:
        self.content = content
        self.layout = layout
        self.cipher = cipher
        self.overlays = sorted(overlays)
        self.used_only = used_only
        self.size = layout.volume_size
        self.ss = layout.sector_size
        self.enc_end = layout.encrypted_end
        self.reserved = layout.reserved()
        self.chunk = chunk
        # bytes never encrypted from the plaintext in place (overlaid): header block, copies,
        # relocated block
        self.covered = sorted([(0, HEADER_BLOCK), *self.reserved])

    def process(self, pos: int) -> ChunkResult:
        n = min(self.chunk, self.size - pos)
        enc_n = max(0, min(n, self.enc_end - pos))
        overlays = [(o, d) for o, d in self.overlays if o < pos + n and pos < o + len(d)]
        if not self.content.maybe_nonzero(pos, n) and not overlays and (
                self.used_only or enc_n == 0):
            return ChunkResult(pos, n, _zero_digests(n), None, [],
                               self._zero_runs_all(pos, enc_n))
        plain = np.empty(n, np.uint8)
        nonzero = self.content.fill(pos, plain)
        for a, length in self.reserved:
            lo, hi = max(a, pos), min(a + length, pos + n)
            if lo < hi:
                plain[lo - pos:hi - pos] = 0
        digests = _digests(plain) if nonzero else _zero_digests(n)
        out = np.empty(n, np.uint8) if enc_n == n and not self.used_only else np.zeros(n, np.uint8)
        zero_runs = self._encrypt(plain, out, pos, enc_n)
        if enc_n < n:
            out[enc_n:] = plain[enc_n:]
        for off, data in overlays:
            lo, hi = max(off, pos), min(off + len(data), pos + n)
            out[lo - pos:hi - pos] = np.frombuffer(data, np.uint8)[lo - off:hi - off]
        return ChunkResult(pos, n, digests, plain if nonzero else None,
                           _sparse_writes(out, pos), zero_runs)

    def _encrypt(self, plain: np.ndarray, out: np.ndarray, pos: int,
                 enc_n: int) -> list[tuple[int, int]]:
        """Encrypt the first ``enc_n`` bytes of ``plain`` into ``out``; with ``used_only``
        all-zero sectors stay zero: returns their runs."""
        if not enc_n:
            return []
        if not self.used_only:
            self.cipher.encrypt(plain[:enc_n], out[:enc_n], pos)
            return []
        ss = self.ss
        sectors = cast("npt.NDArray[np.bool_]",
                       plain[:enc_n].view(_U64).reshape(-1, ss // 8).any(axis=1))
        self._mark_covered(sectors, pos)
        if sectors.any():
            self.cipher.encrypt(plain[:enc_n], out[:enc_n], pos)
            out[:enc_n].reshape(-1, ss)[~sectors] = 0
        return _runs(~sectors, pos, ss)

    def _mark_covered(self, sectors: npt.NDArray[np.bool_], pos: int) -> None:
        """Overlaid sectors are never "zero on disk": mark them as data."""
        ss = self.ss
        end = pos + len(sectors) * ss
        for a, length in self.covered:
            lo, hi = max(a, pos), min(a + length, end)
            if lo < hi:
                sectors[(lo - pos) // ss:round_up(hi - pos, ss) // ss] = True

    def _zero_runs_all(self, pos: int, enc_n: int) -> list[tuple[int, int]]:
        if not enc_n:
            return []
        sectors = np.zeros(enc_n // self.ss, dtype=bool)
        self._mark_covered(sectors, pos)
        return _runs(~sectors, pos, self.ss)


def _zero_digests(n: int) -> list[str]:
    out = []
    for w in range(0, n, WINDOW):
        length = min(WINDOW, n - w)
        out.append(_ZERO_WINDOW if length == WINDOW
                   else hashlib.sha256(ZEROS[:length]).hexdigest())
    return out


def _digests(plain: np.ndarray) -> list[str]:
    return [hashlib.sha256(plain[w:w + WINDOW].data).hexdigest()
            for w in range(0, len(plain), WINDOW)]


def _runs(mask: npt.NDArray[np.bool_], pos: int, ss: int) -> list[tuple[int, int]]:
    """(offset, length) byte runs of the True sectors of ``mask``."""
    if not mask.any():
        return []
    m = mask.astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], m, [0]))))
    return [(pos + int(a) * ss, int(b - a) * ss) for a, b in zip(edges[::2], edges[1::2],
                                                                   strict=True)]


def _sparse_writes(out: np.ndarray, pos: int) -> list[tuple[int, memoryview]]:
    """Runs of ``out`` made of 64 KiB blocks that are not all zero."""
    n = len(out)
    full = n // SPARSE_BLOCK * SPARSE_BLOCK
    blocks = cast("npt.NDArray[np.bool_]",
                  out[:full].view(_U64).reshape(-1, SPARSE_BLOCK // 8).any(axis=1))
    flags: list[bool] = blocks.tolist()
    if full < n:
        flags.append(bool(out[full:].any()))
    writes: list[tuple[int, memoryview]] = []
    mv = out.data
    start = None
    for i, flag in enumerate([*flags, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            a, b = start * SPARSE_BLOCK, min(i * SPARSE_BLOCK, n)
            writes.append((pos + a, mv[a:b]))
            start = None
    return writes


class _Sink:
    """Takes processed chunks in volume order: writes them, collects digests and zero runs."""

    def __init__(self, fd: int, size: int, hash_whole: bool, progress: Progress | None) -> None:
        self.fd = fd
        self.size = size
        self.windows: list[str] = []
        self.zero_runs: list[tuple[int, int]] = []
        self.whole = hashlib.sha256() if hash_whole else None
        self.progress = progress

    def take(self, res: ChunkResult) -> None:
        for off, data in res.writes:
            pwrite_all(self.fd, data, off)
        self.windows.extend(res.digests)
        self.zero_runs.extend(res.zero_runs)
        if self.whole is not None:
            if res.view is not None:
                self.whole.update(res.view.data)
            else:
                for k in range(0, res.n, CHUNK):
                    self.whole.update(ZEROS[:min(CHUNK, res.n - k)])
        if self.progress is not None:
            self.progress(res.pos + res.n, self.size)

    def result(self) -> StreamResult:
        return StreamResult(self.windows, self.zero_runs,
                            self.whole.hexdigest() if self.whole is not None else None)


def stream(streamer: Streamer, fd: int, threads: int | None,
           progress: Progress | None) -> StreamResult:
    """Process and write every chunk of the volume to ``fd``, in order (module docstring)."""
    sink = _Sink(fd, streamer.size, not streamer.used_only, progress)
    workers = threads or min(4, os.cpu_count() or 1)
    positions: Iterable[int] = range(0, streamer.size, streamer.chunk)
    if workers <= 1:
        for pos in positions:
            sink.take(streamer.process(pos))
        return sink.result()
    pending: collections.deque[Future[ChunkResult]] = collections.deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="synth") as pool:
        for pos in positions:
            pending.append(pool.submit(streamer.process, pos))
            if len(pending) >= 2 * workers:
                sink.take(pending.popleft().result())
        while pending:
            sink.take(pending.popleft().result())
    return sink.result()


def write_image(streamer: Streamer, out_path: Path, threads: int | None,
                progress: Progress | None) -> StreamResult:
    """Stream the volume into a temporary file next to ``out_path``, then rename it."""
    tmp = out_path.with_name(f".{out_path.name}.synth-{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            result = stream(streamer, fd, threads, progress)
            os.ftruncate(fd, streamer.size)
        finally:
            os.close(fd)
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return result
