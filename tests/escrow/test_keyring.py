"""Escrow keyring: every export format parses, matches by GUID / key ID, and unlocks (CLI)."""

from __future__ import annotations

import base64
import json
import random
import shutil
import uuid
from pathlib import Path

import pytest

from bdekit import synth
from bdekit.crypto import keys
from bdekit.errors import EXIT_KEY, EXIT_OK, EXIT_USAGE
from bdekit.escrow.keyring import load_keyring, parse_escrow
from tests.conftest import REAL_DIR, REAL_RP, requires_real
from tests.conftest import run_cli as run

#: The recovery password protector of the real image recovery_password.bin.
REAL_RP_GUID = uuid.UUID("3C116B76-C67B-484E-B439-CE2ED68B561E")
REAL_VOLUME_GUID = uuid.UUID("8E6909F1-6BA3-49EA-BF8D-EC83FAB656CD")
STARTUP_KEY_GUID_FILE = REAL_DIR / "startup_key.bek"

WINDOWS_TXT = (
    "BitLocker Drive Encryption recovery key\r\n\r\n"
    "To verify that this is the correct recovery key, compare the start of the following "
    "identifier with the identifier value displayed on your PC.\r\n\r\n"
    "Identifier:\r\n\r\n\t{guid}\r\n\r\n"
    "If the above identifier matches the one displayed by your PC, then use the following key "
    "to unlock your drive.\r\n\r\n"
    "Recovery Key:\r\n\r\n\t{rp}\r\n\r\n"
    "If the above identifier doesn't match the one displayed by your PC, then this isn't the "
    "right key to unlock your drive.\r\nTry another recovery key, or refer to "
    "https://go.microsoft.com/fwlink/?LinkID=260589 for additional assistance.\r\n")


@pytest.fixture(autouse=True)
def _audit_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "audit.jsonl"
    monkeypatch.setenv("BDEKIT_AUDIT_LOG", str(log))
    return log


def random_rp(rng: random.Random) -> str:
    return keys.generate_recovery_password(rng)


def unrelated(rng: random.Random, n: int) -> list[tuple[uuid.UUID, str]]:
    return [(uuid.UUID(int=rng.getrandbits(128), version=4), random_rp(rng)) for _ in range(n)]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def fold_ldif(line: str, width: int = 76) -> str:
    out = [line[:width]]
    rest = line[width:]
    while rest:
        out.append(" " + rest[:width - 1])
        rest = rest[width - 1:]
    return "\n".join(out)


def make_bek(guid: uuid.UUID, key: bytes) -> bytes:
    return synth.build_bek(guid, key, 0)


# --------------------------------------------------------------------------------------------
# Writers for each escrow format (the target key plus unrelated ones)
# --------------------------------------------------------------------------------------------

def write_windows_txt(dir_: Path, guid: uuid.UUID, rp: str, encoding: str = "utf-16") -> Path:
    path = dir_ / f"BitLocker Recovery Key {str(guid).upper()}.TXT"
    text = WINDOWS_TXT.format(guid=str(guid).upper(), rp=rp)
    path.write_bytes(text.encode(encoding))  # "utf-16" writes the BOM (LE here)
    return path


def write_entra_csv(dir_: Path, rows: list[tuple[uuid.UUID, str]]) -> Path:
    path = dir_ / "entra-export.csv"
    lines = ["Device name,Key ID,Recovery key,Volume type,Created"]
    for i, (guid, rp) in enumerate(rows):
        lines.append(f"PC-{i:04d},{guid},{rp},OS volume,2024-03-0{1 + i % 9}T10:00:00Z")
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8-sig")
    return path


def write_mbam_csv(dir_: Path, rows: list[tuple[uuid.UUID, str]]) -> Path:
    path = dir_ / "mbam.csv"
    lines = ["ComputerName;RecoveryKeyId;RecoveryKey;LastUpdateTime"]
    for i, (guid, rp) in enumerate(rows):
        lines.append(f'"CORP\\PC{i}";{{{str(guid).upper()}}};"{rp}";2023-01-01 00:00')
    path.write_text("\n".join(lines) + "\n")
    return path


