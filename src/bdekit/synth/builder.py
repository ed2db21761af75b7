"""Synthetic BitLocker images with known keys, written in Windows' own layout.

:func:`build` writes a BitLocker volume image of any size, method, sector size and protector
set, deterministic from a seed, plus a JSON manifest (:class:`~bdekit.synth.manifest.Manifest`)
naming every key and secret, the layout and the plaintext digest of every MiB, so that a
harness can check any tool's output.  Everything was checked byte for byte against the
Windows 10 images in ``../shared/real-images`` (tests/test_synth.py rebuilds their metadata
blocks).

The image of a Windows 7+ volume (``vista=False``), front to back:

* sector 0: the BitLocker volume header in plaintext, then seeded noise to 8 KiB
  (:mod:`bdekit.synth.boot_sectors`);
* everything else the ciphertext of the plaintext at the same offset
  (:mod:`bdekit.synth.streaming`; the plaintext is generated or read from ``source``,
  :mod:`bdekit.synth.plaintext`), except:
* three identical metadata copies (:mod:`bdekit.synth.metadata_block`; the VMK datums of the
  protectors in :mod:`bdekit.synth.protectors`) at about 1/2, 5/8 and 3/4 of the volume, and
  the relocated header block (the original first 8 KiB, encrypted) right after the first copy
  (:mod:`bdekit.synth.layout`).

``state=OFFSET`` (``--state partial:OFFSET``) stops the conversion there: bytes at or above it
are plaintext, the block header says paused (3) -> encrypted (4) with that boundary.
``used_only`` leaves every all-zero plaintext sector zero on disk.  The Vista layout
(``vista=True``, CBC methods only): sector 0 is the NTFS boot sector with OEM ``-FVE-FS-``,
metadata version 1, no relocated block, no virtualization datum.

Every key, GUID, salt and time is drawn from the seed (:mod:`bdekit.synth.seeded`): same
arguments, same bytes.  The manifest is :mod:`bdekit.synth.manifest`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bdekit.crypto import ciphers
from bdekit.errors import OutputExistsError, UsageError
from bdekit.format import structs
from bdekit.format.constants import EncryptionMethod
from bdekit.format.filetime import filetime_to_datetime
from bdekit.image.ranges import merge_intervals
from bdekit.synth.boot_sectors import build_volume_header, vista_volume_header
from bdekit.synth.layout import Layout, plan_layout
from bdekit.synth.manifest import Manifest, default_manifest_path
from bdekit.synth.metadata_block import MetadataCopy, VolumeKeys, build_metadata_copy
from bdekit.synth.options import (
    CHUNK,
    HEADER_BLOCK,
    MIN_SIZE,
    SECTOR_SIZES,
    WINDOW,
    parse_method,
    parse_size,
    parse_state,
)
from bdekit.synth.plaintext import FilePlaintext, GeneratedPlaintext, PlaintextSource
from bdekit.synth.protectors import RecoveryPasswordSpec, guid_text, prepare_protector
from bdekit.synth.seeded import NonceSource, SeededRandom
from bdekit.synth.streaming import (
    Progress,
    Streamer,
    StreamResult,
    encrypt_sectors,
    write_image,
)

_XTS = (EncryptionMethod.AES_128_XTS, EncryptionMethod.AES_256_XTS)


def build(output: str | os.PathLike[str], *, size: int | str | None = None,
          method: str | int | EncryptionMethod = "aes-xts-128", sector_size: int = 512,
          seed: int | str = 0, source: str | os.PathLike[str] | None = None,
          used_only: bool = False, protectors: Sequence[Any] | None = None,
          state: str | int | None = None, description: str | None = None,
          vista: bool = False, force: bool = False,
          manifest: str | os.PathLike[str] | None = None, threads: int | None = None,
          chunk_size: int = CHUNK, progress: Progress | None = None,
          os_volume: bool = False) -> Manifest:
    """Write a synthetic BitLocker image to ``output`` and its manifest; return the manifest.

    ``size``: bytes or a string like ``64M`` (from ``source`` when given: its size is the
    volume size).  ``protectors``: specs (:class:`RecoveryPasswordSpec`, :class:`PasswordSpec`,
    :class:`StartupKeySpec`, :class:`ClearKeySpec`) or :class:`SynthProtector` objects; none
    means one generated recovery password.  ``state``: None (fully encrypted) or
    ``"partial:OFFSET"``.  ``progress(done, total)`` is called after each chunk.
    ``os_volume``: write an OS volume's auto-unlock key datum (role 0x000b; the key is in the
    manifest as ``auto_unlock_key``), so that data volumes can be bound to it
    (:class:`~bdekit.synth.autounlock.AutoUnlockSpec`).
    """
    out_path = Path(output)
    manifest_path = Path(manifest) if manifest is not None else default_manifest_path(out_path)
    meth = parse_method(method)
    _check_options(meth, sector_size, vista, chunk_size)
    for path in (out_path, manifest_path):
        if path.exists() and not force:
            raise OutputExistsError(f"{path} exists (use --force to overwrite)", path=path)
    src = FilePlaintext(source) if source is not None else None
    try:
        vol_size = _volume_size(size, src, sector_size)
        if os.path.abspath(out_path) == (os.path.abspath(src.path) if src else None):
            raise OutputExistsError("the output is the source volume", path=out_path)
        job = _Job(out_path=out_path, manifest_path=manifest_path, method=meth, size=vol_size,
                   sector_size=sector_size, seed=seed, source=src, used_only=used_only,
                   specs=list(protectors) if protectors else [RecoveryPasswordSpec()],
                   state=state, description=description, vista=vista, force=force,
                   threads=threads, chunk=chunk_size, progress=progress,
                   os_volume=os_volume)
        return _build(job)
    finally:
        if src is not None:
            src.close()


def _check_options(meth: EncryptionMethod, sector_size: int, vista: bool,
                   chunk_size: int) -> None:
    if sector_size not in SECTOR_SIZES:
        raise UsageError(f"sector size {sector_size} is not 512, 1024, 2048 or 4096")
    if vista and meth in _XTS:
        raise UsageError("the Vista layout supports the CBC methods only (with or without "
                         "diffuser), not XTS")
    if chunk_size % WINDOW or chunk_size <= 0:
        raise UsageError(f"chunk size must be a positive multiple of {WINDOW}")


def _volume_size(size: int | str | None, src: FilePlaintext | None, sector_size: int) -> int:
    """The volume size: the source's, or ``size``; checked against the sector size."""
    if src is not None:
        vol_size = src.size
        if size is not None and parse_size(size) != vol_size:
            raise UsageError(f"--size {size} differs from the source volume's size "
                             f"({vol_size}); leave --size out with --from")
        if vol_size % sector_size:
            raise UsageError(f"source volume size {vol_size} is not a multiple of the "
                             f"sector size {sector_size}")
    else:
        if size is None:
            raise UsageError("give a size (or a source volume)")
        vol_size = parse_size(size)
        if vol_size % sector_size:
            raise UsageError(f"size {vol_size} is not a multiple of the sector size "
                             f"{sector_size}")
    if vol_size < MIN_SIZE:
        raise UsageError(f"size {vol_size} is below the minimum of {MIN_SIZE} bytes")
    return vol_size


