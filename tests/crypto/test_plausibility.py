"""The ciphertext-or-plaintext test, checked against what Windows itself says.

Truth comes from the real images: a fully encrypted volume (every written sector is
ciphertext) and a decrypted one (every sector is plaintext); on both, the test must never
give the wrong verdict, and must decide most written sectors.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import bdekit
from bdekit.crypto.ciphers import make_cipher
from bdekit.crypto.plausibility import STRUCTURED_CHI2, Verdict, chi_square, classify
from bdekit.format.metadata import parse_volume_header
from tests.conftest import real_kwargs, requires_real


def _fvek(path: Path, name: str) -> bytes:
    """The volume's FVEK, by unlocking it with the secret its README gives."""
    with bdekit.open_volume(path, **real_kwargs(name)) as opened:
        return bytes(opened.volume.unlocked.fvek)  # type: ignore[attr-defined]


def test_uniform_bytes_score_near_255() -> None:
    rng = np.random.default_rng(1)
    scores = chi_square(rng.integers(0, 256, size=(2000, 512), dtype=np.uint8))
    assert 245 < scores.mean() < 265
    assert (scores < STRUCTURED_CHI2).mean() > 0.999


def test_text_and_zero_padded_records_are_structured() -> None:
    text = (b"The quick brown fox jumps over the lazy dog. " * 12)[:512]
    record = b"FILE0" + bytes(100) + os.urandom(40) + bytes(367)
    scores = chi_square(np.frombuffer(text + record, dtype=np.uint8).reshape(2, 512))
    assert (scores > STRUCTURED_CHI2).all()


def test_synthetic_sectors_both_ways() -> None:
    key = bytes(range(32))
    cipher = make_cipher(0x8004, key, 512)
    plain = (b"structured plaintext sector " * 40)[:512] * 4
    enc = bytearray(len(plain))
    cipher.encrypt(plain, enc, 0)
    dec_of_enc = bytearray(len(plain))
    cipher.decrypt(bytes(enc), dec_of_enc, 0)
    dec_of_plain = bytearray(len(plain))
    cipher.decrypt(plain, dec_of_plain, 0)
    assert list(classify(bytes(enc), bytes(dec_of_enc), 512)) == [Verdict.ENCRYPTED] * 4
    assert list(classify(plain, bytes(dec_of_plain), 512)) == [Verdict.PLAIN] * 4
    zeros = bytes(1024)
    assert list(classify(zeros, os.urandom(1024), 512)) == [Verdict.UNWRITTEN] * 2


def _verdicts(path: Path, fvek: bytes, method: int) -> tuple[np.ndarray, np.ndarray]:
    """Verdict per sector, and a mask of the sectors that are plaintext on disk whatever the
    volume's state: the BitLocker header (first 8 KiB) and the three metadata copies."""
    raw = path.read_bytes()
    raw = raw[:len(raw) - len(raw) % 512]
    cipher = make_cipher(method, fvek, 512)
    dec = bytearray(len(raw))
    cipher.decrypt(raw, dec, 0)
    header = parse_volume_header(raw[:512])
    always_plain = np.zeros(len(raw) // 512, dtype=bool)
    always_plain[:16] = True
    for off in header.metadata_offsets:
        always_plain[off // 512:(off + 0x10000) // 512] = True
    return classify(raw, bytes(dec), 512), always_plain


@requires_real
@pytest.mark.real
@pytest.mark.parametrize("name", ["aes-xts_128", "recovery_password", "startup_key"])
def test_real_ciphertext_is_never_called_plain(real_image: Callable[[str], Path],
                                               name: str) -> None:
    """Windows encrypted every written sector outside the header and the metadata copies."""
    path = real_image(name)
    verdicts, always_plain = _verdicts(path, _fvek(path, name), 0x8004)
    written = verdicts != Verdict.UNWRITTEN
    body = verdicts[written & ~always_plain]
    assert len(body) >= 20
    assert (body == Verdict.PLAIN).sum() == 0
    assert (body == Verdict.ENCRYPTED).mean() > 0.8
    metadata = verdicts[written & always_plain]
    assert len(metadata) >= 3 and (metadata == Verdict.ENCRYPTED).sum() == 0


@requires_real
@pytest.mark.real
def test_real_decrypted_volume_is_never_called_encrypted(
        real_image: Callable[[str], Path]) -> None:
    verdicts, _ = _verdicts(real_image("decrypted"), bytes(range(32)), 0x8004)
    written = verdicts[verdicts != Verdict.UNWRITTEN]
    assert len(written) >= 20
    assert (written == Verdict.ENCRYPTED).sum() == 0
    assert (written == Verdict.PLAIN).mean() > 0.8
