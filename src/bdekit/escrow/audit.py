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
import uuid
from pathlib import Path
from typing import Any

from bdekit.escrow.secrets import AttemptOutcome, KeyCandidate, SecretKind
from bdekit.format.protector import Protector

log = logging.getLogger(__name__)

#: Environment variable that overrides the default audit log path.
ENV_AUDIT_LOG = "BDEKIT_AUDIT_LOG"

#: Protector kinds whose secret is disclosed once it has been used to unlock (rotate them).
DISCLOSED_KINDS: dict[str, str] = {SecretKind.RECOVERY_PASSWORD: "recovery password",
                                   SecretKind.BEK: "recovery key file"}


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
    except (OSError, KeyError, ImportError):  # no login name (no passwd entry, no pwd module)
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def _guid(value: uuid.UUID | str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, uuid.UUID):
        return str(value).upper()
    return str(value)


class AuditLog:
    """Appends audit records for one command run on one image.

    Use :meth:`attempt` as the ``on_attempt`` hook of :func:`bdekit.unlock.attempt.unlock`.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, command: str = "bdekit",
                 image: str | None = None, volume_guid: uuid.UUID | str | None = None
                 ) -> None:
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
            "host": os.uname().nodename,  # gethostname(2) without loading socket
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

    def attempt(self, candidate: KeyCandidate, protector: Protector | None,
                outcome: str) -> None:
        """``on_attempt`` hook: where ``candidate`` came from (its value is never read)."""
        self.write(**_protector_fields(protector), key_kind=str(candidate.kind),
                   key_source=candidate.source, outcome=str(outcome))

    __call__ = attempt

    def used(self, kind: str, source: str, outcome: str = AttemptOutcome.USED,
             protector: Protector | None = None) -> None:
        """A key used without a protector attempt (``--fvek``, ``--vmk``, a clear key)."""
        self.write(**_protector_fields(protector), key_kind=str(kind), key_source=source,
                   outcome=str(outcome))


def _protector_fields(protector: Protector | None) -> dict[str, str | None]:
    if protector is None:
        return {"protector_id": None, "protector_key_id": None, "protector_type": None}
    return {"protector_id": _guid(protector.guid), "protector_key_id": protector.key_id,
            "protector_type": protector.type_name}


def rotation_reminder(kind: str, protector: Protector | None) -> str | None:
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
