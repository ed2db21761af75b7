"""`bdekit synth check`: scoring a plaintext against a manifest, and the peers' scores.

The reference plaintext of the undamaged fixture is libbde's / dislocker's output as
tests/test_synth.py checks it against the manifest's per-MiB digests; here the plaintext the
checker regenerates must agree with those digests too (else it refuses), and every score below
is derived by hand from the bytes a test changes (independent of the checker's code).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bdekit.synth import Manifest
from bdekit.synth import check as check_mod
from tests.conftest import FIXTURES, run_cli

RP = "015026-497662-343442-191037-086713-242187-380908-588159"
DAMAGED = FIXTURES / "damaged"


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bdekit's decryption of the undamaged XTS fixture (digests checked against the manifest,
    whose digests libbde and dislocker reproduce in test_synth.py)."""
    out = tmp_path_factory.mktemp("check") / "plain.img"
    code, _, err = run_cli("-q", "decrypt", str(FIXTURES / "xts128-rp.img"), str(out), "-rp", RP)
    assert code == 0, err
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


def _patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def test_exact_output_scores_perfect(plain: Path) -> None:
    manifest = FIXTURES / "xts128-rp.img.manifest.json"
    score = check_mod.score(str(plain), str(manifest))
    assert score.ok and score.mode == "bytes"
    assert score.exact == 1 << 20 and score.wrong == score.missing == 0
    assert score.source.startswith("generated")


@pytest.mark.parametrize("name", ["cbc128-bek", "cbc256-clear", "diffuser128-rp",
                                  "diffuser256-pw", "vista-diffuser128", "xts128-4k",
                                  "xts128-partial", "xts256-pw"])
def test_every_fixture_layout(name: str, tmp_path: Path) -> None:
    """Methods, 4 KiB sectors, Vista, partial conversion: the regenerated plaintext matches
    each manifest's digests, and bdekit's decryption scores perfect."""
    manifest = json.loads((FIXTURES / f"{name}.img.manifest.json").read_text())
    prot = manifest["protectors"][0]
    secret = {"recovery-password": ["-rp", prot.get("recovery_password", "")],
              "password": ["-pw", prot.get("password", "")],
              "startup-key": ["--bek", str(FIXTURES / prot.get("bek_file", "x"))]}.get(
                  prot["type"], [])
    out = tmp_path / "o.img"
    code, _, err = run_cli("-q", "decrypt", str(FIXTURES / f"{name}.img"), str(out), *secret)
    assert code == 0, err
    score = check_mod.score(str(out), str(FIXTURES / f"{name}.img.manifest.json"))
    assert score.ok and score.exact + score.free_noise == manifest["volume_size"]


def test_cli_json(plain: Path) -> None:
    code, stdout, _ = run_cli("synth", "check", str(plain), "--manifest",
                              str(FIXTURES / "xts128-rp.img.manifest.json"), "--json")
    result = json.loads(stdout)
    assert code == 0 and result["ok"] and result["exact"] == 1 << 20
    assert result["verdict"] == "as good as the damage allows"


