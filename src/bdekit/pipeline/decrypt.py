"""The streamed image-to-image decryption loop shared by ``decrypt`` and ``repair``.

Pipeline
    The volume is cut into fixed chunks (4 MiB by default); a pool of worker threads reads,
    decrypts and writes chunks (``os.pread`` underneath, OpenSSL and numpy release the GIL;
    each worker writes its chunk at its own offset with ``pwrite``, so workers need no
    ordering; a stream output takes them in order, see :mod:`~bdekit.pipeline.output`). The
    calling thread consumes the results *in order*: it feeds the hashes of the output (each
    algorithm on a thread of its own, :mod:`~bdekit.pipeline.hashing`), gathers the damage
    list and advances the journal. ``span`` decrypts only ``[start, end)`` of the volume (the
    output holds those bytes; damage is in output coordinates); ``hash_input`` hashes the
    input image on a thread that trails the loop's position in it. At most ``threads * 2``
    chunks are in flight, each in a reusable buffer, so memory stays at
    ``chunk size x threads x 2`` whatever the image size.

Holes
    A chunk with nothing to read (:meth:`ChunkReader.is_hole`: beyond the end of a truncated
    capture, or all reserved zeros) is neither read, decrypted nor written: a regular output
    is extended by the final truncate (sparse), a device or stream gets zeros. Its bytes are
    hashed from one shared, never written buffer of zeros, so a 22 MB capture of a 96 GB
    volume costs the hashes of 96 GB of zeros and nothing else (none with ``--no-hash``).

Parts, one module each
    :mod:`~bdekit.pipeline.chunks`  reading one chunk through read errors (the damage it maps
                                    to output ranges);
    :mod:`~bdekit.pipeline.output`  the output file or device (temporary name, holes, rename);
    :mod:`~bdekit.pipeline.journal` progress kept beside the output, for ``--resume``;
    :mod:`~bdekit.pipeline.report`  the JSON report and its byte counts;
    :mod:`~bdekit.pipeline.hashing` the hashes of the output and of the input.

Resume
    With a journal and ``resume``, a job continues from the prefix ``[0, done)`` the journal
    records: the partial output is truncated to ``done``, that prefix is re-read for the
    SHA-256, and the loop goes on from there, so the result is byte-identical to an
    uninterrupted run. A journal marked complete (killed after the rename) returns its report
    without redoing the work, once the output is checked against it (size and SHA-256).

Interruption
    SIGTERM and SIGHUP (a dropped SSH connection) are handled like SIGINT
    (:mod:`~bdekit.pipeline.signals`) for the whole job. Without a journal the partial output
    is removed; with one it is kept, together with a last checkpoint, and the exit code is 130.

Pace
    :class:`Pace` holds the loop's timing: the journal is saved every ``journal_interval``
    seconds (1 by default) and, for tests only, each chunk may be slowed by ``chunk_delay``.
    :func:`decrypt_to` takes one as ``pace``; without one it uses the module's :data:`PACE`.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple

from bdekit.errors import OutputExistsError, UsageError
from bdekit.image.files import PRIVATE_MODE
from bdekit.image.imagesource import ImageSource
from bdekit.image.ranges import MISSING, Damage
from bdekit.pipeline.chunks import ChunkReader
from bdekit.pipeline.hashing import DEFAULT_ALGORITHMS, InputHasher, StreamHasher, hash_file
from bdekit.pipeline.journal import Journal, verify_complete
from bdekit.pipeline.output import PARTIAL_SUFFIX, Writer, check_output, is_all_zero, is_device
from bdekit.pipeline.report import (
    Report,
    account,
    describe_metadata,
    metadata_doubts,
    missing_ranges,
)
from bdekit.pipeline.signals import terminate_as_interrupt
from bdekit.volume.bde import BdeVolume

log = logging.getLogger(__name__)


DEFAULT_CHUNK = 4 << 20

#: ``read_chunk(offset, buffer)``: fill ``buffer`` with the volume's plaintext at ``offset``
#: and return the damage found in it (None or an empty list: none).
ChunkFn = Callable[[int, memoryview], "list[Damage] | None"]


@dataclasses.dataclass(frozen=True)
class Pace:
    """Timing of the decrypt loop.

    ``journal_interval``: seconds between two journal checkpoints (each one fsyncs the data);
    ``chunk_delay``: seconds each worker sleeps after reading a chunk, 0 in real use (tests
    slow a job down to interrupt it at a chosen point)."""

    journal_interval: float = 1.0
    chunk_delay: float = 0.0


#: The pace of jobs that are given none (a test runner may replace it before running the CLI).
PACE = Pace()


class _Progress:
    """A tqdm bar on stderr when ``enabled``; does nothing otherwise."""

    def __init__(self, total: int, enabled: bool, initial: int = 0) -> None:
        self.bar: Any = None
        if enabled:
            from tqdm import tqdm  # noqa: PLC0415 (a bar is rare: off under -q and off a tty)

            self.bar = tqdm(total=total, initial=initial, unit="B", unit_scale=True,
                            unit_divisor=1024, desc="decrypt", leave=False)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _hash_prefix(path: str, length: int, digest: StreamHasher, chunk: int) -> None:
    """Feed the first ``length`` bytes of ``path`` (a resumed partial output) to ``digest``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = bytearray(chunk)
        pos = 0
        while pos < length:
            n = os.preadv(fd, [memoryview(buf)[:min(chunk, length - pos)]], pos)
            if n <= 0:
                raise OSError(f"{path}: shorter than the journal says ({pos} < {length})")
            digest.feed_copy(memoryview(buf)[:n])
            pos += n
    finally:
        os.close(fd)


