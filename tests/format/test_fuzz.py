"""Random and mutated metadata only ever raise BdeError subclasses: no crash, no hang."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bdekit.errors import BdeError
from bdekit.escrow.secrets import Secrets
from bdekit.format.bek import parse_bek
from bdekit.format.copies import read_metadata
from bdekit.format.metadata import parse_datums, parse_volume_header
from bdekit.volume.bde import BdeVolume
from tests.conftest import REAL_PASSWORD, BytesSource, have_real

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(st.binary(min_size=0, max_size=600))
def test_random_header(data: bytes) -> None:
    try:
        parse_volume_header(data)
    except BdeError:
        pass


@FUZZ
@given(st.binary(max_size=400))
def test_random_datums(data: bytes) -> None:
    try:
        parse_datums(data, 0)
    except BdeError:
        pass


@FUZZ
@given(st.binary(max_size=300))
def test_random_bek(data: bytes) -> None:
    try:
        parse_bek(data)
    except BdeError:
        pass


@FUZZ
@given(st.binary(min_size=512, max_size=4096))
def test_random_image(data: bytes) -> None:
    src = BytesSource(data)
    try:
        read_metadata(src.read_at, "<fuzz>", src.size)
    except BdeError:
        pass


@pytest.fixture(scope="module")
def real_meta(real_image):  # type: ignore[no-untyped-def]
    """The first 1 MiB around metadata copy 1 of a real image, and its VMK."""
    if not have_real():
        pytest.skip("real images absent")
    path = real_image("aes-xts_128")
    data = bytearray(path.read_bytes())
    volume = BdeVolume(BytesSource(data))
    vmk = volume.unlock(Secrets(passwords=[REAL_PASSWORD])).vmk
    first = struct.unpack_from("<Q", data, 176)[0]
    return data, first, vmk


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 1023), st.integers(0, 255)), min_size=1,
                max_size=12),
       st.booleans())
def test_mutated_real_metadata(real_meta, mutations: list[tuple[int, int]],  # type: ignore[no-untyped-def]
                               only_copy: bool) -> None:
    """Bytes of the real metadata blocks mutated; unlock by VMK and read must not crash."""
    data, first, vmk = real_meta
    offsets = struct.unpack_from("<3Q", data, 176)
    targets = [first] if only_copy else list(offsets)
    saved = {off + pos: data[off + pos] for off in targets for pos, _ in mutations}
    for off in targets:
        for pos, value in mutations:
            data[off + pos] = value
    try:
        volume = BdeVolume(BytesSource(data))
        volume.unlock(Secrets(vmk=vmk))
        buf = bytearray(65536)
        volume.read_into(0, buf)
        volume.read_into(first - 4096, buf)
    except BdeError:
        pass
    finally:
        for pos, value in saved.items():
            data[pos] = value


@FUZZ
@given(st.integers(0, 511), st.integers(0, 255))
def test_mutated_real_header(real_meta, pos: int, value: int) -> None:  # type: ignore[no-untyped-def]
    data, _first, vmk = real_meta
    saved = data[pos]
    data[pos] = value
    try:
        volume = BdeVolume(BytesSource(data))
        volume.unlock(Secrets(vmk=vmk))
        volume.read_into(0, bytearray(8192))
    except BdeError:
        pass
    finally:
        data[pos] = saved
