"""What a newcomer meets, in the real app in headless Chromium: views never hide where the generator's
samples went, a `?run=` link shows that run's own pipeline, and a reload keeps a running comparison.

Screenshots go to test-artifacts/ (gitignored) for a person to look at.
"""

from __future__ import annotations

import re
import urllib.parse

import pytest

from browser_support import ARTIFACTS, BROWSER_MARKS, CHROMIUM, CHROMIUM_ARGS, ROOT, streamlit_app

pytestmark = BROWSER_MARKS

COMPARE = {
    "name": "reload-me", "data": {"name": "mixture-1d"}, "latent": {"name": "uniform", "dim": 1},
    "objective": "nonsaturating", "generator": {"name": "mlp", "depth": 1, "width": 16},
    "discriminator": {"name": "mlp", "depth": 1, "width": 16}, "steps": 200_000, "batch_size": 64,
    "log_every": 20, "snapshot_every": 1000, "metric_every": 0, "snapshot_size": 200,
}


@pytest.fixture
def server(tmp_path):
    with streamlit_app(tmp_path, OMP_NUM_THREADS="1", GENEX_MAX_RUNS="2") as url:
        yield url, tmp_path / "runs"


def _sidebar_value(page, label: str) -> str:
    """What the sidebar's select box ``label`` shows, as a screen reader reads it."""
    page.get_by_role("combobox", name=label).wait_for(timeout=60_000)
    snapshot = page.locator("[data-testid=stSidebar]").aria_snapshot(timeout=30_000)
    m = re.search(rf'combobox "{re.escape(label)}": (.*)', snapshot)
    return m.group(1) if m else ""


def test_views_show_where_samples_went_links_open_their_pipeline_and_reload_keeps_a_comparison(server):
    from playwright.sync_api import expect, sync_playwright

    from explorer.execute import run_foreground
    from explorer.spec import load_spec_file, parse_spec
    from explorer.training import TrainerConfig
    from explorer.ui.urlspec import spec_to_query

    url, runs = server
    quiet = TrainerConfig(snapshot_hz=0)
    # The preset's minimax run: by step 600 G has overshot to x ≈ -15, far beyond the data at ±2.
    minimax = {**load_spec_file(ROOT / "explorer" / "presets" / "mixture1d-minimax.toml"), "steps": 600}
    diverged, _ = run_foreground(parse_spec(minimax), root=runs, config=quiet)
    # A 2-D run whose data sit at (30, 30) while G still puts its points near the origin.
    far = parse_spec({"name": "far-away", "notes": "Data far from the origin, trained by MMD.", "objective": "mmd",
                      "data": {"name": "gaussian", "mean": 30.0}, "generator": {"name": "mlp", "depth": 1, "width": 8},
                      "steps": 2, "batch_size": 64, "snapshot_every": 2, "metric_every": 0})
    far_run, _ = run_foreground(far, root=runs, config=quiet)

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1500})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            # 1. The diverged 1-D minimax run: the view says where G's samples went.
            page.goto(f"{url}/?run={diverged.path.name}")
            note = page.get_by_text(re.compile(r"of the generated samples lie away from the data \(x = .* between x = -1\d"))
            expect(note).to_be_visible(timeout=90_000)
            assert "minimax" in _sidebar_value(page, "Objective")  # the run's own pipeline, not the default preset
            expect(page.locator("[data-testid=stCaptionContainer]").filter(has_text="The original minimax game").first).to_be_visible()
            page.wait_for_timeout(1500)
            page.screenshot(path=str(ARTIFACTS / "newcomer-diverged-1d.png"))

            # 2. A 2-D run's points stay in the frame: drawn at its edge and counted.
            page.goto(f"{url}/?run={far_run.path.name}")
            expect(page.get_by_text(re.compile(r"generated samples? beyond the view, drawn at its edge"))).to_be_visible(timeout=60_000)
            assert "mmd" in _sidebar_value(page, "Objective") and "gaussian" in _sidebar_value(page, "Data")
            expect(page.locator("[data-testid=stCaptionContainer]").filter(has_text="Data far from the origin").first).to_be_visible()
            page.wait_for_timeout(1500)
            page.screenshot(path=str(ARTIFACTS / "newcomer-2d-edge.png"))
            for width in (1000, 1250, 1500):  # the picture never spills over the curves: they wrap below instead
                page.set_viewport_size({"width": width, "height": 1500})
                page.wait_for_timeout(1500)
                view = page.locator(".st-key-live_view canvas").first.bounding_box()
                curves = page.locator(".st-key-live_curves canvas").first.bounding_box()
                apart = view["x"] + view["width"] <= curves["x"] or view["y"] + view["height"] <= curves["y"]
                assert apart, (width, view, curves)
                assert curves["x"] + curves["width"] <= width  # and nothing runs off the page

            # 3. A running comparison survives a reload of its page.
            query = urllib.parse.urlencode({**spec_to_query(COMPARE), "vary": "objective=minimax,nonsaturating"})
            page.goto(f"{url}/compare?{query}")
            start = page.get_by_role("button", name="Start comparison")
            expect(start).to_be_enabled(timeout=60_000)
            start.click()
            expect(page.get_by_text("Comparison of 2 runs")).to_be_visible(timeout=60_000)
            page.wait_for_function("location.search.includes('runs=')", timeout=30_000)
            page.reload()
            expect(page.get_by_text("Comparison of 2 runs")).to_be_visible(timeout=60_000)
            running = page.get_by_text(re.compile(r"objective=(minimax|nonsaturating) · (running|queued)"))
            expect(running.first).to_be_visible(timeout=30_000)
            assert running.count() == 2
            page.screenshot(path=str(ARTIFACTS / "newcomer-compare-reloaded.png"))
            page.get_by_role("button", name=re.compile(r"Stop these \d runs")).click()
            expect(page.get_by_text(re.compile(r"· stopped ·")).first).to_be_visible(timeout=60_000)
            assert not errors, errors
        finally:
            browser.close()
