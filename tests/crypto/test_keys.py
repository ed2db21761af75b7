"""Tests of bdekit.keys: recovery password text, key derivation, AES-CCM, typo search.

Expected values come from outside the module under test: the real images of
../shared/real-images (README: passwords and FVEKs), public test vectors of John the Ripper's
BitLocker format (openwall/john, src/bitlocker_variable_code.h), and straightforward reference
implementations written here from the format notes.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import random
import re
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from hypothesis import given, settings
from hypothesis import strategies as st

from bdekit.crypto import keys as keys_module
from bdekit.crypto.keys import (
    BlockCheck,
    aes_ccm_decrypt,
    aes_ccm_encrypt,
    check_recovery_password,
    count_typo_candidates,
    format_recovery_password,
    fvek_fingerprint,
    generate_recovery_password,
    key_id,
    make_nonce,
    parse_recovery_password,
    password_hash,
    password_key,
    recovery_password_hash,
    recovery_password_key,
    stretch_key,
    typo_candidates,
)
from bdekit.errors import RecoveryPasswordFormatError, UsageError, WrongKeyError
from bdekit.format.constants import STRETCH_ROUNDS
from tests.conftest import REAL_DIR

REAL_IMAGES = REAL_DIR

WIN10_RECOVERY = "284867-596541-514998-422114-660297-261613-215424-199408"
VISTA_RECOVERY = "517506-503998-044583-576191-587004-635965-501270-087802"
WIN10_PASSWORD = "password12!@"
AES_XTS_128_FVEK = "4eb949c473f0edfc379ad041670ddb9c4da0abdb4482a2c8bb47250493aa1ed5"


# ------------------------------------------------------------------------------------------
# Independent oracles, written from the format notes
# ------------------------------------------------------------------------------------------

def block_ok(block: str) -> bool:
    """The check digit rule as stated: d6 == (d1 - d2 + d3 - d4 + d5) mod 11, and < 720896."""
    if len(block) != 6 or not all(c in "0123456789" for c in block):
        return False
    d = [int(c) for c in block]
    return d[5] == (d[0] - d[1] + d[2] - d[3] + d[4]) % 11 and int(block) < 720896


def password_ok(text: str) -> bool:
    blocks = text.split("-")
    return len(blocks) == 8 and all(block_ok(b) for b in blocks)


def expected_key16(text: str) -> bytes:
    return struct.pack("<8H", *(int(b) // 11 for b in re.split(r"[-\s]+", text.strip())))


def reference_stretch(initial: bytes, salt: bytes, rounds: int) -> bytes:
    last = bytes(32)
    for counter in range(rounds):
        buffer = struct.pack("<32s32s16sQ", last, initial, salt, counter)
        assert len(buffer) == 88
        last = hashlib.sha256(buffer).digest()
    return last


def with_block(password: str, index: int, block: str) -> str:
    blocks = password.split("-")
    blocks[index] = block
    return "-".join(blocks)


# ------------------------------------------------------------------------------------------
# parse / format / check / generate
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [WIN10_RECOVERY, VISTA_RECOVERY])
def test_parse_real_recovery_passwords(text: str) -> None:
    expected = struct.pack("<8H", *(int(b) // 11 for b in text.split("-")))
    assert parse_recovery_password(text) == expected
    assert len(expected) == 16


@pytest.mark.parametrize("variant", [
    WIN10_RECOVERY,
    WIN10_RECOVERY.replace("-", " "),
    WIN10_RECOVERY.replace("-", ""),
    "  \t" + WIN10_RECOVERY + "\r\n",
    WIN10_RECOVERY.replace("-", " - "),
    WIN10_RECOVERY.replace("-", "\t"),
    "284867 596541-514998  422114\n660297-261613 -215424- 199408",
    WIN10_RECOVERY.replace("-", "\u2013"),  # en dash pasted from a document
])
def test_parse_accepts_separators(variant: str) -> None:
    assert parse_recovery_password(variant) == expected_key16(WIN10_RECOVERY)


def test_wrong_check_digit_names_block_and_text() -> None:
    for text in (with_block(WIN10_RECOVERY, 3, "422115"),
                 with_block(WIN10_RECOVERY, 3, "422115").replace("-", " "),
                 with_block(WIN10_RECOVERY, 3, "422115").replace("-", "")):
        with pytest.raises(RecoveryPasswordFormatError) as info:
            parse_recovery_password(text)
        assert info.value.block == 4
        assert "block 4 of 8" in str(info.value)
        assert "422115" in str(info.value)
        assert "check digit" in str(info.value)
        assert isinstance(info.value, UsageError)


def test_too_large_block() -> None:
    assert 799997 % 11 == 0  # passes the check digit: only the range rejects it
    with pytest.raises(RecoveryPasswordFormatError) as info:
        parse_recovery_password(with_block(WIN10_RECOVERY, 2, "799997"))
    assert info.value.block == 3
    assert "block 3 of 8, 799997, is too large (must be below 720896)" in str(info.value)


def test_largest_block_is_accepted() -> None:
    text = with_block(WIN10_RECOVERY, 0, "720885")
    assert parse_recovery_password(text)[:2] == struct.pack("<H", 65535)
    with pytest.raises(RecoveryPasswordFormatError):
        parse_recovery_password(with_block(WIN10_RECOVERY, 0, "720896"))


@pytest.mark.parametrize(("text", "fragment"), [
    ("-".join(WIN10_RECOVERY.split("-")[:7]), "has 7 blocks, expected 8 blocks of 6 digits"),
    (WIN10_RECOVERY + "-000000", "has 9 blocks"),
    (WIN10_RECOVERY.replace("-", "")[:-1], "expected 48 digits, got 47"),
    (WIN10_RECOVERY.replace("-", "") + "1", "expected 48 digits, got 49"),
    ("", "empty"),
    ("   ", "empty"),
])
def test_wrong_length(text: str, fragment: str) -> None:
    with pytest.raises(RecoveryPasswordFormatError) as info:
        parse_recovery_password(text)
    assert fragment in str(info.value)
    assert info.value.block is None


def test_short_block_named() -> None:
    with pytest.raises(RecoveryPasswordFormatError) as info:
        parse_recovery_password(with_block(WIN10_RECOVERY, 5, "26161"))
    assert info.value.block == 6
    assert "26161" in str(info.value) and "5 digits" in str(info.value)


@pytest.mark.parametrize(("text", "char", "block"), [
    (with_block(WIN10_RECOVERY, 1, "59654l"), "'l'", 2),
    (with_block(WIN10_RECOVERY, 6, "2154O4"), "'O'", 7),
    (WIN10_RECOVERY.replace("-", ","), "','", None),
    (WIN10_RECOVERY.replace("-", "")[:-1] + "x", "'x'", 8),
])
def test_non_digit_named(text: str, char: str, block: int | None) -> None:
    with pytest.raises(RecoveryPasswordFormatError) as info:
        parse_recovery_password(text)
    assert char in str(info.value)
    assert "not a digit" in str(info.value)
    assert info.value.block == block


@given(st.integers(min_value=0, max_value=999_999), st.integers(min_value=0, max_value=7))
def test_parse_accepts_exactly_the_check_digit_rule(number: int, index: int) -> None:
    block = f"{number:06d}"
    text = with_block(WIN10_RECOVERY, index, block)
    if block_ok(block):
        key = parse_recovery_password(text)
        assert struct.unpack("<8H", key)[index] == number // 11
    else:
        with pytest.raises(RecoveryPasswordFormatError) as info:
            parse_recovery_password(text)
        assert info.value.block == index + 1


@pytest.mark.parametrize("text", [WIN10_RECOVERY, VISTA_RECOVERY])
def test_format_inverts_parse(text: str) -> None:
    assert format_recovery_password(parse_recovery_password(text)) == text


@given(st.binary(min_size=16, max_size=16))
def test_format_round_trip(key16: bytes) -> None:
    text = format_recovery_password(key16)
    assert re.fullmatch(r"\d{6}(-\d{6}){7}", text)
    assert password_ok(text)
    assert parse_recovery_password(text) == key16


def test_format_rejects_wrong_size() -> None:
    with pytest.raises(ValueError):
        format_recovery_password(bytes(15))


def test_check_recovery_password_explains_each_block() -> None:
    checks = check_recovery_password(with_block(WIN10_RECOVERY, 3, "422115"))
    assert [c.index for c in checks] == list(range(1, 9))
    assert [c.ok for c in checks] == [True, True, True, False, True, True, True, True]
    assert checks[0] == BlockCheck(1, "284867", True, 284867 // 11, "ok")
    assert checks[3].value is None and checks[3].text == "422115"
    assert "check digit" in checks[3].reason

    checks = check_recovery_password(with_block(WIN10_RECOVERY, 6, "799997").replace("-", " "))
    assert not checks[6].ok and "too large" in checks[6].reason
    checks = check_recovery_password("284867-59654l-514")
    assert [c.ok for c in checks] == [True, False, False]
    assert "'l'" in checks[1].reason and "3 digits" in checks[2].reason
    assert check_recovery_password("  ") == []


def test_generate_is_valid_and_reproducible() -> None:
    texts = {generate_recovery_password(random.Random(seed)) for seed in range(50)}
    assert len(texts) == 50
    for text in texts:
        assert password_ok(text)
        parse_recovery_password(text)
    assert (generate_recovery_password(random.Random(7))
            == generate_recovery_password(random.Random(7)))
    a, b = generate_recovery_password(), generate_recovery_password()
    assert password_ok(a) and password_ok(b) and a != b


# ------------------------------------------------------------------------------------------
# Hashes and stretching
# ------------------------------------------------------------------------------------------

def test_initial_hashes() -> None:
    key16 = expected_key16(WIN10_RECOVERY)
    assert recovery_password_hash(key16) == hashlib.sha256(key16).digest()
    utf16 = "password12!@".encode("utf-16-le")
    assert len(utf16) == 24
    assert password_hash("password12!@") == hashlib.sha256(hashlib.sha256(utf16).digest()).digest()
    # No normalisation: composed and decomposed forms are different passwords.
    assert password_hash("\u00e9") != password_hash("e\u0301")


@pytest.mark.parametrize("rounds", [0, 1, 2, 4095, 4096, 4097, 9000])
def test_stretch_matches_reference(rounds: int) -> None:
    rng = random.Random(rounds)
    initial, salt = rng.randbytes(32), rng.randbytes(16)
    assert stretch_key(initial, salt, rounds) == reference_stretch(initial, salt, rounds)


@pytest.mark.parametrize("pure", ["1", "0"], ids=["hashlib", "default"])
@pytest.mark.parametrize("rounds", [0, 1, 2, 3, 1000])
def test_stretch_paths_match_reference(monkeypatch: pytest.MonkeyPatch, pure: str,
                                       rounds: int) -> None:
    """Both paths (BDEKIT_PURE=1: the hashlib loop; default: C on SHA-NI where available)
    against the struct-packed reference above, memo cleared between them."""
    monkeypatch.setenv("BDEKIT_PURE", pure)
    monkeypatch.setattr(keys_module, "_STRETCHED", {})
    rng = random.Random(rounds * 7 + int(pure))
    initial, salt = rng.randbytes(32), rng.randbytes(16)
    assert stretch_key(initial, salt, rounds) == reference_stretch(initial, salt, rounds)


@pytest.mark.skipif(not (keys_module._native_stretch is not None
                         and keys_module._native_stretch.available()),
                    reason="the C stretch is not built or this CPU has no SHA extensions")
def test_native_stretch_serves_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where it can run, the C loop is the one used (and gives the reference's hashes over
    many random inputs, the counter's bytes included: 300 rounds cross a byte boundary)."""
    monkeypatch.delenv("BDEKIT_PURE", raising=False)
    assert keys_module.native_stretch_used()
    rng = random.Random(5)
    for _ in range(20):
        initial, salt = rng.randbytes(32), rng.randbytes(16)
        assert keys_module._stretch_native(initial, salt, 300) == \
            reference_stretch(initial, salt, 300)
    monkeypatch.setenv("BDEKIT_PURE", "1")
    assert not keys_module.native_stretch_used()


