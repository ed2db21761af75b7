"""bdekit: open, decrypt and repair BitLocker-encrypted disk images, offline.

The front door is :func:`open_volume`, which returns the decrypted volume as a read-only
``io.RawIOBase``; :func:`open_bde` returns the locked :class:`~bdekit.volume.BdeVolume` for
inspection (metadata, protectors) before unlocking. Every deliberate error is a
:class:`BdeError`.
"""

from __future__ import annotations

from bdekit._version import __version__
from bdekit.errors import BdeError
from bdekit.volume.bde import BdeVolume, open_bde, open_volume
from bdekit.volume.stream import DecryptedStream

__all__ = ["BdeError", "BdeVolume", "DecryptedStream", "__version__", "open_bde", "open_volume"]
