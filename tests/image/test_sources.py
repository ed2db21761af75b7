"""Tests of bdekit.sources: raw, device, split, EWF, VHD, VHDX, slices, errors."""

from __future__ import annotations

import errno
import os
import random
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bdekit.errors import FormatError, ReadError, SourceError
from bdekit.image import sources
from bdekit.image.sources import ImageSource, SliceSource, detect_container, open_source

MiB = 1024 * 1024


def rand_bytes(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def check_reads(src: ImageSource, ref: bytes, *, count: int = 200, seed: int = 7,
                interesting: tuple[int, ...] = ()) -> None:
    """Random reads, reads around ``interesting`` offsets (segment boundaries), and the end."""
    assert src.size == len(ref)
    rng = random.Random(seed)
    probes = [(0, len(ref)), (len(ref) - 1, 10), (len(ref), 5), (len(ref) + 100, 5)]
    for b in interesting:
        for delta in (-1, 0, 1, -513):
            for length in (1, 2, 512, 4097):
                probes.append((max(0, b + delta), length))
    for _ in range(count):
        off = rng.randrange(len(ref))
        probes.append((off, rng.randrange(1, 70000)))
    for off, length in probes:
        expect = ref[off : off + length]
        assert src.read_at(off, length) == expect, (off, length)
        buf = bytearray(length)
        n = src.readinto_at(off, buf)
        assert n == len(expect)
        assert bytes(buf[:n]) == expect


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text
    return text


# --------------------------------------------------------------------------------------------
# raw
# --------------------------------------------------------------------------------------------
def test_raw_reads(tmp_path: Path) -> None:
    ref = rand_bytes(MiB + 777)
    p = tmp_path / "disk.img"
    p.write_bytes(ref)
    with open_source(p) as src:
        assert src.kind == "raw"
        assert src.path == str(p)
        check_reads(src, ref)
        assert src.read_at(len(ref) - 3, 100) == ref[-3:]
        assert src.read_at(len(ref), 100) == b""
        assert src.read_at(5, 0) == b""
        mv = memoryview(bytearray(64))
        assert src.readinto_at(100, mv[8:40]) == 32
        assert bytes(mv[8:40]) == ref[100:132]
        with pytest.raises(ValueError):
            src.read_at(-1, 10)
    assert src.closed
    with pytest.raises(SourceError, match="closed"):
        src.read_at(0, 1)
    src.close()  # idempotent


def test_opens_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "disk.img"
    p.write_bytes(rand_bytes(4096))
    seen: list[int] = []
    real_open = os.open

    def spy(path: str, flags: int, *args: int, **kw: int) -> int:
        seen.append(flags)
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(sources.os, "open", spy)
    open_source(p).close()
    assert seen
    for flags in seen:
        assert flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND) == 0


def test_vhd_like_names_do_not_matter(tmp_path: Path) -> None:
    """A raw image named .vhd or .E01 is still raw: detection is by content only."""
    ref = rand_bytes(8192)
    for name in ("looks.vhd", "looks.E01", "looks.vhdx"):
        p = tmp_path / name
        p.write_bytes(ref)
        with open_source(p) as src:
            assert src.kind == "raw"
            assert src.read_at(0, 8192) == ref


# --------------------------------------------------------------------------------------------
# split
# --------------------------------------------------------------------------------------------
def write_segments(base: Path, suffixes: list[str], sizes: list[int], seed: int = 3
                   ) -> tuple[bytes, list[int]]:
    ref = rand_bytes(sum(sizes), seed)
    pos = 0
    bounds = []
    for sfx, n in zip(suffixes, sizes, strict=True):
        Path(f"{base}.{sfx}").write_bytes(ref[pos : pos + n])
        pos += n
        bounds.append(pos)
    return ref, bounds


@pytest.mark.parametrize(
    ("suffixes", "sizes"),
    [
        (["001", "002", "003", "004"], [300_000, 300_000, 300_000, 123_457]),
        (["aa", "ab", "ac"], [262_144, 262_144, 100]),
        (["000", "001", "002"], [5000, 70_001, 3]),           # .000-based, uneven sizes
        (["AA", "AB"], [4096, 4096]),
    ],
)
def test_split(tmp_path: Path, suffixes: list[str], sizes: list[int]) -> None:
    base = tmp_path / "disk"
    ref, bounds = write_segments(base, suffixes, sizes)
    for name in (f"{base}.{suffixes[0]}", f"{base}.{suffixes[-1]}", str(base)):
        with open_source(name) as src:
            assert src.kind == "split"
            assert src.path == name
            assert [Path(s).name for s in src.segments] == [f"disk.{s}" for s in suffixes]  # type: ignore[attr-defined]
            check_reads(src, ref, count=60, interesting=tuple(bounds))
            # one read spanning every segment
            assert src.read_at(1, len(ref)) == ref[1:]


