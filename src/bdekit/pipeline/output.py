"""Where the decrypted volume goes: a regular file written under a temporary name, or a device.

The input is never opened for writing and is never the output (:func:`check_output` compares
real paths and, when both exist, inodes); an existing output (a block device included) is
overwritten only with ``force``. A regular-file output is written under a temporary name
(``OUTPUT.bdekit-partial``, mode 0600) and renamed when complete (file fsync'ed before, the
directory after), so an interrupted run leaves nothing under the output's name. All-zero chunks
are left as holes (sparse output); a resumed run truncates the partial file to the part the
journal records, so no hole can show stale bytes. A block device is written in place (no
rename, zeros written).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Callable

import numpy as np

from bdekit.errors import OutputExistsError, UsageError
from bdekit.image.files import PRIVATE_MODE, fsync_dir, pwrite_all

log = logging.getLogger(__name__)


PARTIAL_SUFFIX = ".bdekit-partial"


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
    """Whether ``path`` is a block or character device."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISBLK(mode) or stat.S_ISCHR(mode)


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
        self.fd = os.open(self.path, flags, PRIVATE_MODE)
        if not device and keep is not None:
            os.ftruncate(self.fd, keep)
        self.closed = False

    def write(self, offset: int, data: memoryview, zero: bool) -> None:
        if zero and not self.device:
            return  # hole
        pwrite_all(self.fd, data, offset)

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
            fsync_dir(os.path.dirname(os.path.abspath(self.output)))

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
            self.closed = True

    def abort(self) -> None:
        self.close()
        if not self.device:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


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