@dataclasses.dataclass(frozen=True)
class _Options:
    force: bool
    threads: int
    chunk_size: int
    progress: bool
    hashes: tuple[str, ...]
    read_chunk: ChunkFn | None
    journal: Journal | None
    resume: bool
    pace: Pace
    mode: int = PRIVATE_MODE
    span: tuple[int, int] | None = None
    hash_input: ImageSource | None = None
    input_base: int = 0


@dataclasses.dataclass(frozen=True)
class _Start:
    """Where the loop starts: ``offset`` 0 for a new output, the journal's ``done`` when
    resuming (with the damage found before it)."""

    device: bool
    offset: int = 0
    found: tuple[Damage, ...] = ()
    resumed: bool = False


class _Chunk(NamedTuple):
    offset: int
    length: int
    buf: bytearray
    future: Future[list[Damage] | None]


class _Job:
    """One run of the loop over ``[start.offset, size)`` of the output, which is the volume or
    its ``span`` (see the module docstring)."""

    def __init__(self, volume: BdeVolume, output: str, opts: _Options, start: _Start) -> None:
        first, end = opts.span or (0, volume.volume_size)
        self.first = first
        self.size = end - first
        self.output = output
        self.opts = opts
        self.start = start
        self.journal = opts.journal
        reader: ChunkFn = opts.read_chunk or ChunkReader(volume)
        self.reader = _shifted(reader, first) if first else reader
        self.is_hole = _hole_test(reader, first)
        self.found: list[Damage] = list(start.found)
        self.done = start.offset
        self.depth = opts.threads * 2
        # buffers come back to ``free`` from the hasher threads once hashed (or at once)
        self.free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(self.depth + 2):
            self.free.put(bytearray(opts.chunk_size))
        # one shared, never written buffer of zeros stands for every chunk that is a hole
        self.zeros = bytearray(opts.chunk_size)
        self.hasher = StreamHasher(opts.hashes, self._release)
        self.input_hasher: InputHasher | None = None
        self.input_hashes: dict[str, str] = {}
        self.bar = _Progress(self.size, opts.progress, start.offset)
        self.last_save = time.monotonic()
        self.writer: Writer | None = None

    def run(self) -> dict[str, str]:
        """Decrypt the rest of the volume into the output; return its hashes by algorithm.
        On any exception the output is cleaned up (or kept for a resume)."""
        try:
            # the SIGTERM handler is in place (see decrypt_to) before the partial file exists,
            # and the try block covers its creation, so an interrupt never strands it
            writer = self.writer = Writer(self.output, self.size, device=self.start.device,
                                          keep=self.start.offset if self.start.resumed else None,
                                          mode=self.opts.mode)
            if self.opts.hashes and self.start.offset:
                _hash_prefix(writer.path, self.start.offset, self.hasher, self.opts.chunk_size)
            if self.opts.hash_input is not None:
                src = self.opts.hash_input
                self.input_hasher = InputHasher(src.readinto_at, src.size,
                                                self.opts.hashes or DEFAULT_ALGORITHMS,
                                                chunk=self.opts.chunk_size)
            if self.journal is not None:
                self.journal.save(partial=writer.path, done=self.done, damage=self.found)
            self._pump()
            hashes = self.hasher.finish()
            if self.input_hasher is not None:
                self.input_hashes = self.input_hasher.finish()
            self._complete(writer, hashes.get("sha256"))
        except BaseException as exc:
            self._clean_up(exc)
            raise
        self.bar.close()
        return hashes

    def _pump(self) -> None:
        pending: collections.deque[_Chunk] = collections.deque()
        with ThreadPoolExecutor(max_workers=self.opts.threads,
                                thread_name_prefix="bdekit") as pool:
            try:
                offset = self.start.offset
                while offset < self.size or pending:
                    while offset < self.size and len(pending) < self.depth:
                        length = min(self.opts.chunk_size, self.size - offset)
                        hole = self.is_hole(offset, length)
                        buf = self.zeros if hole else self.free.get()
                        pending.append(_Chunk(offset, length, buf, pool.submit(
                            self._work, offset, buf, length, hole)))
                        offset += length
                    self._consume(pending.popleft())
            except BaseException:
                for chunk in pending:
                    chunk.future.cancel()
                if self.writer is not None:
                    self.writer.cancel()  # a stream's workers may wait for a chunk's turn
                raise

    def _release(self, buf: bytearray) -> None:
        if buf is not self.zeros:
            self.free.put(buf)

    def _work(self, offset: int, buf: bytearray, length: int,
              hole: bool = False) -> list[Damage] | None:
        """On a worker: read, decrypt and write one chunk (positional, so workers need no
        ordering). A hole (nothing to read: beyond the end of the image) is neither read nor
        decrypted, and written only where the output cannot hold holes (devices, streams)."""
        assert self.writer is not None
        view = memoryview(buf)[:length]
        if hole:
            self.writer.write(offset, view, True)
            return None
        damage = self.reader(offset, view)
        if self.opts.pace.chunk_delay:
            time.sleep(self.opts.pace.chunk_delay)
        self.writer.write(offset, view, is_all_zero(view))
        return damage

    def _consume(self, chunk: _Chunk) -> None:
        """On the calling thread, in order: the hash, the damage list and the journal."""
        damage = chunk.future.result()
        self.hasher.feed(chunk.buf, chunk.length)
        if damage:
            self.found.extend(damage)
        self.done = chunk.offset + chunk.length
        if self.input_hasher is not None:
            self.input_hasher.advance(self.opts.input_base + self.first + self.done)
        self.bar.update(chunk.length)
        if (self.journal is not None
                and time.monotonic() - self.last_save >= self.opts.pace.journal_interval):
            self._checkpoint()
            self.last_save = time.monotonic()

    def _checkpoint(self) -> None:
        """Make ``[0, done)`` durable, then record it."""
        if self.journal is not None and self.writer is not None:
            self.writer.sync()
            self.journal.save(partial=self.writer.path, done=self.done, damage=self.found)

    def _complete(self, writer: Writer, sha: str | None) -> None:
        if self.journal is not None:
            if not self.start.device:
                os.ftruncate(writer.fd, self.size)
            writer.sync()
            self.journal.save(partial=writer.path, done=self.size, damage=self.found,
                              complete=True, sha256=sha)
        writer.finish()

    def _clean_up(self, exc: BaseException) -> None:
        """After a failure or an interrupt: keep the partial output and the journal when there
        is one, else remove the partial output."""
        self.hasher.stop()
        if self.input_hasher is not None:
            self.input_hasher.stop()
        self.bar.close()
        writer = self.writer
        if writer is None:
            return
        if self.journal is not None and not writer.closed:
            with contextlib.suppress(OSError):
                self._checkpoint()
            writer.close()
            if isinstance(exc, KeyboardInterrupt):
                log.warning("interrupted at offset %d of %d: the partial output and the journal "
                            "%s are kept; run again with --resume to continue", self.done,
                            self.size, self.journal.path)
        else:
            writer.abort()