def test_split_alpha_rollover(tmp_path: Path) -> None:
    base = tmp_path / "img"
    names = ["aa", *[f"a{chr(c)}" for c in range(ord("b"), ord("z") + 1)], "ba", "bb"]
    ref, _ = write_segments(base, names, [1000] * len(names))
    with open_source(f"{base}.aa") as src:
        assert len(src.segments) == 28  # type: ignore[attr-defined]
        check_reads(src, ref, count=20, interesting=(25_000, 26_000))


def test_split_missing_middle_segment(tmp_path: Path) -> None:
    base = tmp_path / "disk"
    write_segments(base, ["001", "002", "003", "004"], [1000] * 4)
    (tmp_path / "disk.003").unlink()
    for name in ("disk.001", "disk.004", "disk"):
        with pytest.raises(SourceError) as ei:
            open_source(tmp_path / name)
        msg = one_line(ei.value)
        assert "disk.003" in msg
        assert "missing" in msg

    base2 = tmp_path / "x"
    write_segments(base2, ["aa", "ab", "ad"], [10, 10, 10])
    with pytest.raises(SourceError, match=r"x\.ac"):
        open_source(f"{base2}.aa")


def test_lone_numbered_file_is_raw(tmp_path: Path) -> None:
    """x.001 without siblings, or a file with a letter extension, is a plain raw image."""
    ref = rand_bytes(4096)
    for name in ("solo.001", "notes.py", "data.2023"):
        (tmp_path / name).write_bytes(ref)
        with open_source(tmp_path / name) as src:
            assert src.kind == "raw"
    # numbering that does not start at 000/001 is not a split set either
    (tmp_path / "data.2024").write_bytes(ref)
    with open_source(tmp_path / "data.2023") as src:
        assert src.kind == "raw" and src.size == 4096


def test_split_eio_names_image_offset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "disk"
    write_segments(base, ["001", "002"], [4096, 4096])
    src = open_source(f"{base}.001")
    bad_fd = src._fds[1]  # type: ignore[attr-defined]
    real_pread, real_preadv = os.pread, os.preadv

    def pread(fd: int, n: int, off: int) -> bytes:
        if fd == bad_fd:
            raise OSError(errno.EIO, "Input/output error")
        return real_pread(fd, n, off)

    def preadv(fd: int, bufs: list[memoryview], off: int) -> int:
        if fd == bad_fd:
            raise OSError(errno.EIO, "Input/output error")
        return real_preadv(fd, bufs, off)

    monkeypatch.setattr(sources.os, "pread", pread)
    monkeypatch.setattr(sources.os, "preadv", preadv)
    assert len(src.read_at(0, 4096)) == 4096
    with pytest.raises(ReadError) as ei:
        src.read_at(4000, 200)
    assert ei.value.offset == 4096
    assert "disk.002" in one_line(ei.value)
    with pytest.raises(ReadError) as ei:
        src.readinto_at(5000, bytearray(10))
    assert ei.value.offset == 5000
    src.close()


# --------------------------------------------------------------------------------------------
# EIO on raw
# --------------------------------------------------------------------------------------------
def test_raw_eio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "dying.img"
    p.write_bytes(rand_bytes(64 * 1024))
    src = open_source(p)
    bad = range(40_960, 41_472)  # one "unreadable sector"
    real_pread, real_preadv = os.pread, os.preadv

    def hits(off: int, n: int) -> bool:
        return off < bad.stop and off + n > bad.start

    def pread(fd: int, n: int, off: int) -> bytes:
        if hits(off, n):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_pread(fd, n, off)

    def preadv(fd: int, bufs: list[memoryview], off: int) -> int:
        if hits(off, sum(len(b) for b in bufs)):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_preadv(fd, bufs, off)

    monkeypatch.setattr(sources.os, "pread", pread)
    monkeypatch.setattr(sources.os, "preadv", preadv)
    assert len(src.read_at(0, 40_960)) == 40_960
    with pytest.raises(ReadError) as ei:
        src.read_at(40_000, 4096)
    err = ei.value
    assert isinstance(err, SourceError)
    assert err.offset == 40_000
    assert err.path == str(p)
    text = one_line(err)
    assert "40000" in text and "I/O error" in text
    with pytest.raises(ReadError) as ei:
        src.readinto_at(41_000, bytearray(100))
    assert ei.value.offset == 41_000
    src.close()


