"""Draw your own data, in a real browser: click points on the Train page's canvas, train on them, and
check that the run's spec holds exactly the clicked points and that `genex`'s headless trainer, given
that spec, computes the same losses as the app's run.

Needs /usr/bin/chromium and the playwright Python package (never `playwright install`); saves
test-artifacts/draw-canvas.png (the canvas with the clicked points) and draw-run.png (the run).
"""

from __future__ import annotations

import json
import time
import urllib.parse

import pytest

from browser_support import ARTIFACTS, BROWSER_MARKS, CHROMIUM, CHROMIUM_ARGS, streamlit_app

pytestmark = BROWSER_MARKS

# Pixels on the 400 x 400 canvas (x right, y down) and the data points they stand for ([-2, 2]², y up).
CLICKS = [(100, 100), (300, 100), (200, 300), (140, 250), (260, 250)]
EXPECTED = [-1.0, 1.0, 1.0, 1.0, 0.0, -1.0, -0.6, -0.5, 0.6, -0.5]
SETTINGS = {"data": {"name": "drawn", "noise": 0.1}, "steps": 40, "batch_size": 64, "log_every": 5,
            "snapshot_every": 20, "checkpoint_every": 0, "metrics": "none", "device": "cpu", "seed": 5,
            "generator": {"name": "mlp", "width": 32, "depth": 2}, "discriminator": {"name": "mlp", "width": 32, "depth": 2}}


def _settle(page, timeout_ms: int = 90_000) -> None:
    page.wait_for_selector("h1", timeout=timeout_ms)
    page.wait_for_function(
        "document.querySelectorAll('[data-testid=stSkeleton]').length == 0"
        " && !document.querySelector('[data-testid=stStatusWidget]')", timeout=timeout_ms)
    page.wait_for_timeout(800)


def _losses(records) -> dict[int, tuple[float, float]]:
    return {r["step"]: (r["d_loss"], r["g_loss"]) for r in records if "g_loss" in r}


def _wait_for(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_points_clicked_on_the_canvas_are_exactly_the_runs_data_and_genex_reproduces_its_losses(tmp_path):
    import torch
    from playwright.sync_api import expect, sync_playwright

    from explorer.execute import run_foreground
    from explorer.runs import RunStore
    from explorer.spec import parse_spec
    from explorer.training import TrainerConfig
    from explorer.ui import urlspec

    query = urllib.parse.urlencode(urlspec.spec_to_query(SETTINGS))
    ARTIFACTS.mkdir(exist_ok=True)
    runs = tmp_path / "runs"
    with streamlit_app(tmp_path, GENEX_TORCH_THREADS="1") as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{url}/?{query}")
            _settle(page)
            sidebar = page.locator("[data-testid=stSidebar]")
            expect(sidebar.get_by_text("29 points", exact=True)).to_be_visible()  # the default drawing: a smiley

            page.get_by_role("button", name="Draw the data").click()
            dialog = page.get_by_role("dialog")
            canvas = dialog.locator("canvas.upper-canvas")  # Fabric's event layer (no iframe: a v2 component)
            canvas.wait_for(timeout=30_000)
            expect(dialog.get_by_text("29 points", exact=True)).to_be_visible()
            expect(dialog.get_by_text("The canvas spans x from -2 (left) to 2 (right)")).to_be_visible()
            dialog.get_by_role("button", name="Clear").click()
            expect(dialog.get_by_text("0 points", exact=True)).to_be_visible(timeout=15_000)
            box = canvas.bounding_box()
            assert round(box["width"]) == 400 and round(box["height"]) == 400  # one canvas pixel per CSS pixel
            for i, (px, py) in enumerate(CLICKS, start=1):
                page.mouse.click(box["x"] + px, box["y"] + py)
                label = f"{i} point" + ("s" if i > 1 else "")
                expect(dialog.get_by_text(label, exact=True)).to_be_visible(timeout=15_000)  # each click reached the app
            page.mouse.move(box["x"] + box["width"] + 150, box["y"] + 5)  # off the canvas: its hover toolbar hides
            page.wait_for_timeout(500)
            page.screenshot(path=str(ARTIFACTS / "draw-canvas.png"))

            dialog.get_by_role("button", name="Use these points").click()
            expect(dialog).to_be_hidden(timeout=15_000)
            expect(sidebar.get_by_text("5 points", exact=True)).to_be_visible(timeout=15_000)
            page.wait_for_timeout(500)
            _settle(page)
            page.get_by_role("button", name="Start", exact=True).click()
            page.wait_for_function(
                "(() => { const p = document.querySelector('[data-testid=stProgress]');"
                " const m = p && p.innerText.match(/step ([\\d,]+) \\//);"
                " return m && parseInt(m[1].replace(/,/g, '')) > 0; })()", timeout=120_000)

            folders = [p for p in runs.iterdir() if (p / "spec.json").exists()]
            assert len(folders) == 1, folders
            store = RunStore(folders[0])
            spec = store.read_spec()
            assert spec["data"]["name"] == "drawn"
            assert spec["data"]["points"] == EXPECTED  # exactly the clicked pixels, in data coordinates
            _wait_for(lambda: store.read_status().get("status") == "finished", 180, "the app's run to finish")
            page.wait_for_timeout(2500)  # the page draws the finished run
            assert page.locator("[data-testid=stException]").count() == 0
            page.screenshot(path=str(ARTIFACTS / "draw-run.png"))
            assert not errors, errors
        finally:
            browser.close()

    app_losses = _losses(store.read_metrics())
    assert sorted(app_losses) == list(range(5, 41, 5))
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the app's worker (GENEX_TORCH_THREADS=1)
    try:
        headless, state = run_foreground(parse_spec(spec), out=tmp_path / "headless", config=TrainerConfig(snapshot_hz=0))
    finally:
        torch.set_num_threads(before)
    assert RunStore(headless.path).read_spec()["data"]["points"] == EXPECTED
    cli_losses = _losses(headless.read_metrics())
    common = sorted(set(app_losses) & set(cli_losses))
    assert common == sorted(app_losses)
    assert [app_losses[s] for s in common] == [cli_losses[s] for s in common]  # same seed, same numbers
    assert json.dumps(spec["data"]) == json.dumps(headless.read_spec()["data"])
