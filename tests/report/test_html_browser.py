"""The HTML report in a real browser: headless Chromium (Debian's chromium + chromium-driver)
driven by Selenium.  Skipped when any of the three is absent.

Each kind of page (decrypt, repair, `bdekit report`, info, scan) is opened from a file:// URL;
the test finds the map and the legend, finds every damaged range of the damaged synthetic
images *at the offsets their manifests record* (converted to pixels from the geometry the page
declares, then compared with where the browser laid the elements out), hovers and clicks a
damaged cell, checks there is no console error and that no request left the page's own file,
and saves screenshots (screen and print media) whose element positions are checked roughly.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES, run_cli

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is absent")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                                 reason="chromium / chromedriver is absent")]

RP = "015026-497662-343442-191037-086713-242187-380908-588159"
DAMAGED = FIXTURES / "damaged"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-dev-shm-usage", "--window-size=1280,1000", "--hide-scrollbars",
         "--force-device-scale-factor=1"]
DAMAGE_KINDS = {"unreadable", "missing", "guessed", "other"}


def start_browser() -> Any:
    """Headless Chromium with its console and network logs (skips the test when it cannot
    start); the caller quits it."""
    from selenium.webdriver.chrome.service import Service

    if CHROMIUM is None or DRIVER is None:
        pytest.skip("chromium / chromedriver is absent")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    try:
        return webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    except Exception as exc:
        pytest.skip(f"cannot start headless chromium: {exc}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = start_browser()
    yield driver
    driver.quit()


def open_page(driver: Any, path: Path) -> None:
    driver.get_log("browser")
    driver.get_log("performance")
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "screen"})
    driver.get(path.as_uri())
    driver.execute_script("return document.readyState")


def requests(driver: Any) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def rect(driver: Any, element: Any) -> dict[str, float]:
    return driver.execute_script(  # type: ignore[no-any-return]
        "const r = arguments[0].getBoundingClientRect(); "
        "return {x: r.left, y: r.top, w: r.width, h: r.height};", element)


def check_clean(driver: Any, path: Path) -> None:
    """No console error, no request but the page itself."""
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == []
    assert set(requests(driver)) <= {path.as_uri()}


def browser_viewport(driver: Any) -> list[int]:
    return driver.execute_script(  # type: ignore[no-any-return]
        "return [window.innerWidth, window.innerHeight];")


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def expected_xy(geo: dict[str, float], svg_box: dict[str, float],
                offset: int) -> tuple[float, float, float]:
    """Where the page's declared geometry puts byte ``offset``: (x, y, pixels per SVG unit)."""
    scale = svg_box["w"] / geo["width"]
    row_bytes = geo["cell_bytes"] * geo["cols"]
    row, inside = divmod(offset, row_bytes)
    x = geo["left"] + inside / geo["cell_bytes"] * geo["cell_w"]
    y = geo["top"] + row * geo["cell_h"]
    return svg_box["x"] + x * scale, svg_box["y"] + y * scale, scale


def geometry(driver: Any) -> tuple[Any, dict[str, float]]:
    svg = driver.find_element("id", "volume-map")
    geo = {k: float(svg.get_attribute(f"data-{k.replace('_', '-')}"))
           for k in ("size", "cell_bytes", "cols", "rows", "left", "top", "cell_w", "cell_h",
                     "width")}
    return svg, geo


def check_map_and_legend(driver: Any) -> tuple[Any, dict[str, float]]:
    svg, geo = geometry(driver)
    box = rect(driver, svg)
    legend = driver.find_element("id", "legend")
    lbox = rect(driver, legend)
    assert svg.is_displayed() and legend.is_displayed()
    assert box["w"] > 400 and box["h"] > 50
    # legend beside the map (to its right) or below it, never over it
    assert lbox["x"] >= box["x"] + box["w"] - 1 or lbox["y"] >= box["y"] + box["h"] - 1
    assert legend.find_elements("css selector", "li")
    cells = driver.find_elements("css selector", "#volume-map rect.c")
    assert 0 < len(cells) <= 4096
    return svg, geo


def volume_damage(manifest: dict[str, Any]) -> list[tuple[int, int]]:
    """The damage of a fixture in volume offsets, derived from its manifest by hand: bad
    sectors and truncation hit the volume at the same offsets (these images have no partition
    and the damage misses the relocated block); a truncation spares the metadata copy that
    lay in the cut part (it reads as zeros anyway)."""
    out = []
    reserved = [tuple(r) for r in manifest["reserved"]]
    for rec in manifest["damage"]:
        if rec["kind"] == "bad-sectors":
            out.append((rec["offset"], rec["length"]))
        elif rec["kind"] == "truncate":
            start = rec["offset"]
            for off, length in sorted(reserved):
                if off <= start < off + length:
                    start = off + length
            out.append((start, manifest["volume_size"] - start))
    return out