@dataclasses.dataclass
class _Job:
    """The checked arguments of one :func:`build`."""

    out_path: Path
    manifest_path: Path
    method: EncryptionMethod
    size: int
    sector_size: int
    seed: int | str
    source: FilePlaintext | None
    used_only: bool
    specs: list[Any]
    state: str | int | None
    description: str | None
    vista: bool
    force: bool
    threads: int | None
    chunk: int
    progress: Progress | None
    os_volume: bool = False


def _build(job: _Job) -> Manifest:
    encrypted_end = parse_state(job.state, job.size, job.sector_size)
    if job.vista and encrypted_end < job.size:
        raise UsageError("--state partial is not supported with the Vista layout (its readers "
                         "ignore the conversion boundary of metadata version 1)")
    content: PlaintextSource = job.source if job.source is not None else GeneratedPlaintext(
        job.seed, job.size, job.sector_size, job.used_only)
    layout = plan_layout(job.size, job.sector_size, content, vista=job.vista,
                         search=job.source is not None, encrypted_end=encrypted_end)
    nonces = NonceSource(job.seed)
    volume = VolumeKeys.draw(job.seed, job.method, nonces.filetime)
    if job.os_volume:
        volume.auto_unlock_key = SeededRandom(job.seed, "auto-unlock").bytes(32)
    description = job.description
    if description is None:
        when = _datetime(volume.created)
        description = f"BDEKIT-SYNTH SyntheticVolume {when.month}/{when.day}/{when.year}"
    prepared = [prepare_protector(spec, job.seed, i) for i, spec in enumerate(job.specs)]
    first = content.read(0, HEADER_BLOCK)
    meta = build_metadata_copy(layout, volume, prepared, description, nonces, first)
    for prot in prepared:
        check = getattr(prot, "check_files", None)
        if check is not None:
            check(job.force)
    cipher = ciphers.make_cipher(job.method, volume.fvek, job.sector_size)
    streamer = Streamer(content=content, layout=layout, cipher=cipher,
                        overlays=_overlays(layout, meta.region, first, cipher, job.seed),
                        used_only=job.used_only, chunk=job.chunk)
    streamed = write_image(streamer, job.out_path, job.threads, job.progress)
    manifest_dir = job.manifest_path.resolve().parent
    for prot in prepared:
        writer = getattr(prot, "write_files", None)
        if writer is not None:
            writer(manifest_dir)
    source_info = content.describe()
    if job.source is not None:
        source_info["path"] = os.path.relpath(os.path.abspath(job.source.path), manifest_dir)
    result = _manifest(job, layout, volume, meta, streamed, manifest_dir, description=description,
                       protectors=[prot.manifest() for prot in prepared], source=source_info)
    if volume.auto_unlock_key is not None:
        result.extra["auto_unlock_key"] = volume.auto_unlock_key.hex()
    job.manifest_path.parent.mkdir(parents=True, exist_ok=True)
    result.save(job.manifest_path)
    return result


