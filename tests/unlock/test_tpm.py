"""TPM protectors opened from the secret the TPM released (+ PIN, + startup key).

Synthetic volumes (``synth create --tpm [--pin] [--tpm-startup-key]``) carry the layout the
public TPM sniffing captures show; the secret the TPM would release is in the manifest. The
TPM+PIN derivation is re-implemented here (SHA-256 twice of UTF-16LE PIN, 1,048,576 rounds over
last hash | initial hash | salt | u64 counter, AES-CCM with ``cryptography``) to check the
synthetic layout independently of bdekit's code; the datum sizes expected are the ones the
captures show.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from bdekit import synth
from bdekit.errors import EXIT_KEY, EXIT_OK, EXIT_UNSUPPORTED, EXIT_USAGE, UsageError
from bdekit.escrow.secrets import KeyCandidate, Match, SecretKind, TpmSecret, match_protector
from bdekit.format.bek import BekFile
from bdekit.format.tpm import parse_unsealed
from bdekit.volume.bde import open_bde
from tests.conftest import run_cli as run

PIN = "246810"


def build(tmp: Path, name: str, **spec: Any) -> tuple[Path, dict[str, Any], Any]:
    image = tmp / f"{name}.img"
    manifest = synth.build(image, size="2M", seed=name, protectors=[synth.TpmSpec(**spec)])
    return image, manifest.protectors[0], manifest


@pytest.fixture(scope="module")
def vols(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, Any], Any]]:
    tmp = tmp_path_factory.mktemp("tpm")
    return {
        "tpm": build(tmp, "tpm"),
        "pin": build(tmp, "pin", pin=PIN),
        "key": build(tmp, "key", startup_key=tmp / "bek-key"),
        "pinkey": build(tmp, "pinkey", pin=PIN, startup_key=tmp / "bek-pinkey"),
    }


def unlocked(args: list[str], env: dict[str, str] | None = None,
             input: str | None = None) -> dict[str, Any]:
    code, out, err = run("info", *args, "--json", "--show-keys", env=env, input=input)
    assert code == EXIT_OK, err
    result: dict[str, Any] = json.loads(out)["unlocked"]
    return result


def stretch(initial: bytes, salt: bytes) -> bytes:
    last = bytes(32)
    for count in range(1 << 20):
        last = hashlib.sha256(last + initial + salt + struct.pack("<Q", count)).digest()
    return last


def ccm_open(key: bytes, nonce: bytes, mac: bytes, data: bytes) -> bytes:
    return AESCCM(key, tag_length=16).decrypt(nonce, data + mac, None)


# --------------------------------------------------------------------------------------------
# The captured secret's forms
# --------------------------------------------------------------------------------------------

KEY = bytes(range(32))
KEY_DATUM = bytes.fromhex("2c00000001000000" "03200000") + KEY
BLOB = bytes.fromhex("5000000005000000") + bytes(range(72))


@pytest.mark.parametrize(("data", "form"), [
    (KEY, "key"), (KEY_DATUM, "key"), (b"\x00\x2c" + KEY_DATUM, "key"),
    (BLOB, "blob"), (BLOB[8:], "blob"), (b"\x00\x50" + BLOB, "blob")])
def test_captured_forms(data: bytes, form: str) -> None:
    unsealed = parse_unsealed(data)
    assert unsealed.form == form
    if form == "key":
        assert unsealed.key == KEY
    else:
        assert (unsealed.nonce, unsealed.mac, unsealed.ciphertext) == (
            BLOB[8:20], BLOB[20:36], BLOB[36:])


@pytest.mark.parametrize("data", [b"", bytes(31), bytes(44), b"\x00\x2d" + KEY_DATUM,
                                  bytes(80)])
def test_other_sizes_are_refused(data: bytes) -> None:
    with pytest.raises(UsageError):
        parse_unsealed(data)


def test_a_tpm_secret_matches_tpm_protectors_only(vols) -> None:  # type: ignore[no-untyped-def]
    protectors = {name: open_bde(v[0]).protectors[0] for name, v in vols.items()}
    assert {p.protection for p in protectors.values()} == {0x0100, 0x0300, 0x0500, 0x0700}
    for prot in protectors.values():
        assert match_protector(prot, SecretKind.TPM) == Match.UNIDENTIFIED
    key_prot = protectors["key"]
    bek = BekFile(guid=key_prot.guid, key=bytes(32), path="x.BEK")
    assert KeyCandidate(SecretKind.BEK, bek).match(key_prot) is None  # needs the TPM's key too
    tpm = TpmSecret(parse_unsealed(KEY))
    assert KeyCandidate(SecretKind.TPM, tpm).match(key_prot) == Match.UNIDENTIFIED


# --------------------------------------------------------------------------------------------
# The synthetic layout, checked independently
# --------------------------------------------------------------------------------------------

def sizes(image: Path) -> list[tuple[int, int]]:
    return [(c.type, c.size) for c in open_bde(image).protectors[0].datum.children]


def test_layouts_have_the_captured_datum_sizes(vols) -> None:  # type: ignore[no-untyped-def]
    assert sizes(vols["tpm"][0]) == [(6, 0x10E)]
    assert sizes(vols["key"][0]) == [(6, 0x10E), (4, 0x5C), (5, 0x50)]
    pin = [(2, 0x1C), (3, 0x6C), (0x10, 0x0C), (0x12, 0x1C), (6, 0x146), (0x11, 0x0C),
           (0x13, 0x0C)]
    assert sizes(vols["pin"][0]) == [*pin, (5, 0x50)]
    described = 8 + 2 * len("TPMAndPinAndStartupKey\0")
    assert sizes(vols["pinkey"][0]) == [(2, described), *pin[1:], (4, 0x5C), (5, 0x50)]
    assert vols["tpm"][1]["tpm_secret"] == "2c00000001000000" "03200000" + vols["tpm"][2].vmk


def test_tpm_pin_blob_follows_the_documented_derivation(vols) -> None:  # type: ignore[no-untyped-def]
    image, entry, manifest = vols["pinkey"]
    blob = bytes.fromhex(entry["tpm_secret"])
    assert blob[:8] == bytes.fromhex("5000000005000000")
    initial = hashlib.sha256(hashlib.sha256(PIN.encode("utf-16-le")).digest()).digest()
    key = stretch(initial, bytes.fromhex(entry["salt"]))
    plain = ccm_open(key, blob[8:20], blob[20:36], blob[36:])
    assert plain[:12] == bytes.fromhex("2c00000001000000" "00200000")
    intermediate = plain[12:]
    assert intermediate.hex() == entry["intermediate_key"]
    stretch_datum = open_bde(image).protectors[0].datum.children[1].raw
    assert stretch_datum[8:12] == bytes.fromhex("04201000") and \
        stretch_datum[12:28].hex() == entry["salt"]
    last = open_bde(image).protectors[0].datum.children[-1].raw
    bek_key = bytes.fromhex(entry["external_key"])
    vmk_key = bytes(a ^ b for a, b in zip(intermediate, bek_key, strict=True))
    assert ccm_open(vmk_key, last[8:20], last[20:36], last[36:])[12:].hex() == manifest.vmk


# --------------------------------------------------------------------------------------------
# Opening them from the command line
# --------------------------------------------------------------------------------------------

def test_tpm_only_opens_with_the_released_key(vols, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    image, entry, manifest = vols["tpm"]
    secret = entry["tpm_secret"]
    result = unlocked([str(image), "--tpm-secret", secret])
    assert (result["via"], result["fvek"]) == ("tpm", manifest.fvek)
    binary = tmp_path / "unsealed.bin"
    binary.write_bytes(b"\x00\x2c" + bytes.fromhex(secret))  # the TPM2B as sniffed
    assert unlocked([str(image), "--tpm-secret", str(binary)])["fvek"] == manifest.fvek
    text = tmp_path / "unsealed.txt"
    text.write_text(" ".join(secret[i:i + 2] for i in range(0, len(secret), 2)) + "\n")
    assert unlocked([str(image), "--tpm-secret", str(text)])["fvek"] == manifest.fvek
    for vmk in (secret, manifest.vmk):  # --vmk takes the datum as captured, and the bare key
        assert unlocked([str(image), "--vmk", vmk])["fvek"] == manifest.fvek
    code, _out, err = run("info", str(image), "--tpm-secret", secret[:24] + "00" * 32)
    assert code == EXIT_KEY and "does not decrypt the FVEK" in err


def test_tpm_pin_opens_with_the_blob_and_the_pin(vols) -> None:  # type: ignore[no-untyped-def]
    image, entry, manifest = vols["pin"]
    blob = entry["tpm_secret"]
    assert unlocked([str(image), "--tpm-secret", blob, "--pin", PIN])["fvek"] == manifest.fvek
    result = unlocked([str(image), "--tpm-secret", blob], env={"BDEKIT_PIN": PIN})
    assert result["fvek"] == manifest.fvek
    result = unlocked([str(image), "--tpm-secret", blob, "--pin"], input=PIN + "\n")
    assert result["fvek"] == manifest.fvek
    code, _out, err = run("info", str(image), "--tpm-secret", blob, "--pin", "135790")
    assert code == EXIT_KEY and "wrong PIN" in err and PIN not in err
    code, _out, err = run("info", str(image), "--tpm-secret", blob, env={"BDEKIT_PIN": ""})
    assert code == EXIT_KEY and "--pin" in err
    code, _out, err = run("info", str(image), "--tpm-secret", "2c00000001000000" + "00" * 36,
                          "--pin", PIN)
    assert code == EXIT_KEY and "0x50-byte AES-CCM datum" in err
    code, _out, err = run("info", str(image), "--pin", PIN)
    assert code == EXIT_UNSUPPORTED and "--tpm-secret" in err


def test_tpm_startup_key_variants_need_the_bek(vols) -> None:  # type: ignore[no-untyped-def]
    for name, extra in (("key", []), ("pinkey", ["--pin", PIN])):
        image, entry, manifest = vols[name]
        bek = str(Path(manifest.path.parent if manifest.path else ".") / entry["bek_file"])
        args = [str(image), "--tpm-secret", entry["tpm_secret"], *extra]
        code, out, err = run("info", *args, "--bek", bek, "--json", "--show-keys")
        assert code == EXIT_OK, err
        assert json.loads(out)["unlocked"]["fvek"] == manifest.fvek
        assert "fits no protector" not in err
        code, _out, err = run("info", *args)
        assert code == EXIT_KEY and entry["bek_name"] in err
        code, _out, err = run("info", str(image), "--bek", bek)
        assert code == EXIT_UNSUPPORTED


def test_info_explains_what_opens_a_tpm_protector(vols) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run("info", str(vols["pinkey"][0]), "--json")
    assert code == EXIT_OK, err
    (row,) = json.loads(out)["protectors"]
    assert row["type"] == "tpm-pin-startup-key" and row["protection"] == 0x0700
    for needed in ("--tpm-secret", "0x50", "--pin", "--bek", row["guid"]):
        assert needed in row["opens_with"]
    assert row["tpm_sealed"]["pcrs_inferred"] == [7, 11]
    code, out, _err = run("info", str(vols["tpm"][0]))
    assert "opens with: the key the TPM releases" in out


def test_synth_create_tpm_options(tmp_path: Path) -> None:
    image = tmp_path / "cli.img"
    code, out, err = run("synth", "create", str(image), "--size", "2M", "--seed", "t",
                         "--pin", PIN, "--json")
    assert code == EXIT_OK, err
    (entry,) = json.loads(out)["protectors"]
    assert entry["type"] == "tpm-pin" and entry["pin"] == PIN
    code, _out, err = run("info", str(image), "--tpm-secret", entry["tpm_secret"], "--pin", PIN)
    assert code == EXIT_OK, err
    code, _out, _err = run("synth", "create", str(tmp_path / "x.img"), "--size", "2M",
                           "--pin", "")
    assert code == EXIT_USAGE
