"""Mistyped recovery passwords: ``keys check`` and ``--fix-typos`` (parallel, bounded, audited).

Each candidate costs a full key stretch (~0.4 s), so the typos here are chosen to have short
candidate lists (or the right correction early), which keeps every test to a few stretches.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bdekit import synth
from bdekit.cli.main import cli
from bdekit.crypto import keys
from bdekit.errors import EXIT_KEY, EXIT_OK, EXIT_USAGE, UsageError
from bdekit.unlock import typos
from bdekit.volume.bde import open_bde
from tests.conftest import REAL_RP, requires_real

SYN_RP = keys.generate_recovery_password(random.Random(2024))


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(autouse=True)
def audit_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "audit.jsonl"
    monkeypatch.setenv("BDEKIT_AUDIT_LOG", str(path))
    return path


@pytest.fixture(scope="module")
def syn_volume(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("typos") / "rp.img"
    manifest = synth.build(out, size="4M", seed="typos",
                           protectors=[synth.RecoveryPasswordSpec(SYN_RP)])
    return out, manifest


def with_block(password: str, index: int, block: str) -> str:
    blocks = password.split("-")
    blocks[index] = block
    return "-".join(blocks)


def cheapest_wrong_digit(password: str, index: int) -> str:
    """The single-digit typo in block ``index`` with the fewest corrections to test."""
    block = password.split("-")[index]
    options = []
    for pos in range(6):
        for digit in "0123456789":
            if digit == block[pos]:
                continue
            typo = with_block(password, index, block[:pos] + digit + block[pos + 1:])
            try:
                cands = list(keys.typo_candidates(typo))
            except UsageError:
                continue
            if password in cands:
                options.append((cands.index(password), len(cands), typo))
    return min(options)[2]


def cheapest_swap(password: str) -> str:
    """Two neighbouring digits swapped (breaking the check digit), fewest corrections."""
    options = []
    for index, block in enumerate(password.split("-")):
        for pos in range(5):
            swapped = block[:pos] + block[pos + 1] + block[pos] + block[pos + 2:]
            if swapped == block:
                continue
            typo = with_block(password, index, swapped)
            try:
                cands = list(keys.typo_candidates(typo))
            except UsageError:
                continue
            if password in cands:
                options.append((cands.index(password), len(cands), typo))
    return min(options)[2]


# --------------------------------------------------------------------------------------------
# keys check
# --------------------------------------------------------------------------------------------

def test_keys_check_valid_and_invalid() -> None:
    code, out, _err = run("keys", "check", REAL_RP)
    assert code == EXIT_OK
    assert out.splitlines()[0] == "block 1: 284867   ok (value 25897)"
    assert "valid: every block passes its check digit" in out
    typo = REAL_RP.replace("422114", "421214")
    code, out, _err = run("keys", "check", typo)
    assert code == EXIT_USAGE
    assert "block 4: 421214   fails its check digit (it is not divisible by 11)" in out
    assert f"--fix-typos would test {keys.count_typo_candidates(typo)} corrections" in out
    code, out, _err = run("keys", "check", "12345-678901", "--json")
    assert code == EXIT_USAGE
    data = json.loads(out)
    assert data["valid"] is False and "2 blocks" in data["problem"]
    assert data["blocks"][0]["reason"] == "has 5 digits, expected 6"


def test_keys_check_reads_stdin() -> None:
    result = CliRunner().invoke(cli, ["keys", "check", "-"], input=REAL_RP + "\n")
    assert result.exit_code == EXIT_OK
    assert "block 8: 199408" in result.stdout


# --------------------------------------------------------------------------------------------
# --fix-typos on a synthetic volume
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("index", range(8))
def test_one_wrong_digit_in_any_block_synthetic(index: int, syn_volume) -> None:  # type: ignore[no-untyped-def]
    image, manifest = syn_volume
    typo = cheapest_wrong_digit(SYN_RP, index)
    volume = open_bde(image)
    found = typos.search(volume.metadata, typo, workers=2)
    assert found.password == SYN_RP
    assert found.result.fvek.hex() == manifest.fvek
    assert found.tried <= found.total == keys.count_typo_candidates(typo)


def test_fix_typos_cli_synthetic_swap(syn_volume, audit_log: Path) -> None:  # type: ignore[no-untyped-def]
    image, manifest = syn_volume
    typo = cheapest_swap(SYN_RP)
    total = keys.count_typo_candidates(typo)
    code, out, err = run("info", str(image), "-rp", typo, "--fix-typos", "--json",
                         "--show-keys")
    assert code == EXIT_OK, err
    data = json.loads(out)  # stdout stays JSON; the correction goes to stderr with --json
    assert data["unlocked"]["fvek"] == manifest.fvek
    assert f"testing {total} correction" in err
    assert f"Corrected recovery password: {SYN_RP}" in err
    assert "is now disclosed; rotate it" in err
    recs = [json.loads(line) for line in audit_log.read_text().splitlines()]
    assert recs[-1]["outcome"] == "unlocked"
    assert {r["key_source"] for r in recs} == {"command line (typo correction)"}
    text = audit_log.read_text()
    for secret in (SYN_RP, typo, SYN_RP.replace("-", ""), manifest.vmk, manifest.fvek):
        assert secret not in text


def test_fix_typos_decrypt_prints_correction_on_stdout(syn_volume, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    image, _manifest = syn_volume
    typo = cheapest_wrong_digit(SYN_RP, 0)
    code, out, err = run("-q", "decrypt", str(image), str(tmp_path / "out.img"), "-rp", typo,
                         "--fix-typos=1")
    assert code == EXIT_OK, err
    assert out.strip() == f"Corrected recovery password: {SYN_RP}"


def test_max_candidates_is_a_usage_error_with_the_count(syn_volume, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    image, _manifest = syn_volume
    monkeypatch.setattr(keys, "stretch_key", lambda *a, **k: pytest.fail("no stretch"))
    typo = with_block(SYN_RP, 2, "12345")  # a missing digit: many corrections
    total = keys.count_typo_candidates(typo, 2)
    code, _out, err = run("info", str(image), "-rp", typo, "--fix-typos=2",
                          "--max-candidates", "10")
    assert code == EXIT_USAGE
    assert f"{total} candidate corrections of the recovery password exceed --max-candidates 10" \
        in err


def test_no_correction_unlocks_is_a_key_error(syn_volume) -> None:  # type: ignore[no-untyped-def]
    image, _manifest = syn_volume
    other = keys.generate_recovery_password(random.Random(1))
    typo = cheapest_wrong_digit(other, 0)  # its corrections include `other`, not SYN_RP
    total = keys.count_typo_candidates(typo)
    code, _out, err = run("info", str(image), "-rp", typo, "--fix-typos")
    assert code == EXIT_KEY
    assert f"none of the {total} corrections of the recovery password unlocks" in err


def test_valid_but_wrong_password_hints_level_two(syn_volume) -> None:  # type: ignore[no-untyped-def]
    image, _manifest = syn_volume
    other = keys.generate_recovery_password(random.Random(3))
    code, _out, err = run("info", str(image), "-rp", other, "--fix-typos")
    assert code == EXIT_KEY
    assert "--fix-typos=2 also tries the errors a check digit cannot see" in err


# --------------------------------------------------------------------------------------------
# --fix-typos on the real Windows image
# --------------------------------------------------------------------------------------------

@requires_real
def test_real_one_wrong_digit_cli(real_image, audit_log: Path) -> None:
    image = real_image("recovery_password")
    typo = REAL_RP.replace("199408", "199409")
    code, out, err = run("info", str(image), "-rp", typo, "--fix-typos")
    assert code == EXIT_OK, err
    assert out.splitlines()[0] == f"Corrected recovery password: {REAL_RP}"
    assert "Unlocked:             with recovery-password via protector {3C116B76" in out
    assert "testing 6 corrections" in err
    assert REAL_RP not in audit_log.read_text() and typo not in audit_log.read_text()


@requires_real
def test_real_swapped_digits_cli(real_image) -> None:
    image = real_image("recovery_password")
    typo = REAL_RP.replace("596541", "956541")
    code, out, err = run("info", str(image), "-rp", typo, "--fix-typos", "--json")
    assert code == EXIT_OK, err
    assert json.loads(out)["unlocked"]["key_id"] == "3C116B76"
    assert f"Corrected recovery password: {REAL_RP}" in err


@requires_real
@pytest.mark.parametrize("index", [0, 3, 7])
def test_real_wrong_digit_library(index: int, real_image) -> None:
    volume = open_bde(real_image("recovery_password"))
    found = typos.search(volume.metadata, cheapest_wrong_digit(REAL_RP, index))
    assert found.password == REAL_RP
    assert found.result.protector is not None and found.result.protector.key_id == "3C116B76"


@requires_real
def test_real_level_two_stops_early(real_image) -> None:
    volume = open_bde(real_image("recovery_password"))
    typo = REAL_RP.replace("284867", "482867")  # digits one apart swapped: check digit holds
    assert keys.count_typo_candidates(typo, 1) == 0
    messages: list[str] = []
    found = typos.search(volume.metadata, typo, level=2, workers=2, announce=messages.append)
    assert found.password == REAL_RP
    assert found.total == 69 and found.tried <= 5  # the first candidate; a window in flight
    assert messages[0].startswith("bdekit: testing 69 corrections")
