"""The HTML report: map model, kinds, rendering, and the --html options (no browser here;
tests/test_html_browser.py opens the pages in Chromium)."""

from __future__ import annotations

import itertools
import json
import os
import re
import stat
import time
from pathlib import Path

import pytest

from bdekit import report as html_report
from bdekit.format.consensus import Disagreement
from bdekit.report import kinds, model
from bdekit.report.sections import decisions_section, mask_command, scrub
from tests.conftest import FIXTURES, run_cli

RP = "015026-497662-343442-191037-086713-242187-380908-588159"
DAMAGED = FIXTURES / "damaged"


# --------------------------------------------------------------------------------------------
# kinds and the map model
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("item", "hint", "want"), [
    ({"reason": "missing (beyond the end of the image)"}, "damaged", "missing"),
    ({"reason": "unreadable (I/O error)"}, "damaged", "unreadable"),
    ({"reason": "not rescued (input mapfile)"}, "damaged", "unreadable"),
    ({"reason": "EOW bitmap lost: chunk state inferred by entropy"}, "damaged", "guessed"),
    ({"offset": 0, "length": 1}, "guessed", "guessed"),
    ({"kind": "rebuilt", "reason": "boot sector"}, "", "rebuilt"),
    ({"reason": "something new"}, "damaged", "other"),
    ({"kind": "brand-new-kind"}, "", "other"),
])
def test_classify(item: dict, hint: str, want: str) -> None:  # type: ignore[type-arg]
    assert kinds.classify(item, hint) == want


def test_unknown_kind_keeps_its_own_label() -> None:
    assert kinds.label_of({"kind": "brand-new-kind"}, "other") == "brand-new-kind"
    assert kinds.label_of({"reason": "a new reason"}, "other") == "a new reason"


