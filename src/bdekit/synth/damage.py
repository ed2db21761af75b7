"""Controlled damage to (synthetic) BitLocker images, in place, recorded in the manifest.

Every operation works on image (physical) byte offsets and appends one record per damaged range
to the manifest's ``damage`` list: ``{"kind", "offset", "length", ...}``.  Operations, applied in
this order when several are asked for at once:

``zero-copy``             metadata copy N's whole reserved region (64 KiB on v2) becomes zeros.
``garble-copy``           copy N's dataset (from byte 64 to the end of the padded block) is
                          overwritten with seeded garbage: the block header still names a copy,
                          its CRC32 fails.
``zero-header``           sector 0 (the BitLocker volume header) becomes zeros.
``zero-relocated-header`` the relocated header block (8 KiB holding the original boot sector)
                          becomes zeros: readers lose the NTFS boot sector and, with it, the
                          volume size.
``bad-sectors``           each range (rounded out to whole sectors, clipped to the image) is
                          overwritten with seeded garbage, and a GNU ddrescue mapfile
                          ``IMAGE.map`` marks it ``-`` (bad sector), the rest ``+`` (finished),
                          as a capture of a failing drive would; ranges of an existing mapfile
                          are kept.  Range syntax (:func:`parse_ranges`): comma-separated
                          ``START-END`` (END exclusive) or ``START+LENGTH``, each number a sum of
                          terms like ``1M``, ``4096``, ``0x1000`` (K/M/G/T binary): e.g.
                          ``1M-1M+4096,40960+8K``.
``flip-bits``             N bits at seeded positions of the image are inverted (one record with
                          the list of ``[byte offset, bit]``).
``truncate``              the image is cut to SIZE bytes (record: offset SIZE, length cut off).

Mapfile format (GNU ddrescue manual, "Mapfile structure"): ``#`` comment lines, a status line
``current_pos current_status current_pass``, then ``pos size status`` lines in hexadecimal
covering the image contiguously.  The file written here has no timestamps, so the same
arguments give the same bytes.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bdekit.errors import UsageError
from bdekit.format.copies import read_metadata
from bdekit.format.layout import V2_METADATA_REGION, metadata_region_size
from bdekit.image import mapfile as mapfile_mod
from bdekit.image.files import pwrite_all, write_atomic
from bdekit.image.ranges import merge_intervals
from bdekit.synth.manifest import Manifest, default_manifest_path
from bdekit.synth.options import parse_size
from bdekit.synth.seeded import SeededRandom

log = logging.getLogger(__name__)

__all__ = ["ImageLayout", "apply", "default_mapfile_path", "format_mapfile", "parse_copies",
           "parse_ranges"]

_TERM_RE = re.compile(r"^(0x[0-9a-f]+|\d+)\s*([kmgt]?)(i?b)?$", re.IGNORECASE)


def default_mapfile_path(image: str | os.PathLike[str]) -> Path:
    """``IMAGE.map`` next to the image."""
    path = Path(image)
    return path.with_name(path.name + ".map")


def _sum(expr: str, whole: str) -> int:
    total = 0
    for term in expr.split("+"):
        term = term.strip()
        if not _TERM_RE.match(term):
            raise UsageError(f"bad range {whole!r}: {term!r} is not a number like 4096, 0x1000, "
                             "64K or 1M")
        total += parse_size(term)
    return total


def parse_ranges(text: str) -> list[tuple[int, int]]:
    """``"1M-1M+4096,40960+8K"`` -> ``[(1048576, 4096), (40960, 8192)]`` (offset, length).

    Each comma-separated item is ``START-END`` (END exclusive; both may be sums such as
    ``1M+4096``) or ``START+LENGTH`` (the first ``+`` splits; START and LENGTH single terms
    when there is no ``-``)."""
    out: list[tuple[int, int]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if "-" in item:
            start_text, end_text = item.split("-", 1)
            start, end = _sum(start_text, item), _sum(end_text, item)
            if end <= start:
                raise UsageError(f"bad range {item!r}: END must be after START")
            out.append((start, end - start))
        elif "+" in item:
            start_text, length_text = item.split("+", 1)
            start, length = _sum(start_text, item), _sum(length_text, item)
            if length <= 0:
                raise UsageError(f"bad range {item!r}: LENGTH must be positive")
            out.append((start, length))
        else:
            raise UsageError(f"bad range {item!r}: expected START-END or START+LENGTH")
    if not out:
        raise UsageError(f"no range in {text!r}")
    return out


def parse_copies(text: str) -> list[int]:
    """``"1,2"`` -> ``[1, 2]`` (metadata copy numbers, 1..3)."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or not 1 <= int(part) <= 3:
            raise UsageError(f"metadata copy {part!r}: expected 1, 2 or 3")
        out.append(int(part))
    if not out:
        raise UsageError("no metadata copy given")
    return sorted(set(out))


