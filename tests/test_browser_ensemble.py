"""The real app in headless Chromium: a comparison whose seeds train as seed ensembles (issue #16's
Compare page switch), shown live like any comparison. Screenshots go to test-artifacts/."""

from __future__ import annotations

import json
import time
import urllib.parse

import pytest

from browser_support import ARTIFACTS, BROWSER_MARKS, CHROMIUM, CHROMIUM_ARGS, streamlit_app
from test_browser_compare import SPEC

pytestmark = BROWSER_MARKS


def test_vectorised_seeds_train_and_show_live_in_the_browser(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from explorer.ui.urlspec import spec_to_query

    spec = {**SPEC, "steps": 1500}
    query = urllib.parse.urlencode({**spec_to_query(spec), "vary": "objective=minimax,nonsaturating"})
    ARTIFACTS.mkdir(exist_ok=True)
    with streamlit_app(tmp_path, OMP_NUM_THREADS="1", GENEX_MAX_RUNS="2") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{url}/compare?{query}")
            start = page.get_by_role("button", name="Start comparison")
            expect(start).to_be_enabled(timeout=60_000)
            seeds = page.get_by_role("spinbutton", name="seeds per variant")
            seeds.fill("2")
            seeds.press("Enter")
            expect(page.get_by_text("4 runs: objective=minimax seed=0")).to_be_visible(timeout=30_000)
            page.get_by_text("Vectorise seeds").click()
            expect(page.get_by_text("Each variant's 2 seeds train together as one batched model")).to_be_visible(timeout=30_000)
            start.click()
            expect(page.get_by_text("batched with its variant's other seeds").first).to_be_visible(timeout=120_000)
            page.wait_for_timeout(3000)
            page.mouse.move(5, 5)
            page.screenshot(path=str(ARTIFACTS / "compare-vectorised-live.png"), full_page=True)
            done = page.get_by_text("· finished ·")
            deadline = time.monotonic() + 300
            while done.count() < 4:
                assert time.monotonic() < deadline, "the four runs did not finish in 300 s"
                assert page.locator('[data-testid="stException"]').count() == 0
                time.sleep(1)
            page.set_viewport_size({"width": 1500, "height": 3400})
            page.wait_for_timeout(3000)
            assert page.locator('[data-testid="stException"]').count() == 0
            assert page.locator(".vega-embed").count() >= 5  # four views and the curves
            page.screenshot(path=str(ARTIFACTS / "compare-vectorised-finished.png"))
            assert not errors, errors
        finally:
            browser.close()
    statuses = [json.loads(f.read_text()) for f in (tmp_path / "runs").glob("*/status.json")]
    assert len(statuses) == 4 and all(s["status"] == "finished" and s.get("vectorised") == 2 for s in statuses)
