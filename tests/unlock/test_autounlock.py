"""Auto-unlocked data volumes opened through their OS volume (experimental support).

A synthetic OS volume (``synth create --os-volume``) and data volumes bound to it
(``--auto-unlock-by OS.img``): the registry ``Data`` value is checked here byte by byte against
the published layout (112 bytes: size, 9, protector GUID, FILETIME, AES-CCM datum) with
``struct`` and ``cryptography``, then the data volume is opened from every documented input:
the value in hex, regedit's ``hex:`` text, and a SYSTEM hive (written by ``tests/unlock/regf.py``
and read by regipy; skipped without regipy).
"""

from __future__ import annotations

import importlib.util
import json
import struct
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from bdekit import synth
from bdekit.errors import EXIT_KEY, EXIT_OK, EXIT_UNSUPPORTED, EXIT_USAGE
from bdekit.volume.bde import open_bde
from tests.conftest import run_cli as run
from tests.unlock.regf import system_hive

PIN = "1357"
requires_regipy = pytest.mark.skipif(importlib.util.find_spec("regipy") is None,
                                     reason="regipy (bdekit[registry]) is not installed")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("autounlock")
    os_img, other_os, data, data2 = (tmp / n for n in ("os.img", "os2.img", "data.img",
                                                      "data2.img"))
    os_m = synth.build(os_img, size="2M", seed="os", os_volume=True,
                       protectors=[synth.RecoveryPasswordSpec(), synth.TpmSpec(pin=PIN)])
    synth.build(other_os, size="2M", seed="os2", os_volume=True,
                protectors=[synth.RecoveryPasswordSpec()])
    data_m = synth.build(data, size="2M", seed="data",
                         protectors=[synth.PasswordSpec("pw"), synth.AutoUnlockSpec(os_img)])
    data2_m = synth.build(data2, size="2M", seed="data2",
                          protectors=[synth.AutoUnlockSpec(os_img)])
    return {"os": os_img, "os_m": os_m, "other_os": other_os, "data": data, "data_m": data_m,
            "data2": data2, "data2_m": data2_m, "tmp": tmp,
            "rp": os_m.protectors[0]["recovery_password"],
            "value": data_m.protectors[1]["auto_unlock_data"],
            "value2": data2_m.protectors[0]["auto_unlock_data"]}


def ccm_open(key: bytes, datum: bytes) -> bytes:
    return AESCCM(key, tag_length=16).decrypt(datum[8:20], datum[36:] + datum[20:36], None)


def opened(pair: dict[str, Any], *args: str, image: str = "data") -> dict[str, Any]:
    code, out, err = run("info", str(pair[image]), "--auto-unlock-from", str(pair["os"]),
                         *args, "--json", "--show-keys")
    assert code == EXIT_OK, err
    result: dict[str, Any] = json.loads(out)["unlocked"]
    return result


def test_os_volume_and_value_have_the_published_layout(pair: dict[str, Any]) -> None:
    os_m, data_m = pair["os_m"], pair["data_m"]
    auto_key = bytes.fromhex(os_m.extra["auto_unlock_key"])
    (datum,) = [d for d in open_bde(pair["os"]).metadata.best.datums if d.role == 0x000B]
    assert (datum.type, datum.size) == (5, 0x50)
    plain = ccm_open(bytes.fromhex(os_m.vmk), datum.raw)
    assert plain == bytes.fromhex("2c00000001000000" "02200000") + auto_key
    entry = data_m.protectors[1]
    value = bytes.fromhex(entry["auto_unlock_data"])
    size, version, guid = struct.unpack_from("<II16s", value)
    assert (len(value), size, version) == (0x70, 0x70, 9)
    assert str(uuid.UUID(bytes_le=guid)).upper() == entry["guid"]
    assert value[32:40] == bytes.fromhex("5000000005000100")
    assert value[24:32] == value[40:48]  # the FILETIME, also the nonce's
    external = ccm_open(auto_key, value[32:])
    assert external == bytes.fromhex("2c00000001000000" "02200000") + bytes.fromhex(
        entry["external_key"])
    prot = [p for p in open_bde(pair["data"]).protectors if p.protection == 0x0200]
    assert [str(p.guid).upper() for p in prot] == [entry["guid"]] and prot[0].label == "ExternalKey"


def test_opens_from_the_value_in_hex(pair: dict[str, Any]) -> None:
    result = opened(pair, "--os-recovery-password", pair["rp"], "--auto-unlock-data",
                    pair["value"])
    assert (result["via"], result["fvek"]) == ("auto-unlock", pair["data_m"].fvek)
    regedit = "hex:" + ",".join(pair["value"][i:i + 2] for i in range(0, 224, 2))
    result = opened(pair, "--os-recovery-password", pair["rp"], "--auto-unlock-data", regedit)
    assert result["fvek"] == pair["data_m"].fvek
    result = opened(pair, "--os-vmk", pair["os_m"].vmk, "--auto-unlock-data", pair["value"])
    assert result["fvek"] == pair["data_m"].fvek