class FlakySource(ImageSource):
    """A source subclass that fails reads past ``bad`` with ReadError (a dying disk)."""

    def __init__(self, data: bytes, bad: int) -> None:
        super().__init__("flaky.img", len(data), "raw")
        self.data = data
        self.bad = bad

    def _read(self, offset: int, length: int) -> bytes:
        if offset + length > self.bad:
            raise ReadError("I/O error", path=self.path, offset=max(offset, self.bad))
        return self.data[offset : offset + length]


def test_slice_propagates_read_error_with_parent_offset() -> None:
    parent = FlakySource(rand_bytes(10_000), bad=8000)
    part = SliceSource(parent, 5000, 4000)
    assert part.read_at(0, 3000) == parent.data[5000:8000]
    with pytest.raises(ReadError) as ei:
        part.read_at(2900, 200)
    assert ei.value.offset == 8000
    buf = bytearray(100)
    assert part.readinto_at(10, buf) == 100 and bytes(buf) == parent.data[5010:5110]


# --------------------------------------------------------------------------------------------
# SliceSource
# --------------------------------------------------------------------------------------------
def test_slice_clipping(tmp_path: Path) -> None:
    ref = rand_bytes(100_000)
    p = tmp_path / "disk.img"
    p.write_bytes(ref)
    with open_source(p) as parent:
        part = SliceSource(parent, 10_000, 20_000)
        assert part.size == 20_000
        assert part.kind == "raw" and part.path == str(p)
        check_reads(part, ref[10_000:30_000], count=50)
        assert part.read_at(19_990, 100) == ref[29_990:30_000]
        assert part.read_at(20_000, 10) == b""

        tail = SliceSource(parent, 90_000, 50_000)  # window past the end of the parent
        assert tail.size == 10_000
        assert tail.read_at(0, 50_000) == ref[90_000:]

        beyond = SliceSource(parent, 200_000, 10)
        assert beyond.size == 0 and beyond.read_at(0, 10) == b""

        inner = SliceSource(part, 5000, 100_000)  # slice of a slice stays inside the outer
        assert inner.size == 15_000
        assert inner.read_at(0, 100_000) == ref[15_000:30_000]

        part.close()
        assert not parent.closed  # a slice does not own its parent by default
        with pytest.raises(ValueError):
            SliceSource(parent, -1, 10)
    owned_parent = open_source(p)
    with SliceSource(owned_parent, 0, 10, owns_parent=True) as s:
        assert s.read_at(0, 10) == ref[:10]
    assert owned_parent.closed


# --------------------------------------------------------------------------------------------
# errors opening
# --------------------------------------------------------------------------------------------
def test_open_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope.img"
    with pytest.raises(SourceError) as ei:
        open_source(missing)
    assert str(missing) in one_line(ei.value)
    assert "no such file" in str(ei.value)

    with pytest.raises(SourceError, match="directory") as ei:
        open_source(tmp_path)
    assert str(tmp_path) in one_line(ei.value)

    empty = tmp_path / "empty.img"
    empty.write_bytes(b"")
    with pytest.raises(FormatError, match="empty") as ei:
        open_source(empty)
    assert str(empty) in one_line(ei.value)

    with pytest.raises(SourceError):
        open_source("")

    locked = tmp_path / "locked.img"
    locked.write_bytes(b"x" * 1024)

    def deny(path: str, flags: int, *args: int, **kw: int) -> int:
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(sources.os, "open", deny)
    with pytest.raises(SourceError, match="permission denied") as ei:
        open_source(locked)
    assert str(locked) in one_line(ei.value)


def test_zero_size_char_device() -> None:
    with pytest.raises(SourceError, match="size 0"):
        open_source("/dev/null")


def test_block_device(tmp_path: Path) -> None:
    losetup = shutil.which("losetup")
    if losetup is None or os.geteuid() != 0:
        pytest.skip("needs losetup and root")
    ref = rand_bytes(MiB, seed=11)
    img = tmp_path / "loop.img"
    img.write_bytes(ref)
    try:
        dev = subprocess.run([losetup, "--find", "--show", "--read-only", str(img)],
                             capture_output=True, text=True, check=True, timeout=20).stdout.strip()
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"cannot attach a loop device: {exc}")
    try:
        with open_source(dev) as src:
            assert src.kind == "device"
            assert src.size == MiB
            check_reads(src, ref, count=20)
    finally:
        subprocess.run([losetup, "-d", dev], check=False, timeout=20)