def _overlays(layout: Layout, region: bytes, first: bytes, cipher: ciphers.SectorCipher,
              seed: int | str) -> list[tuple[int, bytes]]:
    """What replaces the ciphertext: the metadata copies, the volume header block and (Windows
    7+) the relocated header block."""
    ss = layout.sector_size
    overlays: list[tuple[int, bytes]] = [(off, region) for off in layout.metadata_offsets]
    if layout.version == 1:
        overlays.append((0, vista_volume_header(first, layout.metadata_offsets[0],
                                                layout.cluster_size, ss)))
        return overlays
    hidden = structs.BOOT_SECTOR_PREFIX.parse(first[:64]).hidden_sectors \
        if first[510:512] == b"\x55\xaa" else 0
    header = build_volume_header(ss, layout.metadata_offsets, hidden)
    noise = SeededRandom(seed, "header-noise").bytes(HEADER_BLOCK - ss)
    overlays.append((0, header + noise))
    overlays.append((layout.relocated_offset,
                     encrypt_sectors(cipher, first, layout.relocated_offset)))
    return overlays


def _manifest(job: _Job, layout: Layout, volume: VolumeKeys, meta: MetadataCopy,
              streamed: StreamResult, manifest_dir: Path, *, description: str,
              protectors: list[dict[str, Any]], source: dict[str, Any]) -> Manifest:
    """The manifest of the written image (paths relative to ``manifest_dir``)."""
    layout_info = layout.describe()
    layout_info["metadata_block_size"] = len(meta.block)
    layout_info["metadata_copy_size"] = len(meta.copy)
    header = meta.block_header
    return Manifest(
        image=os.path.relpath(job.out_path.resolve(), manifest_dir),
        method=job.method.label, method_id=int(job.method), sector_size=job.sector_size,
        volume_size=job.size, image_size=job.size, seed=job.seed, fvek=volume.fvek.hex(),
        vmk=volume.vmk.hex(), volume_guid=guid_text(volume.volume_guid), description=description,
        created=_datetime(volume.created).isoformat(),
        state={"current": int(header.current_state), "next": int(header.next_state),
               "encrypted_bytes": layout.encrypted_end,
               "partial": layout.encrypted_end < job.size},
        used_only=job.used_only, source=source, protectors=protectors,
        layout=layout_info, reserved=[[a, n] for a, n in layout.reserved()],
        zero_on_disk=[[a, n] for a, n in merge_intervals(streamed.zero_runs)],
        window_size=WINDOW, windows=streamed.windows, volume_sha256=streamed.volume_sha256)


def _datetime(filetime: int) -> dt.datetime:
    """A generated FILETIME as a datetime (the generated clock runs from 2021: never 0)."""
    when = filetime_to_datetime(filetime)
    if when is None:
        raise ValueError(f"FILETIME {filetime} is not a point in time")
    return when
