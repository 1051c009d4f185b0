"""A setting changed mid-run in the real app (headless Chromium): the curves mark it, the run's spec
holds it, and a resume of the stopped run gives the numbers of a run that was never stopped.

Screenshots go to test-artifacts/ (gitignored) for a person to look at.
"""

from __future__ import annotations

import json
import re
import urllib.parse

import pytest

from browser_support import ARTIFACTS, BROWSER_MARKS, CHROMIUM, CHROMIUM_ARGS, streamlit_app

pytestmark = BROWSER_MARKS

SPEC = {
    "name": "change-me", "data": "ring8", "objective": "nonsaturating",
    "generator": {"name": "mlp", "depth": 2, "width": 32}, "discriminator": {"name": "mlp", "depth": 2, "width": 32},
    "steps": 300, "batch_size": 64, "log_every": 10, "snapshot_every": 100, "metric_every": 0, "checkpoint_every": 100,
    "snapshot_size": 200,
}


@pytest.fixture
def server(tmp_path):
    with streamlit_app(tmp_path, OMP_NUM_THREADS="1") as url:
        yield url, tmp_path / "runs"


def losses(store):
    return [(r["step"], r["d_loss"], r["g_loss"]) for r in store.read_metrics() if "g_loss" in r]


def test_a_learning_rate_changed_in_the_browser_is_marked_kept_and_replayed(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from explorer.execute import run_foreground
    from explorer.manager import RunManager
    from explorer.runs import RunStore
    from explorer.spec import parse_spec
    from explorer.training import TrainerConfig
    from explorer.ui.urlspec import spec_to_query

    url, runs = server
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1300})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{url}/?{urllib.parse.urlencode(spec_to_query(SPEC))}")
            steps = page.locator("[data-testid=stMain]").get_by_label("steps", exact=True)  # Step's count, beside the button
            steps.wait_for(timeout=90_000)
            steps.fill("50")
            steps.press("Tab")
            page.wait_for_timeout(1000)
            page.get_by_role("button", name="Step", exact=True).click()
            progress = page.locator("[data-testid=stProgress]").first
            expect(progress).to_contain_text("paused · step 50 / 300", timeout=120_000)

            page.get_by_role("button", name="Change settings").click()
            lr = page.get_by_label("generator learning rate")
            lr.fill("0.0002")
            page.get_by_role("button", name="Apply at the next step").click()
            expect(page.get_by_text(re.compile(r"Changing lr\(G\) 0.0002 at the next step"))).to_be_visible(timeout=30_000)
            page.get_by_role("button", name="Step", exact=True).click()
            expect(progress).to_contain_text("paused · step 100 / 300", timeout=60_000)
            marker = page.get_by_text("Dashed purple lines: settings changed mid-run — step 50: lr(G) 0.0002.")
            expect(marker).to_be_visible(timeout=30_000)
            page.wait_for_timeout(2000)  # let Vega draw the marker
            page.screenshot(path=str(ARTIFACTS / "train-changed-lr.png"))
            page.get_by_role("button", name="Stop", exact=True).click()
            expect(progress).to_contain_text("stopped", timeout=60_000)
            run_id = urllib.parse.parse_qs(urllib.parse.urlparse(page.url).query)["run"][0]
            assert not errors, errors
        finally:
            browser.close()

    stopped = RunStore(runs / run_id)
    spec = stopped.read_spec()
    assert spec["changes"] == [{"step": 50, "set": {"optim.generator.lr": 0.0002}}]
    # Resume the stopped run (as the Runs page does) and train the same spec from scratch, never stopped.
    resumed = RunManager(root=runs, backend="thread").resume_run(run_id, owner="test")
    resumed.thread.join(180)
    assert resumed.status == "finished"
    fresh, _ = run_foreground(parse_spec(spec), out=tmp_path / "fresh", config=TrainerConfig(snapshot_hz=0))
    assert losses(RunStore(runs / run_id)) == losses(fresh)
    assert [r["step"] for r in RunStore(runs / run_id).read_metrics() if r.get("kind") == "change"] == [50]