# --------------------------------------------------------------------------------------------
# containers: detection and missing libraries
# --------------------------------------------------------------------------------------------
def test_detect_container() -> None:
    blank = bytes(512)
    assert detect_container(b"EVF\x09\x0d\x0a\xff\x00" + blank, blank) == "ewf"
    assert detect_container(b"LVF\x09\x0d\x0a\xff\x00" + blank, blank) == "ewf"
    assert detect_container(b"EVF2\x0d\x0a\x81\x00" + blank, blank) == "ewf"
    assert detect_container(b"vhdxfile" + blank, blank) == "vhdx"
    assert detect_container(b"conectix" + blank, blank) == "vhd"
    assert detect_container(blank, b"conectix" + bytes(504)) == "vhd-fixed"
    assert detect_container(b"\xeb\x58\x90-FVE-FS-" + blank, blank) == "raw"


def block_import(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setitem(sys.modules, name, None)  # makes `import name` raise ImportError


def test_missing_pyewf_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    block_import(monkeypatch, "pyewf")
    p = tmp_path / "evidence.bin"  # detection by magic, not by name
    p.write_bytes(b"EVF\x09\x0d\x0a\xff\x00" + bytes(4096))
    with pytest.raises(SourceError) as ei:
        open_source(p)
    msg = one_line(ei.value)
    assert "EWF" in msg and "pip install libewf-python" in msg and str(p) in msg


@pytest.mark.parametrize("magic", [b"vhdxfile", b"conectix"])
def test_missing_pyvhdi_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                magic: bytes) -> None:
    block_import(monkeypatch, "pyvhdi")
    p = tmp_path / "disk.raw"
    p.write_bytes(magic + bytes(8192))
    with pytest.raises(SourceError) as ei:
        open_source(p)
    msg = one_line(ei.value)
    assert "VHD" in msg and "pip install libvhdi-python" in msg


def fake_fixed_vhd(data: bytes, current_size: int | None = None) -> bytes:
    footer = bytearray(512)
    footer[0:8] = b"conectix"
    size = len(data) if current_size is None else current_size
    footer[40:48] = size.to_bytes(8, "big")
    footer[48:56] = size.to_bytes(8, "big")
    footer[60:64] = (2).to_bytes(4, "big")
    return data + bytes(footer)


def test_fixed_vhd_without_pyvhdi_reads_as_raw(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    block_import(monkeypatch, "pyvhdi")
    ref = rand_bytes(64 * 1024)
    p = tmp_path / "fixed.vhd"
    p.write_bytes(fake_fixed_vhd(ref))
    with open_source(p) as src:
        assert src.kind == "vhd"
        assert src.size == len(ref)
        check_reads(src, ref, count=20)


# --------------------------------------------------------------------------------------------
# EWF via ewfacquire + pyewf
# --------------------------------------------------------------------------------------------
def ewfacquire(source: Path, target: Path, segment_size: str = "1.4GiB") -> None:
    """Non-interactive acquisition: -u unattended, -t target without extension."""
    cmd = ["ewfacquire", "-u", "-t", str(target), "-f", "encase6", "-c", "none",
           "-S", segment_size, str(source)]
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def ewf_images(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, Path, Path]:
    if shutil.which("ewfacquire") is None:
        pytest.skip("ewfacquire (ewf-tools) not installed")
    pytest.importorskip("pyewf")
    d = tmp_path_factory.mktemp("ewf")
    ref = rand_bytes(3 * MiB + 512, seed=21)
    raw = d / "src.raw"
    raw.write_bytes(ref)
    ewfacquire(raw, d / "single")
    ewfacquire(raw, d / "multi", "1MiB")
    assert (d / "single.E01").exists()
    assert (d / "multi.E02").exists()
    return ref, d / "single.E01", d / "multi.E01"


def test_ewf_single_segment(ewf_images: tuple[bytes, Path, Path]) -> None:
    ref, single, _ = ewf_images
    with open_source(single) as src:
        assert src.kind == "ewf"
        check_reads(src, ref, count=40)


def test_ewf_multi_segment(ewf_images: tuple[bytes, Path, Path]) -> None:
    ref, _, multi = ewf_images
    segs = sorted(multi.parent.glob("multi.E*"))
    assert len(segs) >= 3
    for name in (multi, multi.with_suffix(".E02")):  # any segment opens the whole set
        with open_source(name) as src:
            assert src.kind == "ewf"
            assert len(src.segments) == len(segs)  # type: ignore[attr-defined]
            check_reads(src, ref, count=40)


def test_ewf_renamed_still_ewf(ewf_images: tuple[bytes, Path, Path], tmp_path: Path) -> None:
    ref, single, _ = ewf_images
    renamed = tmp_path / "evidence.bin"
    shutil.copyfile(single, renamed)
    with open_source(renamed) as src:
        assert src.kind == "ewf"
        assert src.read_at(0, len(ref)) == ref


def test_ewf_missing_segment(ewf_images: tuple[bytes, Path, Path], tmp_path: Path) -> None:
    _, _, multi = ewf_images
    for seg in multi.parent.glob("multi.E*"):
        if seg.suffix != ".E03":
            shutil.copyfile(seg, tmp_path / seg.name)
    with pytest.raises(SourceError) as ei:
        open_source(tmp_path / "multi.E01")
    assert "multi.E03" in one_line(ei.value)


def test_ewf_concurrent_reads(ewf_images: tuple[bytes, Path, Path]) -> None:
    ref, _, multi = ewf_images
    with open_source(multi) as src:
        run_concurrently(src, ref)


def run_concurrently(src: ImageSource, ref: bytes, threads: int = 8, per_thread: int = 60
                     ) -> None:
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(per_thread):
                off = rng.randrange(len(ref))
                n = rng.randrange(1, 100_000)
                if rng.random() < 0.5:
                    assert src.read_at(off, n) == ref[off : off + n]
                else:
                    buf = bytearray(n)
                    got = src.readinto_at(off, buf)
                    assert bytes(buf[:got]) == ref[off : off + n]
        except BaseException as exc:  # collected and re-raised in the main thread
            with lock:
                errors.append(exc)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))
    assert not errors, errors[0]