def test_geometry_is_whole_sectors_and_bounded() -> None:
    size = 2 * 10 ** 12  # 2 TB
    cell, cells, rows = model.geometry(size, 512)
    assert cell % 512 == 0 and cells * cell >= size > (cells - 1) * cell
    assert cells <= model.MAX_CELLS and rows == -(-cells // model.COLS)
    assert model.geometry(1 << 20, 512) == (512, 2048, 32)


def test_layout_damage_wins_its_cell() -> None:
    """A 512-byte damage in a 2 TB volume still colours its cell."""
    size = 2 * 10 ** 12
    data = model.MapData(size, 512, [model.Span(0, size, "decrypted")],
                         [model.Span(10 ** 12, 512, "unreadable", "unreadable (I/O error)")])
    grid = model.layout(data)
    hit = [r for r in grid.rects if r.kind == "unreadable"]
    assert len(hit) == 1 and hit[0].start <= 10 ** 12 < hit[0].end
    assert hit[0].mix == {"decrypted": grid.cell_bytes - 512, "unreadable": 512}
    assert len(grid.rects) <= 3 + grid.rows  # merged per row around the damage
    assert sum(r.end - r.start for r in grid.rects) == size


def test_paint_later_spans_cover_earlier() -> None:
    out = model.paint([model.Span(10, 20, "plain"), model.Span(15, 5, "metadata")], 40,
                      model.Span(0, 40, "unknown"))
    assert [(s.offset, s.length, s.kind) for s in out] == [
        (0, 10, "unknown"), (10, 5, "plain"), (15, 5, "metadata"), (20, 10, "plain"),
        (30, 10, "unknown")]


def test_coarsen_pools_short_runs() -> None:
    from bdekit.pipeline.volmap import MapRange, coarsen

    runs = [MapRange(i * 4096, 4096, "decrypted" if i % 2 else "plain", "r")
            for i in range(10000)]
    out = coarsen(runs, 10000 * 4096, limit=100)
    assert len(out) <= 200
    assert sum(r.length for r in out) == 10000 * 4096
    assert all(a.end == b.offset for a, b in itertools.pairwise(out))
    assert out[0].kind == "mixed" and out[0].composition == {"plain": 204800,
                                                             "decrypted": 204800}


# --------------------------------------------------------------------------------------------
# pages
# --------------------------------------------------------------------------------------------

def _report(tmp_path: Path, name: str, *extra: str) -> dict:  # type: ignore[type-arg]
    rep = tmp_path / f"{name}.json"
    code, _, err = run_cli("-q", "repair", str(DAMAGED / f"xts128-rp-{name}.img"),
                           str(tmp_path / f"{name}.out"), "-rp", RP, "--report", str(rep),
                           *extra)
    assert code in (0, 6), err
    return json.loads(rep.read_text())  # type: ignore[no-any-return]


def test_report_has_volume_map(tmp_path: Path) -> None:
    rep = _report(tmp_path, "truncated")
    vmap = rep["volume_map"]
    assert vmap[0]["offset"] == 0 and sum(r["length"] for r in vmap) == rep["volume_size"]
    kinds_at = {(r["offset"], r["kind"]) for r in vmap}
    # the layout from the manifest: copies at 512/640/768 KiB, relocated block after copy 1
    manifest = json.loads((DAMAGED / "xts128-rp-truncated.img.manifest.json").read_text())
    for off in manifest["layout"]["metadata_offsets"]:
        assert (off, "metadata") in kinds_at
    assert (manifest["layout"]["relocated_offset"], "relocated-block") in kinds_at
    assert (0, "relocated") in kinds_at
    assert rep["volume"]["protectors"][0]["key_id"] == "15E660B1"
    # the command as run (its arguments, not sys.argv), the recovery password masked
    img, out = DAMAGED / "xts128-rp-truncated.img", tmp_path / "truncated.out"
    assert rep["command"] == (f"bdekit -q repair {img} {out} -rp '***' --report "
                              f"{tmp_path / 'truncated.json'}")
    assert RP not in json.dumps(rep)


def test_page_sections_and_secrets(tmp_path: Path) -> None:
    rep = _report(tmp_path, "badsectors", "--mapfile",
                  str(DAMAGED / "xts128-rp-badsectors.img.map"))
    rep["command"] = f"bdekit repair in out -rp {RP} --fvek=00112233 -pw"
    rep["fvek"] = "00" * 32
    rep["guessed"] = [{"offset": 8192, "length": 4096, "reason": "inferred by entropy"}]
    rep["future_list"] = [{"offset": 12288, "length": 512, "kind": "quarantined",
                           "reason": "a kind this bdekit does not know"}]
    text = html_report.render_report(rep, "repair")
    assert RP not in text and "00112233" not in text and "0" * 64 not in text
    assert "-rp &#x27;***&#x27;" in text and "--fvek=***" in text
    for ident in ("volume-map", "legend", "sec-summary", "sec-metadata", "sec-protectors",
                  "sec-ranges-damaged", "sec-ranges-guessed", "sec-ranges-future_list"):
        assert f'id="{ident}"' in text, ident
    assert 'data-kind="guessed"' in text and "a kind this bdekit does not know" in text
    assert re.search(r'<li data-kind="other">.*?quarantined', text)
    for off, length in ((65536, 4096), (262144, 512)):
        assert f'data-offset="{off}" data-length="{length}" data-kind="unreadable"' in text
    assert "opened (recovery-password)" in text


def test_page_is_self_contained(tmp_path: Path) -> None:
    text = html_report.render_report(_report(tmp_path, "truncated"), "repair")
    assert "default-src 'none'" in text
    assert not re.search(r"""(src|href)\s*=\s*["'](?!#|data:)""", text)
    assert "@import" not in text and "url(http" not in text and "@font-face" not in text


def test_big_volume_page_stays_small() -> None:
    """A fragmented 2 TB used-space-only volume: 100,000 ranges, a bounded page."""
    size = 2 * 10 ** 12 // 4096 * 4096
    step = size // 100000 // 4096 * 4096
    vmap = [{"offset": i * step, "length": step, "kind": "decrypted" if i % 2 else "plain",
             "reason": "x"} for i in range(100000)]
    vmap[-1]["length"] = size - 99999 * step
    damaged = [{"offset": i * 7 * 10 ** 9, "length": 4096, "reason": "unreadable (I/O error)"}
               for i in range(280)]
    report = {"input": "big.img", "output": "big.out", "volume_size": size,
              "volume_map": vmap, "damaged": damaged}
    start = time.monotonic()
    text = html_report.render_report(report)
    assert time.monotonic() - start < 30
    assert len(text) < 3 << 20
    assert text.count('<rect class="c ') <= model.MAX_CELLS
    assert text.count('class="r k-unreadable"') >= 280


def test_mask_command() -> None:
    assert mask_command("bdekit decrypt a b -rp 1-2-3 --password=x -pw") == \
        "bdekit decrypt a b -rp '***' '--password=***' -pw"
    assert scrub({"a": {"vmk": "00", "b": [{"password": "p"}]}}) == \
        {"a": {"vmk": "(withheld)", "b": [{"password": "(withheld)"}]}}


# --------------------------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------------------------

def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_html_options(tmp_path: Path) -> None:
    out = tmp_path / "o.img"
    page = tmp_path / "dec.html"
    code, _, err = run_cli("-q", "decrypt", str(DAMAGED / "xts128-rp-truncated.img"), str(out),
                           "-rp", RP, "--html", str(page), "--report", str(tmp_path / "r.json"))
    assert code == 6, err
    assert _mode(page) == 0o600 and 'data-kind="missing"' in page.read_text()
    again = tmp_path / "again.html"
    assert run_cli("report", str(tmp_path / "r.json"), "--html", str(again))[0] == 0
    assert 'data-offset="851968" data-length="196608"' in again.read_text()
    for args in (["info", str(FIXTURES / "xts128-rp.img")],
                 ["info", str(FIXTURES / "xts128-rp.img"), "-rp", RP],
                 ["scan", str(DAMAGED / "xts128-rp-noheader.img")]):
        target = tmp_path / "x.html"
        code, _, err = run_cli(*args, "--html", str(target))
        assert code == 0, err
        text = target.read_text()
        assert 'id="volume-map"' in text and RP not in text
    assert text.count('class="r k-stray-metadata"') == 3  # scan: the three copies


@pytest.mark.parametrize("target", ["image", "mapfile", "output", "report", "symlink"])
def test_html_never_overwrites_an_input(tmp_path: Path, target: str) -> None:
    image = tmp_path / "in.img"
    image.write_bytes((DAMAGED / "xts128-rp-badsectors.img").read_bytes())
    mapfile = tmp_path / "in.map"
    mapfile.write_bytes((DAMAGED / "xts128-rp-badsectors.img.map").read_bytes())
    out = tmp_path / "out.img"
    (tmp_path / "link").symlink_to(image)
    path = {"image": image, "mapfile": mapfile, "output": out, "report": tmp_path / "r.json",
            "symlink": tmp_path / "link"}[target]
    before = image.read_bytes(), mapfile.read_bytes()
    code, _, err = run_cli("-q", "repair", str(image), str(out), "-rp", RP, "--mapfile",
                           str(mapfile), "--report", str(tmp_path / "r.json"), "--html",
                           str(path))
    assert code == 2 and "HTML report" in err and err.count("\n") == 1
    assert (image.read_bytes(), mapfile.read_bytes()) == before
    assert not out.exists()


def test_report_command_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"input": ')
    code, _, err = run_cli("report", str(bad), "--html", str(tmp_path / "x.html"))
    assert code == 3 and "offset 10" in err
    bad.write_text("[]")
    assert run_cli("report", str(bad), "--html", str(tmp_path / "x.html"))[0] == 3
    bad.write_text('{"hello": 1}')
    code, _, err = run_cli("report", str(bad), "--html", str(tmp_path / "x.html"))
    assert code == 3 and "not a bdekit report" in err
    assert run_cli("report", str(bad))[0] == 2
    assert not (tmp_path / "x.html").exists()
    assert os.listdir(tmp_path) == ["bad.json"]  # no page, no temporary file left


def test_old_report_without_map(tmp_path: Path) -> None:
    """A report from before the volume map: metadata copies and damage are still placed."""
    rep = _report(tmp_path, "truncated")
    for key in ("volume_map", "volume", "bdekit_version", "command", "started"):
        rep.pop(key)
    (tmp_path / "old.json").write_text(json.dumps(rep))
    code, _, err = run_cli("report", str(tmp_path / "old.json"), "--html",
                           str(tmp_path / "old.html"))
    assert code == 0, err
    text = (tmp_path / "old.html").read_text()
    assert "no volume map" in text and 'data-kind="metadata"' in text
    assert 'data-offset="851968"' in text


def test_rebuilt_boot_sector_is_drawn(tmp_path: Path) -> None:
    image = tmp_path / "zr.img"
    image.write_bytes((FIXTURES / "xts128-rp.img").read_bytes())
    (tmp_path / "zr.img.manifest.json").write_bytes(
        (FIXTURES / "xts128-rp.img.manifest.json").read_bytes())
    assert run_cli("-q", "synth", "damage", str(image), "--zero-relocated-header")[0] == 0
    page = tmp_path / "zr.html"
    code, _, err = run_cli("-q", "repair", str(image), str(tmp_path / "zr.out"), "-rp", RP,
                           "--html", str(page))
    assert code == 6, err
    text = page.read_text()
    assert 'class="r k-rebuilt" x="92.00"' in text  # at volume offset 0 (LEFT of the map)
    # a reason no kind knows: the generic colour, labelled with the reason itself
    assert re.search(r'<li data-kind="other">.*?relocated header block damaged', text)


# --------------------------------------------------------------------------------------------
# metadata decisions
# --------------------------------------------------------------------------------------------

def _rows(text: str, ident: str) -> list[str]:
    section = re.search(rf'<section id="sec-{ident}">(.*?)</section>', text, re.S)
    assert section, ident
    return re.findall(r"<tr data-field.*?</tr>", section.group(1), re.S)


def test_decisions_of_a_garbled_copy(tmp_path: Path) -> None:
    """Copy 1 of the fixture was garbled (the manifest says where): the copies disagree only
    inside that range, copies 2 and 3 decide, and the page has one table row per decision."""
    image = DAMAGED / "xts128-rp-garbled.img"
    manifest = json.loads(Path(f"{image}.manifest.json").read_text())
    (damage,) = manifest["damage"]
    first = manifest["layout"]["metadata_offsets"][damage["copy"] - 1]
    lo, hi = damage["offset"] - first, damage["offset"] - first + damage["length"]
    page, rep = tmp_path / "g.html", tmp_path / "g.json"
    code, _, err = run_cli("-q", "decrypt", str(image), str(tmp_path / "g.img"), "-rp", RP,
                           "--report", str(rep), "--html", str(page))
    assert code == 0, err
    data = json.loads(rep.read_text())
    decisions = data["metadata_decisions"]
    assert decisions and data["metadata_trust"] == "verified"
    for d in decisions:
        assert lo <= d["offset"] and d["offset"] + d["length"] <= hi, d
        assert d["decided_by"] == "copies 2 and 3" and sorted(d["copies"]) == ["1", "2", "3"]
    # garbage equals the original byte about once in 256: nearly all of the range differs
    assert sum(d["length"] for d in decisions) > 0.9 * damage["length"]
    text = page.read_text()
    rows = _rows(text, "decisions")
    assert len(rows) == len(decisions)
    assert all('data-decided="majority"' in r and "copies 2 and 3" in r for r in rows)
    assert f"0x{decisions[0]['offset']:X} <small>" in rows[0]
    assert "Metadata trust: verified." in text
    # decisions are offsets inside a metadata block: never drawn on the volume map
    assert 'data-kind="decisions"' not in text and "ranges-metadata_decisions" not in text
    info = tmp_path / "info.html"
    assert run_cli("info", str(image), "--html", str(info))[0] == 0
    assert len(_rows(info.read_text(), "decisions")) == len(decisions)


def test_decisions_table_from_consensus_records() -> None:
    undecided = Disagreement(100, 104, "volume GUID", {1: "aa" * 4, 2: "bb" * 4, 3: "cc" * 4},
                             ()).to_json()
    majority = Disagreement(16, 24, "state offset (encrypted size)",
                            {1: "00" * 8, 2: "00" * 8, 3: "ff" * 8}, (1, 2)).to_json()
    serving = {"field": "serving copy", "instead_of": "copy 1",
               "decided_by": "copy 2 matches the SHA-256 integrity datum"}
    sec = decisions_section([majority, undecided, serving], "unverified")
    assert sec.columns == ["field", "offset in the block", "length", "copy 1", "copy 2",
                           "copy 3", "decided by"]
    assert [a["data-decided"] for a in sec.attrs] == ["majority", "none", "integrity"]
    assert sec.rows[0][1] == ("offset", 16) and sec.rows[0][2] == ("size", 8)
    assert sec.rows[0][5] == ("hex", "ff" * 8) and sec.rows[0][6] == "copies 1 and 2"
    assert sec.rows[1][6] == "no majority"
    assert sec.rows[2][0] == "serving copy" and sec.rows[2][1] == ""
    assert sec.rows[2][6].endswith("(instead of copy 1)")
    assert sec.note == "Metadata trust: unverified."
    text = html_report.render(html_report.Page("report", "t", "", ("ok", ""), None, [sec]))
    assert 'data-decided="none"' in text and '<td class="hex">ffffffff' in text
    assert "older bdekit" in decisions_section(None).rows[0][0]
    assert "nothing had to be decided" in decisions_section([], "verified").rows[0][0]
