"""FVEK structures and key datums that Windows leaves in memory, by Windows version.

Pool blocks (tag at +4 of the pool header: 16-byte headers on x64, 8-byte on x86; pool blocks
are 8- or 16-byte aligned, so tags are found on the chunk's 4-byte grid):

* ``FVEc`` (Vista, 7): the FVE context. x64: method u16 at body + 0x1C, FVEK at body + 0x20,
  tweak key at body + 0x200; x86: body + 0x10, + 0x18, + 0x1F0. Methods 0x8000..0x8003 (the
  low byte <= 3); keys of 16 bytes for 0x8000/0x8002, 32 for 0x8001/0x8003; a tweak key only
  with the diffuser (0x8000/0x8001).
* ``Cngb`` (8, 8.1): a CNG key object; x64: the key at header + 0x6C and a copy at + 0x90
  (x86: + 0x4C and + 0x9C); the first 16 (AES-128) or 32 (AES-256) bytes agree.
* BCrypt key objects of ``None`` pool blocks (10, 11; 8 as well): the marker ``RUUU`` and 0x20
  bytes later ``KSSM``. From the marker, x64 (and x86 after build 17134): key length u32 at
  + 0x54 (16, 32 or 64), key at + 0x58, a copy at + 0x7C for CBC keys or at + 0x9C for XTS
  keys; x86 up to build 17134: + 0x50, + 0x54, + 0x78, + 0x98. An XTS key of 32 / 64 bytes
  is the data key followed by the tweak key.

Key datums (the plaintext of AES-CCM datums, kept after unwrapping): ``u16 size, u16 role,
u16 type = 1, u16 version (0 or 1), u16 key type, u16 flags, key``. A VMK datum is 0x2C bytes
with key type 0x20xx and 32 key bytes; an FVEK datum is 0x1C / 0x2C / 0x4C bytes with key type
0x8000..0x8005 (the method). Datums lie on 2-byte boundaries.

Every hit is only a candidate: :mod:`.validate` decides against the volume.
"""

from __future__ import annotations

import dataclasses
import struct

import numpy as np

from bdekit.escrow.secrets import SecretKind

#: Bytes a structure can reach beyond its anchor (the overlap chunked readers keep).
MAX_SPAN = 0x400

_TAG_FVEC = int.from_bytes(b"FVEc", "little")
_TAG_CNGB = int.from_bytes(b"Cngb", "little")
_MARK_RUUU = int.from_bytes(b"RUUU", "little")
_FVEK = SecretKind.FVEK


@dataclasses.dataclass(frozen=True)
class StructureHit:
    """A key found in a structure at ``offset`` (of the buffer searched)."""

    offset: int
    how: str
    kind: SecretKind  # FVEK or VMK
    keys: tuple[bytes, ...]  # one key, or the data key and the tweak key
    method: int | None = None  # the method the structure names, if any


