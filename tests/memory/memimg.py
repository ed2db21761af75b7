"""Test helpers: an AES key expansion written from FIPS-197 independently of bdekit.memory, and
memory images built from the published container layouts (LiME, Windows crash dumps)."""

from __future__ import annotations

import struct

import numpy as np


def _gf_mul(a: int, b: int) -> int:
    out = 0
    while b:
        if b & 1:
            out ^= a
        a = ((a << 1) ^ 0x11B) if a & 0x80 else a << 1
        b >>= 1
    return out


def _sbox_entry(x: int) -> int:
    inv = 1
    for _ in range(254):  # x^254 is the inverse in GF(2^8) (0 maps to 0)
        inv = _gf_mul(inv, x)
    inv = inv if x else 0
    out = 0x63
    for shift in range(5):
        out ^= ((inv << shift) | (inv >> (8 - shift))) & 0xFF
    return out


SBOX = bytes(_sbox_entry(x) for x in range(256))


def expand(key: bytes) -> bytes:
    """FIPS-197 5.2 KeyExpansion, bytes in, bytes out."""
    nk = len(key) // 4
    rounds = nk + 6
    words = [key[4 * i:4 * i + 4] for i in range(nk)]
    rcon = 1
    for i in range(nk, 4 * (rounds + 1)):
        temp = words[i - 1]
        if i % nk == 0:
            temp = bytes(SBOX[b] for b in temp[1:] + temp[:1])
            temp = bytes([temp[0] ^ rcon]) + temp[1:]
            rcon = _gf_mul(rcon, 2)
        elif nk > 6 and i % nk == 4:
            temp = bytes(SBOX[b] for b in temp)
        words.append(bytes(a ^ b for a, b in zip(words[i - nk], temp, strict=True)))
    return b"".join(words)


def _inv_mix(column: bytes) -> bytes:
    m = ((14, 11, 13, 9), (9, 14, 11, 13), (13, 9, 14, 11), (11, 13, 9, 14))
    out = []
    for row in m:
        acc = 0
        for coef, byte in zip(row, column, strict=True):
            acc ^= _gf_mul(byte, coef)
        out.append(acc)
    return bytes(out)


def inverse_schedule(schedule: bytes) -> bytes:
    """The equivalent inverse cipher's schedule (FIPS-197 5.3.5): round keys in reverse order,
    InvMixColumns on all but the first and last."""
    rounds = [schedule[i:i + 16] for i in range(0, len(schedule), 16)][::-1]
    out = [rounds[0]]
    for rk in rounds[1:-1]:
        out.append(b"".join(_inv_mix(rk[c:c + 4]) for c in range(0, 16, 4)))
    out.append(rounds[-1])
    return b"".join(out)


def noise_memory(size: int, seed: int) -> bytearray:
    """Pages of random bytes, English text, zeros, small integers and decoy key schedules."""
    rng = np.random.default_rng(seed)
    text = (b"The quick brown fox jumps over the lazy dog. BitLocker memory image test. " * 64)
    buf = bytearray(size)
    for page in range(size // 4096):
        kind = page % 5
        at = page * 4096
        if kind == 0:
            buf[at:at + 4096] = rng.bytes(4096)
        elif kind == 1:
            buf[at:at + 4096] = text[:4096]
        elif kind == 2:
            buf[at:at + 4096] = np.arange(1024, dtype="<u4").tobytes()
        elif kind == 3:
            decoy = expand(rng.bytes(16 if page % 2 else 32))
            buf[at + 100:at + 100 + len(decoy)] = decoy
    return buf


def lime(ranges: list[tuple[int, bytes]]) -> bytes:
    """A LiME file: per range a 32-byte header (magic, version 1, start, inclusive end, 0)."""
    out = bytearray()
    for start, data in ranges:
        out += struct.pack("<IIQQQ", 0x4C694D45, 1, start, start + len(data) - 1, 0)
        out += data
    return bytes(out)


def crash_full64(runs: list[tuple[int, bytes]]) -> bytes:
    """A 64-bit full crash dump: PAGE DU64 header (0x2000), runs at 0x88/0x98, type 1."""
    header = bytearray(b"PAGE" * 0x800)
    header[0:8] = b"PAGEDU64"
    pages = sum(len(d) // 4096 for _, d in runs)
    struct.pack_into("<IIQ", header, 0x88, len(runs), 0, pages)
    for i, (base, data) in enumerate(runs):
        struct.pack_into("<QQ", header, 0x98 + 16 * i, base // 4096, len(data) // 4096)
    struct.pack_into("<I", header, 0xF98, 1)
    return bytes(header) + b"".join(d for _, d in runs)


def crash_full32(runs: list[tuple[int, bytes]]) -> bytes:
    """A 32-bit full crash dump: PAGE DUMP header (0x1000), runs at 0x64/0x6C, type 1."""
    header = bytearray(b"PAGE" * 0x400)
    header[0:8] = b"PAGEDUMP"
    pages = sum(len(d) // 4096 for _, d in runs)
    struct.pack_into("<II", header, 0x64, len(runs), pages)
    for i, (base, data) in enumerate(runs):
        struct.pack_into("<II", header, 0x6C + 8 * i, base // 4096, len(data) // 4096)
    struct.pack_into("<I", header, 0xF88, 1)
    return bytes(header) + b"".join(d for _, d in runs)


def crash_bitmap64(pages: dict[int, bytes], bits: int, dump_type: int = 5) -> bytes:
    """A 64-bit bitmap dump: PAGE DU64 header, FDMP DUMP header at 0x2000 (first page offset
    at +0x20, present pages at +0x28, bit count at +0x30, bitmap at +0x38), pages in order."""
    header = bytearray(b"PAGE" * 0x800)
    header[0:8] = b"PAGEDU64"
    struct.pack_into("<I", header, 0x88, 0x45474150)  # no runs: the PAGE filler
    struct.pack_into("<I", header, 0xF98, dump_type)
    bitmap = bytearray((bits + 7) // 8)
    for pfn in pages:
        bitmap[pfn // 8] |= 1 << (pfn % 8)
    second = bytearray(0x38)
    second[0:8] = b"FDMPDUMP"
    first = 0x2000 + 0x38 + len(bitmap)
    first += -first % 4096
    struct.pack_into("<QQQ", second, 0x20, first, len(pages), bits)
    head = bytes(header) + bytes(second) + bytes(bitmap)
    return head.ljust(first, b"\0") + b"".join(pages[p] for p in sorted(pages))
