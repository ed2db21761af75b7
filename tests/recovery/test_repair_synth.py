"""End to end with the synthetic builder's own command line: ``bdekit synth create``, ``bdekit
synth damage`` (the damage options of its issue), ``bdekit repair``. The expected damaged
ranges are derived from the manifest's damage records; the output must equal the plaintext
outside them (reference decrypted from the undamaged image) and the output mapfile must list
exactly them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bdekit.errors import EXIT_OK, EXIT_PARTIAL
from bdekit.image.mapfile import merge_ranges
from tests.repair_support import (
    MiB,
    check_repaired,
    run_cli,
)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path, dict]]:  # type: ignore[type-arg]
    """name -> (image, reference plaintext, manifest) for a few method / layout variants."""
    work = tmp_path_factory.mktemp("synth-cli")
    out: dict[str, tuple[Path, Path, dict]] = {}  # type: ignore[type-arg]
    variants = {
        "xts": ["--method", "aes-xts-128"],
        "cbc4k": ["--method", "aes-cbc-128", "--sector-size", "4096"],
        "partial": ["--method", "aes-cbc-256-diffuser", "--state", f"partial:{20 * MiB}"],
    }
    for name, opts in variants.items():
        img = work / f"{name}.img"
        code, _o, err = run_cli("synth", "create", str(img), "--size", "32M", "--seed", name,
                                "--password", "pw-" + name, *opts)
        assert code == EXIT_OK, err
        manifest = json.loads((work / f"{name}.img.manifest.json").read_text())
        ref = work / f"{name}.plain"
        code, _o, err = run_cli("decrypt", str(img), str(ref), "--vmk", manifest["vmk"])
        assert code == EXIT_OK, err
        out[name] = (img, ref, manifest)
    return out


def _copy(base: tuple[Path, Path, dict], tmp_path: Path) -> Path:  # type: ignore[type-arg]
    img, _ref, _m = base
    dst = tmp_path / img.name
    shutil.copyfile(img, dst)
    shutil.copyfile(str(img) + ".manifest.json", str(dst) + ".manifest.json")
    return dst


def _expected(manifest: dict) -> list[tuple[int, int]]:  # type: ignore[type-arg]
    """Output ranges the damage records make unrecoverable."""
    ss = manifest["sector_size"]
    size = manifest["volume_size"]
    layout = manifest["layout"]
    reloc, reloc_len = layout["relocated_offset"], layout["relocated_size"]
    reserved = [tuple(r) for r in manifest["reserved"]]
    bad: list[tuple[int, int]] = []
    truncated = None
    for rec in manifest["damage"]:
        kind = rec["kind"]
        if kind == "zero-relocated-header":
            bad.append((ss, reloc_len - ss))  # sector 0 comes back from the backup
        elif kind == "bad-sectors":
            off, n = rec["offset"], rec["length"]
            lo, hi = max(off, reloc), min(off + n, reloc + reloc_len)
            if lo < hi:  # unreadable relocated sectors: the volume's first sectors
                bad.append((lo - reloc, hi - lo))
            bad.append((off, n))
        elif kind == "truncate":
            truncated = rec["offset"]
    if truncated is not None:
        bad.append((truncated, size - truncated))
    # what lies in a reserved region (metadata, relocated block) reads as zeros anyway
    out: list[tuple[int, int]] = []
    for off, n in merge_ranges(bad):
        pieces = [(off, off + n)]
        for r_off, r_len in reserved:
            nxt = []
            for a, b in pieces:
                if b <= r_off or a >= r_off + r_len:
                    nxt.append((a, b))
                    continue
                if a < r_off:
                    nxt.append((a, r_off))
                if b > r_off + r_len:
                    nxt.append((r_off + r_len, b))
            pieces = nxt
        out += [(a, b - a) for a, b in pieces if b > a]
    return merge_ranges(out)


CASES = {
    "one copy zeroed": ["--zero-copies", "1"],
    "two copies zeroed": ["--zero-copies", "1,2"],
    "copy garbled": ["--garble-copy", "1"],
    "two garbled": ["--garble-copy", "1", "--garble-copy", "3"],
    "header zeroed": ["--zero-header"],
    "header and copies": ["--zero-header", "--zero-copies", "2,3"],
    "relocated header zeroed": ["--zero-relocated-header"],
    "bad sectors": ["--bad-sectors", "1M+4096,3M+512-3M+2048,30M+8K"],
    "truncated": ["--truncate", "28M"],
}


#: every case on AES-XTS; the layout-sensitive ones also on 4096-byte sectors and on a volume
#: stopped mid-conversion
PAIRS = [("xts", case) for case in CASES] + [
    (variant, case) for variant in ("cbc4k", "partial") for case in CASES
    if case not in ("two garbled", "header and copies", "bad sectors")]


@pytest.mark.parametrize(("variant", "case"), PAIRS)
def test_synth_damage(base, variant: str, case: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    img = _copy(base[variant], tmp_path)
    code, _o, err = run_cli("synth", "damage", str(img), *CASES[case])
    assert code == EXIT_OK, err
    manifest = json.loads((tmp_path / (img.name + ".manifest.json")).read_text())
    out = tmp_path / "out.img"
    extra = ["--mapfile", str(img) + ".map"] if (tmp_path / (img.name + ".map")).exists() \
        else []
    code, _o, err = run_cli("repair", str(img), str(out), "--vmk", manifest["vmk"], "-f",
                            *extra)
    expected = _expected(manifest)
    assert code == (EXIT_PARTIAL if expected else EXIT_OK), err
    check_repaired(out, base[variant][1], expected)


def test_synth_all_copies_zeroed_with_key_package(base, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    img0, ref, _manifest = base["xts"]
    kpg = tmp_path / "vol.kpg"
    code, _o, err = run_cli("keypackage", "export", str(img0), str(kpg), "-pw", "pw-xts")
    assert code == EXIT_OK, err
    img = _copy(base["xts"], tmp_path)
    assert run_cli("synth", "damage", str(img), "--zero-copies", "1,2,3", "--zero-header")[0] \
        == EXIT_OK
    out = tmp_path / "out.img"
    code, _o, err = run_cli("repair", str(img), str(out), "-pw", "pw-xts", "-f")
    assert code != EXIT_OK and "key package" in err
    code, _o, err = run_cli("repair", str(img), str(out), "-pw", "pw-xts", "-kp", str(kpg),
                            "-f")
    assert code == EXIT_OK, err
    check_repaired(out, ref, [])
