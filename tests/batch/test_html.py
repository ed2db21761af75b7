"""``bdekit batch --html``: a page per job (DIR/<job>/report.html) and DIR/index.html.

What each page must show comes from the evidence, not from bdekit's output: the damaged
ranges are the synth manifest's damage records, the statuses and reasons those that
``summary.json`` records (checked against the manifests by tests/batch/test_local.py).
Opened in headless Chromium when it is installed (links followed, no request leaves the
directory, no console error).
"""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path

import pytest

from bdekit.errors import EXIT_OTHER, EXIT_USAGE
from tests.batch import fleet
from tests.batch.conftest import Small
from tests.batch.test_local import check_private, job_list, keyring_args
from tests.conftest import run_cli

JOBS = ("bek", "damaged", "nokey")


@pytest.fixture(scope="module")
def batch_out(small: Small, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("batch-html")
    jobs = job_list(root, small, [
        {"input": str(small.volumes[n].image), "output": n}
        | ({"mapfile": f"{small.volumes[n].image}.map"} if small.volumes[n].damage else {})
        for n in JOBS])
    out = root / "out"
    code, _o, err = run_cli("-q", "batch", str(jobs), "-o", str(out), *keyring_args(small),
                            "--html", "--workers", "2")
    assert code == EXIT_OTHER, err  # nokey fails
    return out


def _row(text: str, job: str) -> str:
    match = re.search(rf'<tr data-job="{job}" [^>]*>.*?</tr>', text, re.S)
    assert match, job
    return match.group(0)


def test_index_lists_every_job(batch_out: Path) -> None:
    rows = fleet.summary_rows(batch_out)
    text = (batch_out / "index.html").read_text()
    assert 'id="verdict" class="verdict v-bad"' in text
    for job in JOBS:
        row = _row(text, job)
        assert f'data-status="{rows[job]["status"]}"' in row
        assert f'<a href="{job}/report.html">{job}</a>' in row
        assert (batch_out / job / "report.html").is_file()
        if rows[job]["sha256"]:
            assert rows[job]["sha256"] in row
    assert html.escape(rows["nokey"]["error"], quote=True) in _row(text, "nokey")
    check_private(batch_out)


def test_job_pages(small: Small, batch_out: Path) -> None:
    ok = (batch_out / "bek" / "report.html").read_text()
    assert 'class="verdict v-ok"' in ok and 'id="volume-map"' in ok
    assert '<a href="../index.html">' in ok
    # the damaged job: each damaged range of the manifest, outlined and listed
    damaged = (batch_out / "damaged" / "report.html").read_text()
    assert 'class="verdict v-bad"' in damaged
    damage = small.volumes["damaged"].damage
    assert damage
    for offset, length in damage:
        assert (f'data-offset="{offset}" data-length="{length}" data-kind="unreadable"'
                in damaged), (offset, length)
    # the failed job: no map, the reason
    failed = (batch_out / "nokey" / "report.html").read_text()
    row = fleet.summary_rows(batch_out)["nokey"]
    assert 'id="volume-map"' not in failed and 'class="verdict v-bad"' in failed
    assert html.escape(row["error"], quote=True) in failed
    secrets = [fleet.recovery_password(v.manifest)[1] for v in small.volumes.values()
               if v.manifest.protectors[0]["type"] == "recovery-password"]
    pages = [p.read_text() for p in batch_out.rglob("*.html")]
    assert secrets and not [s for s in secrets for p in pages if s in p]


def test_report_command_renders_batch_files(small: Small, batch_out: Path,
                                            tmp_path: Path) -> None:
    index = tmp_path / "index.html"
    code, _o, err = run_cli("report", str(batch_out / "summary.json"), "--html", str(index))
    assert code == 0, err
    for job in JOBS:
        assert f'data-status="{fleet.summary_rows(batch_out)[job]["status"]}"' in \
            _row(index.read_text(), job)
    page = tmp_path / "damaged.html"
    code, _o, err = run_cli("report", str(batch_out / "damaged" / "report.json"), "--html",
                            str(page))
    assert code == 0, err
    offset, length = small.volumes["damaged"].damage[0]
    assert f'data-offset="{offset}" data-length="{length}"' in page.read_text()


def test_a_job_named_like_the_index_is_refused(small: Small, tmp_path: Path) -> None:
    jobs = job_list(tmp_path, small, [{"input": str(small.volumes["bek"].image),
                                       "output": "Index.html"}])
    out = tmp_path / "out"
    code, _o, err = run_cli("batch", str(jobs), "-o", str(out), *keyring_args(small), "--html")
    assert code == EXIT_USAGE and "index.html" in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.browser
def test_pages_in_a_browser(batch_out: Path, tmp_path: Path) -> None:
    """The index and its links in headless Chromium: every job page opens from the index,
    the damaged one shows its map, and nothing is fetched from outside the directory."""
    chromium = pytest.importorskip("tests.report.test_html_browser")
    site = Path(shutil.copytree(batch_out, tmp_path / "site",
                                ignore=shutil.ignore_patterns("*.img")))
    driver = chromium.start_browser()
    try:
        for job in JOBS:
            chromium.open_page(driver, site / "index.html")
            driver.find_element("css selector", f'tr[data-job="{job}"] a').click()
            page = site / job / "report.html"
            assert driver.current_url == page.as_uri()
            maps = driver.find_elements("id", "volume-map")
            if job == "nokey":
                assert maps == []
            else:
                assert maps[0].is_displayed()
            assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
            assert set(chromium.requests(driver)) <= {(site / "index.html").as_uri(),
                                                      page.as_uri()}
    finally:
        driver.quit()