def write_configmgr_csv(dir_: Path, rows: list[tuple[uuid.UUID, str]]) -> Path:
    """Key ID as the 8 characters a helpdesk sees, password without dashes."""
    path = dir_ / "configmgr.csv"
    lines = ['"Computer Name","RecoveryKeyId","RecoveryPassword","Date"']
    for i, (guid, rp) in enumerate(rows):
        lines.append(f'"WS{i}","{keys.key_id(guid)}","{rp.replace("-", "")}","01/02/2024"')
    path.write_text("\n".join(lines) + "\n")
    return path


def write_graph_json(dir_: Path, rows: list[tuple[uuid.UUID, str]], single: bool = False
                     ) -> Path:
    path = dir_ / ("graph-key.json" if single else "graph-keys.json")
    objs = [{"id": str(guid), "createdDateTime": "2024-01-01T00:00:00Z",
             "volumeType": "operatingSystemVolume",
             "deviceId": str(uuid.UUID(int=i + 1)), "key": rp}
            for i, (guid, rp) in enumerate(rows)]
    doc = objs[0] if single else {
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#informationProtection/"
                          "bitlocker/recoveryKeys", "value": objs}
    path.write_text(json.dumps(doc, indent=2))
    return path


def write_ldif(dir_: Path, rows: list[tuple[uuid.UUID, str]], package: bytes = b"",
               volume_guid: uuid.UUID | None = None) -> Path:
    path = dir_ / "adds.ldf"
    out = []
    for i, (guid, rp) in enumerate(rows):
        rec = [
            fold_ldif(f"dn: CN=2021-10-08T20:09:46-00:00{{{str(guid).upper()}}},CN=PC{i},"
                      "OU=Workstations,DC=corp,DC=example"),
            "changetype: add",
            "objectClass: msFVE-RecoveryInformation",
            f"msFVE-RecoveryPassword: {rp}",
            f"msFVE-RecoveryGuid:: {b64(guid.bytes_le)}",
        ]
        if volume_guid is not None and i == 0:
            rec.append(f"msFVE-VolumeGuid:: {b64(volume_guid.bytes_le)}")
        if package and i == 0:
            rec.append(fold_ldif(f"msFVE-KeyPackage:: {b64(package)}"))
        out.append("\n".join(rec))
    path.write_text("version: 1\n\n" + "\n\n".join(out) + "\n")
    return path


def write_ad_json(dir_: Path, rows: list[tuple[uuid.UUID, str]], package: bytes = b"") -> Path:
    """Get-ADObject ... | ConvertTo-Json: binary attributes as lists of byte values."""
    path = dir_ / "adds.json"
    objs = []
    for i, (guid, rp) in enumerate(rows):
        obj = {"DistinguishedName": f"CN=2021-10-08T20:09:46-00:00{{{str(guid).upper()}}},"
                                    f"CN=PC{i},OU=Workstations,DC=corp,DC=example",
               "msFVE-RecoveryPassword": rp,
               "msFVE-RecoveryGuid": list(guid.bytes_le),
               "Name": f"2021-10-08T20:09:46-00:00{{{str(guid).upper()}}}",
               "ObjectClass": "msFVE-RecoveryInformation"}
        if package and i == 0:
            obj["msFVE-KeyPackage"] = list(package)
        objs.append(obj)
    path.write_text(json.dumps(objs, indent=2))
    return path


FORMATS = {
    "windows-txt-utf16": lambda d, rows: write_windows_txt(d, *rows[0]),
    "windows-txt-utf8": lambda d, rows: write_windows_txt(d, *rows[0], encoding="utf-8"),
    "entra-csv": write_entra_csv,
    "mbam-csv": write_mbam_csv,
    "configmgr-csv": write_configmgr_csv,
    "graph-json": write_graph_json,
    "graph-json-single": lambda d, rows: write_graph_json(d, rows[:1], single=True),
    "ldif": write_ldif,
    "ad-json": write_ad_json,
}


# --------------------------------------------------------------------------------------------
# Parsing (no image needed)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_format_parses_keys_and_identifiers(fmt: str, tmp_path: Path) -> None:
    rng = random.Random(fmt)
    rows = [(REAL_RP_GUID, REAL_RP), *unrelated(rng, 3)]
    path = FORMATS[fmt](tmp_path, rows)
    ring = load_keyring([path])
    expected = rows[:1] if fmt.startswith(("windows", "graph-json-single")) else rows
    assert [e.value for e in ring.entries] == [rp for _g, rp in expected]
    for entry, (guid, _rp) in zip(ring.entries, expected, strict=True):
        if fmt == "configmgr-csv":
            assert entry.guid is None and entry.key_id == keys.key_id(guid)
        else:
            assert entry.guid == guid
        assert entry.source.startswith(path.name + ":")
        assert REAL_RP not in repr(entry)  # the secret never shows in a repr


