"""The real app in headless Chromium: a comparison of two objectives from a link, then the history.

Screenshots go to test-artifacts/ (gitignored) for a person to look at.
"""

from __future__ import annotations

import time
import urllib.parse
import urllib.request

import pytest

from browser_support import ARTIFACTS, BROWSER_MARKS, CHROMIUM, CHROMIUM_ARGS, streamlit_app

pytestmark = BROWSER_MARKS

SPEC = {
    "name": "mixture-objectives", "data": {"name": "mixture-1d", "means": [-2.0, 2.0], "stds": [0.5, 0.5]},
    "latent": {"name": "uniform", "dim": 1, "low": -1.0, "high": 1.0}, "objective": "nonsaturating",
    "generator": {"name": "mlp", "depth": 2, "width": 32, "activation": "tanh"},
    "discriminator": {"name": "mlp", "depth": 2, "width": 32, "activation": "leaky-relu"},
    "steps": 400, "batch_size": 128, "k_d": 2, "log_every": 10, "snapshot_every": 100, "metric_every": 100,
    "metrics": ["wasserstein-1d", "js-1d"], "snapshot_size": 500,
}


@pytest.fixture
def server(tmp_path):
    with streamlit_app(tmp_path, OMP_NUM_THREADS="1", GENEX_MAX_RUNS="2") as url:
        yield url, tmp_path / "runs"


def test_compare_two_objectives_in_the_browser_then_find_them_in_the_history(server):
    from playwright.sync_api import expect, sync_playwright

    import torch

    from explorer.manager import RunManager
    from explorer.runs import list_runs
    from explorer.ui.urlspec import spec_to_query

    url, runs = server
    query = urllib.parse.urlencode({**spec_to_query(SPEC), "vary": "objective=minimax,nonsaturating"})
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(f"{url}/compare?{query}")
            start = page.get_by_role("button", name="Start comparison")
            expect(start).to_be_enabled(timeout=60_000)
            expect(page.get_by_text("2 runs: objective=minimax · objective=nonsaturating")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "compare-setup.png"), full_page=True)
            start.click()
            done = page.get_by_text("· finished ·")
            deadline = time.monotonic() + 240
            while done.count() < 2:
                assert time.monotonic() < deadline, "the two runs did not finish in 240 s"
                assert page.locator('[data-testid="stException"]').count() == 0
                time.sleep(1)
            expect(page.get_by_text("What differs", exact=True)).to_be_visible(timeout=30_000)
            page.mouse.move(5, 5)
            page.set_viewport_size({"width": 1500, "height": 3400})  # Streamlit scrolls inside the page: a tall window shows it all
            page.wait_for_timeout(3000)  # let vega draw
            assert page.locator('[data-testid="stException"]').count() == 0
            assert page.locator(".vega-embed").count() >= 4  # two views and the curves
            page.screenshot(path=str(ARTIFACTS / "compare-finished.png"))
            page.set_viewport_size({"width": 1500, "height": 1100})
            assert "spec=" in page.url and "vary=" in page.url

            # a fork of the minimax run (trained here, as `genex`/another server would): the Runs page opens the newest run
            parent = next(r for r in list_runs(runs) if r.components["objective"] == "minimax")
            torch.set_num_threads(1)
            fork = RunManager(root=runs).fork(parent.id, {"optim.generator.lr": 1e-4, "steps": 600}, owner="test")
            fork.thread.join(180)
            assert fork.status == "finished"

            page.goto(f"{url}/runs")
            expect(page.get_by_text("Open a run")).to_be_visible(timeout=60_000)
            page.set_viewport_size({"width": 1500, "height": 2600})
            page.wait_for_timeout(3000)
            assert page.locator('[data-testid="stException"]').count() == 0
            expect(page.get_by_text(f"Forked from run {parent.id} at step 400.")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "runs-page-fork.png"))
        finally:
            browser.close()
    statuses = sorted((r.status, r.components["objective"], bool(r.parent)) for r in list_runs(runs))
    assert statuses == [("finished", "minimax", False), ("finished", "minimax", True), ("finished", "nonsaturating", False)]
