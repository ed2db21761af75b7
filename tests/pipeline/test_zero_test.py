"""The output's hole test (``pipeline.output.is_all_zero``): the native kernel's test and the
numpy fallback against the plain definition, at every position around its 64-byte blocks."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bdekit.crypto import native
from bdekit.pipeline import output

ZeroTest = Callable[[memoryview], bool]

_TESTS: dict[str, ZeroTest] = {"numpy": output._numpy_all_zero}
_NATIVE = native.zero_test()
if _NATIVE is not None:
    _TESTS["native"] = _NATIVE


@pytest.fixture(params=sorted(_TESTS))
def zero_test(request: pytest.FixtureRequest) -> ZeroTest:
    return _TESTS[request.param]


@pytest.mark.parametrize("length", [0, 1, 7, 8, 63, 64, 65, 127, 128, 200, 4096, 1 << 20])
def test_zero_buffers_are_zero(zero_test: ZeroTest, length: int) -> None:
    assert zero_test(memoryview(bytearray(length))) is True


@pytest.mark.parametrize("length", [1, 9, 64, 130, 70000])
def test_one_nonzero_byte_anywhere_is_seen(zero_test: ZeroTest, length: int) -> None:
    edges = set(range(56, min(length, 72)))  # around the end of the first 64-byte block
    positions = sorted({0, 1, length // 2, length - 2, length - 1} | edges)
    for pos in positions:
        if not 0 <= pos < length:
            continue
        buf = bytearray(length)
        buf[pos] = 0x80
        assert zero_test(memoryview(buf)) is False, pos


def test_views_into_larger_buffers(zero_test: ZeroTest) -> None:
    """Only the view's bytes count: nonzero bytes just outside it do not."""
    buf = bytearray(1000)
    buf[99] = buf[900] = 1
    assert zero_test(memoryview(buf)[100:900]) is True
    assert zero_test(memoryview(buf)[99:900]) is False
    assert zero_test(memoryview(buf)[100:901]) is False


def test_the_output_uses_the_kernel_when_built() -> None:
    expected = native.zero_test() or output._numpy_all_zero
    assert output.is_all_zero is expected
