"""The averaged and the raw generator side by side, in the real app (headless Chromium): a link to the
ring8-ema preset with a short run and an early ``ema.start`` fills the sidebar's EMA controls; the live
picture is labelled as the average's, and "raw G beside the average" draws the raw G next to it, both
labelled, neither over the other nor over the curves, at 1,250 px.

Screenshots go to test-artifacts/ (gitignored) for a person to look at.
"""

from __future__ import annotations

import re
import urllib.parse

import pytest

from browser_support import ARTIFACTS, BROWSER_MARKS, CHROMIUM, CHROMIUM_ARGS, ROOT, streamlit_app

pytestmark = BROWSER_MARKS

WIDTH = 1250
AVERAGE = "averaged G (EMA, decay 0.99 from step 50)"
RAW = "raw G (the one that trains)"


@pytest.fixture
def server(tmp_path):
    with streamlit_app(tmp_path, OMP_NUM_THREADS="1") as url:
        yield url, tmp_path / "runs"


def _apart(a: dict, b: dict) -> bool:
    """Two boxes that do not overlap."""
    return (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"]
            or a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"])


_BOXES = """() => {
    const box = e => { const r = e.getBoundingClientRect(); return {x: r.x, y: r.y, width: r.width, height: r.height}; };
    const label = t => [...document.querySelectorAll('[data-testid=stMarkdownContainer] strong')].find(e => e.textContent === t);
    const pictures = [...document.querySelectorAll('.st-key-live_view canvas')].map(box);
    const curves = document.querySelector('.st-key-live_curves canvas');
    const labels = [LABELS].map(label);
    return {pictures, curves: curves && box(curves), labels: labels.every(Boolean) ? labels.map(box) : null};
}"""


def _layout(page):
    """The two pictures, the loss curves and the two labels, measured in one go and once the pictures are
    the same size (a live chart whose frame just grew is drawn anew: for a moment it has another size)."""
    script = _BOXES.replace("LABELS", ", ".join(f"'{t}'" for t in (AVERAGE, RAW)))
    for _ in range(40):
        got = page.evaluate(script)
        if len(got["pictures"]) == 2 and got["curves"] and got["labels"]:
            a, b = got["pictures"]
            if abs(a["width"] - b["width"]) < 2 and abs(a["height"] - b["height"]) < 2:  # one frame
                return a, b, got["curves"], got["labels"]
        page.wait_for_timeout(250)
    raise AssertionError(f"the two pictures, the curves and the labels were not all there in one frame: {got}")


def _check_layout(page, name: str) -> None:
    """Side by side, labelled, apart from each other and from the curves, within the page; a screenshot."""
    average, raw, curves, labels = _layout(page)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)
    # readable: a frame follows the samples (3:2 across, or upright when they spread up and down)
    assert min(average["width"], average["height"]) > 150 and max(average["width"], average["height"]) >= 240, average
    assert (raw["width"], raw["height"]) == (average["width"], average["height"]), (average, raw)
    assert abs(average["y"] - raw["y"]) < 2 and average["x"] + average["width"] <= raw["x"], (average, raw)  # side by side
    assert _apart(average, curves) and _apart(raw, curves), (average, raw, curves)
    for box in (average, raw, curves):
        assert box["x"] >= 0 and box["x"] + box["width"] <= WIDTH, box  # nothing runs off the page
    for label, picture in zip(labels, (average, raw)):  # each label sits over its own picture
        assert label["y"] + label["height"] <= picture["y"] and label["x"] < picture["x"] + picture["width"]
        assert label["x"] + label["width"] > picture["x"], (label, picture)


def test_the_train_page_draws_the_averaged_and_the_raw_generator_side_by_side(server):
    from playwright.sync_api import expect, sync_playwright

    from explorer.spec import load_spec_file
    from explorer.ui.urlspec import spec_to_query

    url, runs = server
    spec = {**load_spec_file(ROOT / "explorer" / "presets" / "ring8-ema.toml"), "steps": 600, "batch_size": 256,
            "ema": {"decay": 0.99, "start": 50}, "metric_every": 0}
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": 1300})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{url}/?{urllib.parse.urlencode(spec_to_query(spec))}")
            sidebar = page.locator("[data-testid=stSidebar]")
            start_step = sidebar.get_by_role("spinbutton", name="EMA start step")
            expect(start_step).to_have_value("50", timeout=90_000)  # the link's ema, in the sidebar's controls
            expect(sidebar.get_by_role("spinbutton", name="EMA decay")).to_have_value("0.99")
            expect(sidebar.get_by_role("switch", name="Average G's weights (EMA)")).to_be_checked()

            page.get_by_role("button", name="Start", exact=True).click()
            main = page.locator("[data-testid=stMain]")
            raw_toggle = main.get_by_role("switch", name="raw G beside the average")
            expect(raw_toggle).to_be_visible(timeout=90_000)
            expect(raw_toggle).not_to_be_checked()  # offered, off: one picture, said to be the average's
            expect(main.get_by_text(AVERAGE, exact=True)).to_be_visible()
            expect(page.locator(".st-key-live_view canvas")).to_have_count(1)

            raw_toggle.click(force=True)
            expect(main.get_by_text(RAW, exact=True)).to_be_visible(timeout=30_000)
            expect(main.get_by_text(AVERAGE, exact=True)).to_be_visible()
            pictures = page.locator(".st-key-live_view canvas")
            expect(pictures).to_have_count(2, timeout=30_000)

            # past the average's start, so the two pictures differ; the run ends after 600 steps
            def step() -> int:
                text = page.locator("[data-testid=stProgress]").first.inner_text()
                m = re.search(r"step ([\d,]+) /", text)
                return int(m.group(1).replace(",", "")) if m else -1

            page.wait_for_function("() => /step (\\d{3}|\\d,\\d{3}) \\//.test(document.body.innerText)", timeout=90_000)
            assert step() >= 100
            page.locator("h1").first.click()  # no tooltip over the pictures
            page.wait_for_timeout(1500)
            expect(pictures).to_have_count(2)
            _check_layout(page, "ema-side-by-side-1250.png")  # while it trains

            expect(page.get_by_text(re.compile(r"· finished ·"))).to_be_visible(timeout=120_000)
            page.wait_for_timeout(1500)  # the ended run's page, from its folder: still both, still labelled
            expect(main.get_by_role("switch", name="raw G beside the average")).to_be_checked()
            expect(page.locator(".st-key-live_view canvas")).to_have_count(2, timeout=30_000)
            expect(main.get_by_text(RAW, exact=True)).to_be_visible()
            _check_layout(page, "ema-side-by-side-finished-1250.png")
            assert not errors, errors
        finally:
            browser.close()
