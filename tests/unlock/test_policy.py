"""The unlock policy used from Python, without the command line (bdekit.unlock.policy).

The volume is synthetic (``bdekit.synth`` picks the keys and writes them into the manifest);
the keyring is a CSV export written here. What the policy must do is stated independently of
its output: only the escrowed key whose GUID is the protector's is stretched, every key tried
is in the audit log without the key, a typed recovery password one typing error away is
corrected, and every error names the image.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from bdekit import synth
from bdekit.crypto import keys
from bdekit.errors import (
    MissingKeyError,
    RecoveryPasswordFormatError,
    UsageError,
    WrongKeyError,
)
from bdekit.escrow.keyring import load_keyring
from bdekit.escrow.secrets import Secrets
from bdekit.unlock.policy import FIX_TYPOS_HINT, UnlockPolicy
from bdekit.volume.bde import open_bde
from tests.conftest import ROOT

RP = keys.generate_recovery_password(random.Random("policy"))
PASSWORD = "policy password"


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("policy") / "rp.img"
    manifest = synth.build(out, size="4M", seed="policy",
                           protectors=[synth.RecoveryPasswordSpec(RP),
                                       synth.PasswordSpec(PASSWORD)])
    return out, manifest


def rp_guid(manifest: Any) -> uuid.UUID:
    (entry,) = [p for p in manifest.protectors if p["type"] == "recovery-password"]
    return uuid.UUID(entry["guid"])


def write_csv(path: Path, rows: list[tuple[uuid.UUID, str]]) -> Path:
    lines = ["Device name,Key ID,Recovery key"]
    lines += [f"PC-{i},{guid},{rp}" for i, (guid, rp) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def unrelated(n: int) -> list[tuple[uuid.UUID, str]]:
    rng = random.Random(n)
    return [(uuid.UUID(int=rng.getrandbits(128), version=4),
             keys.generate_recovery_password(rng)) for _ in range(n)]


def one_typo(password: str) -> str:
    """A single wrong digit in the first block whose corrections put ``password`` first."""
    blocks = password.split("-")
    for pos in range(6):
        for digit in "0123456789":
            typed = "-".join([blocks[0][:pos] + digit + blocks[0][pos + 1:], *blocks[1:]])
            if typed == password:
                continue
            try:
                first = next(keys.typo_candidates(typed), None)
            except UsageError:
                continue
            if first == password:
                return typed
    raise AssertionError("no cheap typo")


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_keyring_unlocks_through_the_policy(volume, tmp_path: Path,  # type: ignore[no-untyped-def]
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    image, manifest = volume
    rows = unrelated(40)
    rows.insert(23, (rp_guid(manifest), RP))
    ring = load_keyring([write_csv(tmp_path / "escrow.csv", rows)])
    stretches: list[bytes] = []
    real_stretch = keys.stretch_key

    def counting(initial: bytes, salt: bytes, *args: Any, **kwargs: Any) -> bytes:
        stretches.append(salt)
        return real_stretch(initial, salt, *args, **kwargs)

    monkeypatch.setattr(keys, "stretch_key", counting)
    audit_log = tmp_path / "audit.jsonl"
    policy = UnlockPolicy(keyring=ring, audit_log=audit_log, command="my-script")
    vol = open_bde(image)
    secrets = Secrets()
    outcome = policy.unlock(vol, secrets)
    assert outcome.result.fvek.hex() == manifest.fvek
    assert vol.unlocked is outcome.result  # the key is set: the volume reads as plaintext
    window = bytearray(1 << 20)
    assert vol.read_into(0, window) == len(window)
    assert hashlib.sha256(window).hexdigest() == manifest.windows[0]
    assert outcome.result.source == "escrow.csv:row 25"  # header is row 1; index 23 -> row 25
    assert outcome.corrected is None
    assert outcome.notes[0].startswith("bdekit: unlocked with recovery-password from "
                                       "escrow.csv:row 25")
    assert "rotate it" in outcome.notes[1]
    assert len(stretches) == 1  # 40 unrelated keys are never tried
    (rec,) = records(audit_log)
    assert (rec["command"], rec["key_source"], rec["outcome"]) == (
        "my-script", "escrow.csv:row 25", "unlocked")
    assert RP not in audit_log.read_text()
    assert secrets == Secrets()  # the caller's secrets are left as they were


def test_keyring_keys_given_in_the_secrets_are_narrowed_too(volume, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """What the CLI does: every keyring key is in the secrets; only the matching one is tried,
    however often the policy runs (repair unlocks several metadata candidates)."""
    image, manifest = volume
    ring = load_keyring([write_csv(tmp_path / "k.csv", [*unrelated(5), (rp_guid(manifest), RP)])])
    secrets = Secrets(candidates=ring.candidates())
    audit_log = tmp_path / "audit.jsonl"
    policy = UnlockPolicy(keyring=ring, audit_log=audit_log)
    for _ in range(2):
        assert policy.unlock(open_bde(image), secrets).result.fvek.hex() == manifest.fvek
    assert len(secrets.candidates) == 6
    assert [r["outcome"] for r in records(audit_log)] == ["unlocked", "unlocked"]


def test_keyring_without_a_match_names_the_image_and_the_protectors(volume, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    image, manifest = volume
    ring = load_keyring([write_csv(tmp_path / "k.csv", unrelated(7))])
    with pytest.raises(MissingKeyError) as info:
        UnlockPolicy(keyring=ring, audit_log=tmp_path / "a.jsonl").unlock(open_bde(image),
                                                                          Secrets())
    assert info.value.path == str(image)
    assert "none of the 7 escrowed keys" in info.value.message
    assert keys.key_id(rp_guid(manifest)) in info.value.message


def test_typo_repair_through_the_policy(volume, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    image, manifest = volume
    typed = one_typo(RP)
    announced: list[str] = []
    policy = UnlockPolicy(fix_typos=1, audit_log=tmp_path / "a.jsonl", workers=1,
                          announce=announced.append)
    vol = open_bde(image)
    outcome = policy.unlock(vol, Secrets(recovery_passwords=[typed]))
    assert outcome.corrected == RP
    assert outcome.result.fvek.hex() == manifest.fvek and vol.unlocked is outcome.result
    total = keys.count_typo_candidates(typed)
    assert announced and announced[0].startswith(f"bdekit: testing {total} correction")
    text = (tmp_path / "a.jsonl").read_text()
    assert RP not in text and typed not in text


def test_malformed_recovery_password_gets_a_hint_and_the_image(volume, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    image, _manifest = volume
    typed = one_typo(RP)
    with pytest.raises(RecoveryPasswordFormatError) as info:
        UnlockPolicy(audit_log=tmp_path / "a.jsonl").unlock(
            open_bde(image), Secrets(recovery_passwords=[typed]))
    exc = info.value
    assert exc.hint == FIX_TYPOS_HINT and exc.path == str(image)
    assert "check digit" in exc.message and FIX_TYPOS_HINT not in exc.message
    assert exc.display() == f"{image}: {exc.message} ({FIX_TYPOS_HINT})"


def test_wrong_password_names_the_image(volume, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    image, _manifest = volume
    with pytest.raises(WrongKeyError) as info:
        UnlockPolicy(audit_log=tmp_path / "a.jsonl").unlock(
            open_bde(image), Secrets(passwords=["not it"]))
    assert info.value.path == str(image)
    assert str(image) in str(info.value)


def test_the_policy_needs_no_command_line() -> None:
    code = ("import sys; import bdekit.unlock.policy; "
            "sys.exit(1 if 'click' in sys.modules else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr or "bdekit.unlock.policy imports click"
