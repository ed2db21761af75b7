"""bdekit: open, decrypt and repair BitLocker-encrypted disk images, offline."""

from __future__ import annotations

from bdekit.errors import BdeError

__all__ = ["BdeError"]
__version__ = "0.1.0"
