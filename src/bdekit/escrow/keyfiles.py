"""Key files of other tools: reading FVEK / VMK files, writing them for other tools.

Read (``--fvek-file``, ``--vmk-file``), recognised by content:

* dislocker FVEK file: u16 LE encryption method, then 64 key bytes (66 bytes; also written by
  MemProcFS ``.fvek`` and the Volatility 2 plugin's ``--dislocker``) or 32 key bytes (34
  bytes, dislocker after 0.7.3). Layout of the key bytes as dislocker uses them: CBC key at 0;
  diffuser tweak key at 0x20 (AES-128 keys take the first 16 bytes of each half); XTS-128
  keys at 0 and 0x10; XTS-256 keys at 0 and 0x20. The 34-byte variant holds, for AES-128 with
  diffuser, the data key and the tweak key at 0 and 0x10;
* raw key bytes: 16, 32 or 64 bytes (Volatility ``--dump-dir`` files: FVEK then tweak key);
* bdekit's own JSON key file (``keys export --format json``, ``keys from-memory --save``);
* text: libbde's ``FVEK[:TWEAK]`` in hex (bdemount/bdeinfo ``-k``), hex on its own, or the
  labelled lines plugins print (a line naming the tweak gives the tweak key, the first other
  key the FVEK);
* VMK files: 32 raw bytes, 64 hex characters, or the 44-byte VMK key datum.

Tools disagree on the method byte: MemProcFS and the Volatility 2 plugin write 0x8004 for
XTS-256 and 0x8005 for XTS-128 (the reverse of BitLocker's ids). The volume's own method is
trusted; :func:`fvek_for_method` says when the file disagrees.

Written (``bdekit keys export``): ``dislocker`` (the 66-byte file, right method id), ``libbde``
(``FVEK[:TWEAK]`` text as ``bdemount -k`` takes it: XTS keys as one segment, a diffuser's
tweak key after the colon), ``hex`` (the FVEK as ``--fvek`` takes it, then the VMK) and
``json``. The command writes them with :func:`bdekit.image.files.write_atomic` (0600).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

from bdekit.errors import FormatError, UsageError
from bdekit.format.constants import EncryptionMethod, enum_label

_HEX = re.compile(r"(?<![0-9A-Fa-f])([0-9A-Fa-f]{32}|[0-9A-Fa-f]{64}|[0-9A-Fa-f]{128})"
                  r"(?::([0-9A-Fa-f]{32}|[0-9A-Fa-f]{64}))?(?![0-9A-Fa-f])")
MAX_KEY_FILE = 1 << 16
FORMATS = ("dislocker", "libbde", "hex", "json")


@dataclasses.dataclass(frozen=True)
class KeyFile:
    """Key material read from a file, in the file's own layout."""

    path: str
    format: str  # "dislocker", "raw", "text"
    key: bytes = dataclasses.field(repr=False)
    tweak: bytes | None = dataclasses.field(default=None, repr=False)
    method: int | None = None  # the method id the file names (dislocker files)


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {what}: {exc.strerror}", path=path) from None
    if len(data) > MAX_KEY_FILE:
        raise FormatError(f"{what} is larger than {MAX_KEY_FILE} bytes: not a key file",
                          path=path)
    return data


def read_fvek_file(path: str | os.PathLike[str]) -> KeyFile:
    """Read an FVEK file of any of the formats above."""
    name = os.fspath(path)
    data = _read(name, "FVEK file")
    if len(data) in (34, 66):
        method = int.from_bytes(data[:2], "little")
        if method >> 8 == 0x80 and method & 0xFF <= 0x0F:
            return KeyFile(name, "dislocker", data[2:], method=method)
    if len(data) in (16, 32, 64) and not _is_text(data):
        return KeyFile(name, "raw", data)
    text = data.decode("utf-8", errors="replace")
    doc = _json(text)
    if doc is not None and isinstance(doc.get("fvek"), str):
        named = doc.get("method_id")
        return KeyFile(name, "json", bytes.fromhex(doc["fvek"]),
                       method=named if isinstance(named, int) else None)
    key, tweak = _text_keys(text)
    if key is None:
        raise FormatError(f"no FVEK found: expected a dislocker file (66 or 34 bytes), raw key "
                          f"bytes (16, 32 or 64) or FVEK[:TWEAK] hex text; got {len(data)} "
                          "bytes", path=name, offset=0)
    return KeyFile(name, "text", key, tweak)


def _json(text: str) -> dict[str, Any] | None:
    if not text.lstrip().startswith("{"):
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _is_text(data: bytes) -> bool:
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return False
    return bool(_HEX.search(text))


def _text_keys(text: str) -> tuple[bytes | None, bytes | None]:
    key: bytes | None = None
    tweak: bytes | None = None
    for line in text.splitlines():
        for match in _HEX.finditer(line):
            first = bytes.fromhex(match.group(1))
            if match.group(2):
                return first, bytes.fromhex(match.group(2))
            if "tweak" in line.lower():
                tweak = tweak or first
            elif key is None:
                key = first
    return key, tweak


