"""The arguments of :func:`bdekit.synth.build` as users spell them, and the builder's fixed sizes.

Arguments:

* sizes: ``4096``, ``0x1000``, ``64K``, ``64M``, ``1G``, ``2TiB`` (binary multiples);
* states: ``encrypted`` (or none) for a finished conversion, ``partial:OFFSET`` for a
  conversion stopped at OFFSET (bytes from there on stay plaintext);
* methods: a label (``aes-xts-128``, ``aes_cbc_256_diffuser``) or the numeric method.
"""

from __future__ import annotations

import re

from bdekit.errors import UsageError
from bdekit.format.constants import EncryptionMethod

MiB = 1 << 20

#: Bytes per chunk of the streaming pipeline (a multiple of :data:`WINDOW`).
CHUNK = 4 * MiB

#: Manifest digest window.
WINDOW = MiB

#: Granularity of hole punching (all-zero blocks are not written).
SPARSE_BLOCK = 64 << 10

#: First bytes of the volume Windows 7+ relocate (and Vista leaves plaintext).
HEADER_BLOCK = 8192

#: Smallest volume :func:`bdekit.synth.build` writes.
MIN_SIZE = MiB

#: A chunk of zeros (read only; sliced for zero plaintext and digests).
ZEROS = bytes(CHUNK)

#: Sector sizes :func:`bdekit.synth.build` writes.
SECTOR_SIZES = (512, 1024, 2048, 4096)

_SIZE_RE = re.compile(r"^\s*(0x[0-9a-f]+|\d+)\s*([kmgtp]?)(i?b)?\s*$", re.IGNORECASE)

_SUFFIX = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50}


def parse_size(text: str | int) -> int:
    """``4096``, ``0x1000``, ``64K``, ``64M``, ``1G``, ``2TiB`` -> bytes (binary multiples)."""
    if isinstance(text, int):
        if text < 0:
            raise UsageError(f"size {text} is negative")
        return text
    match = _SIZE_RE.match(text)
    if not match:
        raise UsageError(f"{text!r} is not a size (e.g. 4096, 0x1000, 64K, 64M, 1G)")
    number, suffix = match.group(1), match.group(2).lower()
    return int(number, 0) << _SUFFIX[suffix]


def parse_state(state: str | int | None, volume_size: int, sector_size: int) -> int:
    """Encrypted bytes for ``state``: None / ``"encrypted"`` = all; ``"partial:OFFSET"`` or an int
    = a conversion stopped at OFFSET (sector aligned, inside the volume)."""
    if state is None:
        return volume_size
    if isinstance(state, str):
        text = state.strip().lower()
        if text in ("encrypted", "full"):
            return volume_size
        if not text.startswith("partial:"):
            raise UsageError(f"state {state!r}: expected 'encrypted' or 'partial:OFFSET'")
        offset = parse_size(text.split(":", 1)[1])
    else:
        offset = int(state)
    if offset % sector_size:
        raise UsageError(f"partial state offset {offset} is not a multiple of the sector size "
                         f"({sector_size})")
    if not HEADER_BLOCK <= offset <= volume_size:
        raise UsageError(f"partial state offset {offset} is outside the volume "
                         f"({HEADER_BLOCK}..{volume_size})")
    return offset


def parse_method(method: str | int | EncryptionMethod) -> EncryptionMethod:
    """The encryption method of a label or number; ``none`` is refused."""
    try:
        if isinstance(method, str):
            value = EncryptionMethod.from_label(method.replace("_", "-"))
        else:
            value = EncryptionMethod(int(method))
    except ValueError as exc:
        raise UsageError(str(exc) if isinstance(method, str)
                         else f"unknown encryption method {method!r}") from None
    if value == EncryptionMethod.NONE:
        raise UsageError("synthetic images need an encryption method, not 'none'")
    return value
