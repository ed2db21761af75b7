"""Make docs/report.png, the README's picture of an HTML report.

    python tools/report_screenshot.py [OUT.png]

Copies the XTS fixture, damages the copy (bad sectors and a truncated capture) with
`bdekit synth damage`, repairs it with `bdekit repair --mapfile ... --html`, and takes a
screenshot of the page's top (title, verdict, volume map, legend) in headless Chromium
(Debian's chromium + chromium-driver, through Selenium).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RP = "015026-497662-343442-191037-086713-242187-380908-588159"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--hide-scrollbars", "--force-device-scale-factor=1"]


def bdekit(cwd: Path, *args: str) -> int:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), BDEKIT_AUDIT_LOG=os.devnull)
    return subprocess.run([sys.executable, "-m", "bdekit.cli.main", *args], env=env, cwd=cwd,
                          check=False).returncode


def make_page(work: Path) -> Path:
    image = work / "evidence.img"
    shutil.copyfile(ROOT / "fixtures" / "xts128-rp.img", image)
    shutil.copyfile(ROOT / "fixtures" / "xts128-rp.img.manifest.json",
                    work / "evidence.img.manifest.json")
    assert bdekit(work, "-q", "synth", "damage", image.name, "--bad-sectors",
                  "96K+8K,300K+512,420K+2K", "--truncate", "896K", "--seed", "5") == 0
    page = work / "report.html"
    code = bdekit(work, "-q", "repair", image.name, "plain.img", "-rp", RP,
                  "--mapfile", f"{image.name}.map", "--html", page.name)
    assert code == 6, code
    return page


def main(argv: list[str]) -> int:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    out = Path(argv[0]) if argv else ROOT / "docs" / "report.png"
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in [*FLAGS, "--window-size=1180,760"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(
        executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver"))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            page = make_page(Path(tmp))
            driver.get(page.as_uri())
            time.sleep(0.3)
            height = driver.execute_script(
                "const r = document.getElementById('cell-info').getBoundingClientRect();"
                "return Math.ceil(r.top + window.scrollY) - 4;")
            inner = driver.execute_script("return window.innerHeight;")
            driver.set_window_size(1180, 760 + height - inner)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(driver.get_screenshot_as_png())
    finally:
        driver.quit()
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
