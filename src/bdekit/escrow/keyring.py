"""Escrow keyring: recovery passwords and keys as organisations export them, matched to protectors.

``--keyring FILE|DIR`` (repeatable) reads every file given, and every file under a directory
(recursively, sorted), and keeps the keys with their identifiers. Formats, recognised by content:

* **Windows recovery key text file** (``BitLocker Recovery Key <GUID>.TXT``, UTF-16 LE with BOM,
  or UTF-8): ``Identifier: <GUID>`` then ``Recovery Key: <48 digits>``; any text that holds
  recovery passwords is read the same way (each password takes the nearest GUID or 8-character
  key ID before it, e.g. ``manage-bde -protectors -get`` output), falling back to the GUID in
  the file name.
* **CSV** exports from Entra ID / Intune / MBAM / Configuration Manager: comma, semicolon or
  tab separated; columns are found by header name, case- and punctuation-insensitive, with
  synonyms (device / computer name, key ID / recovery key ID / ``RecoveryKeyId``, recovery key /
  ``RecoveryPassword`` / key, date / created, volume GUID, device ID, volume type).
* **Microsoft Graph** ``bitlockerRecoveryKey`` JSON: one object or ``{"value": [...]}`` with
  ``id`` (the recovery key ID = protector GUID), ``createdDateTime``, ``volumeType``,
  ``deviceId`` and ``key``.
* **AD DS** exports of ``msFVE-RecoveryInformation`` objects, as LDIF (``ldifde``; ``attr::``
  values are base64) or JSON (``Get-ADObject ... | ConvertTo-Json``; binary values as base64 or
  lists of byte values): ``msFVE-RecoveryPassword``, ``msFVE-RecoveryGuid`` (the protector GUID,
  16 bytes in Microsoft order), ``msFVE-VolumeGuid``, ``msFVE-KeyPackage`` (kept on the entry as
  :attr:`KeyringEntry.key_package` for the key package repair path).
* **BEK files** (startup / recovery key files, ``{GUID}.BEK``), typically a directory of them.

A key is matched to a protector by its full GUID or by the 8-character key ID helpdesks use;
only matching keys (and keys escrowed without any identifier) are tried, so a keyring holding
hundreds of unrelated keys costs nothing but parsing. Each entry is named ``file:entry`` (e.g.
``keys.csv:row 12``), which is what the audit trail and the output show; never the key.

Every file is read bounded (:func:`bdekit.image.bounded.read_bounded`: a regular file of at
most a few MB; a device or a disk image given by mistake is refused at once). A file that
cannot be used (too large, nested too deeply, not an export) is skipped with a warning naming
it, and the other files still count; a keyring that ends up empty is a usage error, and so is a
key package given as a keyring (it belongs to ``repair -kp``). A recovery password whose check
digits fail is skipped with a warning naming its file and entry (never its digits); the other
entries are still tried.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from bdekit.crypto.keys import parse_recovery_password
from bdekit.errors import BdeError, FormatError, RecoveryPasswordFormatError, UsageError
from bdekit.escrow.exports import (
    COLUMNS,
    EscrowFormat,
    KeyPackageGiven,
    KeyringEntry,
    decode_text,
    parse_escrow,
)
from bdekit.escrow.secrets import KeyCandidate, Match, SecretKind
from bdekit.format.protector import Protector
from bdekit.image.bounded import cap_of, read_bounded

log = logging.getLogger(__name__)

#: Files bigger than this are not escrow exports (images, archives): refused, or skipped in
#: directories.
MAX_FILE_SIZE = cap_of("keyring file")


@dataclasses.dataclass
class Keyring:
    entries: list[KeyringEntry] = dataclasses.field(default_factory=list)
    files: list[str] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.entries)

    def matches(self, protector: Protector) -> list[tuple[KeyringEntry, Match]]:
        """Entries that fit ``protector``: identified matches first, then unidentified ones."""
        found = [(e, m) for e in self.entries if (m := e.match(protector)) is not None]
        return sorted(found, key=lambda pair: pair[1] == Match.UNIDENTIFIED)

    def candidates(self, protectors: Iterable[Protector] | None = None) -> list[KeyCandidate]:
        """Candidates to try: with ``protectors``, only the entries matching one of them."""
        if protectors is None:
            return [e.candidate() for e in self.entries if e.kind != SecretKind.KEY_PACKAGE]
        plist = list(protectors)
        chosen: list[KeyringEntry] = []
        for protector in plist:
            for entry, _how in self.matches(protector):
                if entry not in chosen:
                    chosen.append(entry)
        identified = [e for e in chosen if e.identifier is not None or e.kind == SecretKind.BEK]
        unidentified = [e for e in chosen if e not in identified]
        return [e.candidate() for e in identified + unidentified]

    def key_packages(self) -> list[KeyringEntry]:
        return [e for e in self.entries if e.key_package is not None]


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_keyring(paths: Iterable[str | os.PathLike[str]]) -> Keyring:
    """Read every escrow file and directory in ``paths`` (see the module docstring)."""
    ring = Keyring()
    skipped: list[BdeError] = []
    for path in paths:
        p = Path(path)
        if p.is_dir():
            for f in sorted(f for f in p.rglob("*") if f.is_file()):
                _add_file(ring, f, skipped, in_directory=True)
        elif os.path.lexists(p):
            _add_file(ring, p, skipped, in_directory=False)
        else:
            raise UsageError("keyring file or directory does not exist", path=p)
    if not ring.entries and skipped:
        raise skipped[0]
    log.info("keyring: %d keys from %d files", len(ring.entries), len(ring.files))
    return ring


def _add_file(ring: Keyring, path: Path, skipped: list[BdeError], *, in_directory: bool
              ) -> None:
    """The keys of one file into ``ring``; a file that fails is skipped with a line saying why
    (a key package named as a keyring file is an error)."""
    try:
        entries = read_escrow_file(path)
        if not entries:
            raise UsageError("no recovery password or key found in this keyring file "
                             "(expected a recovery key text file, CSV, Graph or AD DS JSON, "
                             "LDIF or BEK file)", path=path)
    except KeyPackageGiven as exc:
        if not in_directory:
            raise UsageError(exc.message, path=exc.path) from None
        log.info("keyring: skipping %s: a key package (for repair -kp)", path)
        return
    except BdeError as exc:
        if in_directory:
            log.info("keyring: skipping %s: %s", path, exc.message)
        else:
            log.warning("keyring: skipping %s: %s", path, exc.message)
        skipped.append(UsageError(exc.message, path=exc.path or path))
        return
    ring.entries += _checked(entries, path)
    ring.files.append(os.fspath(path))


def _checked(entries: list[KeyringEntry], path: Path) -> list[KeyringEntry]:
    """The entries without the recovery passwords whose check digits fail (each skipped with
    a warning naming the file and the entry, never the digits)."""
    good: list[KeyringEntry] = []
    for entry in entries:
        if entry.kind == SecretKind.RECOVERY_PASSWORD and isinstance(entry.value, str):
            try:
                parse_recovery_password(entry.value)
            except RecoveryPasswordFormatError as exc:
                where = f"block {exc.block}" if exc.block else "its format"
                log.warning("keyring: %s, %s: the recovery password fails its check (%s); "
                            "skipped", path, entry.entry, where)
                continue
        good.append(entry)
    return good


def read_escrow_file(path: str | os.PathLike[str]) -> list[KeyringEntry]:
    """The keys in one escrow file, whatever its format (raises a BdeError if unusable)."""
    p = Path(path)
    data = read_bounded(p, "keyring file")
    try:
        return parse_escrow(data, os.fspath(p))
    except RecursionError:
        raise FormatError("JSON nested too deeply for an escrow export", path=p) from None


__all__ = ["COLUMNS", "EscrowFormat", "Keyring", "KeyringEntry", "decode_text", "load_keyring",
           "parse_escrow", "read_escrow_file"]