def fvek_for_method(keyfile: KeyFile, method: int) -> tuple[bytes, list[str]]:
    """The FVEK in key datum layout for the volume's ``method``, and notes for the user."""
    notes: list[str] = []
    if keyfile.method is not None and keyfile.method != method:
        notes.append(f"{keyfile.path}: the file names method {_label(keyfile.method)}, the "
                     f"volume uses {_label(method)}: using the volume's")
    key, tweak = keyfile.key, keyfile.tweak
    try:
        size = EncryptionMethod(method).fvek_size
    except ValueError:
        raise FormatError(f"unknown encryption method 0x{method:04x}") from None
    if keyfile.format in ("dislocker", "json"):
        if len(key) == 32 and method in (0x8000, 0x8001):
            half = 16 if method == 0x8000 else 32
            key, tweak = key[:half], key[half:] or None
        elif len(key) >= size:
            return key[:size], notes
    if tweak is not None:
        if method in (0x8000, 0x8001):
            return key.ljust(32, b"\0") + tweak.ljust(32, b"\0"), notes
        if method in (0x8004, 0x8005):
            key = key + tweak
    fvek = _fit(key, method, size)
    if fvek is None:
        raise UsageError(f"the key file holds {len(key)} key bytes"
                         f"{' and a tweak key' if tweak else ''}; {_label(method)} needs "
                         f"{size}", path=keyfile.path)
    return fvek, notes


def _fit(key: bytes, method: int, size: int) -> bytes | None:
    if len(key) == size:
        return key
    if method == 0x8000 and len(key) == 32:  # data key + tweak key, 16 bytes each
        return key[:16] + bytes(16) + key[16:] + bytes(16)
    if method in (0x8002, 0x8003, 0x8004) and len(key) > size:
        return key[:size]
    if method == 0x8002 and len(key) == 32:
        return key[:16]
    return None


def _label(method: int) -> str:
    return f"{enum_label(EncryptionMethod, method)} (0x{method:04x})"


def read_vmk_file(path: str | os.PathLike[str]) -> bytes:
    """A 32-byte VMK from raw bytes, hex text or a VMK key datum."""
    name = os.fspath(path)
    data = _read(name, "VMK file")
    if len(data) == 32 and not _is_text(data):
        return data
    if len(data) >= 44 and data[:2] == b"\x2c\x00" and data[4:6] == b"\x01\x00":
        return data[12:44]
    doc = _json(data.decode("utf-8", errors="replace"))
    if doc is not None and isinstance(doc.get("vmk"), str) and len(doc["vmk"]) == 64:
        return bytes.fromhex(doc["vmk"])
    match = re.search(rb"(?<![0-9A-Fa-f])[0-9A-Fa-f]{64}(?![0-9A-Fa-f])", data)
    if match:
        return bytes.fromhex(match.group(0).decode())
    raise FormatError("no VMK found: expected 32 raw bytes, 64 hex characters or a 44-byte "
                      "VMK key datum", path=name, offset=0)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def split_fvek(fvek: bytes, method: int) -> tuple[bytes, bytes | None]:
    """(data key, tweak key) of an FVEK in key datum layout."""
    if method in (0x8000, 0x8001):
        size = 16 if method == 0x8000 else 32
        return fvek[:size], fvek[32:32 + size]
    if method in (0x8004, 0x8005):
        half = len(fvek) // 2
        return fvek[:half], fvek[half:]
    return fvek[:16] if method == 0x8002 else fvek, None


def render(fmt: str, fvek: bytes, method: int, vmk: bytes | None = None,
           info: dict[str, Any] | None = None) -> bytes:
    """The bytes of an export file (see the module docstring)."""
    if fmt == "dislocker":
        return method.to_bytes(2, "little") + fvek.ljust(64, b"\0")[:64]
    if fmt == "libbde":
        data_key, tweak = split_fvek(fvek, method)
        if method in (0x8000, 0x8001):
            assert tweak is not None
            return f"{data_key.hex()}:{tweak.hex()}\n".encode()
        return (fvek.hex() if method in (0x8004, 0x8005) else data_key.hex()).encode() + b"\n"
    if fmt == "hex":
        lines = [f"FVEK {fvek.hex()}"] + ([f"VMK {vmk.hex()}"] if vmk else [])
        return ("\n".join(lines) + "\n").encode()
    if fmt == "json":
        data_key, tweak = split_fvek(fvek, method)
        doc = dict(info or {})
        doc.update({"method": enum_label(EncryptionMethod, method), "method_id": method,
                    "fvek": fvek.hex(), "data_key": data_key.hex(),
                    "tweak_key": tweak.hex() if tweak else None,
                    "vmk": vmk.hex() if vmk else None})
        return (json.dumps(doc, indent=2) + "\n").encode()
    raise UsageError(f"unknown key file format {fmt!r}; expected one of {', '.join(FORMATS)}")