def test_split_concurrent_reads(tmp_path: Path) -> None:
    base = tmp_path / "disk"
    ref, _ = write_segments(base, ["001", "002", "003"], [200_000, 200_000, 50_000])
    with open_source(f"{base}.001") as src:
        run_concurrently(src, ref)


# --------------------------------------------------------------------------------------------
# VHD / VHDX via qemu-img + pyvhdi
# --------------------------------------------------------------------------------------------
VHD_VARIANTS: dict[str, tuple[list[str], str]] = {
    # force_size=on: keep the exact size (qemu otherwise rounds a VHD up to a CHS geometry)
    "fixed.vhd": (["-O", "vpc", "-o", "subformat=fixed,force_size=on"], "vhd"),
    "dynamic.vhd": (["-O", "vpc", "-o", "subformat=dynamic,force_size=on"], "vhd"),
    "dynamic.vhdx": (["-O", "vhdx"], "vhdx"),
    "fixed.vhdx": (["-O", "vhdx", "-o", "subformat=fixed"], "vhdx"),
}


@pytest.fixture(scope="module")
def vhd_images(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, Path]:
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img not installed")
    pytest.importorskip("pyvhdi")
    d = tmp_path_factory.mktemp("vhd")
    # random data with a zero hole, so dynamic formats have an unallocated block
    ref = rand_bytes(2 * MiB, seed=31) + bytes(2 * MiB) + rand_bytes(MiB, seed=32)
    raw = d / "src.raw"
    raw.write_bytes(ref)
    for name, (args, _kind) in VHD_VARIANTS.items():
        subprocess.run(["qemu-img", "convert", "-f", "raw", *args, str(raw), str(d / name)],
                       check=True, capture_output=True, timeout=60)
    return ref, d


@pytest.mark.parametrize("name", list(VHD_VARIANTS))
def test_vhd(vhd_images: tuple[bytes, Path], name: str) -> None:
    ref, d = vhd_images
    with open_source(d / name) as src:
        assert src.kind == VHD_VARIANTS[name][1]
        check_reads(src, ref, count=40)


def test_vhd_renamed(vhd_images: tuple[bytes, Path], tmp_path: Path) -> None:
    ref, d = vhd_images
    for name, kind in (("dynamic.vhdx", "vhdx"), ("fixed.vhd", "vhd"), ("dynamic.vhd", "vhd")):
        renamed = tmp_path / f"{name}.img"
        shutil.copyfile(d / name, renamed)
        with open_source(renamed) as src:
            assert src.kind == kind
            assert src.read_at(0, len(ref)) == ref


