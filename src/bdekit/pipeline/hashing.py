"""Hashes of the output (and of the input image), computed while the volume is decrypted.

``--hash md5,sha1,sha256`` (any subset; default ``sha256``; ``--no-hash`` for none) names the
algorithms (:func:`parse_algorithms`). This module is the one place where hash objects are
created (:func:`new_digest`; an accelerated implementation plugs in with :func:`register`).

:class:`StreamHasher`
    Hashes a sequence of buffers *in order*, each algorithm on a thread of its own (hashlib
    releases the GIL on large updates, so the algorithms run in parallel with each other and
    with decryption); a buffer is handed back (``release``) once every algorithm has hashed
    it, so the decrypt loop can reuse it.

:class:`InputHasher`
    ``--hash-input``: hashes the input image (its logical bytes from 0 to its size, all
    segments of a split set, the media of an E01) on a thread of its own during the decrypt.
    It trails the decrypt loop's position in the image (:meth:`InputHasher.advance`) so that
    it reads what the loop has just read, from the page cache: one pass over the evidence.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from bdekit.errors import UsageError

log = logging.getLogger(__name__)

#: Algorithms ``--hash`` accepts, in the order reports list them.
ALGORITHMS: tuple[str, ...] = ("md5", "sha1", "sha256")
#: What ``--hash`` defaults to.
DEFAULT_ALGORITHMS: tuple[str, ...] = ("sha256",)


class Digest(Protocol):
    def update(self, data: memoryview, /) -> None: ...

    def hexdigest(self) -> str: ...


_FACTORIES: dict[str, Callable[[], Digest]] = {
    name: (lambda name=name: hashlib.new(name)) for name in ALGORITHMS  # type: ignore[misc]
}


def register(name: str, factory: Callable[[], Digest]) -> None:
    """Use ``factory`` for ``name`` from now on (e.g. a native implementation)."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown hash algorithm {name!r}")
    _FACTORIES[name] = factory


def new_digest(name: str) -> Digest:
    """A new hash object for ``name`` (one of :data:`ALGORITHMS`)."""
    return _FACTORIES[name]()


def parse_algorithms(text: str | None) -> tuple[str, ...]:
    """``"sha1,md5"`` -> ``("md5", "sha1")``; empty or None -> the default."""
    if text is None or not text.strip():
        return DEFAULT_ALGORITHMS
    names = {part.strip().lower().replace("-", "") for part in text.split(",") if part.strip()}
    unknown = sorted(names - set(ALGORITHMS))
    if unknown:
        raise UsageError(f"--hash: unknown algorithm {', '.join(unknown)} (choose from "
                         f"{', '.join(ALGORITHMS)})")
    return tuple(a for a in ALGORITHMS if a in names)


class _Job:
    __slots__ = ("buf", "left", "length", "lock")

    def __init__(self, buf: bytearray | bytes, length: int, left: int) -> None:
        self.buf = buf
        self.length = length
        self.left = left
        self.lock = threading.Lock()


class StreamHasher:
    """In-order hashing of buffers by several algorithms in parallel (see module docstring).

    ``release(buf)`` is called once every algorithm is done with ``buf`` (at once when there
    is no algorithm)."""

    def __init__(self, algorithms: Sequence[str], release: Callable[[bytearray], None],
                 *, name: str = "bdekit-hash") -> None:
        self.algorithms = tuple(algorithms)
        self.release = release
        self.digests = {a: new_digest(a) for a in self.algorithms}
        self.error: BaseException | None = None
        self.queues: list[queue.Queue[_Job | None]] = []
        self.threads: list[threading.Thread] = []
        for alg in self.algorithms:
            q: queue.Queue[_Job | None] = queue.Queue()
            thread = threading.Thread(target=self._run, args=(self.digests[alg], q),
                                      name=f"{name}-{alg}", daemon=True)
            self.queues.append(q)
            self.threads.append(thread)
            thread.start()

    def _run(self, digest: Digest, jobs: queue.Queue[_Job | None]) -> None:
        while True:
            job = jobs.get()
            if job is None:
                return
            try:
                if self.error is None:
                    digest.update(memoryview(job.buf)[:job.length])
            except BaseException as exc:  # noqa: BLE001 - handed to the caller by finish()
                self.error = exc
            with job.lock:
                job.left -= 1
                done = job.left == 0
            if done and isinstance(job.buf, bytearray):
                self.release(job.buf)

    def feed(self, buf: bytearray, length: int) -> None:
        """Hash ``buf[:length]`` after everything fed before; ``buf`` is released after."""
        if not self.queues:
            self.release(buf)
            return
        job = _Job(buf, length, len(self.queues))
        for q in self.queues:
            q.put(job)

    def feed_copy(self, data: bytes | memoryview) -> None:
        """Hash a private copy of ``data`` (nothing is released)."""
        if self.queues:
            job = _Job(bytes(data), len(data), len(self.queues))
            for q in self.queues:
                q.put(job)

    def finish(self) -> dict[str, str]:
        """Wait for every buffer fed; the hex digests by algorithm."""
        self.stop()
        if self.error is not None:
            raise self.error
        return {alg: d.hexdigest() for alg, d in self.digests.items()}

    def stop(self) -> None:
        for q in self.queues:
            q.put(None)
        for thread in self.threads:
            thread.join()
        self.queues = []
        self.threads = []