# --------------------------------------------------------------------------------------------
# Before the loop: the report's description of the volume, and where to start
# --------------------------------------------------------------------------------------------


def _describe_volume(volume: BdeVolume, report: Report, span: tuple[int, int] | None) -> None:
    """Fill what the report says of the volume and of how it was unlocked."""
    report.volume_size = volume.volume_size
    report.volume_size_source = volume.size_source
    report.notes += [n for n in volume.notes if n not in report.notes]
    report.repairs += [r for r in volume.repairs if r not in report.repairs]
    if volume.unlocked is not None:
        report.method = volume.metadata.method_name
        report.unlocked_via = volume.unlocked.via
        if volume.unlocked.protector is not None:
            report.protector = str(volume.unlocked.protector.guid).upper()
            report.key_id = volume.unlocked.protector.key_id
    describe_metadata(volume, report)
    account(volume, report, span)


def _shifted(reader: ChunkFn, first: int) -> ChunkFn:
    """``reader`` for an output that starts at volume offset ``first`` (``--range``)."""
    def read(offset: int, buf: memoryview) -> list[Damage] | None:
        damage = reader(first + offset, buf)
        return [Damage(d.offset - first, d.length, d.reason) for d in damage or ()]
    return read


def _hole_test(reader: ChunkFn, first: int) -> Callable[[int, int], bool]:
    """``is_hole(offset, length)`` of the output: the reader says the range needs no reading
    (:meth:`ChunkReader.is_hole`); readers that cannot say read everything."""
    test = getattr(reader, "is_hole", None)
    if test is None:
        return lambda offset, length: False
    return lambda offset, length: bool(test(first + offset, length))


