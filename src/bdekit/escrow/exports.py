"""Escrow exports as organisations write them: every format the keyring reads, parsed into
:class:`KeyringEntry` objects (the keyring itself, matching and loading, is
:mod:`bdekit.escrow.keyring`, whose docstring lists the formats).

:func:`parse_escrow` recognises the format by content: a BEK file, JSON (Microsoft Graph or
AD DS), LDIF, CSV (columns found by header name, :data:`COLUMNS`), or free text holding
recovery passwords next to their identifiers. A binary file that is a key package raises
:class:`KeyPackageGiven` (it belongs to ``repair -kp``). Entries are named ``file:entry``;
the secret is never shown.
"""

from __future__ import annotations

import base64
import binascii
import csv
import dataclasses
import enum
import io
import json
import logging
import os
import re
import uuid
from collections.abc import Iterator
from typing import Any

from bdekit.errors import BdeError, FormatError, UsageError
from bdekit.escrow.keypackage import MAGIC as KEY_PACKAGE_MAGIC
from bdekit.escrow.keypackage import scan_datum_set
from bdekit.escrow.secrets import KeyCandidate, Match, SecretKind, match_protector
from bdekit.format.bek import BekFile, parse_bek
from bdekit.format.protector import Protector

log = logging.getLogger(__name__)

_GUID_RE = re.compile(r"\{?([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-"
                      r"[0-9A-Fa-f]{12})\}?")
_KEY_ID_RE = re.compile(r"(?<![0-9A-Fa-f-])([0-9A-Fa-f]{8})(?![0-9A-Fa-f-])")
# 48 digits in 8 blocks of 6, separated by dashes / spaces (or not at all).
_RP_RE = re.compile(r"(?<!\d)(\d{6}(?:[-\u2010\u2011\u2012\u2013\u2014\u2212 ]?\d{6}){7})(?!\d)")

class EscrowFormat(enum.StrEnum):
    """The kind of file an escrowed key was read from (``keys find --json``: ``format``)."""

    BEK = "bek"
    CSV = "csv"
    GRAPH_JSON = "graph-json"
    AD_JSON = "ad-json"
    LDIF = "ldif"
    TEXT = "text"
    UNKNOWN = ""


@dataclasses.dataclass
class KeyringEntry:
    """One escrowed key: the secret (never shown) and what identifies it."""

    kind: SecretKind  # recovery password, BEK, or key package (a package without a password)
    value: str | BekFile | None = dataclasses.field(repr=False)  # the secret (never shown)
    file: str
    entry: str  # "row 3", "value[2]", "record 5 (CN=...)", "line 12", "BEK"
    guid: uuid.UUID | None = None  # protector GUID (= recovery key ID)
    key_id: str | None = None  # 8 hex characters, when only that is known
    device: str | None = None
    created: str | None = None
    volume_guid: uuid.UUID | None = None
    volume_type: str | None = None
    device_id: str | None = None
    format: EscrowFormat = EscrowFormat.UNKNOWN
    key_package: bytes | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.kind = SecretKind(self.kind)

    @property
    def source(self) -> str:
        return f"{self.file}:{self.entry}"

    @property
    def identifier(self) -> str | None:
        if self.guid is not None:
            return str(self.guid).upper()
        return self.key_id

    def candidate(self) -> KeyCandidate:
        return KeyCandidate(self.kind, self.value, source=self.source,
                            guid=self.guid, key_id=None if self.guid else self.key_id)

    def match(self, protector: Protector) -> Match | None:
        """How this entry matches ``protector`` (:func:`match_protector`); an entry without a
        secret (a key package alone) matches none."""
        if self.value is None or self.kind == SecretKind.KEY_PACKAGE:
            return None
        guid = self.value.guid if isinstance(self.value, BekFile) else self.guid
        return match_protector(protector, self.kind, guid=guid, key_id=self.key_id)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "kind": self.kind, "format": self.format,
                               "identifier": self.identifier}
        for name in ("device", "created", "volume_type", "device_id"):
            value = getattr(self, name)
            if value:
                out[name] = value
        if self.volume_guid is not None:
            out["volume_guid"] = str(self.volume_guid).upper()
        if self.key_package is not None:
            out["key_package_bytes"] = len(self.key_package)
        return out


