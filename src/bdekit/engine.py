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

import bisect
import collections
import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import os
import queue
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from bdekit.errors import OutputExistsError, ReadError, UsageError
from bdekit.sources import ImageSource
from bdekit.volume import BdeVolume, RunKind

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 4 << 20
JOURNAL_SUFFIX = ".bdekit-journal"
PARTIAL_SUFFIX = ".bdekit-partial"

#: Reasons used in damage records (volume / output coordinates).
MISSING = "missing (beyond the end of the image)"
UNREADABLE = "unreadable (I/O error)"
NOT_RESCUED = "not rescued (input mapfile)"


@dataclasses.dataclass(frozen=True, order=True)
class Damage:
    """A range of the output whose plaintext could not be recovered (written as zeros)."""

    offset: int
    length: int
    reason: str

    @property
    def end(self) -> int:
        return self.offset + self.length

    def to_json(self) -> dict[str, Any]:
        return {"offset": self.offset, "length": self.length, "reason": self.reason}


def merge_damage(items: Iterable[Damage]) -> list[Damage]:
    """Sort; merge overlapping ranges, and touching ranges with the same reason."""
    out: list[Damage] = []
    for item in sorted(items, key=lambda d: (d.offset, d.length)):
        if item.length <= 0:
            continue
        if out and (out[-1].end > item.offset
                    or (out[-1].end == item.offset and out[-1].reason == item.reason)):
            last = out[-1]
            if item.end > last.end:
                if last.reason == item.reason or last.end == item.offset:
                    out[-1] = Damage(last.offset, item.end - last.offset, last.reason)
                else:  # overlapping, different reasons: keep the first, clip the second
                    out.append(Damage(last.end, item.end - last.end, item.reason))
            continue
        out.append(item)
    return out


def damage_ranges(items: Iterable[Damage]) -> list[tuple[int, int]]:
    return [(d.offset, d.length) for d in merge_damage(items)]


@dataclasses.dataclass
class Report:
    input: str
    output: str
    method: str = ""
    protector: str | None = None
    key_id: str | None = None
    unlocked_via: str = ""
    metadata_copy: int | None = None
    metadata_offset: int | None = None
    metadata_source: str = "volume"
    metadata_copies: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    key_package: str | None = None
    volume_size: int = 0
    volume_size_source: str = ""
    bytes_decrypted: int = 0
    bytes_plain: int = 0
    bytes_zero: int = 0
    bytes_missing: int = 0
    bytes_unreadable: int = 0
    bytes_unrecovered: int = 0
    sha256: str = ""
    seconds: float = 0.0
    throughput_mb_s: float = 0.0
    resumed_at: int | None = None
    output_mapfile: str | None = None
    damaged: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    repairs: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def set_damage(self, items: Iterable[Damage]) -> None:
        merged = merge_damage(items)
        self.damaged = [d.to_json() for d in merged]
        self.bytes_unrecovered = sum(d.length for d in merged)
        self.bytes_unreadable = sum(d.length for d in merged
                                    if d.reason in (UNREADABLE, NOT_RESCUED))

    def summary(self) -> str:
        mib = 1 << 20
        text = (f"{self.output}: {self.volume_size / mib:.1f} MiB in {self.seconds:.2f} s "
                f"({self.throughput_mb_s:.0f} MB/s); decrypted {self.bytes_decrypted / mib:.1f} "
                f"MiB, plain {self.bytes_plain / mib:.1f} MiB, zero {self.bytes_zero / mib:.1f} "
                f"MiB, missing {self.bytes_missing / mib:.1f} MiB")
        if self.bytes_unreadable:
            text += f", unreadable {self.bytes_unreadable / mib:.3f} MiB"
        if self.bytes_unrecovered:
            text += f"; {len(self.damaged)} damaged range(s), {self.bytes_unrecovered} bytes"
        return text + f"; sha256 {self.sha256}"


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
            if not force:
                raise OutputExistsError("output is a device: its contents would be "
                                        "overwritten; use --force", path=output)
            return True
        if os.path.isdir(output):
            raise UsageError("output is a directory", path=output)
        if not force:
            raise OutputExistsError("output exists; use --force to overwrite it", path=output)
    parent = os.path.dirname(out_real) or "."
    if not os.path.isdir(parent):
        raise UsageError(f"output directory {parent} does not exist", path=output)
    return False


def is_device(path: str) -> bool:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISBLK(mode) or stat.S_ISCHR(mode)


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


# --------------------------------------------------------------------------------------------
# Reading through damage
# --------------------------------------------------------------------------------------------