def test_stretch_zero_rounds_is_zero_and_one_round_is_one_hash() -> None:
    initial, salt = bytes(range(32)), bytes(range(100, 116))
    assert stretch_key(initial, salt, 0) == bytes(32)
    assert stretch_key(initial, salt, 1) == hashlib.sha256(
        bytes(32) + initial + salt + bytes(8)).digest()


def test_stretch_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        stretch_key(bytes(31), bytes(16), 1)
    with pytest.raises(ValueError):
        stretch_key(bytes(32), bytes(15), 1)


def test_default_rounds() -> None:
    assert STRETCH_ROUNDS == 1_048_576


# Public known answers for the full 2**20-round stretch: John the Ripper's BitLocker test
# vectors (openwall/john, src/bitlocker_variable_code.h; "$bitlocker$1$..." with password
# "openwall@123" from a Windows 10 image, "$bitlocker$3$..." with a recovery password).
# Each holds salt, nonce and the VMK datum's MAC + ciphertext: the MAC verifies only with the
# right stretched key.
JOHN_VECTORS = [
    pytest.param(
        "password", "openwall@123", "134bd2634ba580adc3758ca5a84d8666", "9080903a0d9dd20103000000",
        "0c52fdd87f17ac55d4f4b82a00b264070f36a84ead6d4cd330368f7dddfde1bdc9f5d08fa526dae361b3d6"
        "4875f76a077fe9c67f44e08d56f0131bb2", id="password"),
    pytest.param(
        "recovery", "111683-110022-683298-209352-468105-648483-571252-334455",
        "432dd19f37dd413a88552225628c8ae5", "a0da3fc75f6cd30106000000",
        "3e57c68216ef3d2b8139fdb0ec74254bdf453e688401e89b41cae7c250739a8b36edd4fe86a597b5823cf3"
        "e0f41c98f623b528960a4bee00c42131ef", id="recovery-password"),
]


