"""The streamed image-to-image decryption engine shared by ``decrypt`` and ``repair``.

Pipeline: the volume is cut into fixed chunks (4 MiB by default); a pool of worker threads
reads and decrypts chunks (``os.pread`` underneath, OpenSSL and numpy release the GIL); the
calling thread writes them in order with ``os.pwrite`` and feeds the SHA-256 of the output.
At most ``threads * 2`` chunks are in flight, each in a reusable buffer, so memory stays at
``chunk size x threads x 2`` whatever the image size.

Output discipline: the input is never opened for writing; a regular-file output is written
under a temporary name beside it and renamed when complete (an interrupted run leaves nothing
under the output's name); all-zero chunks are left as holes (sparse); a block device is written
in place. Ranges that could not be read (missing tail of a truncated capture, unreadable
sectors) are written as zeros and reported.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from bdekit.errors import OutputExistsError, UsageError
from bdekit.volume import BdeVolume, RunKind

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 4 << 20


@dataclasses.dataclass
class Report:
    input: str
    output: str
    method: str = ""
    protector: str | None = None
    key_id: str | None = None
    unlocked_via: str = ""
    metadata_copy: int | None = None
    volume_size: int = 0
    bytes_decrypted: int = 0
    bytes_plain: int = 0
    bytes_zero: int = 0
    bytes_missing: int = 0
    bytes_unreadable: int = 0
    sha256: str = ""
    seconds: float = 0.0
    throughput_mb_s: float = 0.0
    damaged: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        mib = 1 << 20
        return (f"{self.output}: {self.volume_size / mib:.1f} MiB in {self.seconds:.2f} s "
                f"({self.throughput_mb_s:.0f} MB/s); decrypted {self.bytes_decrypted / mib:.1f} "
                f"MiB, plain {self.bytes_plain / mib:.1f} MiB, zero {self.bytes_zero / mib:.1f} "
                f"MiB, missing {self.bytes_missing / mib:.1f} MiB; sha256 {self.sha256}")


def check_output(input_path: str | None, output: str, force: bool) -> bool:
    """Refuse the input itself or an existing output (unless ``force``); True if a device."""
    out_real = os.path.realpath(output)
    if input_path is not None:
        in_real = os.path.realpath(input_path)
        same = in_real == out_real
        if not same and os.path.exists(output) and os.path.exists(input_path):
            try:
                same = os.path.samefile(input_path, output)
            except OSError:
                same = False
        if same:
            raise OutputExistsError("refusing to write the output over the input image",
                                    path=output)
    if os.path.exists(output):
        mode = os.stat(output).st_mode
        if stat.S_ISBLK(mode) or stat.S_ISCHR(mode):
            return True
        if os.path.isdir(output):
            raise UsageError("output is a directory", path=output)
        if not force:
            raise OutputExistsError("output exists; use --force to overwrite it", path=output)
    parent = os.path.dirname(out_real) or "."
    if not os.path.isdir(parent):
        raise UsageError(f"output directory {parent} does not exist", path=output)
    return False


def account(volume: BdeVolume, report: Report) -> None:
    """Fill the byte counts of the report from the volume's read plan."""
    for run in volume.plan(0, volume.volume_size):
        if run.kind in (RunKind.ZERO,):
            report.bytes_zero += run.length
        elif run.kind == RunKind.MISSING:
            report.bytes_missing += run.length
        elif run.encrypted:
            report.bytes_decrypted += run.length
        else:
            report.bytes_plain += run.length


def missing_ranges(volume: BdeVolume) -> list[tuple[int, int]]:
    return [(r.offset, r.length) for r in volume.plan(0, volume.volume_size)
            if r.kind == RunKind.MISSING]


ChunkHook = Callable[[int, memoryview], None]


class Writer:
    """Destination of the decrypted volume: temp-then-rename file, or a block device."""

    def __init__(self, output: str, size: int, *, device: bool) -> None:
        self.output = output
        self.size = size
        self.device = device
        self.path = output if device else output + ".bdekit-partial"
        flags = os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)
        if not device:
            flags |= os.O_CREAT | os.O_TRUNC
        self.fd = os.open(self.path, flags, 0o644)
        self.closed = False

    def write(self, offset: int, data: memoryview, zero: bool) -> None:
        if zero and not self.device:
            return  # hole
        view = data
        while len(view):
            n = os.pwrite(self.fd, view, offset)
            view = view[n:]
            offset += n

    def finish(self) -> None:
        if not self.device:
            os.ftruncate(self.fd, self.size)
        os.fsync(self.fd)
        os.close(self.fd)
        self.closed = True
        if not self.device:
            os.replace(self.path, self.output)

    def abort(self) -> None:
        if not self.closed:
            os.close(self.fd)
            self.closed = True
        if not self.device:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


class _Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self.bar: Any = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                            desc="decrypt", leave=False)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def decrypt_to(volume: BdeVolume, output: str, *, force: bool = False, threads: int | None = None,
               chunk_size: int = DEFAULT_CHUNK, progress: bool = False,
               hash_output: bool = True, read_chunk: Callable[[int, memoryview], None] | None
               = None) -> Report:
    """Decrypt the whole (unlocked) volume to ``output``; returns the report.

    ``read_chunk(offset, buffer)`` replaces ``volume.read_into`` (the repair engine passes one
    that survives read errors).
    """
    device = check_output(volume.path, output, force)
    size = volume.volume_size
    report = Report(input=str(volume.path), output=output, volume_size=size)
    if volume.unlocked is not None:
        report.method = volume.metadata.method_name
        report.unlocked_via = volume.unlocked.via
        if volume.unlocked.protector is not None:
            report.protector = str(volume.unlocked.protector.guid).upper()
            report.key_id = volume.unlocked.protector.key_id
    report.metadata_copy = volume.metadata.best.index
    account(volume, report)
    threads = max(1, threads or os.cpu_count() or 1)
    reader = read_chunk or (lambda off, buf: volume.read_into(off, buf) and None)
    started = time.perf_counter()
    writer = Writer(output, size, device=device)
    bar = _Progress(size, progress)
    digest = hashlib.sha256() if hash_output else None
    zero_chunk = bytes(chunk_size)
    free: collections.deque[bytearray] = collections.deque(
        bytearray(chunk_size) for _ in range(threads * 2))
    pending: collections.deque[tuple[int, int, bytearray, Future[None]]] = collections.deque()
    hash_lock = threading.Lock()

    def work(offset: int, buf: bytearray, length: int) -> None:
        reader(offset, memoryview(buf)[:length])

    try:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bdekit") as pool:
            offset = 0
            while offset < size or pending:
                while offset < size and free:
                    length = min(chunk_size, size - offset)
                    buf = free.popleft()
                    pending.append((offset, length, buf, pool.submit(work, offset, buf, length)))
                    offset += length
                off, length, buf, fut = pending.popleft()
                fut.result()
                view = memoryview(buf)[:length]
                is_zero = view == zero_chunk[:length]
                writer.write(off, view, is_zero)
                if digest is not None:
                    with hash_lock:
                        digest.update(view)
                bar.update(length)
                free.append(buf)
        writer.finish()
    except BaseException:
        for _off, _len, _buf, fut in pending:
            fut.cancel()
        writer.abort()
        bar.close()
        raise
    bar.close()
    report.seconds = time.perf_counter() - started
    report.sha256 = digest.hexdigest() if digest is not None else ""
    report.throughput_mb_s = size / 1e6 / report.seconds if report.seconds else 0.0
    report.damaged = [{"offset": o, "length": n, "reason": "missing (beyond end of image)"}
                      for o, n in missing_ranges(volume)]
    return report
