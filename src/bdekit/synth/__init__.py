"""Synthetic BitLocker images with known keys and controlled damage, for test harnesses.

:func:`build` writes a volume image and its :class:`Manifest`; :mod:`bdekit.synth.damage`
damages an image in place and records what it did in the manifest.
"""

from bdekit.synth.builder import (
    WINDOW,
    ClearKeySpec,
    Manifest,
    PasswordSpec,
    RecoveryPasswordSpec,
    SeededRandom,
    StartupKeySpec,
    SynthProtector,
    aes_ccm_datum,
    build,
    build_bek,
    build_metadata_block,
    build_volume_header,
    default_manifest_path,
    encrypt_sectors,
    ntfs_boot_sector,
    parse_size,
    payload_key,
    validation_bytes,
    window_digests,
)

__all__ = [
    "WINDOW", "ClearKeySpec", "Manifest", "PasswordSpec", "RecoveryPasswordSpec", "SeededRandom",
    "StartupKeySpec", "SynthProtector", "aes_ccm_datum", "build", "build_bek",
    "build_metadata_block", "build_volume_header", "default_manifest_path", "encrypt_sectors",
    "ntfs_boot_sector", "parse_size", "payload_key", "validation_bytes", "window_digests",
]
