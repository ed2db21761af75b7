"""Where the decrypted volume goes: a regular file written under a temporary name, a device, or
a stream.

Kinds of output (:func:`output_kind`)
    ``file``    a regular file (or a new name): written under ``OUTPUT.bdekit-partial``
                (created 0600, whatever the umask) and renamed when complete (file fsync'ed
                before, the directory after), so an interrupted run leaves nothing under the
                output's name; all-zero chunks are left as holes (sparse output); a resumed run
                truncates the partial file to the part the journal records, so no hole can show
                stale bytes. The finished file gets the mode asked for (``--mode``, default
                0600).
    ``device``  a block device: written in place with ``pwrite`` (no rename, zeros written).
    ``stream``  standard output (``-``), a pipe, a FIFO, a socket or a character device
                (``/dev/stdout`` and the like resolve to one of these): written *in order*,
                in place, never renamed or replaced, holes written as zeros. A terminal is
                refused; a character device named as the output needs ``force``. A stream
                cannot be resumed (no journal). A pipe's buffer is enlarged to
                :data:`PIPE_BYTES` where Linux allows it (``F_SETPIPE_SZ``): with the default
                64 KiB every chunk is written in dozens of turns of the reader.

The input is never opened for writing and is never the output (:func:`check_output` compares
real paths and, when both exist, inodes); an existing output (a device included) is overwritten
only with ``force``. :class:`OutputLock` keeps a second bdekit from writing the same output:
"OUTPUT is being written by another bdekit (pid N)".
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import logging
import os
import stat
import tempfile
import threading
from collections.abc import Callable

from bdekit.crypto import native
from bdekit.errors import OutputExistsError, UsageError
from bdekit.image.files import PRIVATE_MODE, fsync_dir, pwrite_all

log = logging.getLogger(__name__)


PARTIAL_SUFFIX = ".bdekit-partial"
LOCK_SUFFIX = ".bdekit-lock"
#: The name of standard output where an output is expected.
STDOUT = "-"


class OutputKind(enum.StrEnum):
    FILE = "file"
    DEVICE = "device"
    STREAM = "stream"


def _mode_of(path: str) -> int | None:
    """``st_mode`` of what ``path`` names (``-``: standard output), None if it does not exist."""
    try:
        return os.fstat(1).st_mode if path == STDOUT else os.stat(path).st_mode
    except OSError:
        return None


def output_kind(path: str) -> OutputKind:
    """How ``path`` is written (see the module docstring)."""
    if path == STDOUT:
        return OutputKind.STREAM
    mode = _mode_of(path)
    if mode is None or stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return OutputKind.FILE
    if stat.S_ISBLK(mode):
        return OutputKind.DEVICE
    return OutputKind.STREAM


def is_char_device(path: str) -> bool:
    """A character device named as the output (``/dev/null``, a tape): its contents are
    overwritten, so it needs ``force`` like a block device; ``-`` never does."""
    mode = None if path == STDOUT else _mode_of(path)
    return mode is not None and stat.S_ISCHR(mode)


def is_terminal(path: str) -> bool:
    """Whether ``path`` (``-``: standard output) is a terminal."""
    if path == STDOUT:
        return os.isatty(1)
    mode = _mode_of(path)
    if mode is None or not stat.S_ISCHR(mode):
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError:
        return False
    try:
        return os.isatty(fd)
    finally:
        os.close(fd)


def check_output(input_path: str | None, output: str, force: bool) -> bool:
    """Refuse the input itself, a terminal or an existing output (unless ``force``); True when
    the output is written in place (a device or a stream)."""
    kind = output_kind(output)
    if is_terminal(output):
        raise UsageError("refusing to write the decrypted volume to a terminal (redirect it "
                         "to a file or a pipe)", path=output)
    if kind == OutputKind.STREAM:
        if is_char_device(output) and not force:
            raise OutputExistsError("output is a device: its contents would be "
                                    "overwritten; use --force", path=output)
        return True
    out_real = os.path.realpath(output)
    if input_path is not None:
        same = os.path.realpath(input_path) == out_real
        if not same and os.path.exists(output) and os.path.exists(input_path):
            try:
                same = os.path.samefile(input_path, output)
            except OSError:
                same = False
        if same:
            raise OutputExistsError("refusing to write the output over the input image",
                                    path=output)
    if kind == OutputKind.DEVICE:
        if not force:
            raise OutputExistsError("output is a device: its contents would be "
                                    "overwritten; use --force", path=output)
        return True
    if os.path.isdir(output):
        raise UsageError("output is a directory", path=output)
    if os.path.exists(output) and not force:
        raise OutputExistsError("output exists; use --force to overwrite it", path=output)
    parent = os.path.dirname(out_real) or "."
    if not os.path.isdir(parent):
        raise UsageError(f"output directory {parent} does not exist", path=output)
    return False


#: The pipe buffer asked for (Linux caps it at /proc/sys/fs/pipe-max-size, 1 MiB by default).
PIPE_BYTES = 1 << 20


def widen_pipe(fd: int) -> None:
    """Enlarge the buffer of ``fd`` if it is a pipe (best effort: nothing else changes)."""
    with contextlib.suppress(OSError):
        if stat.S_ISFIFO(os.fstat(fd).st_mode) and hasattr(fcntl, "F_SETPIPE_SZ") \
                and fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) < PIPE_BYTES:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def is_device(path: str) -> bool:
    """Whether ``path`` is written in place: a device or a stream, not a regular file."""
    return output_kind(path) != OutputKind.FILE


class Writer:
    """Destination of the decrypted volume (see the module docstring).

    ``keep`` bytes of an existing partial file are kept (resume); the rest is truncated away so
    that chunks left as holes cannot show stale bytes of an earlier run. ``mode``: the mode of
    the finished file. A stream takes its writes in offset order: a worker whose chunk is not
    next waits for the chunks before it (:meth:`cancel` wakes them when the job fails).
    """

    def __init__(self, output: str, size: int, *, device: bool, keep: int | None = None,
                 mode: int = PRIVATE_MODE) -> None:
        self.output = output
        self.size = size
        self.kind = output_kind(output) if device else OutputKind.FILE
        self.device = device
        self.mode = mode
        self.path = output if device else output + PARTIAL_SUFFIX
        self.next = 0
        self.cond = threading.Condition()
        self.failed: BaseException | None = None
        self.fd = self._open(keep)
        self.closed = False

    def _open(self, keep: int | None) -> int:
        if self.kind == OutputKind.STREAM:
            if self.output == STDOUT:
                fd = os.dup(1)
            else:
                fd = os.open(self.path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
            widen_pipe(fd)
            return fd
        flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0)
        if not self.device:
            flags |= os.O_CREAT
            if keep is None:
                flags |= os.O_TRUNC
        fd = os.open(self.path, flags, PRIVATE_MODE)
        if not self.device:
            os.fchmod(fd, PRIVATE_MODE)  # a partial file left by an earlier run too
            if keep is not None:
                os.ftruncate(fd, keep)
        return fd

    def write(self, offset: int, data: memoryview, zero: bool) -> None:
        if zero and not self.device:
            return  # hole
        try:
            if self.kind == OutputKind.STREAM:
                self._write_in_order(offset, data)
            else:
                pwrite_all(self.fd, data, offset)
        except OSError as exc:
            raise _named(exc, self.path) from None

    def _write_in_order(self, offset: int, data: memoryview) -> None:
        with self.cond:
            while self.next != offset and self.failed is None:
                self.cond.wait()
            if self.failed is not None:
                raise self.failed
            try:
                view = memoryview(data).cast("B")
                while len(view):
                    view = view[os.write(self.fd, view):]
            except BaseException as exc:
                self.failed = exc
                raise
            finally:
                self.cond.notify_all()
            self.next = offset + len(data)

    def cancel(self) -> None:
        """Wake the workers waiting for their turn on a stream: the job has failed."""
        with self.cond:
            if self.failed is None:
                self.failed = OSError(errno.ECANCELED, "the job was cancelled")
            self.cond.notify_all()

    def sync(self) -> None:
        self._flush(os.fdatasync)

    def _flush(self, how: Callable[[int], None]) -> None:
        try:
            how(self.fd)
        except OSError as exc:
            # character devices (/dev/null, some tapes) and pipes cannot be synced
            if not (self.device and exc.errno in (errno.EINVAL, errno.ENOTSUP, errno.EROFS)):
                raise _named(exc, self.path) from None

    def finish(self) -> None:
        if not self.device:
            os.ftruncate(self.fd, self.size)
            if self.mode != PRIVATE_MODE:
                os.fchmod(self.fd, self.mode)
        self._flush(os.fsync)
        os.close(self.fd)
        self.closed = True
        if not self.device:
            os.replace(self.path, self.output)
            fsync_dir(os.path.dirname(os.path.abspath(self.output)))

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
            self.closed = True

    def abort(self) -> None:
        self.cancel()
        self.close()
        if not self.device:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def _named(exc: OSError, path: str) -> OSError:
    """``exc`` naming ``path`` (ENOSPC, EIO... from a positional write carry no file name)."""
    if exc.filename is not None or not exc.errno:
        return exc
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno),
                   "<standard output>" if path == STDOUT else path)


def _numpy_all_zero(view: memoryview) -> bool:
    """:data:`is_all_zero` without the native kernel (numpy is imported on the first call)."""
    import numpy as np  # noqa: PLC0415

    n = len(view)
    if n == 0:
        return True
    if view[0] or view[n - 1]:
        return False
    words = n // 8
    if words and np.frombuffer(view, dtype=np.uint64, count=words).any():
        return False
    return not any(view[words * 8:])


#: Whether a buffer is all zero bytes (the hole test of every chunk written): the native
#: kernel's test when it is built (it stops at the first nonzero block, GIL released), else
#: numpy's (a memoryview comparison is slow).
is_all_zero: Callable[[memoryview], bool] = native.zero_test() or _numpy_all_zero


# --------------------------------------------------------------------------------------------
# One writer per output
# --------------------------------------------------------------------------------------------


def lock_path_for(output: str) -> str | None:
    """Where the lock of ``output`` lives: ``OUTPUT.bdekit-lock`` beside a file, a file in the
    temporary directory named after a device; None for a stream (nothing to share)."""
    kind = output_kind(output)
    if kind == OutputKind.FILE:
        return output + LOCK_SUFFIX
    if kind == OutputKind.DEVICE:
        rdev = os.stat(output).st_rdev
        return os.path.join(tempfile.gettempdir(),
                            f"bdekit-device-{os.major(rdev)}-{os.minor(rdev)}{LOCK_SUFFIX}")
    return None


class OutputLock:
    """An exclusive lock on an output for the life of a command (``flock`` on its lock file,
    which holds the owner's pid)."""

    def __init__(self, output: str) -> None:
        self.output = output
        self.path = lock_path_for(output)
        self.fd: int | None = None

    def acquire(self) -> None:
        if self.path is None:
            return
        for _attempt in range(10):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                             PRIVATE_MODE)
            except OSError as exc:
                log.debug("cannot lock %s (%s): going on without a lock", self.output, exc)
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise OutputExistsError(f"{self.output} is being written by another bdekit "
                                        f"(pid {owner})", path=self.output) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a lock file its last owner removed while we waited
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                self.fd = fd
                return
            os.close(fd)

    def release(self) -> None:
        if self.fd is None or self.path is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
