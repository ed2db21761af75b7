"""Keys from memory images: schedules, structures, key datums and containers, every hit checked
against the volume.

Memory images are built here: noise pages (random, text, small integers, zeros, decoy
schedules of other keys) with the known keys placed at unaligned and page-straddling offsets.
Key schedules come from an AES key expansion written in tests/memimg.py from FIPS-197 (checked
against its published vectors), the structures and containers from their published layouts.
The known keys are the fixtures' manifest keys and the real images' FVEKs (their README).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from bdekit.errors import MissingKeyError, UnsupportedError
from bdekit.memory.images import open_memory
from bdekit.memory.schedule import ScheduleSearch
from bdekit.memory.search import search_memory
from bdekit.volume.bde import open_bde
from tests.conftest import FIXTURES, REAL_IMAGES, VISTA_RP, requires_real, run_cli
from tests.memory import memimg

FIXTURE_NAMES = ["xts128-rp", "xts256-pw", "cbc128-bek", "cbc256-clear", "diffuser128-rp",
                 "diffuser256-pw", "xts128-4k"]
STRADDLE = 3 * 4096 - 61  # an expanded key that crosses a page boundary, odd offset


def used_keys(fvek: bytes, method: int) -> tuple[bytes, ...]:
    """The AES keys a method uses, from the FVEK key datum (format notes, section 5)."""
    if method in (0x8000, 0x8001):
        size = 16 if method == 0x8000 else 32
        return fvek[:size], fvek[32:32 + size]
    if method in (0x8004, 0x8005):
        return fvek[:len(fvek) // 2], fvek[len(fvek) // 2:]
    return (fvek[:16] if method == 0x8002 else fvek[:32],)


def fixture(name: str) -> tuple[Path, dict]:  # type: ignore[type-arg]
    path = FIXTURES / f"{name}.img"
    return path, json.loads(Path(f"{path}.manifest.json").read_text())


def place_schedules(buf: bytearray, keys: tuple[bytes, ...], at: int, layout: str) -> None:
    for i, key in enumerate(keys):
        sched = memimg.expand(key)
        if layout == "decryption":
            sched = memimg.inverse_schedule(sched)
        offset = at + i * 0x1F3
        buf[offset:offset + len(sched)] = sched


def test_schedule_search_layouts_sizes_offsets() -> None:
    buf = memimg.noise_memory(1 << 20, seed=1)
    placed = {}
    for i, (size, layout) in enumerate([(16, "encryption"), (32, "encryption"),
                                        (16, "decryption"), (32, "decryption")]):
        key = bytes((i * 37 + j * 11 + 5) % 256 for j in range(size))
        sched = memimg.expand(key)
        if layout == "decryption":
            sched = memimg.inverse_schedule(sched)
        offset = STRADDLE + i * 0x10000 + i  # every alignment mod 4
        buf[offset:offset + len(sched)] = sched
        placed[offset] = (key, layout)
    hits = {h.offset: h for h in ScheduleSearch().search(bytes(buf))}
    for offset, (key, layout) in placed.items():
        assert offset in hits, (offset, layout)
        assert hits[offset].keys[0] == key
        assert hits[offset].layout.startswith(layout)
        assert hits[offset].errors == 0
    # every other hit is a decoy: an intact schedule whose key expands to the bytes found
    for hit in hits.values():
        if hit.layout == "encryption":
            sched = memimg.expand(hit.keys[0])
            assert bytes(buf[hit.offset:hit.offset + len(sched)]) == sched
    assert len(hits) > len(placed)


def test_schedule_with_flipped_bits() -> None:
    buf = memimg.noise_memory(256 << 10, seed=2)
    key = bytes(range(100, 132))
    sched = bytearray(memimg.expand(key))
    for bit in (3, 200, 1500):  # one in the key itself, two in later round keys
        sched[bit // 8] ^= 1 << (bit % 8)
    buf[5001:5001 + len(sched)] = sched
    hits = [h for h in ScheduleSearch().search(bytes(buf)) if h.offset == 5001]
    assert hits and hits[0].errors > 0
    assert hits[0].keys[0] == key  # re-derived from the later round keys
    assert not [h for h in ScheduleSearch(max_errors=0).search(bytes(buf)) if h.offset == 5001]


@pytest.mark.parametrize("layout", ["encryption", "decryption"])
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_memory_finds_fixture_keys(name: str, layout: str, tmp_path: Path) -> None:
    path, manifest = fixture(name)
    method = manifest["method_id"]
    keys = used_keys(bytes.fromhex(manifest["fvek"]), method)
    buf = memimg.noise_memory(2 << 20, seed=3)
    place_schedules(buf, keys, STRADDLE + 0x80000, layout)
    mem = tmp_path / "mem.raw"
    mem.write_bytes(buf)
    report = search_memory(open_bde(path), [str(mem)])
    assert len(report.found) == 1
    found = report.found[0]
    assert used_keys(found.result.fvek, method) == keys
    assert found.result.method == method
    assert found.locations[0].phys == STRADDLE + 0x80000
    assert "key schedule" in found.locations[0].how
    assert report.rejected > 0  # the decoys were candidates, none was reported


def test_memory_vista(tmp_path: Path) -> None:
    """Vista keeps its boot sector in plaintext: the first MFT record decides."""
    import shutil
    import subprocess

    from bdekit.synth import builder as synth

    if shutil.which("mkntfs") is None:
        pytest.skip("mkntfs is not installed")
    raw = tmp_path / "ntfs.raw"
    with open(raw, "wb") as fh:
        fh.truncate(8 << 20)
    subprocess.run(["mkntfs", "-F", "-Q", "-s", "512", str(raw)], check=True,
                   capture_output=True)
    img = tmp_path / "vista.img"
    manifest = synth.build(img, source=raw, vista=True, method="aes-cbc-128-diffuser",
                           seed="vista-memory")
    keys = used_keys(bytes.fromhex(manifest.fvek), 0x8000)
    buf = memimg.noise_memory(1 << 20, seed=11)
    place_schedules(buf, keys, STRADDLE, "encryption")
    mem = tmp_path / "mem.raw"
    mem.write_bytes(buf)
    report = search_memory(open_bde(img), [str(mem)])
    assert [used_keys(f.result.fvek, 0x8000) for f in report.found] == [keys]


def test_memory_key_that_cannot_be_checked_is_not_reported(tmp_path: Path) -> None:
    """The Vista fixture's content is random: no sector can confirm its key, so none is
    reported (no silent wrong output)."""
    path, manifest = fixture("vista-diffuser128")
    buf = memimg.noise_memory(256 << 10, seed=12)
    place_schedules(buf, used_keys(bytes.fromhex(manifest["fvek"]), 0x8000), 0x1001,
                    "encryption")
    mem = tmp_path / "mem.raw"
    mem.write_bytes(buf)
    assert search_memory(open_bde(path), [str(mem)]).found == []


@requires_real
@pytest.mark.real
@pytest.mark.parametrize("name", ["aes-xts_128", "aes_256", "aes_128_diffuser", "vista"])
def test_memory_finds_real_fveks(real_image, name: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    volume = open_bde(real_image(name))
    if name == "vista":  # no FVEK in the README: the one its recovery password unwraps
        from bdekit.escrow.secrets import Secrets

        fvek = open_bde(real_image(name)).unlock(Secrets(recovery_passwords=[VISTA_RP])).fvek
    else:
        fvek = bytes.fromhex(REAL_IMAGES[name][2] or "")
    keys = used_keys(fvek, volume.metadata.method)
    buf = memimg.noise_memory(4 << 20, seed=4)
    place_schedules(buf, keys, (1 << 20) - 7, "encryption")
    mem = tmp_path / "mem.raw"
    mem.write_bytes(buf)
    report = search_memory(volume, [str(mem)])
    assert [used_keys(f.result.fvek, volume.metadata.method) for f in report.found] == [keys]


def _pool(tag: bytes, body: bytes, x64: bool = True) -> bytes:
    header = bytes([0, 0, 0x3F, 2]) + tag + (bytes(8) if x64 else b"")
    return header + body


def _structures(name: str) -> list[tuple[str, bytes, str]]:
    """(fixture, structure bytes, expected 'found by' text) per Windows version."""
    out = []
    _, m = fixture("diffuser128-rp")
    data, tweak = used_keys(bytes.fromhex(m["fvek"]), 0x8000)
    body = bytearray(0x3E0)
    struct.pack_into("<H", body, 0x1C, 0x8000)
    body[0x20:0x30], body[0x200:0x210] = data, tweak
    out.append(("diffuser128-rp", _pool(b"FVEc", bytes(body)), "FVEc (x64"))
    _, m = fixture("cbc256-clear")
    key = bytes.fromhex(m["fvek"])[:32]
    body = bytearray(0x1F0)
    struct.pack_into("<H", body, 0x10, 0x8003)
    body[0x18:0x38] = key
    out.append(("cbc256-clear", _pool(b"FVEc", bytes(body), x64=False), "FVEc (x86"))
    block = bytearray(0x290)
    block[4:8] = b"Cngb"
    block[0x6C:0x8C] = block[0x90:0xB0] = key
    out.append(("cbc256-clear", bytes(block), "Cngb (x64"))
    _, m = fixture("xts128-rp")
    xts = bytes.fromhex(m["fvek"])
    for arch, base in (("x64", 0x54), ("x86 up to build 17134", 0x50)):
        body = bytearray(0x4C0)
        i = 0x30
        body[i:i + 4], body[i + 0x20:i + 0x24] = b"RUUU", b"KSSM"
        struct.pack_into("<I", body, i + base, 32)
        body[i + base + 4:i + base + 36] = xts
        body[i + base + 0x48:i + base + 0x68] = xts
        out.append(("xts128-rp", _pool(b"None", bytes(body)), f"None/Cngb ({arch}"))
    _, m = fixture("xts256-pw")
    datum = struct.pack("<6H", 0x4C, 0, 1, 0, 0x8005, 0) + bytes.fromhex(m["fvek"])
    out.append(("xts256-pw", datum, "FVEK key datum"))
    return [o for o in out if o[0] == name] if name else out


@pytest.mark.parametrize("case", range(6))
def test_memory_finds_structures(case: int, tmp_path: Path) -> None:
    name, blob, how = _structures("")[case]
    path, manifest = fixture(name)
    buf = memimg.noise_memory(1 << 20, seed=5)
    at = 0x40000 + 0x10 + (2 if "datum" in how else 0)  # pools 16-aligned, datums 2-aligned
    buf[at:at + len(blob)] = blob
    mem = tmp_path / "mem.bin"
    mem.write_bytes(buf)
    report = search_memory(open_bde(path), [str(mem)])
    method = manifest["method_id"]
    assert [used_keys(f.result.fvek, method) for f in report.found] == \
        [used_keys(bytes.fromhex(manifest["fvek"]), method)]
    assert any(how in loc.how for loc in report.found[0].locations), report.found[0].locations


def test_memory_finds_vmk_datum(tmp_path: Path) -> None:
    path, manifest = fixture("xts128-rp")
    vmk = bytes.fromhex(manifest["vmk"])
    buf = memimg.noise_memory(1 << 20, seed=6)
    at = 0x20002  # 2 mod 4
    buf[at:at + 44] = struct.pack("<6H", 0x2C, 0, 1, 0, 0x2003, 0) + vmk
    mem = tmp_path / "mem.vmem"
    mem.write_bytes(buf)
    report = search_memory(open_bde(path), [str(mem)])
    assert report.found and report.found[0].result.vmk == vmk
    assert report.found[0].result.fvek == bytes.fromhex(manifest["fvek"])
    assert report.found[0].locations[0].how == "VMK key datum"


def _key_region(manifest: dict) -> bytes:  # type: ignore[type-arg]
    buf = bytearray(memimg.noise_memory(64 << 10, seed=7))
    place_schedules(buf, used_keys(bytes.fromhex(manifest["fvek"]), manifest["method_id"]),
                    4096 - 100, "encryption")
    return bytes(buf)


@pytest.mark.parametrize("container", ["lime", "full64", "full32", "bitmap64", "bitmap6"])
def test_memory_containers(container: str, tmp_path: Path) -> None:
    path, manifest = fixture("xts256-pw")
    region = _key_region(manifest)  # 16 pages; the keys straddle pages 0/1
    noise = bytes(memimg.noise_memory(32 << 10, seed=8))
    base = 0x123000
    if container == "lime":
        data = memimg.lime([(0x1000, noise), (base, region)])
    elif container == "full64":
        data = memimg.crash_full64([(0x10000, noise), (base, region)])
    elif container == "full32":
        data = memimg.crash_full32([(0x10000, noise), (base, region)])
    else:
        pages = {0x10 + i: noise[i * 4096:(i + 1) * 4096] for i in range(8)}
        pages.update({base // 4096 + i: region[i * 4096:(i + 1) * 4096] for i in range(16)})
        data = memimg.crash_bitmap64(pages, bits=0x200, dump_type=6 if container ==
                                     "bitmap6" else 5)
    mem = tmp_path / "mem.dmp"
    mem.write_bytes(data)
    image = open_memory(mem)
    assert image.kind.split()[0] in ("lime", "crash")
    report = search_memory(open_bde(path), [str(mem)])
    assert report.found
    loc = report.found[0].locations[0]
    assert loc.phys == base + 4096 - 100
    assert data[loc.file_offset:loc.file_offset + 32] == memimg.expand(
        used_keys(bytes.fromhex(manifest["fvek"]), 0x8005)[0])[:32]


def test_no_key_in_memory(tmp_path: Path) -> None:
    path, _ = fixture("xts128-rp")
    mem = tmp_path / "mem.raw"
    mem.write_bytes(memimg.noise_memory(1 << 20, seed=9))
    with pytest.raises(MissingKeyError):
        from bdekit.memory.keyopts import memory_keys

        memory_keys(open_bde(path), [str(mem)])
    code, _out, err = run_cli("keys", "from-memory", str(path), str(mem))
    assert code == 4 and "none decrypts the volume" in err


@pytest.mark.parametrize("head, code", [(b"HIBR" + bytes(4092), 5), (b"hibr" + bytes(60), 5),
                                        (struct.pack("<IIQQQ", 0x4C4D5641, 2, 0, 4095, 0), 5),
                                        (memimg.lime([(0, bytes(4096))]) + b"JUNK" * 8, 3)])
def test_memory_image_errors(head: bytes, code: int, tmp_path: Path) -> None:
    path, _ = fixture("xts128-rp")
    mem = tmp_path / "hiberfil.sys"
    mem.write_bytes(head)
    if code == 5:
        with pytest.raises(UnsupportedError):
            open_memory(mem)
    rc, _out, err = run_cli("keys", "from-memory", str(path), str(mem))
    assert rc == code, err
    assert err.count("\n") == 1 and str(mem) in err


def test_cli_from_memory_and_decrypt(tmp_path: Path) -> None:
    path, manifest = fixture("diffuser256-pw")
    buf = memimg.noise_memory(1 << 20, seed=10)
    keys = used_keys(bytes.fromhex(manifest["fvek"]), manifest["method_id"])
    place_schedules(buf, keys, 0x30001, "decryption")
    mem = tmp_path / "mem.raw"
    mem.write_bytes(buf)
    audit = tmp_path / "audit.jsonl"
    code, out, _err = run_cli("keys", "from-memory", str(path), str(mem), "--json",
                              "--save", str(tmp_path / "key.json"), "--audit-log", str(audit))
    assert code == 0
    doc = json.loads(out)
    assert doc["keys"][0]["method"] == manifest["method"]
    assert (tmp_path / "key.json").stat().st_mode & 0o777 == 0o600
    assert manifest["fvek"][:32] not in audit.read_text()  # key IDs and places, no keys
    assert "found in memory" in audit.read_text()
    code, _o, err = run_cli("keys", "from-memory", str(path), str(mem), "--save", str(mem))
    assert code == 2 and "input" in err
    out_img = tmp_path / "out.img"
    code, _o, err = run_cli("decrypt", str(path), str(out_img), "--memory", str(mem),
                            "--audit-log", str(audit))
    assert code == 0, err
    from bdekit.volume.bde import open_volume

    expected = open_volume(path, password=manifest["protectors"][0]["password"]).read()
    assert out_img.read_bytes() == expected
