"""The real app in a real browser: `streamlit run` as a subprocess, driven by headless Chromium.

Starts a 2-D run from the UI and checks that the step counter and the loss chart change on their own
(no clicks in between); saves a screenshot of every page to test-artifacts/ for a person to look at.
Needs /usr/bin/chromium (apt-get install chromium) and the playwright Python package; never runs
`playwright install`.
"""

from __future__ import annotations

import re
import time

import pytest

from browser_support import ARTIFACTS, BROWSER_MARKS, CHROMIUM, CHROMIUM_ARGS, ROOT, streamlit_app

PAGES = {"sampling": "Sampling", "plugins": "Plugins", "compare": "Compare", "runs": "Runs"}

pytestmark = BROWSER_MARKS


@pytest.fixture
def app_server(tmp_path):
    """The app on a free port, its runs in a temporary folder; stopped by its PID."""
    with streamlit_app(tmp_path) as url:
        yield url


def _settle(page, timeout_ms: int = 60_000) -> None:
    """Wait until the page has drawn (a title) and no script run is in flight."""
    page.wait_for_selector("h1", timeout=timeout_ms)
    page.wait_for_function(
        "document.querySelectorAll('[data-testid=stSkeleton]').length == 0"
        " && !document.querySelector('[data-testid=stStatusWidget]')", timeout=timeout_ms)
    page.wait_for_timeout(800)


def _step(page) -> int:
    text = page.locator("[data-testid=stProgress]").first.inner_text(timeout=10_000)
    m = re.search(r"step ([\d,]+) / ([\d,]+)", text)
    return int(m.group(1).replace(",", "")) if m else -1


def test_a_2d_run_started_in_the_browser_updates_live_and_every_page_draws(app_server):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1400})
            errors: list[str] = []  # a chart whose spec Vega-Lite cannot compile is a page error, not an exception
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(app_server)
            _settle(page)
            assert page.get_by_role("heading", name="Train", exact=True).is_visible()
            page.screenshot(path=str(ARTIFACTS / "train-ready.png"))

            page.get_by_role("button", name="Start", exact=True).click()
            page.wait_for_function(
                "(() => { const p = document.querySelector('[data-testid=stProgress]');"
                " const m = p && p.innerText.match(/step ([\\d,]+) \\//);"
                " return m && parseInt(m[1].replace(/,/g, '')) > 0; })()", timeout=90_000)
            assert "run=" in page.url  # the run id is in the URL: a reload finds it again
            curves = page.locator(".st-key-live_curves [data-testid=stVegaLiteChart]").first
            curves.wait_for(timeout=60_000)
            page.wait_for_timeout(1500)
            step1, chart1 = _step(page), curves.screenshot()

            # No clicks from here on: the page must move by itself.
            deadline = time.monotonic() + 60
            step2, chart2 = step1, chart1
            while time.monotonic() < deadline and (step2 <= step1 or chart2 == chart1):
                page.wait_for_timeout(1500)
                step2, chart2 = _step(page), curves.screenshot()
            assert step2 > step1, f"the step counter stayed at {step1}"
            assert chart2 != chart1, "the loss chart did not change"
            assert page.locator(".st-key-live_view [data-testid=stVegaLiteChart]").count() == 1  # the 2-D view
            page.screenshot(path=str(ARTIFACTS / "train-running.png"))

            base = app_server.rstrip("/")
            for path, title in PAGES.items():
                if not (ROOT / "explorer" / "ui" / f"{path}_page.py").exists():
                    continue
                page.goto(f"{base}/{path}")
                _settle(page)
                assert page.get_by_role("heading", name=title, exact=True).first.is_visible()
                assert page.locator("[data-testid=stException]").count() == 0, f"the {title} page raised"
                page.screenshot(path=str(ARTIFACTS / f"{path}.png"), full_page=True)
            assert not errors, errors
        finally:
            browser.close()


def test_the_1d_view_draws_live_in_the_browser_with_its_histogram(app_server):
    """Goodfellow et al.'s Figure 1 live: the densities, D and D*, the z -> x mapping, and p_g as a histogram."""
    import urllib.parse

    from playwright.sync_api import sync_playwright

    from explorer.spec import load_spec_file
    from explorer.ui import urlspec

    raw = load_spec_file(ROOT / "explorer" / "presets" / "mixture1d-nonsaturating.toml")
    query = urllib.parse.urlencode(urlspec.spec_to_query({**raw, "steps": 100_000}))
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{app_server}/?{query}")
            _settle(page)
            page.get_by_role("button", name="Start", exact=True).click()
            view = page.locator(".st-key-live_view [data-testid=stVegaLiteChart] canvas").first
            view.wait_for(timeout=90_000)  # drawn: Vega-Lite compiled the three panels
            page.get_by_text("p_g histogram", exact=True).click()
            page.wait_for_timeout(2500)
            assert view.bounding_box()["height"] > 300  # densities, D and D*, and the mapping, stacked
            assert not errors, errors
            page.screenshot(path=str(ARTIFACTS / "train-1d.png"))
            page.get_by_role("button", name="Stop", exact=True).click()
        finally:
            browser.close()
