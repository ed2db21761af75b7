"""GUIDs as BitLocker stores and shows them.

GUIDs are stored in Microsoft's mixed-endian form (``uuid.UUID(bytes_le=...)``). The *key ID*
shown on the pre-boot recovery screen and in escrow (Entra ID, AD DS) is the protector GUID;
helpdesks match on its first 8 hex digits.
"""

from __future__ import annotations

import uuid


def key_id(guid: uuid.UUID) -> str:
    """The 8-character key ID helpdesks match recovery passwords on (e.g. ``'7EDA7D4A'``)."""
    return str(guid)[:8].upper()
