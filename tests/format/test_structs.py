"""Every construct structure parses what it builds, and parses the real images' bytes."""

from __future__ import annotations

import struct
import uuid

import pytest
from construct import ConstructError, Container, ListContainer
from hypothesis import given, settings
from hypothesis import strategies as st

from bdekit.errors import FormatError
from bdekit.format import structs
from bdekit.format.constants import BITLOCKER_GUID, DatumType
from bdekit.format.metadata import parse_datum, read_metadata_copy
from tests.conftest import requires_real

guids = st.builds(uuid.UUID, bytes=st.binary(min_size=16, max_size=16))
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 2**64 - 1)


def key_datum(draw_key: bytes, key_type: int = 0x8004) -> Container:
    return Container(role=0, type=DatumType.KEY, version=1,
                     body=Container(key_type=key_type, key_flags=0, key=draw_key))


leaf = st.one_of(
    st.builds(lambda k, t: key_datum(k, t), st.binary(max_size=64), u16),
    st.builds(lambda n, m, d: Container(role=0, type=DatumType.AES_CCM_ENCRYPTED_KEY,
                                        version=1, body=Container(nonce=n, mac=m, data=d)),
              st.binary(min_size=12, max_size=12), st.binary(min_size=16, max_size=16),
              st.binary(max_size=80)),
    st.builds(lambda d: Container(role=7, type=DatumType.UNICODE, version=1,
                                  body=Container(data=d)), st.binary(max_size=40)),
    st.builds(lambda t, d: Container(role=0, type=t, version=1, body=Container(data=d)),
              st.sampled_from([0, 10, 11, 13, 14, 16, 99, 0x7FFF]), st.binary(max_size=40)),
)


def vmk(children: list[Container], guid: uuid.UUID, ftime: int, prot: int) -> Container:
    return Container(role=2, type=DatumType.VOLUME_MASTER_KEY, version=1,
                     body=Container(guid=guid, modified_time=ftime, unknown=0, protection=prot,
                                    datums=ListContainer(children)))


def stretch(children: list[Container], salt: bytes) -> Container:
    return Container(role=0, type=DatumType.STRETCH_KEY, version=1,
                     body=Container(key_type=0x1000, key_flags=0, salt=salt,
                                    datums=ListContainer(children)))


trees = st.builds(
    vmk,
    st.lists(st.one_of(leaf, st.builds(stretch, st.lists(leaf, max_size=2),
                                       st.binary(min_size=16, max_size=16))), max_size=4),
    guids, u64, u16,
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(leaf, trees))
def test_datum_round_trip(datum: Container) -> None:
    data = structs.DATUM.build(datum)
    assert int.from_bytes(data[:2], "little") == len(data)
    again = structs.DATUM.parse(data)
    assert structs.DATUM.build(again) == data
    assert again.type == datum.type and again.role == datum.role


@given(guids, st.lists(u64, min_size=3, max_size=3), st.lists(u64, min_size=2, max_size=2))
def test_volume_header_round_trip(guid: uuid.UUID, offsets: list[int], eow: list[int]) -> None:
    prefix = Container(jump=b"\xebX\x90", oem_id=b"-FVE-FS-", bytes_per_sector=512,
                       sectors_per_cluster=8, reserved_sectors=0, fat_count=0, root_entries=0,
                       total_sectors_16=0, media_descriptor=0xF8, sectors_per_fat_16=0,
                       sectors_per_track=63, heads=255, hidden_sectors=0, total_sectors_32=0,
                       unknown_36=0, total_sectors_64=0, mft_cluster=0, metadata_lcn=0)
    header = Container(prefix=prefix, boot_code_1=bytes(96),
                       record=Container(guid=guid, metadata_offsets=offsets, eow_offsets=eow),
                       boot_code_2=bytes(510 - 160 - 56))
    data = structs.WIN7_VOLUME_HEADER.build(header)
    assert len(data) == 512 and data[-2:] == b"\x55\xaa"
    assert data[160:176] == guid.bytes_le
    assert struct.unpack_from("<3Q", data, 176) == tuple(offsets)
    parsed = structs.WIN7_VOLUME_HEADER.parse(data)
    assert structs.WIN7_VOLUME_HEADER.build(parsed) == data