@pytest.mark.parametrize(("kind", "secret", "salt", "nonce", "data"), JOHN_VECTORS)
def test_full_stretch_known_answer(kind: str, secret: str, salt: str, nonce: str,
                                   data: str) -> None:
    raw = bytes.fromhex(data)
    assert len(raw) == 60
    if kind == "password":
        key = password_key(secret, bytes.fromhex(salt))
    else:
        key = recovery_password_key(secret, bytes.fromhex(salt))
    plain = aes_ccm_decrypt(key, bytes.fromhex(nonce), raw[:16], raw[16:])
    size, _role, datum_type, _version = struct.unpack_from("<4H", plain)
    assert (size, datum_type, len(plain)) == (44, 1, 44)  # a key datum holding the 32-byte VMK


# ------------------------------------------------------------------------------------------
# AES-CCM and small helpers
# ------------------------------------------------------------------------------------------

def test_aes_ccm_round_trip_and_layout() -> None:
    rng = random.Random(1)
    key, nonce, plain = rng.randbytes(32), rng.randbytes(12), rng.randbytes(44)
    mac, ciphertext = aes_ccm_encrypt(key, nonce, plain)
    assert len(mac) == 16 and len(ciphertext) == len(plain) and ciphertext != plain
    # The library's layout is ciphertext || tag; BitLocker's (and ours) is tag, ciphertext.
    assert AESCCM(key, tag_length=16).encrypt(nonce, plain, None) == ciphertext + mac
    assert aes_ccm_decrypt(key, nonce, mac, ciphertext) == plain
    assert aes_ccm_decrypt(key, nonce, *aes_ccm_encrypt(key, nonce, b"")) == b""