def test_csv_metadata_columns(tmp_path: Path) -> None:
    path = write_entra_csv(tmp_path, [(REAL_RP_GUID, REAL_RP)])
    entry = load_keyring([path]).entries[0]
    assert entry.device == "PC-0000"
    assert entry.volume_type == "OS volume"
    assert entry.created == "2024-03-01T10:00:00Z"
    assert entry.entry == "row 2"


def test_csv_header_synonyms_and_order(tmp_path: Path) -> None:
    path = tmp_path / "odd.csv"
    path.write_text("Created On\tRECOVERY KEY\tDevice\tRecovery Key ID\n"
                    f"2024-01-01\t{REAL_RP}\tLAPTOP\t{REAL_RP_GUID}\n")
    entry = load_keyring([path]).entries[0]
    assert (entry.value, entry.guid, entry.device, entry.created) == (
        REAL_RP, REAL_RP_GUID, "LAPTOP", "2024-01-01")


def test_ldif_and_ad_json_expose_key_package(tmp_path: Path) -> None:
    package = bytes(range(256)) * 3
    for path in (write_ldif(tmp_path, [(REAL_RP_GUID, REAL_RP)], package, REAL_VOLUME_GUID),
                 write_ad_json(tmp_path, [(REAL_RP_GUID, REAL_RP)], package)):
        ring = load_keyring([path])
        (entry,) = ring.entries
        assert entry.key_package == package
        assert entry.device == "PC0"
        assert ring.key_packages() == [entry]
        if path.suffix == ".ldf":
            assert entry.volume_guid == REAL_VOLUME_GUID


def test_key_package_without_password_is_kept_but_never_tried(tmp_path: Path) -> None:
    path = tmp_path / "pkg.ldf"
    path.write_text(f"dn: CN=x{{{REAL_RP_GUID}}},CN=PC,DC=corp\n"
                    f"msFVE-RecoveryGuid:: {b64(REAL_RP_GUID.bytes_le)}\n"
                    f"msFVE-KeyPackage:: {b64(b'package')}\n")
    ring = load_keyring([path])
    assert ring.entries[0].kind == "key-package" and ring.entries[0].key_package == b"package"
    assert ring.candidates() == []


def test_manage_bde_output_pairs_each_password_with_its_id(tmp_path: Path) -> None:
    other = uuid.UUID(int=7)
    text = ("Volume C: [OS]\nKey Protectors:\n    TPM:\n      ID: {11111111-2222-3333-4444-"
            "555555555555}\n    Numerical Password:\n      ID: {" + str(REAL_RP_GUID).upper()
            + "}\n      Password:\n        " + REAL_RP + "\n    Numerical Password:\n      ID: {"
            + str(other) + "}\n      Password:\n        " + REAL_RP.replace("-", " ") + "\n")
    entries = parse_escrow(text.encode(), "protectors.txt")
    assert [(e.guid, e.value) for e in entries] == [(REAL_RP_GUID, REAL_RP), (other, REAL_RP)]


def test_bek_directory(tmp_path: Path) -> None:
    guids = [uuid.UUID(int=i + 1) for i in range(3)]
    for g in guids:
        (tmp_path / f"{{{str(g).upper()}}}.BEK").write_bytes(make_bek(g, bytes(32)))
    (tmp_path / "README.txt").write_text("nothing to see")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "notes.bin").write_bytes(b"\x00\x01" * 100)
    ring = load_keyring([tmp_path])
    assert sorted(e.guid for e in ring.entries if e.kind == "bek") == guids


def test_unreadable_keyring_file_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("nothing,here\n1,2\n")
    code, _out, err = run("keys", "find", str(path), "--keyring", str(path))
    assert code == EXIT_USAGE
    assert "no recovery password or key found" in err


