"""Writing files safely: the one atomic replace and the one positional write loop.

Every small product bdekit writes (key packages, JSON reports, ddrescue mapfiles, journals,
synthetic-image manifests, startup-key files) goes through :func:`write_atomic`:

1. the bytes go to a temporary file in the *same directory* as the target (``NAME.tmp``; one
   left by a killed run is removed first; created exclusively, with the requested mode, 0600
   by default), so the rename below never crosses a file system;
2. the temporary file is fsync'ed, then renamed over the target (``os.replace``: atomic on
   POSIX, a reader sees the old file or the new one, never a mix);
3. the directory is fsync'ed so the rename itself survives a crash.

On any error the temporary file is removed and the target is left as it was (an ``OSError``
without a file name, such as a full disk, names the target). A symbolic link
is followed (the file it names is replaced); a target that exists and is not a regular file
(``/dev/stdout``, a FIFO) cannot be replaced and is written in place.

Bulk writers (the decrypted image, the synthetic image) write with :func:`pwrite_all`, which
loops on ``os.pwrite`` until every byte is written (a short write is legal for ``pwrite``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat

log = logging.getLogger(__name__)

#: Mode of the files bdekit creates: they may hold keys or describe evidence.
PRIVATE_MODE = 0o600

#: Suffix of the temporary file :func:`write_atomic` renames over its target.
TMP_SUFFIX = ".tmp"


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory (makes a rename in it durable); silently skipped where the platform
    or the file system cannot (Windows, some network file systems)."""
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


def write_atomic(path: str | os.PathLike[str], data: bytes | str, *,
                 mode: int = PRIVATE_MODE, encoding: str = "utf-8") -> None:
    """Replace ``path`` with ``data`` atomically and durably (see the module docstring).

    ``str`` data is encoded with ``encoding``; the new file gets exactly ``mode``. A symbolic
    link is followed (its target is replaced); an existing target that is not a regular file
    (``/dev/stdout``, a FIFO) is written in place, as nothing can be renamed over it."""
    raw = data.encode(encoding) if isinstance(data, str) else data
    target = os.path.realpath(os.fspath(path))
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISREG(os.stat(target).st_mode):
            with open(target, "wb") as fh:
                fh.write(raw)
            return
    tmp = target + TMP_SUFFIX
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # left by a killed run (a symbolic link is removed, not followed)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, mode)
    try:
        try:
            os.fchmod(fd, mode)  # exactly ``mode``, whatever the umask
            pwrite_all(fd, raw, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno:
            # ENOSPC, EIO... from a write name no file: say which one
            raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), target) from None
        raise
    fsync_dir(os.path.dirname(target))


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` of ``fd`` (``os.pwrite`` may write less)."""
    view = memoryview(data).cast("B")
    while len(view):
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