@given(st.lists(u64, min_size=3, max_size=3))
def test_togo_header_round_trip_and_recognised(offsets: list[int]) -> None:
    from bdekit.format.metadata import parse_volume_header

    prefix = Container(jump=b"\xebX\x90", oem_id=b"MSWIN4.1", bytes_per_sector=512,
                       sectors_per_cluster=8, reserved_sectors=0x1FE0, fat_count=1,
                       root_entries=0, total_sectors_16=0, media_descriptor=0xF8,
                       sectors_per_fat_16=0, sectors_per_track=63, heads=255, hidden_sectors=0,
                       total_sectors_32=0, unknown_36=0, total_sectors_64=0, mft_cluster=0,
                       metadata_lcn=0)
    header = Container(prefix=prefix, boot_code_1=bytes(424 - 64),
                       record=Container(guid=BITLOCKER_GUID, metadata_offsets=offsets),
                       boot_code_2=bytes(510 - 424 - 40))
    data = structs.TOGO_VOLUME_HEADER.build(header)
    assert data[424:440] == BITLOCKER_GUID.bytes_le and data[3:11] == b"MSWIN4.1"
    assert structs.TOGO_VOLUME_HEADER.build(structs.TOGO_VOLUME_HEADER.parse(data)) == data
    parsed = parse_volume_header(data)
    assert parsed.kind == "togo" and parsed.metadata_offsets == offsets


@given(u16, st.sampled_from([1, 2]), u16, u16, u64, u32, u32,
       st.lists(u64, min_size=3, max_size=3), u64)
def test_block_header_round_trip(size: int, version: int, cur: int, nxt: int, so: int,
                                 ss: int, vs: int, offs: list[int], voff: int) -> None:
    obj = Container(size=size, version=version, current_state=cur, next_state=nxt,
                    state_offset=so, state_size=ss, virtualized_sectors=vs,
                    metadata_offsets=offs, virtualized_offset=voff)
    data = structs.FVE_BLOCK_HEADER.build(obj)
    assert data[:8] == b"-FVE-FS-" and len(data) == 64
    assert structs.FVE_BLOCK_HEADER.build(structs.FVE_BLOCK_HEADER.parse(data)) == data


@given(u32, guids, u32, u16, u64)
def test_dataset_header_round_trip(size: int, guid: uuid.UUID, counter: int, method: int,
                                   ctime: int) -> None:
    obj = Container(size=size, version=1, header_size=48, copy_size=size, volume_guid=guid,
                    nonce_counter=counter, method=method, method_flags=0, creation_time=ctime)
    data = structs.DATASET_HEADER.build(obj)
    assert data[16:32] == guid.bytes_le
    assert structs.DATASET_HEADER.parse(data).volume_guid == guid


def test_bek_round_trip() -> None:
    guid = uuid.uuid4()
    ext = Container(role=6, type=DatumType.EXTERNAL_KEY, version=1,
                    body=Container(guid=guid, modified_time=1, datums=ListContainer(
                        [key_datum(bytes(range(32)), 0x2002)])))
    body = structs.DATUM.build(ext)
    header = Container(size=48 + len(body), version=1, header_size=48,
                       copy_size=48 + len(body), volume_guid=guid, nonce_counter=1, method=0,
                       method_flags=0, creation_time=1)
    data = structs.BEK_FILE.build(Container(header=header, datums=ListContainer([ext])))
    parsed = structs.BEK_FILE.parse(data)
    assert parsed.datums[0].body.guid == guid
    assert parsed.datums[0].body.datums[0].body.key == bytes(range(32))
    assert structs.BEK_FILE.build(parsed) == data


def test_eow_round_trip() -> None:
    info = Container(header_size=56, size=72, sector_size=512, unknown_1=512,
                     chunk_size=8 << 20, conversion_log_size=527360, unknown_2=0,
                     region_count=2, crc32=0, eow_offsets=[4096, 8192],
                     bitmap_offsets=[1 << 20, 2 << 20])
    data = structs.EOW_INFORMATION.build(info)
    assert len(data) == 72
    assert structs.EOW_INFORMATION.build(structs.EOW_INFORMATION.parse(data)) == data
    rec = Container(header_size=36, size=512, bitmap_size=5, sequence=7, flags=2, crc32=0,
                    bitmap=b"\x1f\0\0\0\0")
    data = structs.EOW_BITMAP_RECORD.build(rec)
    assert structs.EOW_BITMAP_RECORD.parse(data).bitmap == b"\x1f\0\0\0\0"
    blk = Container(header_size=60, size=1536, unknown=0, region_offset=0, region_size=1 << 20,
                    conversion_log_offset=3 << 20, record_offsets=[512, 1024], record_size=512,
                    crc32=0)
    data = structs.EOW_BITMAP_BLOCK.build(blk)
    assert len(data) == 60
    assert structs.EOW_BITMAP_BLOCK.build(structs.EOW_BITMAP_BLOCK.parse(data)) == data