def test_aes_ccm_tampering_is_a_wrong_key() -> None:
    rng = random.Random(2)
    key, nonce, plain = rng.randbytes(32), rng.randbytes(12), rng.randbytes(44)
    mac, ciphertext = aes_ccm_encrypt(key, nonce, plain)
    flipped_mac = bytes([mac[0] ^ 0x01]) + mac[1:]
    flipped_ct = ciphertext[:-1] + bytes([ciphertext[-1] ^ 0x80])
    other_key = bytes([key[0] ^ 0xFF]) + key[1:]
    for args in ((key, nonce, flipped_mac, ciphertext), (key, nonce, mac, flipped_ct),
                 (other_key, nonce, mac, ciphertext)):
        with pytest.raises(WrongKeyError) as info:
            aes_ccm_decrypt(*args)
        assert "wrong key" in str(info.value)


def test_aes_ccm_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        aes_ccm_decrypt(bytes(32), bytes(13), bytes(16), b"")
    with pytest.raises(ValueError):
        aes_ccm_decrypt(bytes(32), bytes(12), bytes(8), b"")
    with pytest.raises(ValueError):
        aes_ccm_encrypt(bytes(32), bytes(11), b"")


def test_make_nonce() -> None:
    # The nonce of the password protector's encrypted VMK in aes-xts_128.bin, as stored:
    # FILETIME 0x01d7bc6fa1c78c00 (2021-10-08), counter 3.
    assert make_nonce(0x01D7BC6FA1C78C00, 3) == bytes.fromhex("008cc7a16fbcd70103000000")
    with pytest.raises(ValueError):
        make_nonce(-1, 0)
    with pytest.raises(ValueError):
        make_nonce(0, 1 << 32)


