"""Exception hierarchy and the exit codes the command line maps them to.

Every failure a user can cause is a :class:`BdeError` subclass; each subclass belongs to one
failure domain and carries the exit code the CLI uses for it:

====  =====================================================================
code  meaning
====  =====================================================================
0     success
1     anything else (I/O failures, internal errors)
2     usage: bad option values, malformed recovery passwords, refused outputs
3     not a BitLocker volume, or no usable metadata
4     wrong or missing key
5     unsupported feature (TPM-only protector, unknown method, ...)
6     finished, but some data could not be recovered
====  =====================================================================

An error is one line: the file, the offset when one is known, and what was expected
(:meth:`BdeError.one_line`). A ``hint`` (what the user can try next) is kept apart from the
message so that a caller can add one without rewriting the message; the command line prints it
after the message, in parentheses.
"""

from __future__ import annotations

import os

EXIT_OK = 0
EXIT_OTHER = 1
EXIT_USAGE = 2
EXIT_FORMAT = 3
EXIT_KEY = 4
EXIT_UNSUPPORTED = 5
EXIT_PARTIAL = 6


class BdeError(Exception):
    """Root of every error bdekit raises on purpose."""

    exit_code = EXIT_OTHER

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None,
                 offset: int | None = None, hint: str | None = None) -> None:
        self.message = message
        self.path = os.fspath(path) if path is not None else None
        self.offset = offset
        #: what the user can try next (printed after the message; not part of it)
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """The error as one line: ``file: at offset N (0xN): message``."""
        parts: list[str] = []
        if self.path:
            parts.append(f"{self.path}:")
        if self.offset is not None:
            parts.append(f"at offset {self.offset} (0x{self.offset:x}):")
        parts.append(self.message)
        return " ".join(parts)

    def with_context(self, *, path: str | os.PathLike[str] | None = None,
                     offset: int | None = None) -> BdeError:
        """Fill in the path / offset if the raiser did not know them."""
        if self.path is None and path is not None:
            self.path = os.fspath(path)
        if self.offset is None and offset is not None:
            self.offset = offset
        self.args = (self.one_line(),)
        return self

    def with_hint(self, hint: str) -> BdeError:
        """Add what the user can try next (an existing hint is kept, the new one follows)."""
        self.hint = f"{self.hint}; {hint}" if self.hint else hint
        return self

    def display(self) -> str:
        """:meth:`one_line` followed by the hint, if any, in parentheses."""
        return f"{self.one_line()} ({self.hint})" if self.hint else self.one_line()


class UsageError(BdeError):
    """The user asked for something malformed (bad option value, output refused)."""

    exit_code = EXIT_USAGE


class RecoveryPasswordFormatError(UsageError):
    """A recovery password that cannot be right: wrong length or a block fails its check."""

    def __init__(self, message: str, *, block: int | None = None) -> None:
        self.block = block
        super().__init__(message)


class OutputExistsError(UsageError):
    """The output exists (and --force was not given) or is the input itself."""


class FormatError(BdeError):
    """Not a BitLocker volume, or a structure that does not parse."""

    exit_code = EXIT_FORMAT


class NotBitLockerError(FormatError):
    """The image has no BitLocker volume header."""


class MetadataError(FormatError):
    """No usable FVE metadata (every copy damaged or missing)."""


class KeyError_(BdeError):
    """Base of key failures (named with a trailing underscore to avoid the builtin)."""

    exit_code = EXIT_KEY


class WrongKeyError(KeyError_):
    """A secret was tried and its AES-CCM MAC did not verify: the secret is wrong."""


class MissingKeyError(KeyError_):
    """No secret was given that any protector of the volume accepts."""


class UnsupportedError(BdeError):
    """A feature of the volume that bdekit cannot handle offline (e.g. TPM-only)."""

    exit_code = EXIT_UNSUPPORTED


class UnsupportedCertificate(UnsupportedError):
    """A certificate bdekit cannot use for a certificate protector (its key is not RSA)."""


class SourceError(BdeError):
    """The image source cannot be opened or read (missing file, missing optional library)."""

    exit_code = EXIT_OTHER


class ReadError(SourceError):
    """An unreadable range of the image (EIO from a failing device)."""
