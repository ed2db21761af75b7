"""Audit trail: one JSON line per use of a key, and never the key itself.

Every attempt to unlock a volume with a secret (a typed password, an escrowed recovery password,
a BEK file, a certificate, an FVEK or VMK given in hex, a typo correction) appends one line to
the audit log::

    {"time": "2026-11-22T02:00:00.123456+00:00", "user": "alice", "host": "lab-3",
     "command": "bdekit info", "image": "/cases/17/disk.img",
     "volume_guid": "A8C9...", "protector_id": "7EDA7D4A-...", "protector_key_id": "7EDA7D4A",
     "protector_type": "recovery-password", "key_kind": "recovery-password",
     "key_source": "escrow.csv:row 3", "outcome": "unlocked"}

``outcome`` is ``unlocked``, ``wrong key`` or (for keys given without a protector, e.g.
``--fvek``) ``used``. ``key_source`` says where the secret came from (``command line``, a file
and the entry in it), never what it is: the record is built from :class:`KeyCandidate` metadata
only (its ``value`` is never read here).

The log lives at ``--audit-log FILE``, else ``$BDEKIT_AUDIT_LOG``, else
``$XDG_STATE_HOME/bdekit/audit.jsonl`` (``~/.local/state/bdekit/audit.jsonl``). The directory is
created private (0700) and the file 0600. A log that cannot be written is a warning, not a
failure: the recovery goes on and the user is told that the trail is incomplete.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import os
import socket
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Environment variable that overrides the default audit log path.
ENV_AUDIT_LOG = "BDEKIT_AUDIT_LOG"

#: Protector kinds whose secret is disclosed once it has been used to unlock (rotate them).
DISCLOSED_KINDS = {"recovery-password": "recovery password", "bek": "recovery key file"}


def default_audit_path() -> Path:
    """``$BDEKIT_AUDIT_LOG``, else the user's state directory (XDG), ``bdekit/audit.jsonl``."""
    env = os.environ.get(ENV_AUDIT_LOG)
    if env:
        return Path(env).expanduser()
    state = os.environ.get("XDG_STATE_HOME")
    base = Path(state).expanduser() if state else Path.home() / ".local" / "state"
    return base / "bdekit" / "audit.jsonl"


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (containers without a passwd entry)
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def _guid(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, uuid.UUID):
        return str(value).upper()
    return str(value)


class AuditLog:
    """Appends audit records for one command run on one image.

    Use :meth:`attempt` as the ``on_attempt`` hook of :func:`bdekit.protectors.unlock`.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, command: str = "bdekit",
                 image: str | None = None, volume_guid: Any = None) -> None:
        self.path = Path(path).expanduser() if path else default_audit_path()
        self.command = command
        self.image = os.path.abspath(image) if image else None
        self.volume_guid = _guid(volume_guid)
        self.records = 0
        self.failed = False

    # -- writing ------------------------------------------------------------------------------
    def write(self, **fields: Any) -> None:
        """Append one record (common fields first, then ``fields``)."""
        record: dict[str, Any] = {
            "time": dt.datetime.now(dt.UTC).isoformat(),
            "user": _user(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "command": self.command,
            "image": self.image,
            "volume_guid": self.volume_guid,
        }
        record.update(fields)
        line = json.dumps(record, default=str, ensure_ascii=False) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write(line)
        except OSError as exc:
            if not self.failed:
                log.warning("cannot write the audit log %s: %s (the audit trail of this run is "
                            "incomplete)", self.path, exc.strerror or exc)
            self.failed = True
            return
        self.records += 1

    def attempt(self, candidate: Any, protector: Any, outcome: str) -> None:
        """``on_attempt`` hook: ``candidate`` is a KeyCandidate (its value is never read)."""
        fields: dict[str, Any] = {
            "protector_id": _guid(getattr(protector, "guid", None)),
            "protector_key_id": getattr(protector, "key_id", None),
            "protector_type": getattr(protector, "type_name", None),
            "key_kind": getattr(candidate, "kind", None),
            "key_source": getattr(candidate, "source", None),
            "outcome": outcome,
        }
        self.write(**fields)

    __call__ = attempt

    def used(self, kind: str, source: str, outcome: str = "used", protector: Any = None) -> None:
        """A key used without a protector attempt (``--fvek``, ``--vmk``, a clear key)."""
        self.write(protector_id=_guid(getattr(protector, "guid", None)),
                   protector_key_id=getattr(protector, "key_id", None),
                   protector_type=getattr(protector, "type_name", None),
                   key_kind=kind, key_source=source, outcome=outcome)


def rotation_reminder(kind: str, protector: Any) -> str | None:
    """The one-line reminder printed after a recovery password / recovery key unlocked."""
    what = DISCLOSED_KINDS.get(kind)
    if what is None:
        return None
    ident = ""
    if protector is not None:
        ident = f" of protector {{{str(protector.guid).upper()}}} (key ID {protector.key_id})"
    return (f"bdekit: note: the {what}{ident} is now disclosed; rotate it (remove this protector "
            "and add a new one, and update the escrow)")


__all__ = ["DISCLOSED_KINDS", "ENV_AUDIT_LOG", "AuditLog", "default_audit_path",
           "rotation_reminder"]