def test_one_wrong_byte_is_found_at_its_offset(plain: Path, tmp_path: Path) -> None:
    out = _copy(plain, tmp_path / "o.img")
    original = plain.read_bytes()[300000]
    _patch(out, 300000, bytes([original ^ 0xFF]))
    score = check_mod.score(str(out), str(FIXTURES / "xts128-rp.img.manifest.json"))
    assert not score.ok
    assert (score.exact, score.wrong, score.missing) == ((1 << 20) - 1, 1, 0)
    # ranges are listed by whole sectors
    assert score.wrong_ranges == [[300000 // 512 * 512, 512, "wrong"]]
    code, stdout, _ = run_cli("synth", "check", str(out), "--manifest",
                              str(FIXTURES / "xts128-rp.img.manifest.json"))
    assert code == 6
    assert "wrong      1" in stdout and "NOT as good" in stdout


def test_metadata_regions_must_read_as_zeros(plain: Path, tmp_path: Path) -> None:
    manifest = json.loads((FIXTURES / "xts128-rp.img.manifest.json").read_text())
    off, _length = manifest["reserved"][1]  # the relocated block: zeros in the volume
    out = _copy(plain, tmp_path / "o.img")
    _patch(out, off, b"\x01" * 16)
    score = check_mod.score(str(out), str(FIXTURES / "xts128-rp.img.manifest.json"))
    assert score.wrong == 16


def test_short_output_is_missing(plain: Path, tmp_path: Path) -> None:
    out = tmp_path / "short.img"
    out.write_bytes(plain.read_bytes()[:1000 * 512])
    score = check_mod.score(str(out), str(FIXTURES / "xts128-rp.img.manifest.json"))
    assert score.missing == (1 << 20) - 1000 * 512 and score.wrong == 0
    assert score.wrong_ranges == [[512000, (1 << 20) - 512000, "missing"]]


def test_stale_manifest_is_refused(tmp_path: Path, plain: Path) -> None:
    data = json.loads((FIXTURES / "xts128-rp.img.manifest.json").read_text())
    data["windows"][0] = "0" * 64
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(data))
    code, _, err = run_cli("synth", "check", str(plain), "--manifest", str(manifest))
    assert code == 3 and "does not match the manifest's digest of MiB 0" in err


def test_windows_mode_without_plaintext(plain: Path, tmp_path: Path) -> None:
    data = json.loads((FIXTURES / "xts128-rp.img.manifest.json").read_text())
    data["source"] = {"kind": "file", "path": str(tmp_path / "gone.img"), "size": 1 << 20}
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(data))
    assert check_mod.score(str(plain), str(manifest)).ok
    out = _copy(plain, tmp_path / "o.img")
    _patch(out, 4096, b"\x00\x01")
    score = check_mod.score(str(out), str(manifest))
    assert score.mode == "windows" and score.wrong == 1 << 20
    # with the plaintext given, the comparison is byte exact again
    score = check_mod.score(str(out), str(manifest), plaintext=str(plain))
    assert score.mode == "bytes" and score.wrong in (1, 2)


def test_damage_maps_to_volume_offsets() -> None:
    """Hand-derived from the layout: the relocated block feeds volume [0, 8 KiB); the header
    sectors and the metadata copies feed nothing."""
    m = Manifest.load(DAMAGED / "xts128-rp-truncated.img.manifest.json")
    reserved = [(524288, 65536), (589824, 8192), (655360, 65536), (786432, 65536)]
    reloc = (589824, 8192)
    f = check_mod.image_to_volume
    assert f(0, 512, m.volume_size, reserved, reloc) == []
    assert f(589824 + 512, 589824 + 1024, m.volume_size, reserved, reloc) == [(512, 512)]
    assert f(655360, 655360 + 4096, m.volume_size, reserved, reloc) == []
    assert check_mod.damage_ranges(m, reserved, reloc) == [(851968, 196608, "truncate")]
    m = Manifest.load(DAMAGED / "xts128-rp-copies12.img.manifest.json")
    assert check_mod.damage_ranges(m, reserved, reloc) == []


def test_used_only_free_space_accepts_zeros_or_noise(tmp_path: Path) -> None:
    """On a used-space-only image a reader returns noise (the decryption of zeros) or zeros
    in never-written space; anything else there is wrong."""
    manifest = DAMAGED / "xts128-rp-copies12.img.manifest.json"
    out = tmp_path / "o.img"
    code, _, err = run_cli("-q", "decrypt", str(DAMAGED / "xts128-rp-copies12.img"), str(out),
                           "-rp", RP)
    assert code == 0, err
    first = check_mod.score(str(out), str(manifest))
    assert first.ok and first.free_noise > 0
    free = json.loads(manifest.read_text())["zero_on_disk"][0]
    noise = out.read_bytes()[free[0]:free[0] + 512]
    nonzero = sum(1 for b in noise if b)
    assert nonzero > 400  # noise, not zeros
    _patch(out, free[0], bytes(512))  # one sector zeroed: still fine, now exact
    second = check_mod.score(str(out), str(manifest))
    assert second.ok and second.free_noise == first.free_noise - nonzero
    assert second.exact == first.exact + nonzero
    _patch(out, free[0] + 1024, b"\x07")  # noise with one byte changed: wrong sector
    third = check_mod.score(str(out), str(manifest))
    assert not third.ok and third.wrong == 512
    assert third.wrong_ranges == [[free[0] + 1024, 512, "wrong"]]


def test_damaged_bytes_must_be_flagged_with_a_mapfile(tmp_path: Path) -> None:
    image = DAMAGED / "xts128-rp-badsectors.img"
    out = tmp_path / "o.img"
    code, _, err = run_cli("-q", "repair", str(image), str(out), "-rp", RP, "--mapfile",
                           f"{image}.map")
    assert code == 6, err
    manifest = f"{image}.manifest.json"
    score = check_mod.score(str(out), manifest, mapfile=f"{out}.map")
    assert score.ok and sum(score.damaged.values()) == 4096 + 512
    # a mapfile that flags nothing: the zeroed (non-exact) damaged bytes are unflagged
    clean = tmp_path / "clean.map"
    clean.write_text("0x00000000 + 1\n0x00000000 0x00100000 +\n")
    score = check_mod.score(str(out), manifest, mapfile=str(clean))
    assert not score.ok and score.unflagged == score.damaged["zero"] + score.damaged["other"]
    assert score.unflagged > 0


