"""A minimal Windows registry hive (regf) writer for tests: keys and REG_BINARY values only.

Written for these tests from the public description of the regf format (base block, one hive
bin, nk / lh / vk / sk cells); bdekit has no hive writer of its own, and the hives are read back
with regipy, an independent parser.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

REG_BINARY = 3
_NONE = 0xFFFFFFFF
_HBIN_HEADER = 32
# a self-relative security descriptor without owner, group or ACLs
_SECURITY_DESCRIPTOR = struct.pack("<BBHIIII", 1, 0, 0x8004, 0, 0, 0, 0)


@dataclass
class Key:
    name: str
    subkeys: list[Key] = field(default_factory=list)
    values: dict[str, bytes] = field(default_factory=dict)

    def child(self, name: str) -> Key:
        for sub in self.subkeys:
            if sub.name.lower() == name.lower():
                return sub
        sub = Key(name)
        self.subkeys.append(sub)
        return sub

    def path(self, path: str) -> Key:
        key = self
        for part in path.strip("\\").split("\\"):
            key = key.child(part)
        return key


class _Bin:
    def __init__(self) -> None:
        self.data = bytearray()

    def alloc(self, payload: bytes) -> int:
        """Append an allocated cell; its offset relative to the first hive bin."""
        size = (len(payload) + 4 + 7) // 8 * 8
        offset = _HBIN_HEADER + len(self.data)
        self.data += struct.pack("<i", -size) + payload + bytes(size - 4 - len(payload))
        return offset

    def patch(self, offset: int, fmt: str, pos: int, *values: int) -> None:
        struct.pack_into(fmt, self.data, offset - _HBIN_HEADER + 4 + pos, *values)


def _lh_hash(name: str) -> int:
    value = 0
    for ch in name.upper():
        value = (value * 37 + ord(ch)) & 0xFFFFFFFF
    return value


def _write_key(hbin: _Bin, key: Key, parent: int, nks: list[int], root: bool) -> int:
    name = key.name.encode("ascii")
    flags = 0x2C if root else 0x20
    nk = struct.pack("<2sHQ" + "I" * 15 + "HH", b"nk", flags, 0, 0, parent, len(key.subkeys), 0,
                     _NONE, _NONE, len(key.values), _NONE, _NONE, _NONE,
                     max((len(s.name) * 2 for s in key.subkeys), default=0), 0,
                     max((len(v) * 2 for v in key.values), default=0),
                     max((len(v) for v in key.values.values()), default=0), 0, len(name), 0)
    offset = hbin.alloc(nk + name)
    nks.append(offset)
    if key.values:
        vks = []
        for vname, data in key.values.items():
            data_off = hbin.alloc(data)
            raw = vname.encode("ascii")
            vks.append(hbin.alloc(struct.pack("<2sHIIIHH", b"vk", len(raw), len(data), data_off,
                                              REG_BINARY, 1, 0) + raw))
        hbin.patch(offset, "<I", 40, hbin.alloc(struct.pack(f"<{len(vks)}I", *vks)))
    if key.subkeys:
        children = sorted(key.subkeys, key=lambda k: k.name.upper())
        entries = [(_write_key(hbin, sub, offset, nks, False), _lh_hash(sub.name))
                   for sub in children]
        lh = struct.pack("<2sH", b"lh", len(entries)) + b"".join(
            struct.pack("<II", off, h) for off, h in entries)
        hbin.patch(offset, "<I", 28, hbin.alloc(lh))
    return offset


def build_hive(root: Key) -> bytes:
    """The hive file of the key tree ``root``."""
    hbin = _Bin()
    nks: list[int] = []
    root_off = _write_key(hbin, root, _NONE, nks, True)  # the first cell of the first bin
    security = hbin.alloc(struct.pack("<2sHIIII", b"sk", 0, 0, 0, len(nks),
                                      len(_SECURITY_DESCRIPTOR)) + _SECURITY_DESCRIPTOR)
    hbin.patch(security, "<II", 4, security, security)  # flink, blink: itself
    for nk in nks:
        hbin.patch(nk, "<I", 44, security)
    used = _HBIN_HEADER + len(hbin.data)
    size = (used + 4095) // 4096 * 4096
    free = size - used
    if free:
        hbin.data += struct.pack("<i", free) + bytes(free - 4)
    header = struct.pack("<4sIIQIIQI", b"hbin", 0, size, 0, 0, 0, 0, 0)[:_HBIN_HEADER]
    base = bytearray(4096)
    struct.pack_into("<4sIIQIIIIIII", base, 0, b"regf", 1, 1, 0, 1, 5, 0, 1, root_off, size, 1)
    base[48:48 + 14] = "SYSTEM".encode("utf-16-le") + bytes(2)
    checksum = 0
    for (word,) in struct.iter_unpack("<I", bytes(base[:508])):
        checksum ^= word
    struct.pack_into("<I", base, 508, checksum or 1)
    return bytes(base) + header + bytes(hbin.data)


def system_hive(values: dict[str, bytes], control_sets: tuple[str, ...] = ("ControlSet001",)
                ) -> bytes:
    """A SYSTEM hive with an FVEAutoUnlock ``Data`` value per ``{GUID}`` key name."""
    root = Key("ROOT")
    root.path("Select").values["Current"] = struct.pack("<I", 1)
    for control_set in control_sets:
        base = root.path(f"{control_set}\\Control\\FVEAutoUnlock")
        for name, data in values.items():
            base.child(name).values["Data"] = data
    return build_hive(root)
