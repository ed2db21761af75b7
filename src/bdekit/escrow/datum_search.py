"""Finding BitLocker datums in arbitrary bytes: the tolerant half of reading key packages.

A foreign key package (an AD DS ``msFVE-KeyPackage`` attribute exported as LDIF, PowerShell
output in UTF-16, a hex dump, the raw dataset of a metadata copy) is not parsed: it is searched.
:func:`text_blobs` turns text into the binary blobs it may carry (base64, with LDIF continuation
lines unfolded; hex dumps); :data:`MARKERS` are the (role, type) byte pairs of the datums a
package needs, each with the check a datum found at such a marker must pass
(:func:`datum_at` parses one leniently). What the datums are worth is decided by
:mod:`bdekit.escrow.keypackage`.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from bdekit.errors import BdeError
from bdekit.format.constants import DatumRole, DatumType
from bdekit.format.metadata import Datum, parse_datum

_B64_RE = re.compile(rb"[A-Za-z0-9+/]{64,}={0,2}")
_HEX_RE = re.compile(rb"(?:[0-9A-Fa-f]{2}[ :\-]?){48,}")


def text_blobs(data: bytes) -> list[bytes]:
    """Binary blobs hidden in a text file: base64 (LDIF ``attr:: value`` with folded lines,
    or bare) and hex dumps. UTF-16 text (PowerShell) is read too."""
    text = data
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or (len(data) > 16 and data[1::2].count(0)
                                                  > len(data) // 4):
        try:
            enc = "utf-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-16-le"
            text = data.decode(enc).encode("ascii", "ignore")
        except UnicodeDecodeError:
            text = data
    unfolded = re.sub(rb"\r?\n[ \t]", b"", text)  # LDIF continuation lines
    blobs: list[bytes] = []
    for match in _B64_RE.finditer(unfolded):
        token = match.group(0)
        try:
            blobs.append(base64.b64decode(token + b"=" * (-len(token) % 4)))
        except (binascii.Error, ValueError):
            continue
    for match in _HEX_RE.finditer(text):
        digits = re.sub(rb"[^0-9A-Fa-f]", b"", match.group(0))
        if len(digits) % 2 == 0:
            try:
                blobs.append(bytes.fromhex(digits.decode()))
            except ValueError:
                continue
    return blobs


def datum_at(blob: bytes, start: int) -> Datum | None:
    if start < 0 or start + 8 > len(blob):
        return None
    size = int.from_bytes(blob[start:start + 2], "little")
    if size < 8 or start + size > len(blob):
        return None
    try:
        return parse_datum(blob[start:start + size], start)
    except BdeError:
        return None


def good_vmk(d: Datum) -> bool:
    return d.type == DatumType.VOLUME_MASTER_KEY and any(
        c.type == DatumType.AES_CCM_ENCRYPTED_KEY for c in d.children)


def good_fvek(d: Datum) -> bool:
    return (d.type == DatumType.AES_CCM_ENCRYPTED_KEY
            and d.role == DatumRole.FULL_VOLUME_ENCRYPTION_KEY and len(d.body.data) >= 12)


#: (role, type) pairs searched for, with the check the parsed datum must pass.
MARKERS: list[tuple[bytes, Any]] = [
    ((2).to_bytes(2, "little") + (8).to_bytes(2, "little"), good_vmk),
    ((3).to_bytes(2, "little") + (5).to_bytes(2, "little"), good_fvek),
    ((15).to_bytes(2, "little") + (15).to_bytes(2, "little"),
     lambda d: d.type == DatumType.VIRTUALIZATION_INFO),
    ((7).to_bytes(2, "little") + (2).to_bytes(2, "little"),
     lambda d: d.type == DatumType.UNICODE),
]


__all__ = ["MARKERS", "datum_at", "good_fvek", "good_vmk", "text_blobs"]
