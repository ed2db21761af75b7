"""The streamed image-to-image decryption engine shared by ``decrypt`` and ``repair``.

Pipeline
    The volume is cut into fixed chunks (4 MiB by default); a pool of worker threads reads and
    decrypts chunks (``os.pread`` underneath, OpenSSL and numpy release the GIL); the calling
    thread writes them in order with ``os.pwrite`` and feeds the SHA-256 of the output. At most
    ``threads * 2`` chunks are in flight, each in a reusable buffer, so memory stays at
    ``chunk size x threads x 2`` whatever the image size.

Read errors (neither command gives up at the first one)
    The volume reads its ciphertext through a :class:`SalvageSource` wrapped around the image.
    Its fast path is the plain read (one ``pread`` per run of the chunk, then one decrypt); only
    when that read raises :class:`~bdekit.errors.ReadError` does it retry, then split the failing
    range in halves down to single sectors, fill what stays unreadable with zeros and record it.
    Areas an input ddrescue mapfile marks as not rescued are never read: they are zeros in the
    image, not data. :class:`ChunkReader` maps the unreadable *image* ranges of a chunk to
    *volume* ranges through the read plan (the first sectors of the volume come from the
    relocated header block, elsewhere), widened to whole sectors (one bad byte spoils the whole
    sector's plaintext), zeroes them in the output and returns them as :class:`Damage`.

Output discipline
    The input is never opened for writing and is never the output; an existing output (a block
    device included) is overwritten only with ``force``. A regular-file output is written under
    a temporary name (``OUTPUT.bdekit-partial``) and renamed when complete, so an interrupted
    run (SIGINT, or SIGTERM which is handled the same way) leaves nothing under the output's
    name; without a journal the partial file is removed too. All-zero chunks are left as holes
    (sparse). A block device is written in place (no rename, zeros written).

Report (``--report`` JSON; :class:`Report`)
    ``input``, ``output``, ``method``, ``protector`` / ``key_id`` / ``unlocked_via`` (the
    secret that served), ``metadata_source`` (``volume``, ``scan`` or ``key package``),
    ``metadata_copy`` / ``metadata_offset`` (the copy that served; 0 for a stray or package
    copy), ``metadata_copies`` (each copy's status, CRC and SHA-256 integrity),
    ``key_package``, ``volume_size`` and ``volume_size_source``, byte counts
    (``bytes_decrypted``, ``bytes_plain``, ``bytes_zero``, ``bytes_missing``,
    ``bytes_unreadable``, ``bytes_unrecovered``), ``sha256`` of the output, ``seconds``,
    ``throughput_mb_s``, ``resumed_at``, ``output_mapfile``, ``damaged`` (``offset``,
    ``length``, ``reason`` in output coordinates, merged), ``repairs`` (what was rebuilt) and
    ``notes``.

Journal (resume)
    With a :class:`Journal` (``repair`` always keeps one), progress is recorded in
    ``OUTPUT.bdekit-journal``, a JSON file replaced atomically::

        {"format": "bdekit-journal", "version": 1,
         "params": {...what must match to resume: input, sizes, key fingerprint, ...},
         "partial": "OUTPUT.bdekit-partial", "done": <bytes of output complete>,
         "damage": [[offset, length, reason], ...],   # found in [0, done)
         "complete": false, "sha256": null}

    Writes are in order, so completed work is the prefix ``[0, done)``. The data is fsync'ed
    before ``done`` is recorded (every ``BDEKIT_JOURNAL_INTERVAL`` seconds, default 1). A run
    killed at any point (SIGKILL included) is resumed by truncating the partial output to
    ``done``, re-reading that prefix for the SHA-256 and continuing from there: the result is
    byte-identical to an uninterrupted run. When the job finishes, the journal is marked
    complete (with the SHA-256 and the damage list) before the rename; the caller removes it
    after writing its own products (mapfile, report).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from bdekit.errors import OutputExistsError, UsageError
from bdekit.image.ranges import MISSING, Damage
from bdekit.pipeline.chunks import ChunkReader
from bdekit.pipeline.journal import Journal
from bdekit.pipeline.output import PARTIAL_SUFFIX, Writer, check_output, is_all_zero, is_device
from bdekit.pipeline.report import Report, account, missing_ranges
from bdekit.volume.bde import BdeVolume

log = logging.getLogger(__name__)


DEFAULT_CHUNK = 4 << 20


class _Progress:
    def __init__(self, total: int, enabled: bool, initial: int = 0) -> None:
        self.bar: Any = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="B", unit_scale=True,
                            unit_divisor=1024, desc="decrypt", leave=False)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like SIGINT: clean up (or keep the journal) and exit 130."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Any:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise _Terminated()

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


ChunkFn = Callable[[int, memoryview], "list[Damage] | None"]


def _hash_prefix(path: str, length: int, digest: Any, chunk: int) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = bytearray(chunk)
        pos = 0
        while pos < length:
            n = os.preadv(fd, [memoryview(buf)[:min(chunk, length - pos)]], pos)
            if n <= 0:
                raise OSError(f"{path}: shorter than the journal says ({pos} < {length})")
            digest.update(memoryview(buf)[:n])
            pos += n
    finally:
        os.close(fd)


class _Hasher:
    """SHA-256 of the output on a thread of its own, fed in order; recycles the buffers.

    hashlib releases the GIL on large updates, so hashing overlaps writing and decrypting
    instead of adding to the writer's time."""

    def __init__(self, digest: Any, free: queue.Queue[bytearray]) -> None:
        self.digest = digest
        self.free = free
        self.error: BaseException | None = None
        self.jobs: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
        self.thread: threading.Thread | None = None
        if digest is not None:
            self.thread = threading.Thread(target=self._run, name="bdekit-sha256", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            buf, length = job
            try:
                if self.error is None:
                    self.digest.update(memoryview(buf)[:length])
            except BaseException as exc:  # surfaced by finish()
                self.error = exc
            self.free.put(buf)

    def take(self) -> bytearray:
        return self.free.get()

    def feed(self, buf: bytearray, length: int) -> None:
        if self.thread is None:
            self.free.put(buf)
        else:
            self.jobs.put((buf, length))

    def finish(self) -> str:
        if self.thread is None:
            return ""
        self.jobs.put(None)
        self.thread.join()
        self.thread = None
        if self.error is not None:
            raise self.error
        return str(self.digest.hexdigest())

    def stop(self) -> None:
        if self.thread is not None:
            self.jobs.put(None)
            self.thread.join()
            self.thread = None


def _decrypt_to(volume: BdeVolume, output: str, *, force: bool = False, threads: int | None = None,
               chunk_size: int = DEFAULT_CHUNK, progress: bool = False,
               hash_output: bool = True, read_chunk: ChunkFn | None = None,
               journal: Journal | None = None, resume: bool = False,
               extra_damage: Sequence[Damage] = (),
               report: Report | None = None) -> Report:
    """Decrypt the whole (unlocked) volume to ``output``; returns the report.

    ``read_chunk(offset, buffer)`` fills a chunk and returns its damage (default: a
    :class:`ChunkReader` over the volume, which survives read errors when the volume reads
    through a :class:`SalvageSource`). With ``journal``, progress is recorded and an
    interruption keeps the partial output; ``resume`` continues from the journal.
    ``extra_damage`` (volume ranges) is added to the report as is.
    """
    size = volume.volume_size
    report = report or Report(input=str(volume.path), output=output)
    report.volume_size = size
    report.volume_size_source = getattr(volume, "size_source", "")
    if volume.unlocked is not None:
        report.method = volume.metadata.method_name
        report.unlocked_via = volume.unlocked.via
        if volume.unlocked.protector is not None:
            report.protector = str(volume.unlocked.protector.guid).upper()
            report.key_id = volume.unlocked.protector.key_id
    report.metadata_copy = volume.metadata.best.index
    report.metadata_offset = volume.metadata.best.offset
    report.metadata_source = volume.metadata.source
    if not report.metadata_copies:
        report.metadata_copies = [c.describe() for c in volume.metadata.copies]
    account(volume, report)
    missing = [Damage(o, n, MISSING) for o, n in missing_ranges(volume)]

    state = journal.load() if (journal is not None and resume) else None
    if state is not None and journal is not None:
        diff = journal.mismatch(state)
        if diff:
            raise UsageError("the journal belongs to a different job (" + ", ".join(diff)
                             + " differ); remove it or run without --resume", path=journal.path)
        if state.get("complete") and os.path.exists(output) and not os.path.exists(
                state.get("partial") or output + PARTIAL_SUFFIX):
            log.info("the journal says the job is complete: nothing left to do")
            report.sha256 = state.get("sha256") or ""
            report.resumed_at = size
            report.notes.append("resumed: the interrupted job had already finished")
            report.set_damage([*missing, *extra_damage,
                               *(Damage(o, n, r) for o, n, r in state["damage"])])
            return report
        partial = state.get("partial") or output + PARTIAL_SUFFIX
        if not is_device(output) and not os.path.exists(partial):
            log.warning("journal found but the partial output %s is gone: starting over",
                        partial)
            state = None
    elif journal is not None and resume:
        log.info("no journal at %s: starting from the beginning", journal.path)

    if state is not None:
        device = is_device(output)
        if not device and os.path.exists(output) and not force:
            raise OutputExistsError("output exists; use --force to overwrite it", path=output)
        start = int(state["done"])
        found = [Damage(o, n, r) for o, n, r in state["damage"]]
        report.resumed_at = start
        log.info("resuming at offset %d of %d", start, size)
    else:
        device = check_output(volume.path, output, force)
        start = 0
        found = []

    threads = max(1, threads or os.cpu_count() or 1)
    reader: ChunkFn = read_chunk or ChunkReader(volume)
    started = time.perf_counter()
    digest = hashlib.sha256() if hash_output else None
    bar = _Progress(size, progress, start)
    depth = threads * 2
    # buffers come back to ``free`` from the hasher thread once hashed (or at once)
    free: queue.Queue[bytearray] = queue.Queue()
    for _ in range(depth + 2):
        free.put(bytearray(chunk_size))
    hasher = _Hasher(digest, free)
    pending: collections.deque[tuple[int, int, bytearray, Future[list[Damage] | None]]] = \
        collections.deque()
    interval = float(os.environ.get("BDEKIT_JOURNAL_INTERVAL", "1") or 1)
    done = start
    last_save = time.monotonic()

    def work(offset: int, buf: bytearray, length: int) -> list[Damage] | None:
        # read, decrypt and write (positional, so workers need no ordering); the main thread
        # only consumes results in order, for the hash, the damage list and the journal
        view = memoryview(buf)[:length]
        damage = reader(offset, view)
        writer.write(offset, view, is_all_zero(view))
        return damage

    def checkpoint() -> None:
        if journal is not None:
            writer.sync()
            journal.save(partial=writer.path, done=done, damage=found)

    # the SIGTERM handler is in place (see decrypt_to) before the partial file exists, and the
    # try block starts right after it is created, so an interrupt never strands it
    writer = Writer(output, size, device=device, keep=start if state is not None else None)
    try:
        if digest is not None and start:
            _hash_prefix(writer.path, start, digest, chunk_size)
        with _sigterm_as_interrupt():
            if journal is not None:
                journal.save(partial=writer.path, done=done, damage=found)
            with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bdekit") as pool:
                try:
                    offset = start
                    while offset < size or pending:
                        while offset < size and len(pending) < depth:
                            length = min(chunk_size, size - offset)
                            buf = hasher.take()
                            pending.append((offset, length, buf,
                                            pool.submit(work, offset, buf, length)))
                            offset += length
                        off, length, buf, fut = pending.popleft()
                        damage = fut.result()
                        hasher.feed(buf, length)
                        if damage:
                            found.extend(damage)
                        done = off + length
                        bar.update(length)
                        if journal is not None and time.monotonic() - last_save >= interval:
                            checkpoint()
                            last_save = time.monotonic()
                except BaseException:
                    for _off, _len, _buf, fut in pending:
                        fut.cancel()
                    raise
            sha = hasher.finish()
            if journal is not None:
                if not device:
                    os.ftruncate(writer.fd, size)
                writer.sync()
                journal.save(partial=writer.path, done=size, damage=found, complete=True,
                             sha256=sha)
            writer.finish()
    except BaseException as exc:
        hasher.stop()
        bar.close()
        if journal is not None and not writer.closed:
            try:
                checkpoint()
            except OSError:
                pass
            writer.close()
            if isinstance(exc, KeyboardInterrupt):
                log.warning("interrupted at offset %d of %d: the partial output and the journal "
                            "%s are kept; run again with --resume to continue", done, size,
                            journal.path)
        else:
            writer.abort()
        raise
    bar.close()
    report.seconds = time.perf_counter() - started
    report.sha256 = sha
    report.throughput_mb_s = (size - start) / 1e6 / report.seconds if report.seconds else 0.0
    report.set_damage([*missing, *extra_damage, *found])
    return report


def decrypt_to(volume: BdeVolume, output: str, **kwargs: Any) -> Report:
    """Decrypt the whole (unlocked) volume to ``output``; see :func:`_decrypt_to`.

    SIGTERM is turned into an interrupt for the whole job (main thread only), so the cleanup
    that removes a partial output also runs when the job is terminated."""
    with _sigterm_as_interrupt():
        return _decrypt_to(volume, output, **kwargs)

