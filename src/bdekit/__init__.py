"""bdekit: open, decrypt and repair BitLocker-encrypted disk images, offline.

The front door is :func:`open_volume`, which returns the decrypted volume as a read-only
``io.RawIOBase``; :func:`open_bde` returns the locked :class:`~bdekit.volume.BdeVolume` for
inspection (metadata, protectors) before unlocking. Every deliberate error is a
:class:`BdeError`.

The volume names are imported when first used (PEP 562), so that ``import bdekit`` (and the
command line's entry point, :mod:`bdekit.cli.entry`) starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bdekit._lazy import lazy_getattr
from bdekit._version import __version__
from bdekit.errors import BdeError

if TYPE_CHECKING:
    from bdekit.volume.bde import BdeVolume, open_bde, open_volume
    from bdekit.volume.stream import DecryptedStream

__getattr__ = lazy_getattr(__name__, {
    "BdeVolume": "volume.bde", "open_bde": "volume.bde", "open_volume": "volume.bde",
    "DecryptedStream": "volume.stream"}, globals())

__all__ = ["BdeError", "BdeVolume", "DecryptedStream", "__version__", "open_bde", "open_volume"]