def test_bad_datum_size_is_rejected() -> None:
    good = structs.DATUM.build(key_datum(b"k" * 32))
    bad = b"\x04\x00" + good[2:]
    with pytest.raises(ConstructError):
        structs.DATUM.parse(bad)


def _datum(size: int, role: int, dtype: int, body: bytes) -> bytes:
    """A datum written by hand: size, role, type, version (u16 each), then the body."""
    return struct.pack("<HHHH", size, role, dtype, 1) + body


def test_nested_datum_error_names_the_inner_offset() -> None:
    """A VMK datum whose stretch key holds a key datum too short for its key flags: the error
    names the key datum's offset (36 bytes into the VMK, 28 into the stretch key)."""
    bad_key = _datum(10, 0, DatumType.KEY, b"\x01\x00")  # key type, no key flags
    stretch = _datum(8 + 20 + len(bad_key), 0, DatumType.STRETCH_KEY,
                     b"\x00" * 4 + b"s" * 16 + bad_key)
    vmk = _datum(8 + 28 + len(stretch), 2, DatumType.VOLUME_MASTER_KEY,
                 b"g" * 16 + b"\x00" * 8 + struct.pack("<HH", 0, 0x2000) + stretch)
    with pytest.raises(FormatError) as info:
        parse_datum(vmk, 1000, "img")
    assert info.value.offset == 1000 + 36 + 28
    assert "nested in the datum at offset 1000" in info.value.message


def test_damaged_copy_status_keeps_the_datum_offset() -> None:
    """A metadata copy whose nested datum has a broken size field is unusable, and its status
    says where the broken datum lies."""
    from tests.conftest import FIXTURES

    image = bytearray((FIXTURES / "xts128-rp.img").read_bytes())
    first = struct.unpack_from("<Q", image, 160 + 16)[0]
    intact = read_metadata_copy(lambda o, n: bytes(image[o:o + n]), first, 1)
    nested = next(d for top in intact.datums for d in top.walk() if d is not top)
    struct.pack_into("<H", image, nested.offset, 4)  # size 4: less than a datum header
    copy = read_metadata_copy(lambda o, n: bytes(image[o:o + n]), first, 1)
    assert not copy.usable
    assert f"at offset {nested.offset}" in copy.status


@requires_real
@pytest.mark.real
@pytest.mark.parametrize("name", ["aes-xts_128", "recovery_password", "startup_key",
                                  "suspended", "vista", "eow_partial"])
def test_real_metadata_round_trips(real_image, name: str) -> None:  # type: ignore[no-untyped-def]
    """The datums Windows wrote parse and build back to the same bytes."""
    path = real_image(name)
    with open(path, "rb") as fh:
        head = fh.read(512)
        if name == "vista":
            offset = struct.unpack_from("<Q", head, 56)[0] * 8 * 512
        else:
            assert head[160:176] in (BITLOCKER_GUID.bytes_le,
                                     uuid.UUID("92a84d3b-dd80-4d0e-9e4e-b1e3284eaed8").bytes_le)
            offset = struct.unpack_from("<Q", head, 176)[0]
        fh.seek(offset)
        block = fh.read(4096)
    header = structs.FVE_BLOCK_HEADER.parse(block)
    assert structs.FVE_BLOCK_HEADER.build(header) == block[:64]
    dataset = structs.DATASET_HEADER.parse(block[64:112])
    assert structs.DATASET_HEADER.build(dataset) == block[64:112]
    body = block[112:64 + dataset.size]
    datums = structs.DATUM_LIST.parse(body)
    assert sum(int.from_bytes(structs.DATUM.build(d)[:2], "little") for d in datums) == len(body)
    assert structs.DATUM_LIST.build(datums) == body