def test_qemu_fixed_vhd_raw_fallback_matches(vhd_images: tuple[bytes, Path],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    ref, d = vhd_images
    block_import(monkeypatch, "pyvhdi")
    with open_source(d / "fixed.vhd") as src:
        assert src.kind == "vhd"
        assert isinstance(src, sources.RawSource)
        assert src.read_at(0, len(ref) + 1000) == ref


def test_vhd_concurrent_reads(vhd_images: tuple[bytes, Path]) -> None:
    ref, d = vhd_images
    with open_source(d / "dynamic.vhdx") as src:
        run_concurrently(src, ref, threads=4, per_thread=30)


def test_libyal_read_error_is_read_error(vhd_images: tuple[bytes, Path]) -> None:
    _, d = vhd_images
    src = open_source(d / "dynamic.vhd")

    class Broken:
        def read_buffer_at_offset(self, size: int, offset: int) -> bytes:
            raise OSError("libvhdi_file_read_buffer: unable to read data")

        def close(self) -> None:
            pass

    real: object = src._handle  # type: ignore[attr-defined]
    src._handle = Broken()  # type: ignore[attr-defined]
    try:
        with pytest.raises(ReadError) as ei:
            src.read_at(12345, 10)
        assert ei.value.offset == 12345
    finally:
        src._handle = real  # type: ignore[attr-defined]
        src.close()


def test_ewf_base_name(ewf_images: tuple[bytes, Path, Path]) -> None:
    ref, _, multi = ewf_images
    with open_source(multi.with_suffix("")) as src:  # ".../multi" -> multi.E01 and siblings
        assert src.kind == "ewf"
        assert src.read_at(0, len(ref)) == ref


# --------------------------------------------------------------------------------------------
# differencing VHD (qemu-img cannot create one: turn a qemu dynamic VHD into a child)
# --------------------------------------------------------------------------------------------
def _vhd_checksum(struct_bytes: bytearray, at: int) -> None:
    struct_bytes[at : at + 4] = bytes(4)
    struct_bytes[at : at + 4] = ((~sum(struct_bytes)) & 0xFFFFFFFF).to_bytes(4, "big")


def make_differencing_vhd(child_vhd: Path, parent_vhd: Path, parent_name: str) -> None:
    """Footer disk type -> 4 (both copies), dynamic header -> parent id and name."""
    data = bytearray(child_vhd.read_bytes())
    parent_footer = parent_vhd.read_bytes()[:512]
    for off in (0, len(data) - 512):
        footer = data[off : off + 512]
        footer[60:64] = (4).to_bytes(4, "big")
        _vhd_checksum(footer, 64)
        data[off : off + 512] = footer
    hoff = int.from_bytes(data[16:24], "big")
    header = data[hoff : hoff + 1024]
    assert header[:8] == b"cxsparse"
    header[40:56] = parent_footer[68:84]                     # parent unique id
    header[64:576] = parent_name.encode("utf-16-be").ljust(512, b"\0")
    _vhd_checksum(header, 36)
    data[hoff : hoff + 1024] = header
    child_vhd.write_bytes(data)


def test_differencing_vhd(tmp_path: Path) -> None:
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img not installed")
    pytest.importorskip("pyvhdi")
    n = 6 * MiB
    parent = rand_bytes(n, seed=41)
    child = bytearray(n)
    child[: 2 * MiB] = rand_bytes(2 * MiB, seed=42)  # only the first 2 MiB block differs
    (tmp_path / "p.raw").write_bytes(parent)
    (tmp_path / "c.raw").write_bytes(child)
    for raw, vhd in (("p.raw", "parent.vhd"), ("c.raw", "child.vhd")):
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "force_size=on",
                        str(tmp_path / raw), str(tmp_path / vhd)],
                       check=True, capture_output=True, timeout=60)
    # the parent name as Windows records it: an absolute path on another machine
    make_differencing_vhd(tmp_path / "child.vhd", tmp_path / "parent.vhd",
                          "C:\\VMs\\parent.vhd")
    expect = bytes(child[: 2 * MiB]) + parent[2 * MiB :]
    with open_source(tmp_path / "child.vhd") as src:
        assert src.kind == "vhd"
        check_reads(src, expect, count=30, interesting=(2 * MiB,))

    (tmp_path / "parent.vhd").unlink()
    with pytest.raises(SourceError) as ei:
        open_source(tmp_path / "child.vhd")
    assert "parent" in one_line(ei.value) and "parent.vhd" in str(ei.value)