#: ``read(offset, buffer) -> bytes read`` of an image
ReadFn = Callable[[int, memoryview], int]


class InputHasher:
    """Hashes an image of ``size`` bytes read by ``read`` on a thread (see module docstring).

    The thread stays within ``lead`` bytes of the position :meth:`advance` reports (the
    decrypt loop's position in the image); :meth:`advance` with ``None`` lets it run free."""

    def __init__(self, read: ReadFn, size: int, algorithms: Sequence[str], *,
                 chunk: int = 4 << 20, lead: int = 64 << 20) -> None:
        self.read = read
        self.size = size
        self.chunk = chunk
        self.lead = lead
        self.limit = 0
        self.cond = threading.Condition()
        self.stopped = False
        self.error: BaseException | None = None
        self.free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(3):
            self.free.put(bytearray(chunk))
        self.hasher = StreamHasher(algorithms, self.free.put, name="bdekit-input-hash")
        self.thread = threading.Thread(target=self._run, name="bdekit-input", daemon=True)
        self.thread.start()

    def advance(self, position: int | None) -> None:
        """The decrypt loop has read the image up to ``position`` (None: it is finished)."""
        with self.cond:
            self.limit = self.size if position is None else max(self.limit, position)
            self.cond.notify_all()

    def _run(self) -> None:
        pos = 0
        try:
            while pos < self.size and not self.stopped:
                with self.cond:
                    while not self.stopped and pos >= self.limit + self.lead \
                            and self.limit < self.size:
                        self.cond.wait()
                if self.stopped:
                    return
                buf = self.free.get()
                length = min(self.chunk, self.size - pos)
                n = self.read(pos, memoryview(buf)[:length])
                if n < length:
                    raise OSError(f"the image ended at offset {pos + n} of {self.size}")
                self.hasher.feed(buf, length)
                pos += length
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by finish()
            self.error = exc

    def finish(self) -> dict[str, str]:
        """Hash the rest of the image; the hex digests by algorithm."""
        self.advance(None)
        self.thread.join()
        if self.error is not None:
            self.hasher.stop()
            raise self.error
        return self.hasher.finish()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()
        self.thread.join()
        self.hasher.stop()


def hash_file(path: str, algorithms: Sequence[str], chunk: int = 4 << 20) -> dict[str, str]:
    """The hashes of a whole file, read once (each algorithm on its own thread)."""
    free: queue.Queue[bytearray] = queue.Queue()
    for _ in range(3):
        free.put(bytearray(chunk))
    hasher = StreamHasher(algorithms, free.put)
    try:
        with open(path, "rb", buffering=0) as fh:
            while True:
                buf = free.get()
                n = fh.readinto(buf)
                if not n:
                    free.put(buf)
                    break
                hasher.feed(buf, n)
    except BaseException:
        hasher.stop()
        raise
    return hasher.finish()


__all__ = ["ALGORITHMS", "DEFAULT_ALGORITHMS", "Digest", "InputHasher", "StreamHasher",
           "hash_file", "new_digest", "parse_algorithms", "register"]
