"""The decrypted volume as one read-only file, through FUSE (``mfusepy``, ``bdekit[fuse]``).

``bdekit mount IMAGE MOUNTPOINT`` shows a directory holding a single regular file, ``bde1``
(the name ``bdemount`` from libbde uses), whose bytes are the decrypted volume: mount it with
``mount -o ro,loop``, ``ntfs-3g -o ro``, or read it with any forensic tool, without writing a
decrypted copy.  (``dislocker-fuse`` calls the same file ``dislocker-file``.)

Reads go through :meth:`bdekit.volume.BdeVolume.read_into`, the path ``open_volume`` and
``decrypt`` use, straight into the buffer libfuse hands over (no intermediate copy).  The
file system is read-only (``-o ro``; opening for writing is ``EROFS``), and multithreaded:
libfuse runs callbacks on several threads and the volume read path is thread-safe.  The
volume never changes under the mount, so the kernel page cache is kept between opens
(``kernel_cache``) and attributes are cached for a long time.

A read the image cannot serve (an ``EIO`` from a dying disk, a damaged EWF chunk) fails that
read with ``EIO`` and is logged; the mount stays up.
"""

from __future__ import annotations

import ctypes
import errno
import importlib
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from bdekit.errors import BdeError, UnsupportedError
from bdekit.volume.stream import PlannedReader

log = logging.getLogger(__name__)

#: Name of the file holding the decrypted volume (as bdemount names it).
VOLUME_FILE_NAME = "bde1"

#: How long the kernel may cache names and attributes (seconds): nothing ever changes.
CACHE_TIMEOUT = 3600.0


def import_mfusepy() -> ModuleType:
    """The ``mfusepy`` module; a clear error naming the extra when it or libfuse is missing."""
    try:
        return importlib.import_module("mfusepy")
    except ImportError:
        raise UnsupportedError("mounting needs mfusepy, a dependency of bdekit that is not "
                               "installed here: pip install mfusepy") from None
    except OSError as exc:  # mfusepy raises OSError("Unable to find libfuse")
        raise UnsupportedError(f"mounting needs libfuse (install fuse3 / libfuse2): {exc}"
                               ) from None


def fuse_problem() -> str | None:
    """Why FUSE cannot be used here (no mfusepy, no libfuse, no /dev/fuse), or None."""
    try:
        import_mfusepy()
    except BdeError as exc:
        return exc.message
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist (load the fuse kernel module, or pass the device " \
               "to the container)"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not readable and writable by this user"
    return None