class SalvageSource(ImageSource):
    """An image source that survives unreadable sectors.

    ``bad`` lists ``(offset, length, reason)`` image ranges known to hold no data (from an input
    mapfile): they read as zeros and are recorded without touching the device. A read that
    raises :class:`ReadError` is retried ``retries`` times, then split in halves down to
    ``sector`` bytes; sectors that stay unreadable read as zeros and are recorded.

    Records go to the calling thread's sink (see :meth:`collect`) when one is open, else to
    :attr:`outside` (reads of metadata, scans...). Offsets are image offsets.
    """

    def __init__(self, inner: ImageSource, *, bad: Sequence[tuple[int, int, str]] = (),
                 retries: int = 1, sector: int = 512) -> None:
        super().__init__(inner.path, inner.size, inner.kind)
        self.inner = inner
        self.retries = max(0, retries)
        self.sector = sector
        ranges = sorted((o, o + n, r) for o, n, r in bad if n > 0)
        self._bad = ranges
        self._bad_starts = [a for a, _b, _r in ranges]
        self._bad_ends_max: list[int] = []
        top = 0
        for _a, b, _r in ranges:
            top = max(top, b)
            self._bad_ends_max.append(top)
        self._tls = threading.local()
        self._lock = threading.Lock()
        self.outside: list[tuple[int, int, str]] = []
        self.failed_reads = 0

    # -- sinks ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def collect(self) -> Any:
        sink: list[tuple[int, int, str]] = []
        prev = getattr(self._tls, "sink", None)
        self._tls.sink = sink
        try:
            yield sink
        finally:
            self._tls.sink = prev

    def _record(self, offset: int, length: int, reason: str) -> None:
        sink = getattr(self._tls, "sink", None)
        if sink is not None:
            sink.append((offset, length, reason))
        else:
            with self._lock:
                self.outside.append((offset, length, reason))
        if reason == UNREADABLE:
            log.info("unreadable: image offset %d, %d bytes (read as zeros)", offset, length)

    # -- ImageSource ------------------------------------------------------------------------
    def _read(self, offset: int, length: int) -> bytes:
        buf = bytearray(length)
        n = self._readinto(offset, memoryview(buf))
        return bytes(buf[:n])

    def _readinto(self, offset: int, buf: memoryview) -> int:
        if not self._bad or not self._hits_bad(offset, offset + len(buf)):
            try:
                return int(self.inner.readinto_at(offset, buf))
            except ReadError as exc:
                log.info("read error at image offset %s (%d bytes from %d): retrying, then "
                         "splitting", exc.offset, len(buf), offset)
        self._salvage(offset, buf)
        return len(buf)

    def _close(self) -> None:
        self.inner.close()

    # -- the slow path ----------------------------------------------------------------------
    def _hits_bad(self, start: int, end: int) -> bool:
        i = bisect.bisect_left(self._bad_starts, end) - 1
        return i >= 0 and self._bad_ends_max[i] > start

    def _salvage(self, offset: int, buf: memoryview) -> None:
        end = offset + len(buf)
        pos = offset
        i = max(0, bisect.bisect_right(self._bad_starts, offset) - 1)
        while i < len(self._bad) and self._bad[i][0] < end:
            a, b, reason = self._bad[i]
            i += 1
            if b <= pos:
                continue
            a = max(a, pos)
            b = min(b, end)
            if a > pos:
                self._careful(pos, buf[pos - offset:a - offset], first=True)
            buf[a - offset:b - offset] = bytes(b - a)
            self._record(a, b - a, reason)
            pos = b
        if pos < end:
            self._careful(pos, buf[pos - offset:], first=True)

    def _try(self, offset: int, buf: memoryview) -> bool:
        try:
            n = int(self.inner.readinto_at(offset, buf))
        except ReadError:
            with self._lock:
                self.failed_reads += 1
            return False
        if n < len(buf):
            buf[n:] = bytes(len(buf) - n)
        return True

    def _careful(self, offset: int, buf: memoryview, *, first: bool = False) -> None:
        """Read ``buf`` at ``offset`` by retries and halving; zero what stays unreadable."""
        length = len(buf)
        if length <= self.sector:
            for _ in range(1 + self.retries):
                if self._try(offset, buf):
                    return
            buf[:] = bytes(length)
            self._record(offset, length, UNREADABLE)
            return
        for _ in range(1 + (self.retries if first else 0)):
            if self._try(offset, buf):
                return
        # split at a sector boundary near the middle
        mid = offset + length // 2
        mid -= mid % self.sector
        if mid <= offset:
            mid = offset - offset % self.sector + self.sector
        cut = mid - offset
        self._careful(offset, buf[:cut])
        self._careful(mid, buf[cut:])