def format_mapfile(size: int, bad: Sequence[tuple[int, int]]) -> str:
    """A finished GNU ddrescue mapfile over ``[0, size)``: ``bad`` ranges ``-``, the rest ``+``."""
    bad_blocks = [b for b in mapfile_mod.blocks_from_bad(size, bad)
                  if b.status == mapfile_mod.BAD]
    return mapfile_mod.format_mapfile(
        size, bad, creator="bdekit synth damage", dated=False,
        note="Areas marked '-' are bad sectors: their bytes in the image are garbage.",
        current_pos=bad_blocks[-1].pos if bad_blocks else 0)


class ImageLayout:
    """Where the damageable structures of an image lie: from its manifest, else the image."""

    def __init__(self, image: Path, manifest: Manifest | None) -> None:
        self.sector_size = 512
        self.metadata_offsets: list[int] = []
        self.region_size = V2_METADATA_REGION
        self.block_size: int | None = None
        self.relocated: tuple[int, int] | None = None
        if manifest is not None:
            lay = manifest.layout
            self.sector_size = int(manifest.sector_size)
            self.metadata_offsets = [int(o) for o in lay["metadata_offsets"]]
            self.region_size = int(lay["metadata_region_size"])
            self.block_size = lay.get("metadata_block_size")
            if lay.get("relocated_offset"):
                self.relocated = (int(lay["relocated_offset"]), int(lay["relocated_size"]))
            return
        with open(image, "rb") as fh:
            def read(offset: int, length: int) -> bytes:
                fh.seek(offset)
                return fh.read(length)

            md = read_metadata(read, os.fspath(image), os.path.getsize(image))
        self.sector_size = md.header.bytes_per_sector
        self.metadata_offsets = [c.offset for c in md.copies]
        self.block_size = len(md.best.block)
        self.region_size = metadata_region_size(md.version, md.header.bytes_per_sector,
                                                md.header.cluster_size)
        virt = md.virtualization
        if virt is not None:
            self.relocated = (virt[0], int(md.block_header.virtualized_sectors)
                              * self.sector_size or virt[1])

    def copy_offset(self, index: int) -> int:
        if not 1 <= index <= len(self.metadata_offsets) or not self.metadata_offsets[index - 1]:
            raise UsageError(f"the image has no metadata copy {index}")
        return self.metadata_offsets[index - 1]