class KeyPackageGiven(UsageError):
    """A key package where an escrow export was expected."""



def parse_escrow(data: bytes, path: str) -> list[KeyringEntry]:
    name = os.path.basename(path)
    bek = _try_bek(data, path)
    if bek is not None:
        return [KeyringEntry(SecretKind.BEK, bek, name, "BEK", guid=bek.guid,
                             format=EscrowFormat.BEK,
                             created=bek.created.isoformat() if bek.created else None)]
    text = decode_text(data)
    if text is None:
        if data[:len(KEY_PACKAGE_MAGIC)] == KEY_PACKAGE_MAGIC or _datum_set(data, path):
            raise KeyPackageGiven("a key package, not an escrow keyring: give it to "
                                   "`bdekit repair -kp`", path=path)
        raise FormatError("not a text file nor a BEK file", path=path)
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        try:
            doc = json.loads(stripped)
        except json.JSONDecodeError:
            doc = None
        if doc is not None:
            return _from_json(doc, name)
    if _looks_like_ldif(text):
        return _from_ldif(text, name)
    rows = _from_csv(text, name)
    if rows is not None:
        return rows
    return _from_text(text, name)


def _datum_set(data: bytes, path: str) -> bool:
    try:
        return scan_datum_set(data, path) is not None
    except BdeError:
        return False


def _try_bek(data: bytes, path: str) -> BekFile | None:
    if len(data) < 56 or int.from_bytes(data[8:12], "little") != 48:
        return None
    try:
        return parse_bek(data, path)
    except BdeError:
        return None


def decode_text(data: bytes) -> str | None:
    """Text of a file as Windows may have saved it (BOM: UTF-16 LE/BE, UTF-8; else UTF-8,
    UTF-16 without BOM, Latin-1); ``None`` for binary data."""
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"),
                       (b"\xfe\xff", "utf-16-be")):
        if data.startswith(bom):
            return data[len(bom):].decode(codec, errors="replace")
    if data[1::2].count(0) > len(data) // 4 and data[1::2].count(0) > data[::2].count(0):
        return data.decode("utf-16-le", errors="replace")
    if data[::2].count(0) > len(data) // 4:
        return data.decode("utf-16-be", errors="replace")
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------


def _parse_guid_text(value: Any) -> uuid.UUID | None:
    if value is None:
        return None
    m = _GUID_RE.search(str(value))
    return uuid.UUID(m.group(1)) if m else None


def _parse_binary(value: Any) -> bytes | None:
    """Binary AD attribute: base64 text, a list of byte values, or hex."""
    if value is None:
        return None
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        return bytes(v & 0xFF for v in value)
    if isinstance(value, dict):  # {"value": ...} wrappers of some exporters
        return _parse_binary(value.get("value") or value.get("Value"))
    text = str(value).strip()
    if not text:
        return None
    if re.fullmatch(r"(0x)?[0-9A-Fa-f]+", text) and len(text) % 2 == 0 and len(text) >= 32:
        return bytes.fromhex(text.removeprefix("0x"))
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _parse_guid_binary(value: Any) -> uuid.UUID | None:
    """A GUID attribute: 16 bytes in Microsoft order (base64 / byte list), or GUID text."""
    if isinstance(value, str) and _GUID_RE.fullmatch(value.strip()):
        return uuid.UUID(_GUID_RE.fullmatch(value.strip()).group(1))  # type: ignore[union-attr]
    raw = _parse_binary(value)
    if raw is not None and len(raw) == 16:
        return uuid.UUID(bytes_le=raw)
    return _parse_guid_text(value) if isinstance(value, str) else None