def test_key_id() -> None:
    # GUID bytes as stored in the recovery password protector of recovery_password.bin.
    guid = uuid.UUID(bytes_le=bytes.fromhex("766b113c7bc64e48b439ce2ed68b561e"))
    assert key_id(guid) == "3C116B76"


def test_fvek_fingerprint() -> None:
    fvek = bytes.fromhex(AES_XTS_128_FVEK)
    fingerprint = fvek_fingerprint(fvek)
    assert re.fullmatch(r"[0-9a-f]{16}", fingerprint)
    assert fingerprint == hashlib.sha256(fvek).hexdigest()[:16]
    assert AES_XTS_128_FVEK[:16] not in fingerprint
    assert fvek_fingerprint(fvek[:-1] + b"\x00") != fingerprint


# ------------------------------------------------------------------------------------------
# End to end on real images: a minimal, independent metadata walker
# ------------------------------------------------------------------------------------------

@dataclass
class Datum:
    role: int
    type: int
    body: bytes  # after the 8-byte header


def walk(buf: bytes) -> list[Datum]:
    datums: list[Datum] = []
    pos = 0
    while pos + 8 <= len(buf):
        size, role, datum_type, _version = struct.unpack_from("<4H", buf, pos)
        if size < 8:
            break
        datums.append(Datum(role, datum_type, buf[pos + 8:pos + size]))
        pos += size
    return datums


@functools.cache
def dataset(name: str) -> bytes:
    """The dataset (header + datums) of the first FVE metadata copy of a real image."""
    path = REAL_IMAGES / name
    if not path.exists():
        pytest.skip(f"{path} is absent")
    volume = gzip.decompress(path.read_bytes())
    if volume[160:176] == uuid.UUID("4967d63b-2e29-4ad8-8399-f6a339e3d001").bytes_le:
        offset = struct.unpack_from("<Q", volume, 176)[0]
    else:  # Vista: a cluster number at 56
        bytes_per_sector, sectors_per_cluster = struct.unpack_from("<HB", volume, 11)
        offset = struct.unpack_from("<Q", volume, 56)[0] * bytes_per_sector * sectors_per_cluster
    assert volume[offset:offset + 8] == b"-FVE-FS-"
    start = offset + 64
    total = struct.unpack_from("<I", volume, start)[0]
    return volume[start:start + total]


def vmk_entry(name: str, protection: int) -> tuple[uuid.UUID, list[Datum]]:
    for datum in walk(dataset(name)[48:]):
        if datum.role == 2 and datum.type == 8:
            if struct.unpack_from("<H", datum.body, 26)[0] == protection:
                # nested datums start at offset 36 of the datum = 28 of the body
                return uuid.UUID(bytes_le=datum.body[:16]), walk(datum.body[28:])
    raise AssertionError(f"{name}: no VMK protector of type {protection:#06x}")


def unwrap(key: bytes, body: bytes) -> tuple[int, bytes]:
    """Decrypt an AES-CCM encrypted key datum body: (key type, key bytes) of its key datum."""
    plain = aes_ccm_decrypt(key, body[:12], body[12:28], body[28:])
    size, _role, datum_type, _version, key_type, _flags = struct.unpack_from("<6H", plain)
    assert datum_type == 1 and size == len(plain)
    return key_type, plain[12:size]


def protector_vmk(name: str, protection: int, derive: Callable[[bytes], bytes]) -> bytes:
    _guid, nested = vmk_entry(name, protection)
    (stretch,) = [d for d in nested if d.type == 3]
    (encrypted,) = [d for d in nested if d.type == 5]
    salt = stretch.body[4:20]
    _key_type, vmk = unwrap(derive(salt), encrypted.body)
    assert len(vmk) == 32
    return vmk


def fvek(name: str, vmk: bytes) -> tuple[int, bytes]:
    (datum,) = [d for d in walk(dataset(name)[48:]) if d.role == 3 and d.type == 5]
    return unwrap(vmk, datum.body)


@pytest.mark.real
def test_real_password_unlocks_aes_xts_128() -> None:
    vmk = protector_vmk("aes-xts_128.bin.gz", 0x2000,
                        lambda salt: password_key(WIN10_PASSWORD, salt))
    key_type, key = fvek("aes-xts_128.bin.gz", vmk)
    assert key.hex() == AES_XTS_128_FVEK
    assert key_type == 0x8004


