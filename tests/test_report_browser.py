"""The report in a real browser: Debian's chromium driven by Playwright, at 1280 px, for a run of each capability
and for the demo. No console errors, no request that is not the page itself or an embedded image, nothing wider
than the window (except inside a table's own scrolling box), every image decoded; each test saves a screenshot.
Never a downloaded browser: without /usr/bin/chromium these tests skip.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CHROMIUM
from report_runs import tiny_demo  # noqa: F401 (a fixture)

from cytolens.run_report import write_run_report

# Skipped as a whole before its fixtures build anything; the browser itself is conftest's `browser` fixture.
if not CHROMIUM.is_file():
    pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="playwright (the dev extra) is not installed")

WIDTH = 1280

# Elements whose right edge passes the window, not counting those inside a box that scrolls sideways.
TOO_WIDE = """(width) => [...document.querySelectorAll('body *')].filter((element) => {
    for (let box = element.parentElement; box; box = box.parentElement) {
        const overflow = getComputedStyle(box).overflowX;
        if (overflow === 'auto' || overflow === 'scroll') return false;
    }
    return element.getBoundingClientRect().right > width + 0.5;
}).map((element) => element.tagName.toLowerCase() + (element.className ? '.' + element.className : ''))"""



@pytest.mark.parametrize("part", ["classify", "segment", "profile", "demo"])
def test_report_renders_cleanly_at_1280_px(browser, tiny_demo: Path, tmp_path: Path, part: str) -> None:
    folder = tiny_demo if part == "demo" else tiny_demo / part
    page_path, sections = write_run_report(folder, out=tmp_path / "report.html", title=f"cytolens report: {part}")
    assert [s.key for s in sections] == (["classify", "segment", "profile"] if part == "demo" else [part])

    page = browser.new_page(viewport={"width": WIDTH, "height": 900})
    console_errors: list[str] = []
    requests: list[str] = []
    failed: list[str] = []
    page.on("console", lambda message: message.type == "error" and console_errors.append(message.text))
    page.on("pageerror", lambda error: console_errors.append(str(error)))
    page.on("request", lambda request: requests.append(request.url))
    page.on("requestfailed", lambda request: failed.append(request.url))
    page.goto(page_path.resolve().as_uri(), wait_until="load")
    try:
        assert console_errors == []
        assert failed == []
        external = [url for url in requests if not url.startswith(("file:", "data:"))]
        assert external == []
        assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH
        assert page.evaluate(TOO_WIDE, WIDTH) == []
        widths = page.evaluate("[...document.images].map((image) => image.complete ? image.naturalWidth : 0)")
        assert widths and all(width > 0 for width in widths)
        # The summary is the first thing on the page.
        assert page.evaluate("document.querySelector('section').id") == "summary"
        shot = tmp_path / f"report-{part}.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes().startswith(b"\x89PNG")
    finally:
        page.close()
