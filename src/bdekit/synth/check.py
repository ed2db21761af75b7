"""Score a plaintext volume written by any tool against a synthetic image's manifest.

``bdekit synth check DECRYPTED --manifest IMAGE.manifest.json`` reads DECRYPTED (a file, a
block device, or a file on a FUSE mount such as ``bdekit mount`` / ``dislocker-fuse``) and
compares every byte with what the manifest says the volume holds.

What is expected, per byte of the volume (in this order of precedence):

* **damaged** — volume bytes whose only source in the image was damaged (the manifest's
  ``damage`` records, mapped from image to volume offsets: the relocated header block feeds
  the first sectors of a Windows 7+ volume, the BitLocker header and the noise sectors after
  it feed nothing, metadata copies read as zeros whatever they hold).  Anything is accepted
  there — the exact plaintext (recovered), zeros (zeroed and flagged), or a guess — and
  tallied as such.  With ``--mapfile`` (the tool's ddrescue mapfile of its output) a damaged
  byte that is not exact must also be flagged there (not ``+``), else it counts as
  *unflagged*.  A damage that destroys only metadata (``zero-copy``, ``garble-copy``,
  ``zero-header``) excuses nothing: a correct reader still returns every byte.
* **free** — the ``zero_on_disk`` ranges of a used-space-only image: never encrypted, so a
  reader returns their decryption (noise) or, knowing better, zeros; each sector must be one
  of the two (the noise is computed with the manifest's FVEK).
* **zeros** — the ``reserved`` ranges (metadata copies, the relocated block): every correct
  reader returns zeros there.
* **data** — everything else: the plaintext, regenerated from the manifest's seed (generated
  volumes) or read from the source volume (``--plaintext``, or the manifest's ``source.path``
  when it is there).  The regenerated plaintext is checked against the manifest's SHA-256 of
  every MiB first, so a stale manifest cannot pass for a good score.

Without any plaintext (a ``--from`` image whose source is gone) only the per-MiB digests can
be compared: *windows* mode, where a differing MiB counts as wrong as a whole and a damaged MiB
is not checked.

Bytes past the end of a short output are *missing* (excused inside damage).  The verdict is
"as good as the damage allows" when nothing is wrong, missing or unflagged; the command then
exits 0, else 6.  Memory stays bounded: the output is read in 4 MiB chunks.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from bdekit.crypto.ciphers import SectorCipher, make_cipher
from bdekit.errors import FormatError, UsageError
from bdekit.image import mapfile as mapfile_mod
from bdekit.synth.manifest import Manifest
from bdekit.synth.options import WINDOW
from bdekit.synth.plaintext import FilePlaintext, GeneratedPlaintext

CHUNK = 4 * WINDOW
_WHAT = {1: "unflagged", 2: "missing", 3: "wrong"}
DATA, FREE, DAMAGED = 0, 1, 2
#: At most this many wrong ranges are listed (all are counted).
MAX_RANGES = 1000

Ranges = list[tuple[int, int]]


@dataclasses.dataclass
class Expectation:
    """What the volume of a manifest holds (see the module docstring)."""

    manifest: Manifest
    size: int
    sector_size: int
    reserved: Ranges
    free: Ranges
    damaged: list[tuple[int, int, str]]
    relocation: tuple[int, int] | None
    source: Any | None
    source_kind: str
    cipher: SectorCipher | None


@dataclasses.dataclass
class Score:
    output: str
    manifest: str
    mode: str  # "bytes" or "windows"
    source: str
    volume_size: int
    output_size: int
    exact: int = 0
    wrong: int = 0
    missing: int = 0
    unflagged: int = 0
    free_noise: int = 0
    damaged: dict[str, int] = dataclasses.field(
        default_factory=lambda: {"exact": 0, "zero": 0, "other": 0, "missing": 0})
    wrong_ranges: list[list[Any]] = dataclasses.field(default_factory=list)
    wrong_range_count: int = 0
    damage: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.wrong or self.missing or self.unflagged)

    @property
    def verdict(self) -> str:
        return ("as good as the damage allows" if self.ok else
                "NOT as good as the damage allows")

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["ok"] = self.ok
        out["verdict"] = self.verdict
        return out

    def add_range(self, offset: int, length: int, what: str) -> None:
        last = self.wrong_ranges[-1] if self.wrong_ranges else None
        if last is not None and last[0] + last[1] == offset and last[2] == what:
            last[1] += length
            return
        self.wrong_range_count += 1
        if len(self.wrong_ranges) < MAX_RANGES:
            self.wrong_ranges.append([offset, length, what])


# --------------------------------------------------------------------------------------------
# What the manifest says
# --------------------------------------------------------------------------------------------

def _ranges(items: Sequence[Sequence[int]]) -> Ranges:
    return mapfile_mod.merge_ranges((int(a), int(n)) for a, n in items)


def relocation_of(manifest: Manifest) -> tuple[int, int] | None:
    """(image offset, size) of the relocated header block of a Windows 7+ layout."""
    lay = manifest.layout
    if int(lay.get("metadata_version", 2)) < 2 or not lay.get("relocated_offset"):
        return None
    return int(lay["relocated_offset"]), int(lay["relocated_size"])


def _subtract(lo: int, hi: int, holes: Ranges) -> Ranges:
    out: Ranges = []
    pos = lo
    for off, length in holes:
        if off + length <= pos or off >= hi:
            continue
        if off > pos:
            out.append((pos, off - pos))
        pos = max(pos, off + length)
    if pos < hi:
        out.append((pos, hi - pos))
    return out


def image_to_volume(lo: int, hi: int, size: int, reserved: Ranges,
                    relocation: tuple[int, int] | None) -> Ranges:
    """The volume ranges whose bytes come from image bytes ``[lo, hi)``."""
    start = relocation[1] if relocation else 0
    out = _subtract(max(lo, start), min(hi, size), reserved) if max(lo, start) < min(hi, size) \
        else []
    if relocation is not None:
        roff, rsize = relocation
        a, b = max(lo, roff), min(hi, roff + rsize)
        if a < b:
            out.append((a - roff, b - a))
    return sorted(out)


def damage_ranges(manifest: Manifest, reserved: Ranges,
                  relocation: tuple[int, int] | None) -> list[tuple[int, int, str]]:
    """The volume ranges each damage record of the manifest leaves without a source."""
    size = int(manifest.volume_size)
    ss = int(manifest.sector_size)
    out: list[tuple[int, int, str]] = []
    for rec in manifest.damage:
        kind = str(rec.get("kind", "damage"))
        if kind == "flip-bits":
            spans = [(int(off) // ss * ss, ss) for off, _bit in rec.get("bits", [])]
        elif kind == "truncate":
            off = int(rec["offset"])
            spans = [(off, max(int(rec["length"]), size - off))]
        else:
            spans = [(int(rec["offset"]), int(rec["length"]))]
        for off, length in spans:
            out += [(a, n, kind) for a, n in image_to_volume(off, off + length, size, reserved,
                                                             relocation)]
    return sorted(out)


def _plaintext(manifest: Manifest, plaintext: str | None) -> tuple[Any | None, str]:
    size = int(manifest.volume_size)
    if plaintext is not None:
        src = FilePlaintext(plaintext)
        if src.size < size:
            src.close()
            raise UsageError(f"the plaintext has {src.size} bytes; the volume {size}",
                             path=plaintext)
        return src, f"file {plaintext}"
    info = manifest.source or {}
    if info.get("kind") == "generated":
        gen = GeneratedPlaintext(manifest.seed, size, int(manifest.sector_size),
                                 bool(manifest.used_only))
        if [list(a) for a in info.get("random_areas", [])] != gen.describe()["random_areas"]:
            raise FormatError("the manifest's generated areas differ from those of its seed",
                              path=manifest.path)
        return gen, f"generated from seed {manifest.seed!r}"
    path = info.get("path")
    if info.get("kind") == "file" and path and os.path.isfile(path) \
            and os.path.getsize(path) >= size:
        return FilePlaintext(path), f"file {path}"
    return None, "none (the manifest's per-MiB digests only)"


def expectation(manifest: Manifest, plaintext: str | None = None) -> Expectation:
    reserved = _ranges(manifest.reserved)
    relocation = relocation_of(manifest)
    source, kind = _plaintext(manifest, plaintext)
    try:
        cipher = make_cipher(int(manifest.method_id), bytes.fromhex(manifest.fvek),
                             int(manifest.sector_size)) if manifest.zero_on_disk else None
    except ValueError:
        raise FormatError("the manifest's FVEK is not hexadecimal", path=manifest.path) from None
    return Expectation(manifest, int(manifest.volume_size), int(manifest.sector_size), reserved,
                       _ranges(manifest.zero_on_disk),
                       damage_ranges(manifest, reserved, relocation), relocation, source, kind,
                       cipher)


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------

def paint_ranges(mask: np.ndarray, pos: int, ranges: Sequence[tuple[Any, ...]], value: Any) -> None:
    """Set ``mask[i] = value`` where ``pos + i`` lies in one of the (sorted) ranges."""
    end = pos + len(mask)
    starts = [r[0] for r in ranges]
    i = max(0, bisect.bisect_right(starts, pos) - 1)
    for r in ranges[i:]:
        off, length = r[0], r[1]
        if off >= end:
            break
        lo, hi = max(off, pos), min(off + length, end)
        if lo < hi:
            mask[lo - pos:hi - pos] = value


class _Output:
    """The tool's output: any readable file or device, read with ``pread``."""

    def __init__(self, path: str) -> None:
        try:
            self.fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise UsageError(f"cannot open the output to check: {exc.strerror}",
                             path=path) from None
        self.size = os.lseek(self.fd, 0, os.SEEK_END)
        self.path = path

    def read_into(self, pos: int, buf: np.ndarray) -> int:
        """Fill ``buf`` from ``pos``; return how many bytes the output has there."""
        want = max(0, min(len(buf), self.size - pos))
        done = 0
        while done < want:
            got = os.preadv(self.fd, [buf[done:want].data], pos + done)
            if got <= 0:
                break
            done += got
        buf[done:] = 0
        return done

    def close(self) -> None:
        os.close(self.fd)