@pytest.mark.real
def test_real_wrong_password_is_a_wrong_key() -> None:
    with pytest.raises(WrongKeyError):
        protector_vmk("aes-xts_128.bin.gz", 0x2000, lambda salt: password_key("password12!#", salt))


@pytest.mark.real
def test_real_recovery_password_unlocks() -> None:
    name = "recovery_password.bin.gz"
    guid, _nested = vmk_entry(name, 0x0800)
    assert key_id(guid) == "3C116B76"
    vmk = protector_vmk(name, 0x0800, lambda salt: recovery_password_key(WIN10_RECOVERY, salt))
    # The same volume also has a password protector: both must unwrap the same VMK.
    assert protector_vmk(name, 0x2000, lambda salt: password_key(WIN10_PASSWORD, salt)) == vmk
    key_type, key = fvek(name, vmk)
    assert (key_type, len(key)) == (0x8004, 32)


@pytest.mark.real
def test_real_vista_recovery_password_unlocks() -> None:
    name = "vista.bin.gz"
    vmk = protector_vmk(name, 0x0800,
                        lambda salt: recovery_password_key(VISTA_RECOVERY.replace("-", " "), salt))
    key_type, key = fvek(name, vmk)
    assert (key_type, len(key)) == (0x8000, 64)


# ------------------------------------------------------------------------------------------
# Typo search
# ------------------------------------------------------------------------------------------

def candidates(text: str, level: int = 1) -> list[str]:
    found = list(typo_candidates(text, level))
    assert len(found) == len(set(found)), "a candidate was yielded twice"
    assert count_typo_candidates(text, level) == len(found)
    assert all(password_ok(c) for c in found)
    assert text.strip() not in found
    return found


def single_digit_typos(block: str) -> list[str]:
    return [block[:i] + d + block[i + 1:] for i in range(6) for d in "0123456789"
            if d != block[i]]


def test_typo_single_substitution_anywhere() -> None:
    blocks = WIN10_RECOVERY.split("-")
    for index, block in enumerate(blocks):
        for typo in single_digit_typos(block):
            typed = with_block(WIN10_RECOVERY, index, typo)
            assert not password_ok(typed)  # the check digit catches every single wrong digit
            found = candidates(typed)
            assert WIN10_RECOVERY in found
            # only the failing block is corrected
            for candidate in found:
                other = candidate.split("-")
                assert other[:index] + other[index + 1:] == blocks[:index] + blocks[index + 1:]


def test_typo_letter_for_digit() -> None:
    typed = with_block(WIN10_RECOVERY, 6, "2154O4")
    assert WIN10_RECOVERY in candidates(typed)


def test_typo_swapped_neighbours() -> None:
    blocks = WIN10_RECOVERY.split("-")
    tried = 0
    for index, block in enumerate(blocks):
        for i in range(5):
            if block[i] == block[i + 1]:
                continue
            typo = block[:i] + block[i + 1] + block[i] + block[i + 2:]
            typed = with_block(WIN10_RECOVERY, index, typo).replace("-", " ")
            assert WIN10_RECOVERY in candidates(typed)
            tried += 1
    assert tried > 30


def test_typo_missing_digit() -> None:
    for index, block in enumerate(WIN10_RECOVERY.split("-")):
        for i in range(6):
            typed = with_block(WIN10_RECOVERY, index, block[:i] + block[i + 1:])
            assert WIN10_RECOVERY in candidates(typed)
            assert WIN10_RECOVERY in candidates(typed.replace("-", ""))  # 47 digits


def test_typo_extra_digit() -> None:
    for index, block in enumerate(WIN10_RECOVERY.split("-")):
        for i in range(7):
            for digit in "0369":
                typed = with_block(WIN10_RECOVERY, index, block[:i] + digit + block[i:])
                assert WIN10_RECOVERY in candidates(typed)
        typed = with_block(WIN10_RECOVERY, index, block + "5").replace("-", "")  # 49 digits
        assert WIN10_RECOVERY in candidates(typed)


def test_typo_in_two_blocks() -> None:
    typed = with_block(with_block(WIN10_RECOVERY, 1, "596514"), 5, "261623")
    found = candidates(typed)
    assert WIN10_RECOVERY in found
    # every candidate corrects both blocks
    assert all(c.split("-")[1] != "596514" and c.split("-")[5] != "261623" for c in found)


