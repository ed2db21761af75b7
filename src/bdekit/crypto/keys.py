"""Key derivation for BitLocker protectors: pure functions, bytes in and bytes out.

Recovery password
    48 digits in 8 blocks of 6, e.g. ``284867-596541-514998-422114-660297-261613-215424-199408``.
    Every block is a multiple of 11 below 720896 (65536 x 11); ``block // 11`` is a 16-bit value
    and the 8 values, packed as little-endian u16, are the 16-byte recovery key.  Being a
    multiple of 11 is the block's check digit: with digits d1..d6, ``d6 == (d1 - d2 + d3 - d4 +
    d5) mod 11`` (because 10 = -1 mod 11); a required check digit of 10 can never be typed, so
    such first five digits are always wrong.  The initial hash is SHA-256 of the 16 bytes.

User password
    The initial hash is ``SHA-256(SHA-256(password encoded as UTF-16LE))``; the password is
    used exactly as given (no Unicode normalisation: Windows does none).

Stretching (both kinds)
    An 88-byte buffer ``last hash (32, starts as zeros) | initial hash (32) | salt (16, from the
    stretch key datum) | counter (u64 LE, starts at 0)`` is hashed :data:`STRETCH_ROUNDS`
    (1,048,576) times; after each round ``last hash = SHA-256(buffer)`` and ``counter += 1``.
    The final last hash is the 256-bit protector key. With the optional
    :mod:`bdekit.crypto._stretch` built and a CPU with SHA extensions the loop runs in C (about
    0.05 s instead of 0.6 s, GIL released); ``BDEKIT_PURE=1`` or its absence selects the
    hashlib loop, which stays the reference.

Unwrapping
    The protector key AES-CCM-decrypts the VMK protector's encrypted key datum to the VMK, which
    in turn decrypts the FVEK datum.  AES-CCM uses a 12-byte nonce (FILETIME u64 LE + counter
    u32 LE) and a 16-byte tag; BitLocker stores the tag *before* the ciphertext.  A tag that
    does not verify means the secret is wrong (:class:`~bdekit.errors.WrongKeyError`).

Typo search (:func:`typo_candidates`)
    The check digit catches every single wrong digit and every swap of two neighbouring digits
    (the alternating sum changes by a non-zero amount below 11 resp. ``2 x (a - b)``), so such
    typos are found by looking only at failing blocks.  It can never catch a swap of two digits
    one apart (``abc`` -> ``cba``: the alternating sum is unchanged) nor a "twin" error (``aa`` ->
    ``bb``), which is what level 2 looks for in blocks that pass.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import re
import secrets
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from bdekit.errors import RecoveryPasswordFormatError, WrongKeyError
from bdekit.format.constants import STRETCH_ROUNDS
from bdekit.format.guid import key_id

_native_stretch: ModuleType | None
try:
    from bdekit.crypto import _stretch as _native_stretch  # type: ignore[attr-defined,no-redef]
except ImportError:  # not built: the hashlib loop serves
    _native_stretch = None

__all__ = [
    "BLOCK_COUNT",
    "BLOCK_DIGITS",
    "BLOCK_LIMIT",
    "CCM_MAC_SIZE",
    "CCM_NONCE_SIZE",
    "BlockCheck",
    "aes_ccm_decrypt",
    "aes_ccm_encrypt",
    "check_recovery_password",
    "count_typo_candidates",
    "format_recovery_password",
    "fvek_fingerprint",
    "generate_recovery_password",
    "key_id",
    "make_nonce",
    "parse_recovery_password",
    "password_hash",
    "password_key",
    "recovery_password_hash",
    "recovery_password_key",
    "stretch_key",
    "typo_candidates",
]

#: Blocks in a recovery password.
BLOCK_COUNT = 8
#: Digits in one block.
BLOCK_DIGITS = 6
#: Every block is below this (65536 x 11).
BLOCK_LIMIT = 65536 * 11
#: AES-CCM nonce and tag sizes used by BitLocker.
CCM_NONCE_SIZE = 12
CCM_MAC_SIZE = 16

_DIGITS = "0123456789"
# Separators between blocks: any whitespace and any of the dashes a word processor or web page
# may have substituted for '-' (hyphen, non-breaking hyphen, figure dash, en dash, em dash,
# minus sign).
_DASHES = "-\u2010\u2011\u2012\u2013\u2014\u2212"
_SEPARATOR_RE = re.compile(f"[\\s{re.escape(_DASHES)}]+")
_U16X8 = struct.Struct("<8H")
_U64 = struct.Struct("<Q")
_NONCE = struct.Struct("<QI")
# Counter tails built per batch in stretch_key: big enough to amortise the list building,
# small enough to stay in the CPU cache.
_STRETCH_BATCH = 4096


# --------------------------------------------------------------------------------------------
# Recovery password text
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BlockCheck:
    """The verdict on one block of a recovery password, for ``bdekit keys check``.

    ``index`` is 1-based, ``text`` the block as typed, ``value`` the 16-bit value ``block // 11``
    (``None`` unless ``ok``), ``reason`` ``"ok"`` or why the block cannot be right.
    """

    index: int
    text: str
    ok: bool
    value: int | None
    reason: str


def _block_problem(block: str) -> str | None:
    """Why ``block`` cannot be a recovery password block, or ``None`` if it can."""
    for char in block:
        if char not in _DIGITS:
            return f"contains {char!r}, which is not a digit"
    if len(block) != BLOCK_DIGITS:
        return f"has {len(block)} digit{'' if len(block) == 1 else 's'}, expected {BLOCK_DIGITS}"
    number = int(block)
    if number % 11:
        return "fails its check digit (it is not divisible by 11)"
    if number >= BLOCK_LIMIT:
        return f"is too large (must be below {BLOCK_LIMIT})"
    return None


def _is_valid_block(block: str) -> bool:
    return (len(block) == BLOCK_DIGITS and block.isascii() and block.isdigit()
            and int(block) % 11 == 0 and int(block) < BLOCK_LIMIT)


def _has_separator(text: str) -> bool:
    return _SEPARATOR_RE.search(text) is not None


def _split_typed(stripped: str) -> list[str]:
    """Blocks as typed: split at separators; without any, cut into runs of 6 characters."""
    if _has_separator(stripped):
        return [part for part in _SEPARATOR_RE.split(stripped) if part]
    return [stripped[i:i + BLOCK_DIGITS] for i in range(0, len(stripped), BLOCK_DIGITS)]


def _plural_blocks(count: int) -> str:
    return f"{count} block{'' if count == 1 else 's'}"


def _check_characters(text: str) -> None:
    """Raise for the first character that is neither a digit nor a separator."""
    stripped = text.strip()
    for position, char in enumerate(text):
        if char in _DIGITS or char.isspace() or char in _DASHES:
            continue
        head = text[:position + 1].strip()  # up to and including the character
        if _has_separator(stripped):
            block: int | None = sum(1 for part in _SEPARATOR_RE.split(head) if part)
        elif len(stripped) == BLOCK_COUNT * BLOCK_DIGITS:
            block = (len(head) - 1) // BLOCK_DIGITS + 1
        else:
            block = None
        raise RecoveryPasswordFormatError(
            f"recovery password contains {char!r} at position {position + 1}, which is not a "
            f"digit (only digits, '-' and spaces are allowed)", block=block)


def parse_recovery_password(text: str) -> bytes:
    """The 16-byte recovery key of a recovery password (8 little-endian u16 of ``block / 11``).

    Blocks may be separated by dashes, whitespace or any mix of them, or not at all (48 digits);
    surrounding whitespace is ignored.  Raises :class:`RecoveryPasswordFormatError`, with
    ``.block`` set (1-based) when one block is at fault.
    """
    stripped = text.strip()
    if not stripped:
        raise RecoveryPasswordFormatError("recovery password is empty")
    _check_characters(text)
    if _has_separator(stripped):
        blocks = _split_typed(stripped)
        if len(blocks) != BLOCK_COUNT:
            raise RecoveryPasswordFormatError(
                f"recovery password has {_plural_blocks(len(blocks))}, "
                f"expected {BLOCK_COUNT} blocks of {BLOCK_DIGITS} digits")
    else:
        if len(stripped) != BLOCK_COUNT * BLOCK_DIGITS:
            raise RecoveryPasswordFormatError(
                f"recovery password without separators: expected "
                f"{BLOCK_COUNT * BLOCK_DIGITS} digits, got {len(stripped)}")
        blocks = _split_typed(stripped)
    values: list[int] = []
    for index, block in enumerate(blocks, 1):
        problem = _block_problem(block)
        if problem is not None:
            raise RecoveryPasswordFormatError(
                f"recovery password block {index} of {BLOCK_COUNT}, {block}, {problem}",
                block=index)
        values.append(int(block) // 11)
    return _U16X8.pack(*values)


def check_recovery_password(text: str) -> list[BlockCheck]:
    """Explain each block of a (possibly wrong) recovery password; never raises.

    Blocks are split as :func:`parse_recovery_password` splits them; text without separators
    is cut into runs of 6 characters.  A wrong number of blocks shows as a list whose length is
    not 8 (empty for empty text): :func:`parse_recovery_password` words that error.
    """
    checks: list[BlockCheck] = []
    for index, block in enumerate(_split_typed(text.strip()), 1):
        problem = _block_problem(block)
        if problem is None:
            checks.append(BlockCheck(index, block, True, int(block) // 11, "ok"))
        else:
            checks.append(BlockCheck(index, block, False, None, problem))
    return checks


def format_recovery_password(key16: bytes) -> str:
    """The recovery password of a 16-byte recovery key: 8 blocks of 6 digits joined by '-'."""
    if len(key16) != 16:
        raise ValueError(f"a recovery key has 16 bytes, got {len(key16)}")
    return "-".join(f"{value * 11:06d}" for value in _U16X8.unpack(bytes(key16)))


def generate_recovery_password(rng: random.Random | None = None) -> str:
    """A random valid recovery password (from :mod:`secrets` unless ``rng`` is given)."""
    if rng is None:
        return format_recovery_password(secrets.token_bytes(16))
    return format_recovery_password(_U16X8.pack(*(rng.randrange(65536) for _ in range(8))))


# --------------------------------------------------------------------------------------------
# Key derivation
# --------------------------------------------------------------------------------------------

def recovery_password_hash(key16: bytes) -> bytes:
    """Initial hash of a recovery password: SHA-256 of its 16-byte recovery key."""
    if len(key16) != 16:
        raise ValueError(f"a recovery key has 16 bytes, got {len(key16)}")
    return hashlib.sha256(key16).digest()


def password_hash(password: str) -> bytes:
    """Initial hash of a user password: SHA-256(SHA-256(UTF-16LE password))."""
    encoded = password.encode("utf-16-le", "surrogatepass")
    return hashlib.sha256(hashlib.sha256(encoded).digest()).digest()


#: stretched keys already computed in this process, by SHA-256 of (initial hash, salt,
#: rounds): the same secret is often tried against several copies of one protector
_STRETCHED: dict[bytes, bytes] = {}
_STRETCHED_MAX = 32


def stretch_key(initial_hash: bytes, salt: bytes, rounds: int = STRETCH_ROUNDS) -> bytes:
    """The protector key: ``rounds`` SHA-256 rounds over the 88-byte stretch buffer.

    Buffer: last hash (32, zeros at first) | initial hash (32) | salt (16) | counter (u64 LE
    from 0); each round replaces the last hash by the SHA-256 of the buffer and increments the
    counter.  Returns the final last hash (32 bytes). The last few results are remembered
    (keyed by a hash of the inputs, not the inputs), since one secret is often tried against
    several versions of the same protector.
    """
    memo = hashlib.sha256(bytes(initial_hash) + bytes(salt) + _U64.pack(max(0, rounds)))
    cached = _STRETCHED.get(memo.digest())
    if cached is not None:
        return cached
    result = _stretch_native(initial_hash, salt, rounds) if native_stretch_used() \
        else _stretch(initial_hash, salt, rounds)
    if len(_STRETCHED) >= _STRETCHED_MAX:
        _STRETCHED.pop(next(iter(_STRETCHED)))
    _STRETCHED[memo.digest()] = result
    return result


def native_stretch_used() -> bool:
    """Whether :func:`stretch_key` runs in C: the module is built, the CPU has SHA extensions
    and the environment does not ask for the pure path (``BDEKIT_PURE=1``)."""
    return (_native_stretch is not None and bool(_native_stretch.available())
            and os.environ.get("BDEKIT_PURE", "") in ("", "0"))


def _stretch_native(initial_hash: bytes, salt: bytes, rounds: int) -> bytes:
    _check_stretch_inputs(initial_hash, salt, rounds)
    assert _native_stretch is not None
    return bytes(_native_stretch.stretch(bytes(initial_hash), bytes(salt), rounds))


def _check_stretch_inputs(initial_hash: bytes, salt: bytes, rounds: int) -> None:
    if len(initial_hash) != 32:
        raise ValueError(f"the initial hash has 32 bytes, got {len(initial_hash)}")
    if len(salt) != 16:
        raise ValueError(f"the stretch salt has 16 bytes, got {len(salt)}")
    if rounds < 0:
        raise ValueError(f"rounds must not be negative, got {rounds}")


def _stretch(initial_hash: bytes, salt: bytes, rounds: int) -> bytes:
    """The reference loop (hashlib)."""
    _check_stretch_inputs(initial_hash, salt, rounds)
    # The hot loop is one concatenation, one hash and one digest per round; everything that does
    # not depend on the previous round (constant middle + packed counter) is built in batches.
    sha256 = hashlib.sha256
    pack = _U64.pack
    middle = bytes(initial_hash) + bytes(salt)
    last = bytes(32)
    for start in range(0, rounds, _STRETCH_BATCH):
        tails = [middle + pack(counter)
                 for counter in range(start, min(start + _STRETCH_BATCH, rounds))]
        for tail in tails:
            last = sha256(last + tail).digest()
    return last


def recovery_password_key(text: str, salt: bytes) -> bytes:
    """Protector key of a recovery password protector (parse, hash, stretch)."""
    return stretch_key(recovery_password_hash(parse_recovery_password(text)), salt)


def password_key(password: str, salt: bytes) -> bytes:
    """Protector key of a user password protector (hash, stretch)."""
    return stretch_key(password_hash(password), salt)


# --------------------------------------------------------------------------------------------
# AES-CCM
# --------------------------------------------------------------------------------------------

def _check_ccm_sizes(nonce: bytes, mac: bytes | None = None) -> None:
    if len(nonce) != CCM_NONCE_SIZE:
        raise ValueError(f"an AES-CCM nonce has {CCM_NONCE_SIZE} bytes, got {len(nonce)}")
    if mac is not None and len(mac) != CCM_MAC_SIZE:
        raise ValueError(f"an AES-CCM MAC has {CCM_MAC_SIZE} bytes, got {len(mac)}")


def aes_ccm_decrypt(key: bytes, nonce: bytes, mac: bytes, ciphertext: bytes) -> bytes:
    """Decrypt and authenticate a BitLocker AES-CCM datum body (tag stored before the data).

    Raises :class:`WrongKeyError` when the MAC does not verify; the caller adds which
    protector or datum it was.
    """
    _check_ccm_sizes(nonce, mac)
    try:
        return AESCCM(bytes(key), tag_length=CCM_MAC_SIZE).decrypt(
            bytes(nonce), bytes(ciphertext) + bytes(mac), None)
    except InvalidTag:
        raise WrongKeyError("AES-CCM authentication failed: wrong key") from None


def aes_ccm_encrypt(key: bytes, nonce: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
    """Encrypt for a BitLocker AES-CCM datum: returns ``(mac, ciphertext)``."""
    _check_ccm_sizes(nonce)
    sealed = AESCCM(bytes(key), tag_length=CCM_MAC_SIZE).encrypt(bytes(nonce), bytes(plaintext),
                                                                 None)
    return sealed[-CCM_MAC_SIZE:], sealed[:-CCM_MAC_SIZE]


def make_nonce(filetime: int, counter: int) -> bytes:
    """A BitLocker AES-CCM nonce: FILETIME (u64 LE) followed by a counter (u32 LE)."""
    if not 0 <= filetime < 1 << 64:
        raise ValueError(f"FILETIME out of range for a u64: {filetime}")
    if not 0 <= counter < 1 << 32:
        raise ValueError(f"nonce counter out of range for a u32: {counter}")
    return _NONCE.pack(filetime, counter)


# --------------------------------------------------------------------------------------------
# Display helpers
# --------------------------------------------------------------------------------------------

def fvek_fingerprint(fvek: bytes) -> str:
    """A short, non-reversible fingerprint of a key for display: 16 hex digits of its SHA-256."""
    return hashlib.sha256(fvek).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Typo search
# --------------------------------------------------------------------------------------------

def _typo_neighbours(block: str) -> tuple[str, ...]:
    """Valid blocks one typing error away from ``block``, most likely kinds first, no repeats.

    Errors: one wrong character, two neighbouring digits swapped, two digits one apart swapped,
    a doubled digit typed as another doubled digit ("twin"), one digit missing (5 typed), one
    extra (7 typed).  For a block that fails its check only the first two kinds (and the missing
    or extra digit) can lead to a valid block; for a block that passes, only the swap of digits
    one apart and the twin error can.
    """
    length = len(block)
    if length == BLOCK_DIGITS:
        found = _miskeyed(block)
    elif length == BLOCK_DIGITS - 1:
        found = [block[:i] + digit + block[i:] for i in range(length + 1) for digit in _DIGITS]
    elif length == BLOCK_DIGITS + 1:
        found = [block[:i] + block[i + 1:] for i in range(length)]
    else:
        found = []
    return tuple(c for c in dict.fromkeys(found) if c != block and _is_valid_block(c))


def _miskeyed(block: str) -> list[str]:
    """Blocks of the right length one typing error away: a wrong character, two digits one
    or two apart swapped, a doubled digit typed as another doubled digit (in that order)."""
    length = len(block)
    out = [block[:i] + digit + block[i + 1:]
           for i in range(length) for digit in _DIGITS if digit != block[i]]
    for distance in (1, 2):
        for i in range(length - distance):
            j = i + distance
            if block[i] != block[j]:
                out.append(block[:i] + block[j] + block[i + 1:j] + block[i] + block[j + 1:])
    for i in range(length - 1):
        if block[i] == block[i + 1]:
            out += [block[:i] + digit + digit + block[i + 2:]
                    for digit in _DIGITS if digit != block[i]]
    return out


# A "product" is one block-wise set of candidates: candidate passwords are all the choices of
# one entry per block.  The candidate set of a typo search is an ordered union of products.
_Product = tuple[tuple[str, ...], ...]


def _typed_splits(text: str) -> list[tuple[str, ...]]:
    """The ways to read ``text`` as 8 blocks, most plausible first (see :func:`typo_candidates`)."""
    stripped = text.strip()
    if not stripped:
        raise RecoveryPasswordFormatError("recovery password is empty")
    if _has_separator(stripped):
        blocks = _split_typed(stripped)
        if len(blocks) != BLOCK_COUNT:
            raise RecoveryPasswordFormatError(
                f"recovery password has {_plural_blocks(len(blocks))}, "
                f"expected {BLOCK_COUNT} blocks of {BLOCK_DIGITS} digits")
        return [tuple(blocks)]
    total = BLOCK_COUNT * BLOCK_DIGITS
    if len(stripped) == total:
        return [tuple(_split_typed(stripped))]
    if abs(len(stripped) - total) != 1:
        raise RecoveryPasswordFormatError(
            f"recovery password without separators: expected {total} digits, got "
            f"{len(stripped)} (the typo search handles one missing or extra digit)")
    odd = BLOCK_DIGITS + len(stripped) - total  # 5 or 7
    splits: list[tuple[str, ...]] = []
    for k in range(BLOCK_COUNT):
        head = stripped[:k * BLOCK_DIGITS]
        rest = stripped[k * BLOCK_DIGITS + odd:]
        splits.append((*_split_typed(head), stripped[k * BLOCK_DIGITS:][:odd],
                       *(_split_typed(rest) if rest else ())))
    # Keep the readings with the fewest failing blocks (plus one, to survive a shifted block
    # that passes by chance); fewer failing blocks first.
    failing = [sum(not _is_valid_block(b) for b in split) for split in splits]
    fewest = min(failing)
    order = sorted((n, k) for k, n in enumerate(failing) if n <= fewest + 1)
    return [splits[k] for _, k in order]


def _products(text: str, level: int) -> list[_Product]:
    if level not in (1, 2):
        raise ValueError(f"typo search level must be 1 or 2, got {level}")
    splits = _typed_splits(text)
    fixes = [[None if _is_valid_block(b) else _typo_neighbours(b) for b in split]
             for split in splits]
    # Level 1: every failing block replaced by its corrections, passing blocks kept.
    bases: list[_Product] = [
        tuple((b,) if f is None else f for b, f in zip(split, fix, strict=True))
        for split, fix in zip(splits, fixes, strict=True)]
    products = [base for base, fix in zip(bases, fixes, strict=True)
                if any(f is not None for f in fix)]
    if level == 2:
        # Level 2: on top of that, one passing block at a time replaced by its neighbours.
        for split, base, fix in zip(splits, bases, fixes, strict=True):
            for i, f in enumerate(fix):
                if f is None:
                    products.append((*base[:i], _typo_neighbours(split[i]), *base[i + 1:]))
    return [p for p in products if all(p)]


def _intersect(a: Sequence[frozenset[str]], b: Sequence[frozenset[str]]
               ) -> tuple[frozenset[str], ...] | None:
    result: list[frozenset[str]] = []
    for x, y in zip(a, b, strict=True):
        both = x & y
        if not both:
            return None
        result.append(both)
    return tuple(result)


def _union_size(products: list[tuple[frozenset[str], ...]]) -> int:
    """Size of a union of block-wise products, by disjoint parts: |P_i minus earlier ones|."""
    total = 0
    for i, product in enumerate(products):
        size = 1
        for choices in product:
            size *= len(choices)
        overlaps = [x for x in (_intersect(product, q) for q in products[:i]) if x is not None]
        total += size - (_union_size(overlaps) if overlaps else 0)
    return total


def typo_candidates(text: str, level: int = 1) -> Iterator[str]:
    """Valid recovery passwords one typing error per block away from a mistyped ``text``.

    ``text`` is split into 8 blocks the way it was typed (at dashes / whitespace; 48 digits
    without separators are cut into runs of 6; 47 or 49 digits are read with each block in turn
    as the one with the missing or extra digit, keeping the readings where fewest blocks fail).

    Level 1 corrects every block that fails (bad check digit, too large, 5 or 7 digits, a
    stray character) to each valid block one typing error away: one substituted character, two
    neighbouring digits swapped, one missing or one extra digit (and, for blocks that pass the
    check digit but are too large, the errors of level 2); candidates are all combinations of
    corrections, readings with fewer failing blocks first.

    Level 2 adds, after all of level 1, the errors the check digit cannot detect, in one block
    that passes at a time: two digits one apart swapped (``abc`` -> ``cba``) and a twin error
    (``aa`` -> ``bb``).  (A single substituted digit or a swap of two neighbouring digits always
    breaks the check digit, so a passing block never has such a neighbour.)

    Yields each candidate once, as 8 blocks joined by '-', never the text itself.  Raises
    :class:`RecoveryPasswordFormatError` (right away) if the text cannot be read as 8 blocks.
    """
    return _iter_candidates(_products(text, level))


def _iter_candidates(products: list[_Product]) -> Iterator[str]:
    sets = [tuple(frozenset(choices) for choices in product) for product in products]
    for i, product in enumerate(products):
        earlier = [x for x in (_intersect(sets[i], q) for q in sets[:i]) if x is not None]
        for combo in itertools.product(*product):
            if any(all(c in s for c, s in zip(combo, q, strict=True)) for q in earlier):
                continue
            yield "-".join(combo)


def count_typo_candidates(text: str, level: int = 1) -> int:
    """How many passwords :func:`typo_candidates` yields, without enumerating them."""
    products = _products(text, level)
    return _union_size([tuple(frozenset(choices) for choices in p) for p in products])
