"""Every path a command reads and writes, checked in one place before anything happens.

A command describes its paths to a :class:`PathPlan` before it unlocks or writes anything:

* **inputs**: the image (with every segment of a split set or an EWF set), key files
  (``--bek``, ``--password-file``, ``--recovery-password-file``, ``--keyring`` files and the
  files of a keyring directory, ``--certificate``, ``--certificate-key``), key packages and
  the input ``--mapfile``;
* **the output** (:meth:`PathPlan.set_output`) and what comes with it: the partial file, the
  journal, the lock file;
* **side outputs**: the report, the output mapfile, the ``-lf`` log, a key package, the audit
  log, and the ``.tmp`` file each atomic write goes through.

:meth:`PathPlan.check` refuses (exit 2, one line naming both paths and their roles):

* any output that resolves to an input: same real path, or same file (device and inode:
  a hard link, a bind mount, ``/dev/stdout`` redirected into the image);
* two outputs that resolve to the same file;
* an existing output or side output without ``--force`` (the audit log and a resumed
  ``-lf`` log are appended to; the partial file, journal and lock are the command's own);
* a terminal as the output; a side output that is a directory; a side output on a stream
  where only a file will do (mapfiles and logs), and a journal or ``--resume`` on a stream.

:meth:`PathPlan.claim` checks and then holds the output's :class:`OutputLock` for the rest of
the command.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import stat
from collections.abc import Iterable, Iterator

from bdekit.errors import OutputExistsError, UsageError
from bdekit.escrow.audit import default_audit_path
from bdekit.image.files import TMP_SUFFIX
from bdekit.image.sources import find_split_segments
from bdekit.pipeline.journal import JOURNAL_SUFFIX, journal_path_for
from bdekit.pipeline.output import (
    LOCK_SUFFIX,
    PARTIAL_SUFFIX,
    STDOUT,
    OutputKind,
    OutputLock,
    is_char_device,
    is_terminal,
    output_kind,
)

log = logging.getLogger(__name__)

#: How many files of an input directory (keyring, key packages) are looked at.
MAX_DIRECTORY_FILES = 10000

_EWF_SUFFIX = re.compile(r"(?i)^(E|L|Ex|Lx|S)[0-9A-Z]{2}$")


@dataclasses.dataclass(frozen=True)
class _Path:
    role: str
    path: str
    real: str
    ident: tuple[int, int] | None
    #: output kinds: "main", "side" (needs --force when it exists), "append", "own"
    how: str = ""

    @property
    def label(self) -> str:
        shown = "standard output" if self.path == STDOUT else self.path
        return f"{self.role} {shown}"


def _identify(role: str, path: str, how: str = "") -> _Path:
    if path == STDOUT:
        try:
            st = os.fstat(1)
        except OSError:
            return _Path(role, path, "<stdout>", None, how)
        return _Path(role, path, "<stdout>", (st.st_dev, st.st_ino), how)
    real = os.path.realpath(path)
    try:
        st = os.stat(path)
    except OSError:
        return _Path(role, path, real, None, how)
    return _Path(role, path, real, (st.st_dev, st.st_ino), how)


def _same(a: _Path, b: _Path) -> bool:
    if a.real == b.real and a.real != "<stdout>":
        return True
    return a.ident is not None and a.ident == b.ident


def image_files(path: str) -> list[str]:
    """The files an image is read from: the path, every segment of a split set, the other
    segments of an EWF set (``.E01`` ``.E02`` ...)."""
    files = [path]
    segments = find_split_segments(path)
    if segments:
        files += segments
    for first in [path, *(segments or [])]:
        stem, dot, suffix = os.path.basename(first).rpartition(".")
        if dot and _EWF_SUFFIX.match(suffix):
            directory = os.path.dirname(first) or "."
            with contextlib.suppress(OSError):
                files += [os.path.join(directory, name) for name in sorted(os.listdir(directory))
                          if name.rpartition(".")[0] == stem
                          and _EWF_SUFFIX.match(name.rpartition(".")[2])]
    return list(dict.fromkeys(files))


def _directory_files(path: str) -> Iterator[str]:
    count = 0
    for root, _dirs, names in os.walk(path):
        for name in sorted(names):
            count += 1
            if count > MAX_DIRECTORY_FILES:
                return
            yield os.path.join(root, name)


class PathPlan:
    """The paths of one command (see the module docstring)."""

    def __init__(self, *, force: bool = False) -> None:
        self.force = force
        self.inputs: list[_Path] = []
        self.outputs: list[_Path] = []
        self.output: str | None = None
        self.kind: OutputKind | None = None
        self.lock: OutputLock | None = None
        self.problems: list[UsageError] = []

    # -- describing -------------------------------------------------------------------------
    def add_input(self, role: str, path: str | os.PathLike[str] | None) -> None:
        """An input file; a directory adds every file under it."""
        if path is None:
            return
        p = os.fspath(path)
        if p == STDOUT:
            return  # standard input
        self.inputs.append(_identify(role, p))
        if os.path.isdir(p):
            self.inputs += [_identify(role, f) for f in _directory_files(p)]

    def add_inputs(self, role: str, paths: Iterable[str | os.PathLike[str]] | None) -> None:
        for path in paths or ():
            self.add_input(role, path)

    def add_image(self, path: str, role: str = "input image") -> None:
        """The image and every file it is read from; a missing image is a usage error."""
        found = [name for name in image_files(path) if os.path.lexists(name)]
        if not found:
            self._refuse(UsageError("no such file or directory", path=path))
        self.inputs += [_identify(role, name) for name in found]

    def set_output(self, path: str, *, role: str = "output", journal: bool = False,
                   resume: bool = False, lock: bool = True) -> OutputKind:
        """The main output, with its partial file, lock file and (``journal``) journal."""
        self.output = path
        kind = self.kind = output_kind(path)
        if is_terminal(path):
            self._refuse(UsageError("refusing to write the decrypted volume to a terminal "
                                    "(redirect it to a file or a pipe)", path=path))
        self.outputs.append(_identify(role, path, "main"))
        if is_char_device(path) and not self.force and not is_terminal(path):
            self._refuse(OutputExistsError("output is a device: its contents would be "
                                           "overwritten; use --force", path=path))
        if kind == OutputKind.STREAM:
            if resume:
                self._refuse(UsageError("--resume needs a file output: a stream cannot be "
                                        "resumed", path=path))
            elif journal:
                self._refuse(UsageError("this command keeps a journal and a mapfile beside "
                                        "its output: it cannot write to a stream; give a "
                                        "file or a device", path=path))
            return kind
        if kind == OutputKind.FILE:
            self._check_file_output(path, resume)
            self.outputs.append(_identify("partial output", path + PARTIAL_SUFFIX, "own"))
        elif not self.force:
            self._refuse(OutputExistsError("output is a device: its contents would be "
                                           "overwritten; use --force", path=path))
        if journal:
            self.outputs.append(_identify("journal", journal_path_for(path), "own"))
            self.outputs.append(_identify("journal", journal_path_for(path) + TMP_SUFFIX,
                                          "own"))
        if lock:
            self.lock = OutputLock(path)
            if self.lock.path is not None and kind == OutputKind.FILE:
                self.outputs.append(_identify("lock file", self.lock.path, "own"))
        return kind

    def _check_file_output(self, path: str, resume: bool) -> None:
        if os.path.isdir(path):
            self._refuse(UsageError("output is a directory", path=path))
        elif os.path.exists(path) and not self.force and not resume:
            self._refuse(OutputExistsError("output exists; use --force to overwrite it",
                                           path=path))
        parent = os.path.dirname(os.path.realpath(path)) or "."
        if not os.path.isdir(parent):
            self._refuse(UsageError(f"output directory {parent} does not exist", path=path))

    def add_output(self, role: str, path: str | os.PathLike[str] | None, *,
                   append: bool = False, stream_ok: bool = False, atomic: bool = True,
                   may_exist: bool = False) -> None:
        """A side output; ``append``: appended to, so it may exist; ``may_exist``: a product
        of the job being resumed; ``stream_ok``: may be a stream or a device (written in
        place); ``atomic``: written through ``PATH.tmp``."""
        if path is None:
            return
        p = os.fspath(path)
        entry = _identify(role, p, "append" if append or may_exist else "side")
        self.outputs.append(entry)
        if p != STDOUT and os.path.isdir(p):
            self._refuse(UsageError(f"{role} is a directory", path=p))
            return
        if output_kind(p) == OutputKind.STREAM or p == STDOUT:
            if not stream_ok:
                self._refuse(UsageError(f"{role} must be a regular file (it is written "
                                        "atomically, or read back)", path=p))
            return
        if atomic and output_kind(p) == OutputKind.FILE:
            self.outputs.append(_identify(role, p + TMP_SUFFIX, "own"))

    def add_audit_log(self, path: str | os.PathLike[str] | None) -> None:
        """The audit log (``--audit-log``, else its default): appended to."""
        self.add_output("audit log", os.fspath(path) if path else str(default_audit_path()),
                        append=True, atomic=False, stream_ok=True)

    # -- checking ---------------------------------------------------------------------------
    def _refuse(self, problem: UsageError) -> None:
        self.problems.append(problem)

    def check(self) -> None:
        """Raise the first problem (see the module docstring); nothing has been written."""
        for out in self.outputs:
            for inp in self.inputs:
                if _same(out, inp):
                    raise OutputExistsError(
                        f"refusing to write the {out.role} over the {inp.role} "
                        f"{inp.path}" + ("" if out.real == inp.real
                                         else " (the same file under another name)"),
                        path=out.path)
        if self.problems:
            raise self.problems[0]
        for i, out in enumerate(self.outputs):
            for other in self.outputs[i + 1:]:
                if _same(out, other) and out.real != os.devnull:
                    raise UsageError(f"the {out.label} and the {other.label} are the same "
                                     "file", path=out.path)
        if not self.force:
            for out in self.outputs:
                if out.how == "side" and out.path != STDOUT and _exists_regular(out.path):
                    raise OutputExistsError(f"{out.role} exists; use --force to overwrite it",
                                            path=out.path)

    @contextlib.contextmanager
    def claim(self) -> Iterator[PathPlan]:
        """:meth:`check`, then hold the output's lock until the block ends."""
        self.check()
        if self.lock is None:
            yield self
            return
        with self.lock:
            yield self


def _exists_regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


__all__ = ["JOURNAL_SUFFIX", "LOCK_SUFFIX", "PathPlan", "image_files"]