def test_check_reads_a_fuse_mount(tmp_path: Path) -> None:
    """A mounted device path works like a file: bdekit's own FUSE mount of the image."""
    pytest.importorskip("mfusepy", reason="mfusepy is absent")
    if shutil.which("fusermount3") is None or not Path("/dev/fuse").exists():
        pytest.skip("FUSE is unavailable")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    code, _, err = run_cli("-q", "mount", str(FIXTURES / "xts128-rp.img"), str(mnt), "-rp", RP)
    if code != 0:
        pytest.skip(f"cannot mount here: {err.strip()}")
    try:
        score = check_mod.score(str(mnt / "bde1"), str(FIXTURES / "xts128-rp.img.manifest.json"))
        assert score.ok and score.exact == 1 << 20
    finally:
        run_cli("umount", str(mnt))


# --------------------------------------------------------------------------------------------
# bdekit and the peers on every damage fixture (the README's table)
# --------------------------------------------------------------------------------------------

#: What each tool is expected to do on each damage fixture, from what the tools are: "ok" (as
#: good as the damage allows), "fails" (refuses the image), or "wrong" (bytes a correct
#: reader would not return).  bdekit repair must be "ok" everywhere.  libbde needs the volume
#: header and the first metadata copy; dissect.fve and dislocker need the volume header;
#: libbde and dissect.fve refuse a capture shorter than the volume; dislocker reads past the
#: end of a truncated capture and returns noise for the metadata copy that lay there (the
#: volume reads zeros at a metadata copy).  bdekit decrypt does not scan for lost metadata.
EXPECTED = {
    "bdekit repair": dict.fromkeys(["badsectors", "copies12", "garbled", "noheader",
                                    "truncated"], "ok"),
    "bdekit decrypt": {"badsectors": "ok", "copies12": "ok", "garbled": "ok",
                       "noheader": "fails", "truncated": "ok"},
    "libbde": {"badsectors": "ok", "copies12": "fails", "garbled": "fails",
               "noheader": "fails", "truncated": "fails"},
    "dissect.fve": {"badsectors": "ok", "copies12": "ok", "garbled": "ok",
                    "noheader": "fails", "truncated": "fails"},
    "dislocker": {"badsectors": "ok", "copies12": "ok", "garbled": "ok",
                  "noheader": "fails", "truncated": "wrong"},
}


def _peer_tools():  # type: ignore[no-untyped-def]
    from tools import peer_scores

    return peer_scores


@pytest.mark.peer
@pytest.mark.slow
@pytest.mark.parametrize("tool", list(EXPECTED))
def test_scores_on_damage_fixtures(tool: str, tmp_path: Path) -> None:
    peer_scores = _peer_tools()
    if tool not in peer_scores.tools():
        pytest.skip(f"{tool} is not installed")
    for image in peer_scores.fixtures():
        name = image.stem.replace("xts128-rp-", "")
        row = peer_scores.score_one(tool, image, tmp_path, inprocess=True)
        score = row.get("score")
        got = "fails" if score is None else "ok" if score["ok"] else "wrong"
        assert got == EXPECTED[tool][name], (name, row["status"], score and score["wrong_ranges"])
        if tool == "bdekit repair" and name == "badsectors":
            # the damaged bytes are zeroed and flagged in the output mapfile
            assert score is not None and score["damaged"]["other"] == 0
        if tool == "dislocker" and name == "truncated":
            assert score is not None
            assert score["wrong_ranges"] == [[786432, 65536, "wrong"]]


def test_peer_table_command(tmp_path: Path) -> None:
    """tools/peer_scores.py's table has a row per fixture and a column per tool."""
    peer_scores = _peer_tools()
    rows = [{"tool": "bdekit repair", "fixture": image.stem, "status": "ok",
             "score": {"ok": True, "wrong": 0, "missing": 0, "unflagged": 0,
                       "damaged": {"exact": 1, "zero": 2, "other": 0, "missing": 0}}}
            for image in peer_scores.fixtures()]
    table = peer_scores.table(rows)
    assert table.count("\n") == len(rows) + 1
    assert "| xts128-rp-truncated (truncate) | ✓ (damaged bytes: 1 exact / 2 zero) |" in table