def apply(image: str | os.PathLike[str], *, zero_copies: Sequence[int] = (),
          garble_copies: Sequence[int] = (), zero_header: bool = False,
          zero_relocated_header: bool = False, bad_sectors: Sequence[tuple[int, int]] = (),
          truncate: int | str | None = None, flip_bits: int = 0, seed: int | str = 0,
          manifest: str | os.PathLike[str] | None = None,
          mapfile: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Apply the damage asked for to ``image`` in place; return the records (also appended to
    the manifest when it exists)."""
    path = Path(image)
    manifest_path = Path(manifest) if manifest is not None else default_manifest_path(path)
    record_to: Manifest | None = Manifest.load(manifest_path) if manifest_path.exists() else None
    if record_to is None:
        if manifest is not None:
            raise UsageError(f"manifest {manifest_path} does not exist")
        log.warning("no manifest at %s: the damage is not recorded", manifest_path)
    needs_layout = bool(zero_copies or garble_copies or zero_relocated_header or zero_header
                        or bad_sectors)
    layout = ImageLayout(path, record_to) if needs_layout else None
    records: list[dict[str, Any]] = []
    image_size = path.stat().st_size
    fd = os.open(path, os.O_RDWR)
    try:
        assert layout is not None or not needs_layout
        for index in zero_copies:
            assert layout is not None
            off = layout.copy_offset(index)
            length = max(0, min(layout.region_size, image_size - off))
            pwrite_all(fd, bytes(length), off)
            records.append({"kind": "zero-copy", "copy": index, "offset": off,
                            "length": length})
        for index in garble_copies:
            assert layout is not None
            off = layout.copy_offset(index)
            size = layout.block_size or _block_size(fd, off)
            length = max(0, min(size - 64, image_size - off - 64))
            garbage = SeededRandom(seed, f"damage:garble:{index}").bytes(length)
            pwrite_all(fd, garbage, off + 64)
            records.append({"kind": "garble-copy", "copy": index, "offset": off + 64,
                            "length": length})
        if zero_header:
            assert layout is not None
            pwrite_all(fd, bytes(layout.sector_size), 0)
            records.append({"kind": "zero-header", "offset": 0, "length": layout.sector_size})
        if zero_relocated_header:
            assert layout is not None
            if layout.relocated is None:
                raise UsageError("the image has no relocated header block (Vista layout)")
            off, length = layout.relocated
            pwrite_all(fd, bytes(length), off)
            records.append({"kind": "zero-relocated-header", "offset": off, "length": length,
                            "volume_offset": 0})
        if bad_sectors:
            assert layout is not None
            records += _bad_sectors(fd, path, image_size, layout.sector_size, bad_sectors, seed,
                                    Path(mapfile) if mapfile else default_mapfile_path(path))
        if flip_bits:
            records.append(_flip_bits(fd, image_size, flip_bits, seed))
        if truncate is not None:
            new_size = parse_size(truncate)
            if new_size >= image_size:
                raise UsageError(f"--truncate {new_size}: the image has only {image_size} bytes")
            os.ftruncate(fd, new_size)
            records.append({"kind": "truncate", "offset": new_size,
                            "length": image_size - new_size})
            image_size = new_size
    finally:
        os.close(fd)
    if record_to is not None and records:
        record_to.damage.extend(records)
        record_to.image_size = image_size
        record_to.save(manifest_path)
    return records


def _block_size(fd: int, offset: int) -> int:
    head = os.pread(fd, 64, offset)
    if head[:8] != b"-FVE-FS-":
        raise UsageError(f"no metadata block at offset {offset} to garble")
    size = int.from_bytes(head[8:10], "little")
    version = int.from_bytes(head[10:12], "little")
    return size * 16 if version >= 2 else size


def _bad_sectors(fd: int, path: Path, image_size: int, ss: int,
                 ranges: Sequence[tuple[int, int]], seed: int | str,
                 map_path: Path) -> list[dict[str, Any]]:
    rounded: list[tuple[int, int]] = []
    for off, length in ranges:
        start = off // ss * ss
        end = min(-(-(off + length) // ss) * ss, image_size)
        if start >= end:
            raise UsageError(f"bad sector range at {off} lies beyond the image "
                             f"({image_size} bytes)")
        rounded.append((start, end - start))
    merged = merge_intervals(rounded)
    records = []
    for i, (off, length) in enumerate(merged):
        garbage = SeededRandom(seed, f"damage:bad:{off}:{i}").bytes(length)
        pwrite_all(fd, garbage, off)
        records.append({"kind": "bad-sectors", "offset": off, "length": length,
                        "mapfile": os.path.relpath(map_path, path.parent)})
    previous: list[tuple[int, int]] = []
    domain = image_size
    if map_path.exists():
        old = mapfile_mod.read_mapfile(map_path)
        previous = [(p, s) for p, s, status in old.unrescued() if status == mapfile_mod.BAD]
        domain = max(domain, old.size)
    write_atomic(map_path, format_mapfile(domain, [*previous, *merged]), encoding="ascii")
    return records


def _flip_bits(fd: int, image_size: int, count: int, seed: int | str) -> dict[str, Any]:
    if image_size == 0:
        raise UsageError("cannot flip bits of an empty image")
    rng = SeededRandom(seed, "damage:flip")
    count = min(count, image_size * 8)
    chosen: set[int] = set()
    while len(chosen) < count:
        chosen.add(rng.randbelow(image_size * 8))
    positions = sorted(chosen)
    bits: list[list[int]] = []
    for pos in positions:
        off, bit = divmod(pos, 8)
        byte = os.pread(fd, 1, off)[0]
        pwrite_all(fd, bytes([byte ^ (1 << bit)]), off)
        bits.append([off, bit])
    first, last = bits[0][0], bits[-1][0]
    return {"kind": "flip-bits", "offset": first, "length": last - first + 1,
            "count": len(bits), "bits": bits}