def check_damage_on_map(driver: Any, manifest: dict[str, Any]) -> list[tuple[int, int]]:
    svg, geo = check_map_and_legend(driver)
    box = rect(driver, svg)
    damage = volume_damage(manifest)
    assert damage
    for offset, length in damage:
        outline = driver.find_element(
            "css selector", f'#volume-map rect.r[data-offset="{offset}"][data-part="0"]')
        assert int(outline.get_attribute("data-length")) == length
        assert outline.get_attribute("data-kind") in DAMAGE_KINDS
        x, y, scale = expected_xy(geo, box, offset)
        got = rect(driver, outline)
        assert abs(got["x"] - x) <= 2 and abs(got["y"] - y) <= 2, (offset, got, x, y)
        # the cell under the range's first byte is coloured as damage and covers it
        cx, cy = x + geo["cell_w"] * scale / 2, y + geo["cell_h"] * scale / 3
        cell = driver.execute_script("return document.elementFromPoint(arguments[0], "
                                     "arguments[1]);", cx, cy)
        assert cell.get_attribute("class").startswith("c ")
        assert cell.get_attribute("data-kind") in DAMAGE_KINDS
        assert int(cell.get_attribute("data-start")) <= offset < int(
            cell.get_attribute("data-end"))
        # and the damage table lists it
        driver.find_element("css selector",
                            f'#sec-ranges-damaged tr[data-offset="{offset}"]'
                            f'[data-length="{length}"]')
    return damage


def hover_and_click(driver: Any, offset: int) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    svg, geo = geometry(driver)
    x, y, scale = expected_xy(geo, rect(driver, svg), offset)
    cx, cy = x + geo["cell_w"] * scale / 2, y + geo["cell_h"] * scale / 3
    cell = driver.execute_script("return document.elementFromPoint(arguments[0], arguments[1]);",
                                 cx, cy)
    ActionChains(driver).move_to_element(cell).perform()
    tip = driver.find_element("id", "tip")
    assert tip.is_displayed()
    assert f"0x{int(cell.get_attribute('data-start')):X}" in tip.text
    assert f"0x{offset:X}" in tip.text  # the exact damaged range is listed
    cell.click()
    info = driver.find_element("id", "cell-info").text
    assert f"0x{offset:X}" in info


def screenshots(driver: Any, out: Path, name: str) -> None:
    """Screen and print screenshots; in print media the map uses textures (black and white)."""
    shot = driver.get_screenshot_as_png()
    assert list(png_size(shot)) == browser_viewport(driver)
    (out / f"{name}.png").write_bytes(shot)
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    fills = driver.execute_script(
        "return Array.from(document.querySelectorAll('#volume-map rect.c')).slice(0, 50)"
        ".map(e => getComputedStyle(e).fill);")
    assert fills and all(f.startswith('url("#t-') for f in fills)
    assert not driver.find_element("id", "cell-info").is_displayed()
    (out / f"{name}-print.png").write_bytes(driver.get_screenshot_as_png())
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "screen"})


def _manifest(name: str) -> dict[str, Any]:
    return json.loads((DAMAGED / f"xts128-rp-{name}.img.manifest.json").read_text())


@pytest.mark.parametrize(("command", "name"), [("repair", "badsectors"),
                                               ("repair", "truncated"),
                                               ("decrypt", "truncated")])
def test_job_page_shows_each_damage(browser: Any, tmp_path: Path, command: str,
                                    name: str) -> None:
    image = DAMAGED / f"xts128-rp-{name}.img"
    page = tmp_path / "page.html"
    extra = ["--mapfile", f"{image}.map"] if Path(f"{image}.map").exists() else []
    code, _, err = run_cli("-q", command, str(image), str(tmp_path / "out.img"), "-rp", RP,
                           "--html", str(page), "--report", str(tmp_path / "r.json"), *extra)
    assert code == 6, err
    open_page(browser, page)
    assert "v-bad" in browser.find_element("id", "verdict").get_attribute("class")
    damage = check_damage_on_map(browser, _manifest(name))
    hover_and_click(browser, damage[0][0])
    check_clean(browser, page)
    screenshots(browser, tmp_path, f"{command}-{name}")
    # the same JSON rendered later by `bdekit report` places the damage identically
    again = tmp_path / "again.html"
    assert run_cli("report", str(tmp_path / "r.json"), "--html", str(again))[0] == 0
    open_page(browser, again)
    check_damage_on_map(browser, _manifest(name))
    check_clean(browser, again)


def test_info_page(browser: Any, tmp_path: Path) -> None:
    manifest = json.loads((FIXTURES / "xts128-rp.img.manifest.json").read_text())
    for args in ([], ["-rp", RP]):
        page = tmp_path / "info.html"
        code, _, err = run_cli("info", str(FIXTURES / "xts128-rp.img"), *args, "--html",
                               str(page))
        assert code == 0, err
        open_page(browser, page)
        svg, geo = check_map_and_legend(browser)
        box = rect(browser, svg)
        for off in manifest["layout"]["metadata_offsets"]:
            x, y, _scale = expected_xy(geo, box, off)
            cell = browser.execute_script("return document.elementFromPoint(arguments[0], "
                                          "arguments[1]);", x + 2, y + 2)
            assert cell.get_attribute("data-kind") == "metadata"
        check_clean(browser, page)
    screenshots(browser, tmp_path, "info")


def test_scan_page(browser: Any, tmp_path: Path) -> None:
    page = tmp_path / "scan.html"
    image = DAMAGED / "xts128-rp-noheader.img"
    code, _, err = run_cli("scan", str(image), "--html", str(page))
    assert code == 0, err
    open_page(browser, page)
    svg, geo = check_map_and_legend(browser)
    box = rect(browser, svg)
    for off in _manifest("noheader")["layout"]["metadata_offsets"]:
        outline = browser.find_element("css selector", f'rect.r[data-offset="{off}"]')
        x, y, _scale = expected_xy(geo, box, off)
        got = rect(browser, outline)
        assert abs(got["x"] - x) <= 2 and abs(got["y"] - y) <= 2
    check_clean(browser, page)
    screenshots(browser, tmp_path, "scan")