def _clipped(items: Sequence[Damage], span: tuple[int, int] | None) -> list[Damage]:
    """Volume damage in output coordinates: clipped to ``span`` and shifted to its start."""
    if span is None:
        return list(items)
    first, end = span
    out = []
    for d in items:
        lo, hi = max(d.offset, first), min(d.end, end)
        if lo < hi:
            out.append(Damage(lo - first, hi - lo, d.reason))
    return out


def _partial_of(state: dict[str, Any], output: str) -> str:
    return str(state.get("partial") or output + PARTIAL_SUFFIX)


def _journal_state(journal: Journal | None, resume: bool) -> dict[str, Any] | None:
    """The journal of the job to resume (refused when it belongs to another job)."""
    if journal is None or not resume:
        return None
    state = journal.load()
    if state is None:
        log.info("no journal at %s: starting from the beginning", journal.path)
        return None
    diff = journal.mismatch(state)
    if diff:
        raise UsageError("the journal belongs to a different job (" + ", ".join(diff)
                         + " differ); remove it or run without --resume", path=journal.path)
    return state


def _finished(state: dict[str, Any], output: str, journal: Journal, size: int) -> bool:
    """Whether the journal's job got as far as the rename (only the journal is left); the
    output must then match what the journal records (size, SHA-256)."""
    if not (state.get("complete") and os.path.exists(output)
            and not os.path.exists(_partial_of(state, output))):
        return False
    verify_complete(state, journal.path, output, size,
                    lambda path: hash_file(path, ("sha256",))["sha256"])
    return True


def _start(volume: BdeVolume, output: str, force: bool,
           state: dict[str, Any] | None) -> _Start:
    """Where the loop starts; refuses an output it must not overwrite."""
    if state is not None and not is_device(output) and not os.path.exists(
            _partial_of(state, output)):
        log.warning("journal found but the partial output %s is gone: starting over",
                    _partial_of(state, output))
        state = None
    if state is None:
        return _Start(device=check_output(volume.path, output, force))
    device = is_device(output)
    if not device and os.path.exists(output) and not force:
        raise OutputExistsError("output exists; use --force to overwrite it", path=output)
    offset = int(state["done"])
    log.info("resuming at offset %d of %d", offset, volume.volume_size)
    return _Start(device=device, offset=offset, resumed=True,
                  found=tuple(Damage(o, n, r) for o, n, r in state["damage"]))


