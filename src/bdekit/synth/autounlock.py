"""Auto-unlocked synthetic data volumes, bound to a synthetic OS volume.

The OS volume (``synth create OS.img --os-volume``) carries the auto-unlock key datum (role
0x000b, AES-CCM under its VMK, key datum 0x2002: see :mod:`bdekit.synth.metadata_block`). An
:class:`AutoUnlockSpec` adds to a data volume what Windows adds when auto-unlock is turned on
for it: an external key protector (protection 0x0200, description ``ExternalKey``, use key with
the external key under the VMK, the VMK under the external key: the startup key protector's
layout, without a ``.BEK`` file), and the registry value the OS keeps for it: the 112-byte
``FVEAutoUnlock\\{GUID}\\Data`` (:mod:`bdekit.format.autounlock`; its AES-CCM datum, version 1,
holds the external key under the OS volume's auto-unlock key, with a nonce counter of
0x10000001 as in the public registry dumps). The value is written to the manifest
(``auto_unlock_data``), not to a registry hive.

The auto-unlock key is read from the OS image itself: its manifest gives the OS volume's VMK,
which must open the image's role 0x000b datum.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from pathlib import Path
from typing import Any

from construct import Container

from bdekit.crypto import keys
from bdekit.errors import UsageError
from bdekit.format import structs
from bdekit.format.autounlock import REGISTRY_PATH, build_data_value
from bdekit.format.constants import KeyType
from bdekit.format.datum_build import payload_key
from bdekit.synth.manifest import Manifest, default_manifest_path
from bdekit.synth.protectors import StartupKeySpec, guid_text
from bdekit.synth.seeded import NonceSource, SeededRandom
from bdekit.unlock.autounlock import auto_unlock_key
from bdekit.unlock.vmk import wrap_key
from bdekit.volume.bde import open_bde

#: Nonce counter of the Data value's AES-CCM datum (the public dumps show 0x1000000x).
DATA_NONCE_COUNTER = 0x10000001


def os_auto_unlock_key(os_image: str | os.PathLike[str]) -> bytes:
    """The auto-unlock key of a synthetic OS volume (its manifest's VMK opens the datum)."""
    manifest_path = default_manifest_path(os_image)
    if not manifest_path.is_file():
        raise UsageError(f"--auto-unlock-by needs the OS volume's manifest {manifest_path} "
                         "(its VMK opens the auto-unlock key datum)", path=os_image)
    manifest = Manifest.load(manifest_path)
    volume = open_bde(os.fspath(os_image))
    try:
        return auto_unlock_key(volume.metadata, bytes.fromhex(manifest.vmk), os.fspath(os_image))
    finally:
        volume.source.close()


@dataclasses.dataclass
class AutoUnlockSpec:
    """An external key protector that the OS volume ``os_image`` unlocks automatically."""

    os_image: str | os.PathLike[str]

    def prepare(self, rng: SeededRandom) -> AutoUnlockProtector:
        startup = StartupKeySpec(".").prepare(rng)
        return AutoUnlockProtector(startup.guid, startup, os_auto_unlock_key(self.os_image),
                                   Path(self.os_image))


@dataclasses.dataclass
class AutoUnlockProtector:
    """A prepared auto-unlock protector (the builder's ``SynthProtector`` protocol)."""

    guid: uuid.UUID
    startup: Any = dataclasses.field(repr=False)  # the startup key protector it resembles
    os_key: bytes = dataclasses.field(repr=False)
    os_image: Path = Path()
    data_value: bytes = dataclasses.field(default=b"", repr=False)
    manifest_dir: Path | None = None

    @property
    def protection(self) -> int:
        return int(self.startup.protection)

    def build_datum(self, vmk: bytes, nonces: NonceSource) -> Container:
        filetime = nonces.filetime
        datum = self.startup.build_datum(vmk, nonces)
        wrapped = wrap_key(self.os_key, keys.make_nonce(filetime, DATA_NONCE_COUNTER),
                           payload_key(self.startup.key, KeyType.EXTERNAL))
        self.data_value = build_data_value(self.guid, filetime, structs.DATUM.build(wrapped))
        return datum

    def write_files(self, manifest_dir: Path) -> None:
        self.manifest_dir = manifest_dir  # nothing to write: only the manifest's path

    def manifest(self) -> dict[str, Any]:
        where = self.os_image
        if self.manifest_dir is not None:
            where = Path(os.path.relpath(self.os_image.resolve(), self.manifest_dir))
        return {"type": "auto-unlock", "guid": guid_text(self.guid),
                "key_id": keys.key_id(self.guid), "protection": self.protection,
                "external_key": self.startup.key.hex(), "os_image": str(where),
                "auto_unlock_data": self.data_value.hex(),
                "registry_key": "HKLM\\SYSTEM\\CurrentControlSet\\" + REGISTRY_PATH
                                + "\\{" + guid_text(self.guid) + "}",
                "registry_value": "Data"}


__all__ = ["AutoUnlockProtector", "AutoUnlockSpec", "os_auto_unlock_key"]
