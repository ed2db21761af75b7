#!/usr/bin/env python3
"""Measure the throughput of bdekit's sector ciphers, one thread, in MB/s (10^6 bytes/s).

Prints, for each encryption method and direction, the median speed of
``SectorCipher.decrypt`` / ``encrypt`` on the pure numpy path and on the native kernel, over
chunks of ``--chunk-mib`` MiB of ``--sector-size``-byte sectors (into a second buffer, or in
place with ``--inplace``), plus two references: raw OpenSSL AES-ECB over the same chunk (the
ceiling for any mode) and AES-XTS done the obvious way, one ``cryptography`` XTS call per
sector.

    python tools/bench_ciphers.py [--chunk-mib 4] [--sector-size 512] [--seconds 1.0] [--inplace]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from bdekit.crypto.ciphers import make_cipher, native_available
from bdekit.format.constants import EncryptionMethod


def rate(fn: Callable[[], None], nbytes: int, seconds: float) -> float:
    """MB/s of ``fn`` processing ``nbytes`` per call: median over calls for ``seconds``."""
    fn()  # warm up: scratch buffers, plans, OpenSSL contexts
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while not times or time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return nbytes / statistics.median(times) / 1e6


def xts_per_sector(key: bytes, buf: bytearray, sector_size: int, first_sector: int) -> None:
    """Reference: XTS-decrypt ``buf`` in place with one cryptography call per sector."""
    view = memoryview(buf)
    algorithm = algorithms.AES(key)
    for k in range(len(buf) // sector_size):
        tweak = (first_sector + k).to_bytes(16, "little")
        ctx = Cipher(algorithm, modes.XTS(tweak)).decryptor()
        part = view[k * sector_size:(k + 1) * sector_size]
        part[:] = ctx.update(part)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk-mib", type=float, default=4.0)
    parser.add_argument("--sector-size", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--inplace", action="store_true", help="decrypt a buffer into itself")
    args = parser.parse_args()
    ss = args.sector_size
    size = int(args.chunk_mib * (1 << 20)) // ss * ss
    offset = 1 << 30
    buf = bytearray(os.urandom(size))
    out = buf if args.inplace else bytearray(size + 16)
    where = "in place" if args.inplace else "into a second buffer"
    print(f"chunk {size / (1 << 20):g} MiB, {ss}-byte sectors, {where}, one thread, MB/s")

    raw = Cipher(algorithms.AES(os.urandom(16)), modes.ECB()).decryptor()
    ecb_out = bytearray(size + 16)
    ecb = rate(lambda: raw.update_into(buf, ecb_out), size, args.seconds)
    print(f"{'openssl aes-128-ecb (reference)':34s} {ecb:9.0f}")

    key = os.urandom(32)
    small = bytearray(buf[: min(size, 4 << 20)])
    per_sector = rate(lambda: xts_per_sector(key, small, ss, offset // ss), len(small),
                      args.seconds)
    print(f"{'xts-128 per-sector cryptography':34s} {per_sector:9.0f}")

    dst = memoryview(out)[:size]
    paths = [True, False] if native_available() else [True]
    print(f"{'':34s} " + " ".join(f"{'pure' if p else 'native':>9s}" for p in paths))
    for method in EncryptionMethod:
        key = os.urandom(max(method.fvek_size, 16))
        for direction in ("decrypt", "encrypt"):
            rates = []
            for pure in paths:
                cipher = make_cipher(method, key, ss, pure=pure)
                fn = getattr(cipher, direction)
                rates.append(rate(lambda f=fn: f(buf, dst, offset), size, args.seconds))
            print(f"{method.label + ' ' + direction:34s} "
                  + " ".join(f"{r:9.0f}" for r in rates))


if __name__ == "__main__":
    main()