# --------------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------------


def decrypt_to(volume: BdeVolume, output: str, *, force: bool = False, threads: int | None = None,
               chunk_size: int = DEFAULT_CHUNK, progress: bool = False,
               hash_output: bool = True, read_chunk: ChunkFn | None = None,
               journal: Journal | None = None, resume: bool = False,
               extra_damage: Sequence[Damage] = (), report: Report | None = None,
               pace: Pace | None = None, hashes: Sequence[str] | None = None,
               mode: int = PRIVATE_MODE, span: tuple[int, int] | None = None,
               hash_input: ImageSource | None = None, input_base: int = 0) -> Report:
    """Decrypt the (unlocked) volume to ``output``; returns the report.

    ``read_chunk(offset, buffer)`` fills a chunk and returns its damage (default: a
    :class:`ChunkReader` over the volume, which survives read errors when the volume reads
    through a :class:`~bdekit.image.salvage.SalvageSource`). With ``journal``, progress is
    recorded and an interruption keeps the partial output; ``resume`` continues from the
    journal. ``extra_damage`` (volume ranges) is added to the report as is; ``report`` is
    completed when given; ``pace`` defaults to :data:`PACE`. ``hashes``: the algorithms of
    the output's hashes (default sha256; none without ``hash_output``); ``mode``: of the
    finished file; ``span``: ``(start, end)`` of the volume to decrypt (default all of it);
    ``hash_input``: the image to hash too (its volume starts at ``input_base``).

    SIGTERM and SIGHUP are turned into an interrupt for the whole job (main thread only), so
    the cleanup that removes a partial output also runs when the job is terminated.
    """
    algorithms = tuple(DEFAULT_ALGORITHMS if hashes is None else hashes) if hash_output else ()
    opts = _Options(force=force, threads=max(1, threads or os.cpu_count() or 1),
                    chunk_size=chunk_size, progress=progress, hashes=algorithms,
                    read_chunk=read_chunk, journal=journal, resume=resume, pace=pace or PACE,
                    mode=mode, span=span, hash_input=hash_input, input_base=input_base)
    if report is None:
        report = Report(input=str(volume.path), output=output)
    report.started = report.started or _utc_now()
    with terminate_as_interrupt():
        _describe_volume(volume, report, span)
        known = _clipped([*(Damage(o, n, MISSING) for o, n in missing_ranges(volume)),
                          *metadata_doubts(volume), *volume.guessed, *extra_damage], span)
        state = _journal_state(journal, resume)
        if state is not None and journal is not None and _finished(
                state, output, journal, volume.volume_size):
            log.info("the journal says the job is complete: nothing left to do")
            report.sha256 = state.get("sha256") or ""
            report.hashes = {"sha256": report.sha256} if report.sha256 else {}
            report.resumed_at = volume.volume_size
            report.notes.append("resumed: the interrupted job had already finished")
            report.set_damage([*known, *(Damage(o, n, r) for o, n, r in state["damage"])])
            report.finished = _utc_now()
            return report
        start = _start(volume, output, force, state)
        _run_job(volume, output, opts, start, report, known)
    return report


def _run_job(volume: BdeVolume, output: str, opts: _Options, start: _Start, report: Report,
             known: list[Damage]) -> None:
    if start.resumed:
        report.resumed_at = start.offset
    job = _Job(volume, output, opts, start)
    started = time.perf_counter()
    report.hashes = job.run()
    report.sha256 = report.hashes.get("sha256", "")
    report.input_hashes = job.input_hashes
    report.seconds = time.perf_counter() - started
    size = job.size - start.offset
    report.throughput_mb_s = size / 1e6 / report.seconds if report.seconds else 0.0
    report.set_damage([*known, *job.found])
    report.finished = _utc_now()
    if report.bytes_missing:
        cost = (f"; hashing their zeros ({', '.join(report.hashes)}) was the only work they "
                "cost" if report.hashes else "")
        report.notes.append(f"{report.bytes_missing} bytes beyond the end of the image are "
                            f"holes in the output (not read, decrypted or written){cost}")


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