class ChunkReader:
    """Reads decrypted chunks of a volume, surviving read errors.

    ``salvage`` is the :class:`SalvageSource` under the volume, ``base`` the image offset of the
    volume in it. ``patches`` are ``(volume offset, bytes)`` written over what was read (a boot
    sector rebuilt from its backup); ``lost`` are volume ranges known to be unrecoverable
    (zeroed and reported in every chunk they touch). Returns the damage of each chunk.
    """

    #: kinds of runs whose bytes come from the image
    SOURCED = (RunKind.PLAIN, RunKind.ENCRYPTED, RunKind.RELOCATED, RunKind.VISTA_HEADER)

    def __init__(self, volume: BdeVolume, salvage: SalvageSource | None = None, base: int = 0,
                 *, patches: Sequence[tuple[int, bytes]] = (),
                 lost: Sequence[Damage] = ()) -> None:
        self.volume = volume
        if salvage is None:
            salvage, base = find_salvage(volume.source)
        self.salvage = salvage
        self.base = base
        self.patches = sorted(patches)
        self.lost = merge_damage(lost)
        self.delay = float(os.environ.get("BDEKIT_CHUNK_DELAY", "0") or 0)  # test throttle

    def __call__(self, offset: int, buf: memoryview) -> list[Damage]:
        damage: list[Damage] = []
        if self.salvage is None:
            self.volume.read_into(offset, buf)
        else:
            with self.salvage.collect() as sink:
                self.volume.read_into(offset, buf)
            if sink:
                damage = self._map(offset, buf, sink)
        end = offset + len(buf)
        for p_off, data in self.patches:
            lo, hi = max(offset, p_off), min(end, p_off + len(data))
            if lo < hi:
                buf[lo - offset:hi - offset] = data[lo - p_off:hi - p_off]
                damage = _subtract(damage, lo, hi)  # rebuilt: no longer damaged
        for item in self.lost:
            lo, hi = max(offset, item.offset), min(end, item.end)
            if lo < hi:
                buf[lo - offset:hi - offset] = bytes(hi - lo)
                damage.append(Damage(lo, hi - lo, item.reason))
        if self.delay:
            time.sleep(self.delay)
        return damage

    def _map(self, offset: int, buf: memoryview,
             sink: list[tuple[int, int, str]]) -> list[Damage]:
        ss = self.volume.sector_size
        out: list[Damage] = []
        bad = []
        for img_off, length, reason in sink:
            a = img_off - self.base
            b = a + length
            a -= a % ss
            b = -(-b // ss) * ss
            bad.append((a, b, reason))
        for run in self.volume.plan(offset, len(buf)):
            if run.kind not in self.SOURCED:
                continue
            src_a, src_b = run.source, run.source + run.length
            for a, b, reason in bad:
                lo, hi = max(a, src_a), min(b, src_b)
                if lo >= hi:
                    continue
                v = run.offset + (lo - src_a)
                buf[v - offset:v - offset + hi - lo] = bytes(hi - lo)
                out.append(Damage(v, hi - lo, reason))
        return out


def _subtract(items: list[Damage], lo: int, hi: int) -> list[Damage]:
    """``items`` without ``[lo, hi)``."""
    out: list[Damage] = []
    for d in items:
        if d.end <= lo or d.offset >= hi:
            out.append(d)
            continue
        if d.offset < lo:
            out.append(Damage(d.offset, lo - d.offset, d.reason))
        if d.end > hi:
            out.append(Damage(hi, d.end - hi, d.reason))
    return out


def find_salvage(source: Any) -> tuple[SalvageSource | None, int]:
    """The :class:`SalvageSource` under a volume source (through slices) and the volume's
    offset in it."""
    base = 0
    while source is not None:
        if isinstance(source, SalvageSource):
            return source, base
        base += int(getattr(source, "offset", 0)) if hasattr(source, "parent") else 0
        source = getattr(source, "parent", None)
    return None, 0


def open_salvaged(path: str, *, offset: int | None = None, partition: int | None = None,
                  bad: Sequence[tuple[int, int, str]] = (), retries: int = 1,
                  locate_volume: bool = True) -> tuple[Any, SalvageSource, int]:
    """Open an image through a :class:`SalvageSource`; return (volume source, salvage source,
    volume offset in the image). ``locate_volume=False`` leaves partition finding to the
    caller (the volume source is then the whole image)."""
    from bdekit import locate
    from bdekit.sources import SliceSource, open_source

    image = open_source(path)
    salvage = SalvageSource(image, bad=bad, retries=retries)
    if not locate_volume:
        return salvage, salvage, 0
    try:
        vsrc = locate.volume_source(salvage, offset=offset, partition=partition)
    except BaseException:
        salvage.close()
        raise
    base = vsrc.offset if isinstance(vsrc, SliceSource) else 0
    return vsrc, salvage, base


# --------------------------------------------------------------------------------------------
# Journal
# --------------------------------------------------------------------------------------------


class Journal:
    """Progress of one job, kept beside the output (see the module docstring)."""

    def __init__(self, path: str, params: dict[str, Any]) -> None:
        self.path = path
        self.params = params
        self.state: dict[str, Any] = {}

    def load(self) -> dict[str, Any] | None:
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read the journal: {exc}", path=self.path) from None
        if not isinstance(data, dict) or data.get("format") != "bdekit-journal":
            raise UsageError("not a bdekit journal", path=self.path)
        return data

    def mismatch(self, data: dict[str, Any]) -> list[str]:
        old = data.get("params", {})
        return sorted(k for k in set(old) | set(self.params) if old.get(k) != self.params.get(k))

    def save(self, *, partial: str, done: int, damage: Sequence[Damage],
             complete: bool = False, sha256: str | None = None) -> None:
        self.state = {
            "format": "bdekit-journal", "version": 1, "params": self.params,
            "partial": partial, "done": done,
            "damage": [[d.offset, d.length, d.reason] for d in merge_damage(damage)],
            "complete": complete, "sha256": sha256, "saved": time.time(),
        }
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(self.state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(os.path.dirname(os.path.abspath(self.path)))

    def remove(self) -> None:
        for name in (self.path, self.path + ".tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def journal_path_for(output: str) -> str:
    """``OUTPUT.bdekit-journal``; for a device, in the current directory."""
    if is_device(output):
        return os.path.abspath(os.path.basename(output) + JOURNAL_SUFFIX)
    return output + JOURNAL_SUFFIX


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


class Writer:
    """Destination of the decrypted volume: temp-then-rename file, or a block device.

    ``keep`` bytes of an existing partial file are kept (resume); the rest is truncated away so
    that chunks left as holes cannot show stale bytes of an earlier run.
    """

    def __init__(self, output: str, size: int, *, device: bool, keep: int | None = None) -> None:
        self.output = output
        self.size = size
        self.device = device
        self.path = output if device else output + PARTIAL_SUFFIX
        flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0)
        if not device:
            flags |= os.O_CREAT
            if keep is None:
                flags |= os.O_TRUNC
        self.fd = os.open(self.path, flags, 0o644)
        if not device and keep is not None:
            os.ftruncate(self.fd, keep)
        self.closed = False

    def write(self, offset: int, data: memoryview, zero: bool) -> None:
        if zero and not self.device:
            return  # hole
        view = data
        while len(view):
            n = os.pwrite(self.fd, view, offset)
            view = view[n:]
            offset += n

    def sync(self) -> None:
        self._flush(os.fdatasync)

    def _flush(self, how: Callable[[int], None]) -> None:
        try:
            how(self.fd)
        except OSError as exc:
            # character devices (/dev/null, some tapes) cannot be synced: nothing to flush
            if not (self.device and exc.errno in (errno.EINVAL, errno.ENOTSUP, errno.EROFS)):
                raise

    def finish(self) -> None:
        if not self.device:
            os.ftruncate(self.fd, self.size)
        self._flush(os.fsync)
        os.close(self.fd)
        self.closed = True
        if not self.device:
            os.replace(self.path, self.output)
            _fsync_dir(os.path.dirname(os.path.abspath(self.output)))

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
            self.closed = True

    def abort(self) -> None:
        self.close()
        if not self.device:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


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


def is_all_zero(view: memoryview) -> bool:
    """Whether a buffer is all zero bytes (vectorised; a memoryview comparison is slow)."""
    n = len(view)
    if n == 0:
        return True
    if view[0] or view[n - 1]:
        return False
    words = n // 8
    if words and np.frombuffer(view, dtype=np.uint64, count=words).any():
        return False
    return not any(view[words * 8:])


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


__all__ = ["DEFAULT_CHUNK", "MISSING", "NOT_RESCUED", "UNREADABLE", "ChunkReader", "Damage",
           "Journal", "Report", "SalvageSource", "Writer", "check_output", "decrypt_to",
           "journal_path_for", "merge_damage"]