def _normalise_rp(value: Any) -> str | None:
    """A recovery password as 8 dash-separated blocks if ``value`` holds 48 digits."""
    if value is None:
        return None
    m = _RP_RE.search(str(value))
    if not m:
        return None
    digits = re.sub(r"\D", "", m.group(1))
    return "-".join(digits[i:i + 6] for i in range(0, 48, 6))


def _identify(value: Any) -> tuple[uuid.UUID | None, str | None]:
    """(GUID, key ID) from a key ID cell: a full GUID, or 8 hex characters."""
    if value is None:
        return None, None
    guid = _parse_guid_text(value)
    if guid is not None:
        return guid, None
    text = str(value).strip()
    hexed = re.fullmatch(r"(?:X'|0x)?([0-9A-Fa-f]{32})'?", text)
    if hexed:  # a binary msFVE-RecoveryGuid as csvde writes it (Microsoft byte order)
        return uuid.UUID(bytes_le=bytes.fromhex(hexed.group(1))), None
    m = _KEY_ID_RE.search(str(value))
    return None, (m.group(1).upper() if m else None)


def _norm_header(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------

#: Column synonyms (normalised: lower case, letters and digits only).
COLUMNS: dict[str, tuple[str, ...]] = {
    "device": ("device", "devicename", "computer", "computername", "machine", "machinename",
               "hostname", "host", "displayname", "devicedisplayname", "name"),
    "key_id": ("keyid", "recoverykeyid", "bitlockerkeyid", "bitlockerrecoverykeyid",
               "recoveryid", "recoveryguid", "msfverecoveryguid", "keyidentifier",
               "recoverykeyidentifier", "passwordid", "recoverypasswordid", "protectorid",
               "keyprotectorid", "id", "identifier"),
    "key": ("recoverykey", "recoverypassword", "bitlockerrecoverykey",
            "bitlockerrecoverypassword", "msfverecoverypassword", "key", "password",
            "numericalpassword", "recoverykeyvalue"),
    "date": ("date", "created", "createddate", "createdon", "createddatetime", "datecreated",
             "creationdate", "creationtime", "createtime", "whencreated", "timestamp",
             "lastupdated", "lastupdatetime", "uploaded", "backupdate"),
    "volume_guid": ("volumeguid", "volumeid", "msfvevolumeguid"),
    "volume_type": ("volumetype", "drivetype", "volumekind"),
    "device_id": ("deviceid", "azureaddeviceid", "entradeviceid", "aaddeviceid"),
    "dn": ("dn", "distinguishedname"),
}


def _sniff_delimiter(first_line: str) -> str:
    counts = {d: first_line.count(d) for d in (",", ";", "\t", "|")}
    return max(counts, key=lambda d: counts[d])


def _map_columns(header: list[str]) -> dict[str, int]:
    normalised = [_norm_header(h) for h in header]
    mapping: dict[str, int] = {}
    for field, synonyms in COLUMNS.items():
        for synonym in synonyms:  # earlier synonyms are the more specific ones
            if synonym in normalised and normalised.index(synonym) not in mapping.values():
                mapping[field] = normalised.index(synonym)
                break
    return mapping


def _from_csv(text: str, name: str) -> list[KeyringEntry] | None:
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 1:
        return None
    # Some exports put a title line or "sep=," first: find the header among the first lines.
    for start in range(min(5, len(lines))):
        line = lines[start]
        if line.lower().startswith("sep="):
            continue
        delimiter = _sniff_delimiter(line)
        if line.count(delimiter) == 0:
            continue
        reader = csv.reader(io.StringIO("\n".join(lines[start:])), delimiter=delimiter)
        try:
            header = next(reader)
        except (StopIteration, csv.Error):
            return None
        cols = _map_columns(header)
        if "key" not in cols:
            continue
        entries: list[KeyringEntry] = []
        for number, row in enumerate(reader, start=2 + start):
            def cell(field: str, row: list[str] = row, cols: dict[str, int] = cols
                     ) -> str | None:
                index = cols.get(field)
                if index is None or index >= len(row):
                    return None
                return row[index].strip() or None

            rp = _normalise_rp(cell("key"))
            if rp is None:
                continue
            guid, key_id = _identify(cell("key_id"))
            if guid is None and key_id is None:  # AD: CN=<date>{<recovery GUID>},CN=<computer>
                guid = _parse_guid_text(cell("dn"))
            entries.append(KeyringEntry(
                SecretKind.RECOVERY_PASSWORD, rp, name, f"row {number}", guid=guid, key_id=key_id,
                device=cell("device"), created=cell("date"),
                volume_guid=_parse_guid_text(cell("volume_guid")),
                volume_type=cell("volume_type"), device_id=cell("device_id"),
                format=EscrowFormat.CSV))
        return entries
    return None


# --------------------------------------------------------------------------------------------
# JSON (Microsoft Graph, AD DS)
# --------------------------------------------------------------------------------------------


def _ci(obj: dict[str, Any], *names: str) -> Any:
    """Case- and punctuation-insensitive lookup of the first of ``names`` present."""
    index = {_norm_header(k): v for k, v in obj.items()}
    for n in names:
        value = index.get(_norm_header(n))
        if value not in (None, "", []):
            return value
    return None


def _json_records(doc: Any, label: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Objects of a JSON document with a label (``value[3]``); unwraps ``{"value": [...]}``."""
    if isinstance(doc, list):
        for i, item in enumerate(doc):
            yield from _json_records(item, f"{label}[{i}]")
        return
    if not isinstance(doc, dict):
        return
    for wrapper in ("value", "Value", "keys", "recoveryKeys", "items", "results"):
        inner = doc.get(wrapper)
        if isinstance(inner, list):
            yield from _json_records(inner, f"{label}.{wrapper}" if label else wrapper)
            return
    yield label or "object", doc


def _from_json(doc: Any, name: str) -> list[KeyringEntry]:
    entries: list[KeyringEntry] = []
    for entry_name, rec in _json_records(doc):
        ad_rp = _ci(rec, "msFVE-RecoveryPassword")
        if ad_rp is not None or _ci(rec, "msFVE-KeyPackage") is not None:
            entry = _ad_entry(rec, name, entry_name, EscrowFormat.AD_JSON)
        else:
            rp = _normalise_rp(_ci(rec, "key", "recoveryKey", "recoveryPassword", "password"))
            if rp is None:
                continue
            guid, key_id = _identify(_ci(rec, "id", "keyId", "recoveryKeyId", "identifier"))
            entry = KeyringEntry(
                SecretKind.RECOVERY_PASSWORD, rp, name, entry_name, guid=guid, key_id=key_id,
                device=_ci(rec, "deviceName", "computerName", "device"),
                created=_ci(rec, "createdDateTime", "created", "date"),
                volume_type=_ci(rec, "volumeType"), device_id=_ci(rec, "deviceId"),
                format=EscrowFormat.GRAPH_JSON)
        if entry is not None:
            entries.append(entry)
    return entries


def _ad_entry(rec: dict[str, Any], name: str, entry_name: str, fmt: EscrowFormat
              ) -> KeyringEntry | None:
    rp = _normalise_rp(_ci(rec, "msFVE-RecoveryPassword"))
    guid = _parse_guid_binary(_ci(rec, "msFVE-RecoveryGuid"))
    dn = _ci(rec, "dn", "distinguishedName", "DistinguishedName")
    if guid is None:  # the object's name is "<date>{<recovery GUID>}"
        guid = _parse_guid_text(_ci(rec, "name", "cn")) or _parse_guid_text(dn)
    package = _parse_binary(_ci(rec, "msFVE-KeyPackage"))
    if rp is None and package is None:
        return None
    kind = SecretKind.RECOVERY_PASSWORD if rp is not None else SecretKind.KEY_PACKAGE
    device = None
    if isinstance(dn, str):
        # CN=<date>{GUID},CN=<computer>,OU=...: the parent CN is the computer.
        parts = [p.split("=", 1)[1] for p in re.split(r"(?<!\\),", dn) if "=" in p]
        if len(parts) > 1:
            device = parts[1]
        entry_name = f"{entry_name} ({dn.split(',', 1)[0]})"
    created = _ci(rec, "whenCreated", "created", "Created")
    if created is None:
        m = re.match(r"(\d{4}-\d\d-\d\dT[\d:]+[-+]\d\d:\d\d)", str(_ci(rec, "name", "cn") or ""))
        created = m.group(1) if m else None
    return KeyringEntry(kind, rp, name, entry_name, guid=guid, device=device,
                        created=str(created) if created else None,
                        volume_guid=_parse_guid_binary(_ci(rec, "msFVE-VolumeGuid")),
                        format=fmt, key_package=package)


# --------------------------------------------------------------------------------------------
# LDIF
# --------------------------------------------------------------------------------------------


def _looks_like_ldif(text: str) -> bool:
    return re.search(r"^(dn|msFVE-[A-Za-z]+)::? ", text, re.MULTILINE | re.IGNORECASE) \
        is not None


def _ldif_records(text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    record: dict[str, Any] = {}
    start = 0
    unfolded: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith(" ") and unfolded:
            unfolded[-1] = (unfolded[-1][0], unfolded[-1][1] + line[1:])
        else:
            unfolded.append((number, line))
    for number, line in unfolded:
        if not line.strip():
            if record:
                yield start, record
            record = {}
            continue
        if line.startswith("#"):
            continue
        m = re.match(r"([A-Za-z0-9;.-]+)(::?)\s?(.*)$", line)
        if not m:
            continue
        attr, sep, value = m.groups()
        if not record:
            start = number
        if sep == "::":
            try:
                raw = base64.b64decode(value.strip())
            except (binascii.Error, ValueError):
                continue
            if attr.lower() in ("msfve-recoverypassword", "dn", "name", "cn"):
                record[attr] = raw.decode("utf-8", errors="replace")
            else:
                record[attr] = list(raw)  # binary: kept as byte values
        else:
            record[attr] = value
    if record:
        yield start, record


def _from_ldif(text: str, name: str) -> list[KeyringEntry]:
    entries: list[KeyringEntry] = []
    for number, rec in _ldif_records(text):
        entry = _ad_entry(rec, name, f"line {number}", EscrowFormat.LDIF)
        if entry is not None:
            entries.append(entry)
    return entries


# --------------------------------------------------------------------------------------------
# Free text (Windows recovery key file, manage-bde output, notes)
# --------------------------------------------------------------------------------------------


def _from_text(text: str, name: str) -> list[KeyringEntry]:
    ids: list[tuple[int, uuid.UUID | None, str | None]] = []
    for m in _GUID_RE.finditer(text):
        ids.append((m.start(), uuid.UUID(m.group(1)), None))
    guid_spans = [(m.start(), m.end()) for m in _GUID_RE.finditer(text)]
    for m in re.finditer(r"(?i)(?:key\s*id|identifier|\bID)\s*[:=]?\s*([0-9A-F]{8})\b", text):
        if not any(s <= m.start(1) < e for s, e in guid_spans):
            ids.append((m.start(1), None, m.group(1).upper()))
    ids.sort(key=lambda item: item[0])
    file_guid = _parse_guid_text(name)
    entries: list[KeyringEntry] = []
    for m in _RP_RE.finditer(text):
        rp = _normalise_rp(m.group(1))
        before = [i for i in ids if i[0] < m.start()]
        guid, key_id = (before[-1][1], before[-1][2]) if before else (file_guid, None)
        line = text.count("\n", 0, m.start()) + 1
        entries.append(KeyringEntry(SecretKind.RECOVERY_PASSWORD, rp, name, f"line {line}",
                                    guid=guid, key_id=key_id, format=EscrowFormat.TEXT))
    return entries


__all__ = ["COLUMNS", "EscrowFormat", "KeyPackageGiven", "KeyringEntry", "decode_text",
           "parse_escrow"]
