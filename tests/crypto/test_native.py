"""The native sector kernel (bdekit.crypto._sector) against the pure numpy path.

The pure path is the reference here (it is itself held to published vectors, cryptography's
own modes and a literal transcription of the diffuser in test_ciphers.py, which also runs every
one of its tests on the native path). These tests compare the two over random chunk offsets
and lengths, both directions, both sector sizes, in place and not, tile boundaries, several
threads, and every instruction-set build of the diffuser this CPU runs. They skip when the
extension is not built.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bdekit.crypto import native
from bdekit.crypto.ciphers import make_cipher
from bdekit.format.constants import EncryptionMethod

pytestmark = pytest.mark.skipif(not native.available(),
                                reason="the native sector kernel is not built")

M = EncryptionMethod
METHODS = (M.AES_128_CBC, M.AES_256_CBC, M.AES_128_CBC_DIFFUSER, M.AES_256_CBC_DIFFUSER,
           M.AES_128_XTS, M.AES_256_XTS)


def _isas() -> list[str]:
    if not native.available():
        return ["plain"]
    from bdekit.crypto import _sector  # type: ignore[attr-defined]

    best = _sector.set_isa("avx512vl")
    found = [best] + [isa for isa in ("avx2", "plain") if isa != best]
    usable = list(dict.fromkeys(_sector.set_isa(isa) for isa in found))
    _sector.set_isa("avx512vl")  # collection must leave the best build in use
    return usable


@pytest.fixture(params=_isas())
def isa(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each build of the diffuser the CPU can run (AVX-512VL, AVX2, plain C)."""
    from bdekit.crypto import _sector  # type: ignore[attr-defined]

    assert _sector.set_isa(request.param) == request.param
    yield str(request.param)
    _sector.set_isa("avx512vl")


def pair(method: EncryptionMethod, key: bytes, sector_size: int) -> tuple:  # type: ignore[type-arg]
    pure = make_cipher(method, key, sector_size, pure=True)
    fast = make_cipher(method, key, sector_size, pure=False)
    assert (pure.backend, fast.backend) == ("pure", "native")
    return pure, fast


def both(pure, fast, data: bytes, offset: int, *, encrypt: bool) -> tuple[bytes, bytes]:  # type: ignore[no-untyped-def]
    a = bytearray(len(data))
    b = bytearray(len(data))
    (pure.encrypt if encrypt else pure.decrypt)(data, a, offset)
    (fast.encrypt if encrypt else fast.decrypt)(data, b, offset)
    return bytes(a), bytes(b)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.label)