def test_typo_no_separators_prefers_fewest_corrections() -> None:
    # 47 digits, missing one digit in block 4: the reading that only needs block 4 corrected
    # comes before readings that need two blocks corrected.
    typed = with_block(WIN10_RECOVERY, 3, "42114").replace("-", "")
    found = candidates(typed)
    changed = [sum(a != b for a, b in zip(c.split("-"), WIN10_RECOVERY.split("-"), strict=True))
               for c in found]
    assert WIN10_RECOVERY in found
    first_multi = next((i for i, n in enumerate(changed) if n > 1), len(changed))
    assert found.index(WIN10_RECOVERY) < first_multi


def test_no_separators_reading_that_is_not_the_best_one() -> None:
    # 48 digits typed as 47 with block 1 also mistyped ('088132' -> '085132') and the first
    # digit of block 2 dropped: reading block 1 as the short one leaves only one failing block,
    # the true reading (block 2 short) has two, and must still be searched.
    true = "088132-211398-600754-523072-029062-298144-409717-412918"
    typed = "085132" + "11398" + true.replace("-", "")[12:]
    assert len(typed) == 47
    assert true in candidates(typed)


@given(st.integers(min_value=0, max_value=65535), st.integers(min_value=0, max_value=5),
       st.integers(min_value=1, max_value=9))
@settings(max_examples=300)
def test_check_digit_catches_substitutions_and_neighbour_swaps(value: int, i: int,
                                                                delta: int) -> None:
    # Why level 2 looks for other errors: a passing block never has a passing neighbour by
    # one substituted digit or one swap of neighbouring digits.
    block = f"{value * 11:06d}"
    substituted = block[:i] + str((int(block[i]) + delta) % 10) + block[i + 1:]
    assert not block_ok(substituted)
    if i < 5 and block[i] != block[i + 1]:
        assert not block_ok(block[:i] + block[i + 1] + block[i] + block[i + 2:])


def test_level_two_finds_undetectable_typos() -> None:
    # '215424' typed as '245124' (the digits one apart at positions 2 and 4 swapped) and
    # '199408' typed as '122408' (twin error "99" -> "22"): both still pass the check digit.
    for index, typo in ((6, "245124"), (7, "122408")):
        typed = with_block(WIN10_RECOVERY, index, typo)
        assert password_ok(typed)
        assert candidates(typed, 1) == []
        assert WIN10_RECOVERY in candidates(typed, 2)


def test_level_two_lists_level_one_first() -> None:
    typed = with_block(with_block(WIN10_RECOVERY, 3, "422115"), 6, "245124")
    level1 = candidates(typed, 1)
    level2 = candidates(typed, 2)
    assert level1 and level2[:len(level1)] == level1
    assert len(level2) > len(level1)
    assert WIN10_RECOVERY not in level1
    assert WIN10_RECOVERY in level2[len(level1):]
    # only one passing block changed at a time, on top of the level-1 corrections
    for candidate in level2[len(level1):]:
        changed = [a != b for a, b in zip(candidate.split("-"), typed.split("-"), strict=True)]
        assert changed[3] and sum(changed) == 2


def test_level_two_of_a_valid_password() -> None:
    found = candidates(VISTA_RECOVERY, 2)
    assert found
    assert candidates(VISTA_RECOVERY, 1) == []
    for candidate in found:
        changed = [a != b for a, b in zip(candidate.split("-"), VISTA_RECOVERY.split("-"),
                                          strict=True)]
        assert sum(changed) == 1


def test_too_large_block_is_corrected() -> None:
    # '700304' typed with the digits at positions 2 and 4 swapped is '730004': it passes the
    # check digit but is too large, so level 1 already corrects it.
    assert block_ok("700304") and not block_ok("730004") and 730004 % 11 == 0
    target = with_block(WIN10_RECOVERY, 2, "700304")
    typed = with_block(WIN10_RECOVERY, 2, "730004")
    assert target in candidates(typed, 1)


def test_typo_input_errors() -> None:
    with pytest.raises(RecoveryPasswordFormatError):
        typo_candidates("-".join(WIN10_RECOVERY.split("-")[:7]))
    with pytest.raises(RecoveryPasswordFormatError):
        count_typo_candidates(WIN10_RECOVERY.replace("-", "")[:-2])
    with pytest.raises(ValueError):
        typo_candidates(WIN10_RECOVERY, 3)


def test_hopeless_block_gives_no_candidates() -> None:
    typed = with_block(WIN10_RECOVERY, 0, "2848")  # two digits missing
    assert candidates(typed) == []