class VolumeFS:
    """The file system operations: ``/`` holding ``/bde1`` (the decrypted volume).

    ``volume`` is an unlocked :class:`~bdekit.volume.bde.BdeVolume` (anything with
    ``volume_size`` and ``read_into(offset, buffer)``: a
    :class:`~bdekit.volume.stream.PlannedReader`).  ``on_ready`` is called once libfuse
    has initialised the mount (the kernel's ``FUSE_INIT``): the mount is live.
    """

    use_ns = True  # mfusepy: times in nanoseconds
    # read and release do not need the path: libfuse skips building it for every read
    flag_nullpath_ok = True
    flag_nopath = True

    def __init__(self, volume: PlannedReader, *, name: str = VOLUME_FILE_NAME,
                 on_ready: Callable[[], None] | None = None,
                 mtime: float | None = None) -> None:
        self.volume = volume
        self.name = name
        self.file_path = "/" + name
        self.size = int(volume.volume_size)
        self.on_ready = on_ready
        ns = int((time.time() if mtime is None else mtime) * 1e9)
        self._uid = os.getuid()
        self._gid = os.getgid()
        self._times = {"st_atime": ns, "st_mtime": ns, "st_ctime": ns}
        self.reads = 0
        self.read_errors = 0
        self._count_lock = threading.Lock()

    # -- metadata ---------------------------------------------------------------------------
    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, int]:
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2, "st_size": 0,
                    "st_uid": self._uid, "st_gid": self._gid, "st_ino": 1, **self._times}
        if path == self.file_path or (path is None and fh is not None):
            return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": self.size,
                    "st_blocks": (self.size + 511) // 512, "st_blksize": 4096,
                    "st_uid": self._uid, "st_gid": self._gid, "st_ino": 2, **self._times}
        raise self._error(errno.ENOENT)

    def readdir(self, path: str | None, fh: int) -> list[tuple[str, dict[str, int], int]]:
        # with flag_nopath readdir gets no path: "/" is the only directory anyway
        if path not in (None, "/"):
            raise self._error(errno.ENOTDIR)
        # with use_ino the kernel takes the inode numbers from here; 0 would hide the entry
        directory = {"st_mode": stat.S_IFDIR | 0o555, "st_ino": 1}
        return [(".", directory, 0), ("..", directory, 0),
                (self.name, {"st_mode": stat.S_IFREG | 0o444, "st_ino": 2}, 0)]

    def statfs(self, path: str) -> dict[str, int]:
        blocks = (self.size + 4095) // 4096
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": blocks, "f_bfree": 0,
                "f_bavail": 0, "f_files": 2, "f_ffree": 0, "f_namemax": 255}

    def access(self, path: str, amode: int) -> int:
        if path not in ("/", self.file_path):
            raise self._error(errno.ENOENT)
        if amode & os.W_OK:
            raise self._error(errno.EROFS)
        return 0

    # -- the file -----------------------------------------------------------------------------
    def open(self, path: str, flags: int) -> int:
        if path != self.file_path:
            raise self._error(errno.ENOENT)
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise self._error(errno.EROFS)
        return 0

    def release(self, path: str | None, fh: int) -> int:
        return 0

    def read_into(self, offset: int, buf: memoryview) -> int:
        """Fill ``buf`` from ``offset`` of the decrypted volume; ``EIO`` when it cannot."""
        if offset >= self.size:
            return 0
        try:
            n = self.volume.read_into(offset, buf)
        except BdeError as exc:
            with self._count_lock:
                self.read_errors += 1
            log.error("read of %d bytes at offset %d failed: %s", len(buf), offset,
                      exc.one_line())
            raise self._error(errno.EIO) from None
        with self._count_lock:
            self.reads += 1
        return int(n)

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        """The plain mfusepy entry (returns bytes); :class:`_VolumeFUSE` bypasses it."""
        buf = bytearray(max(0, min(size, self.size - offset)))
        n = self.read_into(offset, memoryview(buf))
        return bytes(buf[:n])

    # -- lifecycle ----------------------------------------------------------------------------
    def init(self, path: str) -> None:
        log.info("FUSE mount is live; %s holds %d bytes", self.file_path, self.size)
        if self.on_ready is not None:
            self.on_ready()

    def destroy(self, path: str) -> None:
        log.info("FUSE mount ends (%d reads, %d failed)", self.reads, self.read_errors)

    @staticmethod
    def _error(code: int) -> OSError:
        return OSError(code, os.strerror(code))


#: Marks the libfuse worker threads whose Python thread state is kept (see below).
_pinned = threading.local()


def _pin_thread_state() -> None:
    """Keep this (libfuse-created) thread's Python thread state between callbacks.

    ctypes runs a callback arriving on a thread Python did not create between
    ``PyGILState_Ensure`` and ``PyGILState_Release``: a thread state is created and destroyed
    around *every* call, which costs more than decrypting a 4 KiB read (random reads through a
    multithreaded mount ran at 1/4 of the single-threaded speed).  One extra, never released
    ``PyGILState_Ensure`` on each worker thread keeps its state; a ``threading.local`` (which
    lives in that state) remembers that it is done.  A worker that exits leaves one small
    thread state behind, reclaimed at interpreter exit.
    """
    if not getattr(_pinned, "done", False):
        ctypes.pythonapi.PyGILState_Ensure()
        _pinned.done = True