@pytest.mark.parametrize("sector_size", [512, 4096])
@pytest.mark.parametrize("encrypt", [False, True], ids=["decrypt", "encrypt"])
def test_native_matches_pure(method: EncryptionMethod, sector_size: int, encrypt: bool,
                             isa: str) -> None:
    rng = random.Random(f"{method.label}/{sector_size}/{encrypt}/{isa}")
    key = rng.randbytes(method.fvek_size)
    pure, fast = pair(method, key, sector_size)
    for _ in range(6):
        sectors = rng.choice([1, 2, 7, 8, 9, 17, rng.randrange(1, 80)])
        offset = rng.randrange(2**44 // sector_size) * sector_size
        data = rng.randbytes(sectors * sector_size)
        a, b = both(pure, fast, data, offset, encrypt=encrypt)
        assert a == b, (sectors, offset)


@settings(max_examples=30, deadline=None)
@given(method=st.sampled_from(METHODS), sector_size=st.sampled_from([32, 64, 512, 4096]),
       sectors=st.integers(1, 40), sector_number=st.integers(0, 2**52),
       encrypt=st.booleans(), in_place=st.booleans(), seed=st.integers(0, 2**32))
def test_native_matches_pure_random(method: EncryptionMethod, sector_size: int, sectors: int,
                                    sector_number: int, encrypt: bool, in_place: bool,
                                    seed: int) -> None:
    rng = random.Random(seed)
    pure, fast = pair(method, rng.randbytes(method.fvek_size), sector_size)
    data = rng.randbytes(sectors * sector_size)
    # the last sectors below 2**64 at most (both paths refuse a buffer that passes it)
    offset = min(sector_number, 2**64 // sector_size - sectors) * sector_size
    expected = bytearray(len(data))
    (pure.encrypt if encrypt else pure.decrypt)(data, expected, offset)
    if in_place:
        got = bytearray(data)
        (fast.encrypt if encrypt else fast.decrypt)(got, got, offset)
    else:
        got = bytearray(len(data))
        (fast.encrypt if encrypt else fast.decrypt)(data, got, offset)
    assert got == expected


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.label)
def test_native_tiles_and_large_chunks(method: EncryptionMethod,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of several tiles (default tiles, then tiles of 3 sectors) and a round trip."""
    rng = random.Random(int(method))
    key = rng.randbytes(method.fvek_size)
    data = rng.randbytes(1300 * 512)
    offset = 2**40
    pure, fast = pair(method, key, 512)
    for encrypt in (False, True):
        a, b = both(pure, fast, data, offset, encrypt=encrypt)
        assert a == b
    monkeypatch.setattr(native, "_TILE_BYTES", 3 * 512)
    monkeypatch.setattr(native, "_ENCRYPT_TILE", (5 * 512, 1))
    small = make_cipher(method, key, 512, pure=False)
    part = data[: 40 * 512]
    a, b = both(pure, small, part, offset, encrypt=False)
    assert a == b
    a, b = both(pure, small, part, offset, encrypt=True)
    assert a == b
    back = bytearray(len(b))
    small.decrypt(b, back, offset)
    assert back == part


def test_native_from_several_threads() -> None:
    """One cipher per method shared by three threads, big chunks (the kernel then runs
    without the GIL): every result equals the pure path's."""
    rng = random.Random(9)
    jobs = []
    for method in METHODS:
        key = rng.randbytes(method.fvek_size)
        pure, fast = pair(method, key, 512)
        data = rng.randbytes(600 * 512)
        expected = bytearray(len(data))
        pure.decrypt(data, expected, 512 * 1000)
        jobs.append((fast, data, bytes(expected)))
    errors: list[str] = []

    def worker(order: list[int]) -> None:
        out = bytearray(600 * 512)
        for _ in range(3):
            for i in order:
                cipher, data, expected = jobs[i]
                cipher.decrypt(data, out, 512 * 1000)
                if out != expected:
                    errors.append(repr(cipher))

    threads = [threading.Thread(target=worker, args=(rng.sample(range(len(jobs)), len(jobs)),))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors


def test_kernel_checks_lengths() -> None:
    """The C functions refuse short buffers and bad sizes instead of reading past them."""
    from bdekit.crypto import _sector  # type: ignore[attr-defined]

    with pytest.raises(ValueError):
        _sector.xts_xor(bytes(1024), bytearray(512), bytes(32), 512)
    with pytest.raises(ValueError):
        _sector.xts_xor(bytes(1024), bytearray(1024), bytes(16), 512)
    with pytest.raises(ValueError):
        _sector.cbc_decrypt(bytes(512), bytes(1000), bytes(16), bytearray(1000), 512)
    with pytest.raises(ValueError):
        _sector.diffuser_decrypt(bytes(512), bytes(512), bytes(16), bytes(16), bytearray(512),
                                 512)
    with pytest.raises(ValueError):
        _sector.diffuser_encrypt(bytes(512), bytes(32), bytearray(512), 48)
    with pytest.raises(ValueError):
        _sector.cbc_encrypt_step(bytearray(16), bytes(512), bytearray(512), bytes(16), 33, 512)
    with pytest.raises(ValueError):
        _sector.counters(bytearray(17), 0, 1)
    with pytest.raises(TypeError):
        _sector.xts_xor(bytes(512), bytes(512), bytes(16), 512)  # read-only destination
    block = bytearray(64)
    _sector.counters(block, 2**64 - 1, 1, 7)
    assert block == ((2**64 - 1) | 7 << 64).to_bytes(16, "little") + (7 << 64).to_bytes(
        16, "little") * 1 + (1 | 7 << 64).to_bytes(16, "little") + (2 | 7 << 64).to_bytes(
        16, "little")
    twin = bytearray(32)
    _sector.counters(twin, 4096, 512, 0x80 << 56, True)
    assert twin == (4096).to_bytes(16, "little") + (4096 | 0x80 << 120).to_bytes(16, "little")
    buf = bytearray(100)
    view = memoryview(buf)
    assert _sector.alias(view[:50], view[50:]) == 0
    assert _sector.alias(view[:50], view[:60]) == 1
    assert _sector.alias(view[:50], view[10:60]) == 2


def test_kernel_releases_the_gil() -> None:
    """While one thread is inside a big kernel call, another thread runs Python code (with a
    1 s switch interval, a call that kept the GIL would freeze it for the whole call)."""
    import sys

    from bdekit.crypto import _sector  # type: ignore[attr-defined]

    size = 64 << 20
    src = bytearray(size)
    dst = bytearray(size)
    tweaks = bytes(16 * (size // 512))
    old = sys.getswitchinterval()
    sys.setswitchinterval(1.0)
    try:
        best = 0
        for _ in range(3):
            started = threading.Event()
            done = threading.Event()

            def work(started: threading.Event, done: threading.Event) -> None:
                started.set()
                _sector.xts_xor(src, dst, tweaks, 512)
                done.set()

            worker = threading.Thread(target=work, args=(started, done))
            worker.start()
            started.wait()
            count = 0
            while not done.is_set():
                count += 1
            worker.join()
            best = max(best, count)
            if best > 1000:
                break
    finally:
        sys.setswitchinterval(old)
    assert best > 1000
