"""Audit trail: one JSON line per key use, with who/where/what, and never the secret."""

from __future__ import annotations

import json
import os
import stat
import uuid
from pathlib import Path

import pytest

from bdekit.errors import EXIT_KEY, EXIT_OK, EXIT_PARTIAL
from bdekit.escrow import audit
from bdekit.escrow.secrets import KeyCandidate
from tests.conftest import REAL_DIR, REAL_PASSWORD, REAL_RP, requires_real
from tests.conftest import run_cli as run

FIELDS = {"time", "user", "host", "pid", "command", "image", "volume_guid", "protector_id",
          "protector_key_id", "protector_type", "key_kind", "key_source", "outcome"}


@pytest.fixture(autouse=True)
def audit_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "state" / "audit.jsonl"
    monkeypatch.setenv("BDEKIT_AUDIT_LOG", str(path))
    return path


def records(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_default_path_follows_env_and_xdg(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.setenv("BDEKIT_AUDIT_LOG", str(tmp_path / "x.jsonl"))
    assert audit.default_audit_path() == tmp_path / "x.jsonl"
    monkeypatch.delenv("BDEKIT_AUDIT_LOG")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert audit.default_audit_path() == tmp_path / "xdg" / "bdekit" / "audit.jsonl"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert audit.default_audit_path() == (tmp_path / "home" / ".local" / "state" / "bdekit"
                                          / "audit.jsonl")


def test_record_fields_and_permissions(audit_log: Path) -> None:
    class FakeProtector:
        guid = uuid.UUID(int=1)
        key_id = "00000000"
        type_name = "recovery-password"

    trail = audit.AuditLog(command="bdekit info", image="disk.img", volume_guid=uuid.UUID(int=2))
    secret = "111111-111111-111111-111111-111111-111111-111111-111111"
    trail.attempt(KeyCandidate("recovery-password", secret, source="keys.csv:row 2"),
                  FakeProtector(), "wrong key")
    trail.used("fvek", "--fvek")
    (first, second) = records(audit_log)
    assert FIELDS <= set(first)
    assert first["image"] == os.path.abspath("disk.img")
    assert first["volume_guid"] == str(uuid.UUID(int=2)).upper()
    assert (first["key_source"], first["outcome"], first["protector_key_id"]) == (
        "keys.csv:row 2", "wrong key", "00000000")
    assert second["key_kind"] == "fvek" and second["protector_id"] is None
    assert secret not in audit_log.read_text()
    assert stat.S_IMODE(audit_log.stat().st_mode) == 0o600
    assert stat.S_IMODE(audit_log.parent.stat().st_mode) == 0o700


def test_unwritable_log_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    warnings: list[str] = []
    monkeypatch.setattr(audit.log, "warning", lambda msg, *args: warnings.append(msg % args))
    blocker = tmp_path / "file"
    blocker.write_text("")
    trail = audit.AuditLog(blocker / "audit.jsonl")
    trail.used("vmk", "--vmk")
    trail.used("vmk", "--vmk")
    assert trail.failed and trail.records == 0
    assert len(warnings) == 1 and "cannot write the audit log" in warnings[0]


@requires_real
def test_cli_records_each_attempt_and_no_secret(real_image, audit_log: Path,
                                                tmp_path: Path) -> None:
    image = real_image("recovery_password")
    # the recovery password is tried first and unlocks: the password is never used
    code, out, err = run("info", str(image), "-pw", "not-the-password", "-rp", REAL_RP,
                         "--show-keys", "--json")
    assert code == EXIT_OK, err
    unlocked = json.loads(out)["unlocked"]
    recs = records(audit_log)
    assert [(r["key_kind"], r["outcome"], r["protector_type"]) for r in recs] == [
        ("recovery-password", "unlocked", "recovery-password")]
    assert recs[0]["command"] == "bdekit info"
    assert recs[0]["image"] == str(image)
    assert recs[0]["volume_guid"] == "8E6909F1-6BA3-49EA-BF8D-EC83FAB656CD"
    assert recs[0]["protector_id"] == "3C116B76-C67B-484E-B439-CE2ED68B561E"
    assert recs[0]["key_source"] == "command line"
    assert "is now disclosed; rotate it" in err
    # wrong recovery password: a "wrong key" line
    wrong = REAL_RP.replace("199408", "199419")
    code, _out, _err = run("info", str(image), "-rp", wrong)
    assert code == EXIT_KEY
    assert records(audit_log)[-1]["outcome"] == "wrong key"
    text = audit_log.read_text()
    for secret in (REAL_RP, REAL_RP.replace("-", ""), wrong, "not-the-password",
                   unlocked["fvek"], unlocked["vmk"]):
        assert secret not in text
        assert secret.upper() not in text


@requires_real
def test_password_unlock_has_no_rotation_reminder(real_image, audit_log: Path) -> None:
    image = real_image("aes-xts_128")
    log2 = audit_log.parent / "explicit.jsonl"
    code, _out, err = run("info", str(image), "-pw", REAL_PASSWORD, "--audit-log", str(log2))
    assert code == EXIT_OK, err
    assert "rotate" not in err
    assert not audit_log.exists()  # --audit-log wins over $BDEKIT_AUDIT_LOG
    (rec,) = records(log2)
    assert rec["key_kind"] == "password" and rec["outcome"] == "unlocked"
    assert REAL_PASSWORD not in log2.read_text()


@requires_real
def test_fvek_and_clear_key_are_recorded(real_image, audit_log: Path) -> None:
    code, _out, err = run("info", str(real_image("suspended")))
    assert code == EXIT_OK, err
    fvek = "4eb949c473f0edfc379ad041670ddb9c4da0abdb4482a2c8bb47250493aa1ed5"
    code, _out, err = run("info", str(real_image("aes-xts_128")), "--fvek", fvek)
    assert code == EXIT_OK, err
    recs = records(audit_log)
    assert [(r["key_kind"], r["key_source"]) for r in recs] == [
        ("clear-key", "clear key on the volume"), ("fvek", "--fvek")]
    assert fvek not in audit_log.read_text()


@requires_real
def test_decrypt_records_too(real_image, audit_log: Path, tmp_path: Path) -> None:
    out_path = tmp_path / "plain.img"
    code, _out, err = run("-q", "decrypt", str(real_image("startup_key")), str(out_path),
                          "--bek", str(REAL_DIR / "startup_key.bek"), "--no-hash")
    assert code in (EXIT_OK, EXIT_PARTIAL), err  # the real images are truncated captures
    (rec,) = records(audit_log)
    assert rec["command"] == "bdekit decrypt" and rec["key_kind"] == "bek"
    assert rec["key_source"].endswith("startup_key.bek")
