"""Bounded reads of the small files a command is given beside the image.

Every auxiliary input (a ``.BEK`` file, a password or recovery password file, an escrow
keyring file, a key package, a ddrescue mapfile, a certificate or its key, a resume journal)
is read by :func:`read_bounded`, which

* opens it without blocking (``O_NONBLOCK``: a FIFO does not hang the command) and refuses
  anything that is not a regular file (a device such as ``/dev/zero``, a FIFO, a directory),
  except standard input where the option documents ``-``;
* refuses a file larger than the cap of its kind (:data:`CAPS`), saying what size that kind
  of file has, and reads at most ``cap + 1`` bytes, so memory stays bounded even when the
  file grows while it is read.

Caps: a BEK file is 156-180 bytes (cap 4 KiB); a password or recovery password file holds one
line (4 KiB); an escrow export a few thousand keys (8 MiB); a key package under a kilobyte
(16 MiB, to allow datum sets embedded in larger exports); a certificate or key file
(1 MiB); a ddrescue mapfile of a badly damaged disk (64 MiB); a journal (64 MiB).

Errors are :class:`~bdekit.errors.UsageError` (exit 2) naming the file.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from typing import BinaryIO

from bdekit.errors import FormatError, UsageError
from bdekit.format.bek import MAX_BEK_FILE, BekFile, parse_bek

KIB = 1 << 10
MIB = 1 << 20

#: kind -> (cap in bytes, what a file of that kind normally is)
CAPS: dict[str, tuple[int, str]] = {
    "BEK file": (MAX_BEK_FILE, "a BEK file is 156-180 bytes"),
    "password file": (4 * KIB, "a password file holds one line"),
    "recovery password file": (4 * KIB, "a recovery password file holds a few lines"),
    "keyring file": (8 * MIB, "an escrow export of thousands of keys is a few MB"),
    "key package": (16 * MIB, "a key package is under a kilobyte"),
    "certificate": (1 * MIB, "a certificate or key file is a few KB"),
    "mapfile": (64 * MIB, "a ddrescue mapfile is a few lines per damaged area"),
    "journal": (64 * MIB, "a bdekit journal"),
}

#: The name standard input goes by where an option accepts it.
STDIN = "-"


def cap_of(kind: str) -> int:
    return CAPS[kind][0]


def _size_text(n: int) -> str:
    if n >= MIB:
        return f"{n / MIB:.0f} MiB"
    if n >= KIB:
        return f"{n / KIB:.0f} KiB"
    return f"{n} bytes"


def _too_big(path: str, kind: str, size: int | None) -> UsageError:
    cap, normal = CAPS[kind]
    what = f"{size} bytes" if size is not None else "more"
    return UsageError(f"{what} is too large for a {kind} (at most {_size_text(cap)} are read; "
                      f"{normal})", path=path)


def _kind_of_mode(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_regular(path: str, kind: str) -> os.stat_result:
    """``stat`` of ``path``, refused (one line) unless it is a regular file."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise UsageError(f"cannot read {kind}: {exc.strerror or exc}", path=path) from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{_kind_of_mode(st.st_mode)}, not a {kind} (give a regular file)",
                         path=path)
    return st


def read_bounded(path: str | os.PathLike[str], kind: str, *, allow_stdin: bool = False,
                 stdin: BinaryIO | None = None) -> bytes:
    """The bytes of the ``kind`` file at ``path`` (see the module docstring).

    With ``allow_stdin``, ``-`` reads standard input (bounded the same way)."""
    p = os.fspath(path)
    cap = cap_of(kind)
    if allow_stdin and p == STDIN:
        stream = stdin if stdin is not None else sys.stdin.buffer
        data = stream.read(cap + 1)
        if len(data) > cap:
            raise _too_big("<standard input>", kind, None)
        return data
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) \
        | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(p, flags)
    except OSError as exc:
        if exc.errno == errno.EISDIR:
            raise UsageError(f"a directory, not a {kind}", path=p) from None
        raise UsageError(f"cannot read {kind}: {exc.strerror or exc}", path=p) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{_kind_of_mode(st.st_mode)}, not a {kind} (give a regular "
                             "file)", path=p)
        if st.st_size > cap:
            raise _too_big(p, kind, st.st_size)
        return _read_fd(fd, p, kind, cap)
    finally:
        os.close(fd)


def _read_fd(fd: int, path: str, kind: str, cap: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        try:
            chunk = os.read(fd, cap + 1 - total)
        except OSError as exc:
            raise UsageError(f"cannot read {kind}: {exc.strerror or exc}", path=path) from None
        if not chunk:
            break
        parts.append(chunk)
        total += len(chunk)
        if total > cap:
            raise _too_big(path, kind, None)
    return b"".join(parts)


def read_bek(path: str | os.PathLike[str]) -> BekFile:
    """Read and parse a startup key / recovery key file; a malformed one is a usage error
    (exit 2) naming the file and the offset."""
    data = read_bounded(path, "BEK file")
    try:
        return parse_bek(data, os.fspath(path))
    except FormatError as exc:
        raise UsageError(exc.message, path=exc.path or os.fspath(path),
                         offset=exc.offset) from None


__all__ = ["CAPS", "STDIN", "cap_of", "check_regular", "read_bek", "read_bounded"]