def _verify_windows(exp: Expectation, pos: int, want: np.ndarray) -> None:
    windows = exp.manifest.windows
    for w in range(0, len(want), WINDOW):
        index = (pos + w) // WINDOW
        if index < len(windows) and \
                hashlib.sha256(want[w:w + WINDOW].data).hexdigest() != windows[index]:
            raise FormatError(f"the plaintext ({exp.source_kind}) does not match the "
                              f"manifest's digest of MiB {index}: the manifest does not "
                              "describe this volume (edited, or another bdekit version)",
                              path=exp.manifest.path)


def _free_ok(exp: Expectation, pos: int, got: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """Per byte: in a free sector that is all zeros or the decryption of zeros."""
    ok = np.zeros(len(got), dtype=bool)
    ss = exp.sector_size
    for off, length in exp.free:
        lo, hi = max(off, pos), min(off + length, pos + len(got))
        if lo >= hi or (lo - pos) % ss or (hi - lo) % ss:
            continue
        seg = got[lo - pos:hi - pos].reshape(-1, ss)
        good = ~seg.any(axis=1)
        if exp.cipher is not None and not good.all():
            noise = bytearray(hi - lo)
            exp.cipher.decrypt(bytes(hi - lo), noise, lo)
            good |= (seg == np.frombuffer(noise, np.uint8).reshape(-1, ss)).all(axis=1)
        ok[lo - pos:hi - pos] = np.repeat(good, ss)
    return ok & (cls == FREE)


def _runs(code: np.ndarray, ss: int) -> list[tuple[int, int, int]]:
    """(offset, length, code) of the runs of sectors whose worst byte code is non-zero."""
    if not code.any():
        return []
    whole = len(code) - len(code) % ss
    per = code[:whole].reshape(-1, ss).max(axis=1) if whole else np.zeros(0, np.uint8)
    if whole < len(code):
        per = np.append(per, code[whole:].max())
    change = np.flatnonzero(np.diff(per)) + 1
    starts = np.concatenate(([0], change)).tolist()
    ends = np.concatenate((change, [len(per)])).tolist()
    return [(s * ss, min(e * ss, len(code)) - s * ss, int(per[s]))
            for s, e in zip(starts, ends, strict=True) if per[s]]


def _score_bytes(exp: Expectation, score: Score, pos: int, want: np.ndarray, got: np.ndarray,
                 avail: int, flagged: Ranges | None) -> None:
    n = len(got)
    cls = np.zeros(n, dtype=np.uint8)
    paint_ranges(cls, pos, exp.free, FREE)
    paint_ranges(cls, pos, exp.damaged, DAMAGED)
    present = np.arange(n) < avail
    eq = (got == want) & present
    dmg = cls == DAMAGED
    free_ok = _free_ok(exp, pos, got, cls) & present
    bad = present & ~eq & ~dmg & ~free_ok
    lost = ~present & ~dmg
    score.exact += int(eq.sum())
    score.wrong += int(bad.sum())
    score.missing += int(lost.sum())
    score.free_noise += int((free_ok & ~eq).sum())
    other = dmg & present & ~eq
    zero = other & (got == 0)
    score.damaged["exact"] += int((eq & dmg).sum())
    score.damaged["zero"] += int(zero.sum())
    score.damaged["other"] += int((other & ~zero).sum())
    score.damaged["missing"] += int((dmg & ~present).sum())
    unflagged = np.zeros(n, dtype=bool)
    if flagged is not None:
        marked = np.zeros(n, dtype=bool)
        paint_ranges(marked, pos, flagged, True)
        unflagged = other & ~marked
        score.unflagged += int(unflagged.sum())
    code = np.zeros(n, dtype=np.uint8)
    code[unflagged] = 1
    code[lost] = 2
    code[bad] = 3
    for off, length, value in _runs(code, exp.sector_size):
        score.add_range(pos + off, length, _WHAT[value])


def _score_windows(exp: Expectation, score: Score, pos: int, got: np.ndarray,
                   avail: int) -> None:
    """Per-MiB digests only: a differing MiB is wrong as a whole; a damaged one unchecked."""
    paint_ranges(got, pos, exp.reserved, 0)
    paint_ranges(got, pos, exp.free, 0)
    dmg = np.zeros(len(got), dtype=bool)
    paint_ranges(dmg, pos, exp.damaged, True)
    windows = exp.manifest.windows
    for w in range(0, len(got), WINDOW):
        piece = slice(w, min(w + WINDOW, len(got)))
        length = piece.stop - w
        index = (pos + w) // WINDOW
        if dmg[piece].any():
            score.damaged["other"] += length
            continue
        have = max(0, min(length, avail - w))
        if index < len(windows) and \
                hashlib.sha256(got[piece].data).hexdigest() == windows[index]:
            score.exact += length
        elif have == 0:
            score.missing += length
            score.add_range(pos + w, length, "missing")
        else:
            score.wrong += length
            score.add_range(pos + w, length, "wrong")


def score(output: str, manifest_path: str, *, plaintext: str | None = None,
          mapfile: str | None = None, chunk: int = CHUNK) -> Score:
    """Score ``output`` against the manifest (see the module docstring)."""
    manifest = Manifest.load(manifest_path)
    exp = expectation(manifest, plaintext)
    flagged = None
    if mapfile is not None:
        flagged = [(p, n) for p, n, _st in mapfile_mod.read_mapfile(mapfile).unrescued(exp.size)]
    out = _Output(output)
    try:
        result = Score(output, str(manifest_path), "bytes" if exp.source else "windows",
                       exp.source_kind, exp.size, out.size)
        result.damage = [{"offset": o, "length": n, "kind": k} for o, n, k in exp.damaged]
        if out.size > exp.size:
            result.notes.append(f"the output has {out.size - exp.size} bytes more than the "
                                "volume; they are not checked")
        want = np.empty(chunk, dtype=np.uint8)
        got = np.empty(chunk, dtype=np.uint8)
        for pos in range(0, exp.size, chunk):
            n = min(chunk, exp.size - pos)
            avail = out.read_into(pos, got[:n])
            if exp.source is None:
                _score_windows(exp, result, pos, got[:n], avail)
                continue
            exp.source.fill(pos, want[:n])
            paint_ranges(want[:n], pos, exp.reserved, 0)
            paint_ranges(want[:n], pos, exp.free, 0)
            _verify_windows(exp, pos, want[:n])
            _score_bytes(exp, result, pos, want[:n], got[:n], avail, flagged)
    finally:
        out.close()
        if exp.source is not None and hasattr(exp.source, "close"):
            exp.source.close()
    return result


def format_score(result: Score, limit: int = 20) -> str:
    """The human-readable score (``synth check`` without ``--json``)."""
    d = result.damaged
    lines = [f"{result.output}: {result.volume_size:,} bytes checked against "
             f"{result.manifest} ({result.mode}; plaintext {result.source})",
             f"  exact      {result.exact:,}",
             f"  wrong      {result.wrong:,}",
             f"  missing    {result.missing:,}"]
    if result.unflagged:
        lines.append(f"  unflagged  {result.unflagged:,} (damaged, not exact, not marked in "
                     "the mapfile)")
    excused = sum(d.values())
    if excused:
        lines.append(f"  damaged (any content accepted): {excused:,} — exact {d['exact']:,}, "
                     f"zeros {d['zero']:,}, other {d['other']:,}, missing {d['missing']:,}")
    if result.free_noise:
        lines.append(f"  never-written space returned as decrypted noise (accepted): "
                     f"{result.free_noise:,}")
    for off, length, what in result.wrong_ranges[:limit]:
        lines.append(f"  {what}: offset {off} (0x{off:x}), {length} bytes")
    more = result.wrong_range_count - min(limit, len(result.wrong_ranges))
    if more > 0:
        lines.append(f"  ... and {more} more range(s) (see --json)")
    lines += [f"  note: {n}" for n in result.notes]
    lines.append(f"verdict: {result.verdict}")
    return "\n".join(lines)