# --------------------------------------------------------------------------------------------
# Unlocking a synthetic image through the CLI (no ../shared needed)
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def syn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, uuid.UUID, str, Path]:
    """A synthetic volume: recovery password + startup key (BEK written into a directory)."""
    base = tmp_path_factory.mktemp("keyring")
    image = base / "syn.img"
    manifest = synth.build(image, size="4M", seed="keyring",
                           protectors=[synth.RecoveryPasswordSpec(),
                                       synth.StartupKeySpec(base / "usb")])
    rp_entry, _bek_entry = manifest.protectors
    return image, uuid.UUID(rp_entry["guid"]), rp_entry["recovery_password"], base / "usb"


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_format_unlocks_a_synthetic_image(fmt: str, tmp_path: Path, syn) -> None:  # type: ignore[no-untyped-def]
    image, guid, rp, _usb = syn
    rng = random.Random(fmt + "syn")
    rows = [*unrelated(rng, 3), (guid, rp)]
    if fmt.startswith(("windows", "graph-json-single")):
        rows = [(guid, rp)]
    path = FORMATS[fmt](tmp_path, rows)
    code, out, err = run("info", str(image), "--keyring", str(path), "--json")
    assert code == EXIT_OK, err
    unlocked = json.loads(out)["unlocked"]
    assert unlocked["protector"] == str(guid).upper()
    assert unlocked["source"].startswith(f"{path.name}:")


def test_synthetic_bek_directory_and_hundreds_of_keys(tmp_path: Path, syn,  # type: ignore[no-untyped-def]
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      _audit_in_tmp: Path) -> None:
    image, _guid, _rp, usb = syn
    rng = random.Random(9)
    csv_path = write_entra_csv(tmp_path, unrelated(rng, 400))
    (usb.parent / "more").mkdir(exist_ok=True)
    for _ in range(30):
        g = uuid.UUID(int=rng.getrandbits(128), version=4)
        (usb.parent / "more" / f"{{{str(g).upper()}}}.BEK").write_bytes(make_bek(g, bytes(32)))
    monkeypatch.setattr(keys, "stretch_key", lambda *a, **k: pytest.fail("no stretch needed"))
    code, out, err = run("info", str(image), "--keyring", str(csv_path), "--keyring",
                         str(usb.parent), "--json")
    assert code == EXIT_OK, err
    unlocked = json.loads(out)["unlocked"]
    assert unlocked["via"] == "bek" and unlocked["source"].endswith(".BEK:BEK")
    recs = [json.loads(line) for line in _audit_in_tmp.read_text().splitlines()]
    assert [r["outcome"] for r in recs] == ["unlocked"]


# --------------------------------------------------------------------------------------------
# Unlocking the real recovery password image through the CLI
# --------------------------------------------------------------------------------------------

@requires_real
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_format_unlocks_the_real_image(fmt: str, tmp_path: Path, real_image) -> None:
    image = real_image("recovery_password")
    rng = random.Random(fmt)
    rows = [*unrelated(rng, 2), (REAL_RP_GUID, REAL_RP), *unrelated(rng, 2)]
    if fmt.startswith(("windows", "graph-json-single")):
        rows = [(REAL_RP_GUID, REAL_RP)]
    path = FORMATS[fmt](tmp_path, rows)
    code, out, err = run("info", str(image), "--keyring", str(path), "--json")
    assert code == EXIT_OK, err
    unlocked = json.loads(out)["unlocked"]
    assert unlocked["protector"] == str(REAL_RP_GUID).upper()
    assert unlocked["source"].startswith(f"{path.name}:")
    assert f"unlocked with recovery-password from {path.name}:" in err
    assert "is now disclosed; rotate it" in err


@requires_real
def test_hundreds_of_unrelated_keys_try_only_the_matching_one(
        tmp_path: Path, real_image, monkeypatch: pytest.MonkeyPatch,
        _audit_in_tmp: Path) -> None:
    image = real_image("recovery_password")
    rng = random.Random(5)
    rows = unrelated(rng, 300)
    rows.insert(217, (REAL_RP_GUID, REAL_RP))
    csv_path = write_entra_csv(tmp_path, rows)
    ldif_path = write_ldif(tmp_path, unrelated(rng, 200))
    stretches: list[int] = []
    real_stretch = keys.stretch_key

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        stretches.append(1)
        return real_stretch(*args, **kwargs)

    monkeypatch.setattr(keys, "stretch_key", counting)
    code, out, err = run("info", str(image), "--keyring", str(csv_path), "--keyring",
                         str(ldif_path), "--json")
    assert code == EXIT_OK, err
    assert json.loads(out)["unlocked"]["source"] == f"{csv_path.name}:row 219"
    assert len(stretches) == 1
    records = [json.loads(line) for line in _audit_in_tmp.read_text().splitlines()]
    assert [(r["key_source"], r["outcome"]) for r in records] == [
        (f"{csv_path.name}:row 219", "unlocked")]