class StructureSearch:
    """Searches buffers; keeps its scratch arrays between calls (bounded by the chunk size)."""

    def __init__(self) -> None:
        self._scratch: list[np.ndarray] = []

    def _buffers(self, n: int) -> list[np.ndarray]:
        if not self._scratch or len(self._scratch[0]) < n:
            self._scratch = [np.empty(n, np.bool_), np.empty(n, np.bool_),
                             np.empty(n, np.uint16)]
        return self._scratch

    def search(self, data: bytes | bytearray | memoryview, limit: int | None = None
               ) -> list[StructureHit]:
        """Pool structures and key datums whose anchor lies before ``limit``."""
        buf = memoryview(data).cast("B")
        limit = len(buf) if limit is None else limit
        words = np.frombuffer(buf, dtype="<u4", count=len(buf) // 4)
        mask, tmp, _ = self._buffers(len(buf) // 2)
        m, t = mask[:len(words)], tmp[:len(words)]
        np.equal(words, _TAG_FVEC, out=m)
        for value in (_TAG_CNGB, _MARK_RUUU):
            np.equal(words, value, out=t)
            np.logical_or(m, t, out=m)
        hits: list[StructureHit] = []
        for index in np.flatnonzero(m):
            pos = int(index) * 4
            if pos >= limit:
                break
            tag = bytes(buf[pos:pos + 4])
            if tag == b"FVEc":
                hits += _fvec(buf, pos)
            elif tag == b"Cngb":
                hits += _cngb(buf, pos)
            else:
                hits += _bcrypt(buf, pos)
        hits += self._datums(buf, limit)
        return hits

    def _datums(self, buf: memoryview, limit: int) -> list[StructureHit]:
        lanes = np.frombuffer(buf, dtype="<u2", count=len(buf) // 2)
        n = len(lanes) - 6
        if n <= 0:
            return []
        mask, tmp, low = (a[:n] for a in self._buffers(len(buf) // 2))
        np.bitwise_and(lanes[:n], 0xFF8F, out=low)
        np.equal(low, 0x000C, out=mask)
        np.equal(lanes[2:n + 2], 1, out=tmp)
        np.logical_and(mask, tmp, out=mask)
        out = []
        for index in np.flatnonzero(mask):
            pos = int(index) * 2
            if pos >= limit:
                break
            hit = _datum(buf, pos)
            if hit is not None:
                out.append(hit)
        return out


def search_structures(data: bytes | bytearray | memoryview, limit: int | None = None
                      ) -> list[StructureHit]:
    """One-off :meth:`StructureSearch.search`."""
    return StructureSearch().search(data, limit)


def _key_ok(key: bytes) -> bool:
    return len(set(key)) > len(key) // 4


def _fvec(buf: memoryview, tag: int) -> list[StructureHit]:
    out = []
    for arch, body, m_off, k_off, t_off in (("x64", tag + 12, 0x1C, 0x20, 0x200),
                                            ("x86", tag + 4, 0x10, 0x18, 0x1F0)):
        if body + t_off + 32 > len(buf):
            continue
        method = struct.unpack_from("<H", buf, body + m_off)[0]
        if method >> 8 != 0x80 or method & 0xFF > 3:
            continue
        size = 16 if method in (0x8000, 0x8002) else 32
        key = bytes(buf[body + k_off:body + k_off + size])
        if not _key_ok(key):
            continue
        keys: tuple[bytes, ...] = (key,)
        if method in (0x8000, 0x8001):
            tweak = bytes(buf[body + t_off:body + t_off + size])
            if not _key_ok(tweak):
                continue
            keys = (key, tweak)
        out.append(StructureHit(tag - 4, f"pool tag FVEc ({arch}, Windows Vista/7)", _FVEK,
                                keys, method))
    return out


def _cngb(buf: memoryview, tag: int) -> list[StructureHit]:
    out = []
    header = tag - 4
    for arch, a, b in (("x64", 0x6C, 0x90), ("x86", 0x4C, 0x9C)):
        if header < 0 or header + b + 32 > len(buf):
            continue
        first = bytes(buf[header + a:header + a + 32])
        second = bytes(buf[header + b:header + b + 32])
        size = 32 if first == second else 16 if first[:16] == second[:16] else 0
        if size and _key_ok(first[:size]):
            out.append(StructureHit(header, f"pool tag Cngb ({arch}, Windows 8/8.1)", _FVEK,
                                    (first[:size],)))
    return out


def _bcrypt(buf: memoryview, mark: int) -> list[StructureHit]:
    if bytes(buf[mark + 0x20:mark + 0x24]) != b"KSSM":
        return []
    out = []
    for arch, len_off in (("x64", 0x54), ("x86 up to build 17134", 0x50)):
        key_off, xts_off = len_off + 4, len_off + 0x48  # the CBC copy: + 0x28
        if mark + xts_off + 32 > len(buf):
            continue
        size = struct.unpack_from("<I", buf, mark + len_off)[0]
        if size not in (16, 32, 64) or mark + key_off + size > len(buf):
            continue
        key = bytes(buf[mark + key_off:mark + key_off + size])
        if not _key_ok(key):
            continue
        half = size // 2
        if size == 64 or bytes(buf[mark + xts_off:mark + xts_off + 16]) == key[:16]:
            # XTS: data key and tweak key (a 32-byte key may also be a CBC-256 key)
            out.append(StructureHit(mark, f"BCrypt key object, pool tag None/Cngb ({arch}, "
                                    "Windows 8-11), XTS", _FVEK, (key[:half], key[half:])))
        if size in (16, 32):
            out.append(StructureHit(mark, f"BCrypt key object, pool tag None/Cngb ({arch}, "
                                    "Windows 8-11)", _FVEK, (key,)))
        if out:
            break
    return out


def _datum(buf: memoryview, pos: int) -> StructureHit | None:
    size, _role, _type, version, key_type = struct.unpack_from("<5H", buf, pos)
    if version > 1 or size not in (0x1C, 0x2C, 0x4C) or pos + size > len(buf):
        return None
    key = bytes(buf[pos + 12:pos + size])
    if not _key_ok(key):
        return None
    if key_type >> 8 == 0x20 and size == 0x2C:
        return StructureHit(pos, "VMK key datum", SecretKind.VMK, (key,))
    if 0x8000 <= key_type <= 0x8005:
        return StructureHit(pos, "FVEK key datum", _FVEK, _split_fvek(key, key_type),
                            key_type)
    return None


def _split_fvek(key: bytes, method: int) -> tuple[bytes, ...]:
    """The AES keys an FVEK datum holds: its layout per method (see the format notes)."""
    if method in (0x8000, 0x8001) and len(key) == 64:
        size = 16 if method == 0x8000 else 32
        return key[:size], key[32:32 + size]
    if method in (0x8004, 0x8005):
        half = len(key) // 2
        return key[:half], key[half:]
    return (key[:16] if method == 0x8002 else key,)
