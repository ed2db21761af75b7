"""A small used-space-only (EOW) subject for the damage harness and the EOW tests.

Not a test module. :func:`build_eow_subject` writes a structured 1 MiB plaintext (an NTFS-like
boot sector and its backup, text-like records, zeros, random "compressed" data), builds a
clear-key AES-XTS-128 image of it (:func:`bdekit.synth.build`), and rewrites it as Windows 10
lays out a used-space-only volume (:func:`bdekit.synth.eow.make_used_space_only`): 64 KiB
chunks, the zero chunks and one chunk of old text left unencrypted, the relocated boot sectors
in plaintext, and an older bitmap record that differs from the newest in two chunks. The
expected decrypted volume comes from the plaintext alone.
"""

from __future__ import annotations

import random
from pathlib import Path

from bdekit.synth import ClearKeySpec, build, ntfs_boot_sector
from bdekit.synth.eow import EowImage, make_used_space_only
from tests.harness import Subject

SIZE = 1 << 20
CHUNK = 0x10000
#: where the EOW structures go (a chunk the builder's layout leaves free)
STRUCTURES_AT = 0xE0000


def _text_sector(rng: random.Random, n: int) -> bytes:
    words = [b"FILE0", b"$MFT", b"record", b"index", b"data", b"attribute", b"\x00\x00"]
    out = bytearray()
    while len(out) < n:
        out += rng.choice(words) + b" "
    return bytes(out[:n])


def plaintext(seed: int = 5) -> bytes:
    """The volume plaintext: per 64 KiB chunk text, zeros or random bytes."""
    rng = random.Random(seed)
    data = bytearray(SIZE)
    for k in range(SIZE // CHUNK):
        kind = k % 4
        start = k * CHUNK
        if kind in (0, 1):
            data[start:start + CHUNK] = _text_sector(rng, CHUNK)
        elif kind == 2:
            data[start:start + CHUNK // 2] = rng.randbytes(CHUNK // 2)
    data[0:0x2000] = _text_sector(rng, 0x2000)
    data[0:512] = ntfs_boot_sector(SIZE, 512, serial=0x1234)
    data[SIZE - 512:] = ntfs_boot_sector(SIZE, 512, serial=0x1234)
    return bytes(data)


def zero_chunks(plain: bytes) -> list[int]:
    """Starts of the chunks (from 8 KiB, as the regions cut them) that hold only zeros."""
    return [a for a in range(0x2000, SIZE, CHUNK) if not any(plain[a:a + CHUNK])]


def build_eow_subject(work: Path, *, relocated_plain: bool = True,
                      seed: int = 5) -> tuple[Subject, EowImage, Path]:
    """(subject with its expected plaintext, where the EOW structures are, image path)."""
    plain = plaintext(seed)
    source = work / "eow-plain.bin"
    source.write_bytes(plain)
    img = work / "eow.img"
    build(img, source=source, method="aes-xts-128", protectors=[ClearKeySpec()], seed=seed,
          force=True, manifest=work / "eow.img.json")
    image = bytearray(img.read_bytes())
    plain_chunks = [*zero_chunks(plain), 0x2000 + 4 * CHUNK]  # and one chunk of old text
    expected, where = make_used_space_only(
        image, plain, chunk_size=CHUNK, structures_at=STRUCTURES_AT,
        plain_chunks=plain_chunks, relocated_plain=relocated_plain,
        older_differs=[0x2000 + 4 * CHUNK, 0x2000 + 5 * CHUNK])
    img.chmod(0o600)
    img.write_bytes(image)
    img.chmod(0o444)
    return Subject("eow-synthetic", bytes(image), [], expected), where, img