def test_os_volume_opened_by_its_tpm_pin_protector(pair: dict[str, Any]) -> None:
    tpm = pair["os_m"].protectors[1]
    result = opened(pair, "--os-tpm-secret", tpm["tpm_secret"], "--os-pin", PIN,
                    "--auto-unlock-data", pair["value2"], image="data2")
    assert result["fvek"] == pair["data2_m"].fvek


@requires_regipy
def test_opens_from_the_system_hive(pair: dict[str, Any]) -> None:
    values = {"{" + pair["data_m"].protectors[1]["guid"] + "}": bytes.fromhex(pair["value"]),
              "{" + pair["data2_m"].protectors[0]["guid"] + "}": bytes.fromhex(pair["value2"])}
    hive = pair["tmp"] / "SYSTEM"
    hive.write_bytes(system_hive(values, ("ControlSet001", "ControlSet002")))
    for image, manifest in (("data", "data_m"), ("data2", "data2_m")):
        result = opened(pair, "--os-recovery-password", pair["rp"], "--system-hive", str(hive),
                        image=image)
        assert result["fvek"] == pair[manifest].fvek
        assert str(hive) in result["source"]


@requires_regipy
def test_a_hive_without_values_or_not_a_hive(pair: dict[str, Any]) -> None:
    empty = pair["tmp"] / "EMPTY"
    empty.write_bytes(system_hive({}))
    code, _out, err = run("info", str(pair["data"]), "--auto-unlock-from", str(pair["os"]),
                          "--os-recovery-password", pair["rp"], "--system-hive", str(empty))
    assert code == EXIT_KEY and "no FVEAutoUnlock value" in err
    junk = pair["tmp"] / "JUNK"
    junk.write_bytes(b"not a hive" * 100)
    code, _out, err = run("info", str(pair["data"]), "--auto-unlock-from", str(pair["os"]),
                          "--os-recovery-password", pair["rp"], "--system-hive", str(junk))
    assert code == 3 and "registry hive" in err and "Traceback" not in err


def test_values_of_another_os_are_a_key_error(pair: dict[str, Any]) -> None:
    other_rp = synth.Manifest.load(synth.default_manifest_path(pair["other_os"])).protectors[0]
    code, _out, err = run("info", str(pair["data"]), "--auto-unlock-from",
                          str(pair["other_os"]), "--os-recovery-password",
                          other_rp["recovery_password"], "--auto-unlock-data", pair["value"])
    assert code == EXIT_KEY and "another OS installation" in err
    code, _out, err = run("info", str(pair["data"]), "--auto-unlock-from", str(pair["os"]),
                          "--os-recovery-password", pair["rp"], "--auto-unlock-data",
                          pair["value2"])
    assert code == EXIT_KEY  # a value for another data volume: no protector of this one


@pytest.mark.parametrize(("value", "code", "words"), [
    ("01000000d08c9ddf0115d1118c7a00c04fc297eb" + "00" * 60, EXIT_UNSUPPORTED, "DPAPI"),
    ("70000000" + "00" * 100, EXIT_UNSUPPORTED, "112"),
    ("zz", EXIT_USAGE, "hexadecimal"),
])
def test_unknown_value_layouts_are_refused(pair: dict[str, Any], value: str, code: int,
                                           words: str) -> None:
    got, _out, err = run("info", str(pair["data"]), "--auto-unlock-from", str(pair["os"]),
                         "--os-recovery-password", pair["rp"], "--auto-unlock-data", value)
    assert got == code and words in err


def test_options_need_each_other(pair: dict[str, Any]) -> None:
    code, _out, err = run("info", str(pair["data"]), "--auto-unlock-data", pair["value"])
    assert code == EXIT_USAGE and "--auto-unlock-from" in err
    code, _out, err = run("info", str(pair["data"]), "--auto-unlock-from", str(pair["os"]),
                          "--os-recovery-password", pair["rp"])
    assert code == EXIT_USAGE and "--system-hive" in err
    code, _out, err = run("info", str(pair["data"]), "--auto-unlock-from", str(pair["data"]),
                          "--os-password", "pw", "--auto-unlock-data", pair["value"])
    assert code == EXIT_KEY and "auto-unlock key datum" in err


def test_synth_create_auto_unlock_by(pair: dict[str, Any], tmp_path: Path) -> None:
    image = tmp_path / "cli.img"
    code, out, err = run("synth", "create", str(image), "--size", "2M", "--seed", "c",
                         "--auto-unlock-by", str(pair["os"]), "--json")
    assert code == EXIT_OK, err
    (entry,) = json.loads(out)["protectors"]
    assert entry["type"] == "auto-unlock" and len(bytes.fromhex(entry["auto_unlock_data"])) == 112
    result = opened({**pair, "cli": image}, "--os-recovery-password", pair["rp"],
                    "--auto-unlock-data", entry["auto_unlock_data"], image="cli")
    assert result["via"] == "auto-unlock"
    code, _out, err = run("synth", "create", str(tmp_path / "x.img"), "--size", "2M",
                          "--auto-unlock-by", str(pair["data"]))
    assert code == EXIT_KEY and "auto-unlock key datum" in err