@requires_real
def test_matching_but_wrong_escrowed_key_is_a_key_error(tmp_path: Path, real_image) -> None:
    image = real_image("recovery_password")
    wrong = keys.generate_recovery_password(random.Random(1))
    path = write_graph_json(tmp_path, [(REAL_RP_GUID, wrong)])
    code, _out, err = run("info", str(image), "--keyring", str(path))
    assert code == EXIT_KEY
    assert f"{path.name}:value[0]" in err and "wrong key" in err


@requires_real
def test_keyring_without_a_match_says_so(tmp_path: Path, real_image) -> None:
    image = real_image("recovery_password")
    path = write_entra_csv(tmp_path, unrelated(random.Random(2), 50))
    code, _out, err = run("info", str(image), "--keyring", str(path))
    assert code == EXIT_KEY
    assert "none of the 50 escrowed keys in the keyring matches a protector" in err
    assert "3C116B76" in err


@requires_real
def test_bek_directory_unlocks_startup_key_image(tmp_path: Path, real_image) -> None:
    image = real_image("startup_key")
    ring = tmp_path / "usb"
    ring.mkdir()
    shutil.copy(STARTUP_KEY_GUID_FILE, ring / "startup_key.bek")
    for i in range(20):
        g = uuid.UUID(int=i + 100)
        (ring / f"{{{str(g).upper()}}}.BEK").write_bytes(make_bek(g, bytes([i]) * 32))
    code, out, err = run("info", str(image), "--keyring", str(ring), "--json")
    assert code == EXIT_OK, err
    unlocked = json.loads(out)["unlocked"]
    assert unlocked["via"] == "bek" and unlocked["source"] == "startup_key.bek:BEK"


@requires_real
def test_keys_find_lists_matches_without_unlocking(tmp_path: Path, real_image,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   _audit_in_tmp: Path) -> None:
    image = real_image("recovery_password")
    rng = random.Random(3)
    csv_path = write_configmgr_csv(tmp_path, [*unrelated(rng, 100), (REAL_RP_GUID, REAL_RP)])
    ldif = write_ldif(tmp_path, [(REAL_RP_GUID, REAL_RP)], b"pkg" * 10, REAL_VOLUME_GUID)
    monkeypatch.setattr(keys, "stretch_key", lambda *a, **k: pytest.fail("no unlocking"))
    code, out, err = run("keys", "find", str(image), "--keyring", str(csv_path),
                         "--keyring", str(ldif), "--json")
    assert code == EXIT_OK, err
    data = json.loads(out)
    assert data["keyring_entries"] == 102
    rp_protector, pw_protector = data["protectors"]
    assert [(c["source"], c["match"]) for c in rp_protector["candidates"]] == [
        (f"{csv_path.name}:row 102", "key id"), (f"{ldif.name}:line 3 (CN=2021-10-08T20:09:46-"
                                                 f"00:00{{{str(REAL_RP_GUID).upper()}}})",
                                                 "guid")]
    assert pw_protector["candidates"] == []
    assert data["key_packages"][0]["key_package_bytes"] == 30
    assert REAL_RP not in out
    assert not _audit_in_tmp.exists()
    code, out, _err = run("keys", "find", str(image), "--keyring", str(csv_path))
    assert code == EXIT_OK
    assert f"{csv_path.name}:row 102: recovery-password (matched by key id)" in out


@requires_real
def test_keys_find_without_match_exits_4(tmp_path: Path, real_image) -> None:
    image = real_image("recovery_password")
    path = write_graph_json(tmp_path, unrelated(random.Random(4), 5))
    code, out, err = run("keys", "find", str(image), "--keyring", str(path))
    assert code == EXIT_KEY
    assert "no escrowed key" in out
    assert "none of the 5 escrowed keys matches" in err
