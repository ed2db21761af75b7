"""The kinds of ranges a map shows: label, colour, black-and-white texture, drawing priority.

A range comes from a report as a dict with ``offset``, ``length`` and a ``kind`` and/or a
``reason``.  :func:`classify` names its kind: an explicit ``kind`` that is known wins; else
keywords of the reason (and of the list it came from: ``damaged``, ``guessed`` ...) decide;
anything else is ``other``, drawn in a generic colour and labelled with its own reason text, so
kinds added to the reports later show up without a change here.

*Base* kinds describe what a range of the volume is (decrypted, plaintext, metadata copy ...);
*overlay* kinds say what went wrong or was decided (missing, unreadable, guessed, rebuilt,
other) and are drawn over the base, higher ``rank`` first: a map cell holding a single damaged
sector takes the damage colour, so no damage is hidden by aggregation.

Every kind has a texture (an SVG pattern of black strokes over its colour) that the print
stylesheet uses, so that the map stays legible on a black-and-white printer.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class Kind:
    key: str
    label: str
    colour: str
    texture: str
    overlay: bool = False
    rank: int = 0


_K = Kind
KINDS: dict[str, Kind] = {k.key: k for k in [
    # what the volume holds (base)
    _K("decrypted", "Encrypted on disk, decrypted", "#5aa469", "blank"),
    _K("plain", "Plaintext on disk (not encrypted)", "#b5dcae", "dots"),
    _K("unwritten", "Never written (zeros)", "#eeeeee", "hlines"),
    _K("zero", "Reads as zeros", "#d7dde2", "hlines"),
    _K("metadata", "Metadata copy (reads as zeros)", "#3d6fb6", "solid"),
    _K("relocated-block", "Relocated boot sectors stored here (reads as zeros)", "#6b4fa0",
       "grid"),
    _K("relocated", "Boot sectors (served from the relocated block)", "#b9a4e0", "diag"),
    _K("vista-header", "Vista header (boot sector restored)", "#b9a4e0", "diag"),
    _K("eow", "Used-space-only conversion structures (read as zeros)", "#7fa6e0", "vlines"),
    _K("mixed", "Mixed (short ranges of several kinds)", "#9aa59a", "checks"),
    _K("unknown", "Not decrypted (locked)", "#f4f4f4", "blank"),
    # disks (scan)
    _K("bitlocker", "BitLocker volume", "#5aa469", "diag"),
    _K("partition", "Other partition", "#c9d3dd", "dots"),
    _K("extended", "Extended partition", "#e3e8ee", "blank"),
    _K("unpartitioned", "Not in any partition", "#f4f4f4", "blank"),
    # what went wrong or was decided (overlay)
    _K("rebuilt", "Rebuilt (from a backup or redundancy)", "#1fa0a0", "rdiag", True, 10),
    _K("stray-metadata", "BitLocker metadata block (outside a recognised volume)", "#3d6fb6",
       "solid", True, 15),
    _K("guessed", "Guessed (inferred, not verified)", "#f2cf3b", "ddots", True, 20),
    _K("other", "Other", "#c2185b", "cross", True, 30),
    _K("missing", "Missing (beyond the end of the capture)", "#f08c2e", "xhatch", True, 40),
    _K("unreadable", "Unreadable (I/O error, or not rescued per the input mapfile)",
       "#d32f2f", "black", True, 50),
]}

#: Keywords of a reason (or of the name of the list holding it) -> kind, first match wins.
_KEYWORDS: list[tuple[str, tuple[str, ...]]] = [
    ("missing", ("missing", "beyond the end", "truncat")),
    ("unreadable", ("unreadable", "not rescued", "i/o error", "bad sector", "read error")),
    ("guessed", ("guess", "inferred", "assumed", "statistic", "entropy", "chi-square")),
    ("rebuilt", ("rebuilt", "reconstruct", "restored from", "from the backup")),
    ("unwritten", ("never written", "unwritten")),
]

#: JSON keys whose values are secrets: never rendered, whatever a report holds.
SECRET_KEYS = frozenset({"fvek", "vmk", "password", "passwords", "recovery_password",
                         "recovery_passwords", "recovery_key", "clear_key", "secret", "secrets",
                         "key", "keys", "protector_key", "startup_key_data"})


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "other"


def classify(item: Mapping[str, Any], hint: str = "", overlay: bool = True) -> str:
    """The kind key of a range dict (see the module docstring)."""
    explicit = item.get("kind")
    if isinstance(explicit, str) and slug(explicit) in KINDS:
        return slug(explicit)
    reason = str(item.get("reason") or "")
    text = f"{reason} {explicit or ''}".lower()
    for key, words in _KEYWORDS:
        if any(w in text for w in words):
            return key
    hint_text = hint.lower()
    for key, words in _KEYWORDS:
        if any(w in hint_text for w in words):
            return key
    return "other" if overlay or explicit or reason else "unknown"


def label_of(item: Mapping[str, Any], kind: str) -> str:
    """The legend label of a range: the kind's, or for ``other`` its own kind / reason."""
    if kind == "other":
        explicit = item.get("kind")
        if isinstance(explicit, str) and explicit and slug(explicit) not in KINDS:
            return explicit
        return str(item.get("reason") or "Other")
    return KINDS[kind].label


def kind(key: str) -> Kind:
    return KINDS.get(key, KINDS["other"])


#: SVG pattern bodies (6 x 6 tiles, black strokes) of the textures.
TEXTURES: dict[str, str] = {
    "blank": "",
    "solid": '<rect width="6" height="6" fill="#555"/>',
    "black": '<rect width="6" height="6" fill="#000"/>',
    "dots": '<circle cx="3" cy="3" r="0.8" fill="#000"/>',
    "ddots": '<circle cx="1.5" cy="1.5" r="0.9" fill="#000"/>'
             '<circle cx="4.5" cy="4.5" r="0.9" fill="#000"/>',
    "hlines": '<path d="M0 3H6" stroke="#000" stroke-width="0.8"/>',
    "vlines": '<path d="M3 0V6" stroke="#000" stroke-width="0.8"/>',
    "grid": '<rect width="6" height="6" fill="#555"/>'
            '<path d="M0 3H6M3 0V6" stroke="#fff" stroke-width="0.8"/>',
    "diag": '<path d="M0 6L6 0M-1 1L1 -1M5 7L7 5" stroke="#000" stroke-width="0.8"/>',
    "rdiag": '<path d="M0 0L6 6M-1 5L1 7M5 -1L7 1" stroke="#000" stroke-width="0.8"/>',
    "xhatch": '<path d="M0 6L6 0M0 0L6 6" stroke="#000" stroke-width="1"/>',
    "cross": '<path d="M0 3H6M3 0V6" stroke="#000" stroke-width="1.2"/>',
    "checks": '<rect width="3" height="3" fill="#000"/><rect x="3" y="3" width="3" height="3" '
              'fill="#000"/>',
}
