"""Synthetic BitLocker images with known keys and controlled damage, for test harnesses.

:func:`build` writes a volume image and its :class:`Manifest`; :mod:`bdekit.synth.damage`
damages an image in place and records what it did in the manifest.

Modules, in the order an image is made: :mod:`~bdekit.synth.options` (arguments, fixed sizes),
:mod:`~bdekit.synth.seeded` (keys, GUIDs, times from the seed), :mod:`~bdekit.synth.plaintext`
(generated or source plaintext), :mod:`~bdekit.synth.layout` (where the metadata copies go),
:mod:`~bdekit.synth.protectors` (VMK datums, BEK files; certificate, TPM and auto-unlock
protectors in :mod:`~bdekit.synth.certificate`, :mod:`~bdekit.synth.tpm`,
:mod:`~bdekit.synth.autounlock`), :mod:`~bdekit.synth.metadata_block`
(the metadata copy), :mod:`~bdekit.synth.boot_sectors` (sector 0),
:mod:`~bdekit.synth.streaming` (encrypting and writing the image), :mod:`~bdekit.synth.manifest`
(the JSON record), :mod:`~bdekit.synth.builder` (:func:`build`, which ties them together).
"""

from bdekit.format.datum_build import payload_key
from bdekit.synth.autounlock import AutoUnlockSpec
from bdekit.synth.boot_sectors import build_volume_header, ntfs_boot_sector
from bdekit.synth.builder import build
from bdekit.synth.certificate import CertificateSpec
from bdekit.synth.manifest import Manifest, default_manifest_path, window_digests
from bdekit.synth.metadata_block import build_metadata_block, validation_bytes
from bdekit.synth.options import WINDOW, parse_size
from bdekit.synth.protectors import (
    ClearKeySpec,
    PasswordSpec,
    RecoveryPasswordSpec,
    StartupKeySpec,
    SynthProtector,
    build_bek,
)
from bdekit.synth.seeded import SeededRandom
from bdekit.synth.streaming import encrypt_sectors
from bdekit.synth.tpm import TpmSpec
from bdekit.unlock.vmk import wrap_key as aes_ccm_datum

__all__ = [
    "WINDOW", "AutoUnlockSpec", "CertificateSpec", "ClearKeySpec", "Manifest", "PasswordSpec",
    "RecoveryPasswordSpec", "SeededRandom", "StartupKeySpec", "SynthProtector", "TpmSpec",
    "aes_ccm_datum", "build", "build_bek",
    "build_metadata_block", "build_volume_header", "default_manifest_path", "encrypt_sectors",
    "ntfs_boot_sector", "parse_size", "payload_key", "validation_bytes", "window_digests",
]