#: ``PyMemoryView_FromMemory(pointer, size, flags)``: a memoryview over C memory, without
#: the ctypes array type and cast a ``ctypes.cast(...).contents`` view costs (1 µs a read).
_memory_view = ctypes.pythonapi.PyMemoryView_FromMemory
_memory_view.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int]
_memory_view.restype = ctypes.py_object
_PYBUF_WRITE = 0x200


def _make_fuse_class(mfusepy: ModuleType) -> type:
    """An ``mfusepy.FUSE`` whose low-level ``read`` decrypts straight into libfuse's buffer
    and whose worker threads keep their Python thread state."""

    class _VolumeFUSE(mfusepy.FUSE):  # type: ignore[name-defined]
        def _wrapper(self, func: Callable[..., Any], *args: object, **kwargs: object) -> Any:
            _pin_thread_state()
            return super()._wrapper(func, *args, **kwargs)

        def read(self, path: bytes | None, buf: int | ctypes.c_void_p, size: int, offset: int,
                 fip: object) -> int:
            if size <= 0:
                return 0
            # a writable memoryview over libfuse's buffer, valid during this call only
            return int(self.operations.read_into(offset, _memory_view(buf, size, _PYBUF_WRITE)))

    return _VolumeFUSE


def mount_options(*, image: str | None = None,
                  allow_other: bool = False) -> dict[str, bool | int | float | str]:
    """libfuse mount options of a bdekit mount."""
    # fsname is a comma-separated option value: keep it parseable
    fsname = ("bdekit" + (f":{os.path.abspath(image)}" if image else "")).replace(",", "_")
    opts: dict[str, bool | int | float | str] = {
        "ro": True,
        "fsname": fsname,
        "subtype": "bdekit",
        "kernel_cache": True,
        "entry_timeout": CACHE_TIMEOUT,
        "attr_timeout": CACHE_TIMEOUT,
        "use_ino": True,
        "max_read": 1 << 20,
    }
    if allow_other:
        opts["allow_other"] = True
    return opts


def serve(volume: PlannedReader, mountpoint: str, *, image: str | None = None,
          name: str = VOLUME_FILE_NAME, on_ready: Callable[[], None] | None = None,
          allow_other: bool = False, single_thread: bool = False,
          fuse_debug: bool = False) -> VolumeFS:
    """Mount ``volume`` on ``mountpoint`` and serve requests until it is unmounted.

    Blocks (libfuse's loop, in the foreground) until ``fusermount -u``, ``bdekit umount``,
    SIGINT, SIGTERM or SIGHUP; libfuse unmounts cleanly on those signals.  Raises
    :class:`~bdekit.errors.BdeError` when the mount fails.
    """
    mfusepy = import_mfusepy()
    fs = VolumeFS(volume, name=name, on_ready=on_ready)
    fuse_cls = _make_fuse_class(mfusepy)
    opts = mount_options(image=image, allow_other=allow_other)
    log.debug("FUSE options %s (libfuse %d.%d)", opts, mfusepy.fuse_version_major,
              mfusepy.fuse_version_minor)
    try:
        fuse_cls(fs, mountpoint, foreground=True, nothreads=single_thread, debug=fuse_debug,
                 **opts)
    except RuntimeError as exc:  # fuse_main failed: libfuse printed why on stderr
        raise BdeError(f"FUSE mount failed (libfuse status {exc}); see the message above",
                       path=mountpoint) from None
    return fs


def is_mounted(mountpoint: str) -> bool:
    """True when ``mountpoint`` is a FUSE mount point (from /proc/self/mountinfo)."""
    target = os.path.realpath(mountpoint)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) < 5:
                    continue
                point = _unescape(fields[4])
                sep = fields.index("-") if "-" in fields else -1
                fstype = fields[sep + 1] if sep >= 0 and sep + 1 < len(fields) else ""
                if point == target and fstype.startswith("fuse"):
                    return True
    except OSError:
        return os.path.ismount(mountpoint)
    return False


def _unescape(text: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (``\\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


__all__ = ["VOLUME_FILE_NAME", "VolumeFS", "fuse_problem", "import_mfusepy", "is_mounted",
           "mount_options", "serve"]
