"""The real app in headless Chromium, two tabs, each training a run in its own worker process: one
worker is killed with SIGKILL; its tab shows a clear failed run while the other tab's run keeps
training, and the server keeps serving both. Screenshots go to test-artifacts/."""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest

from browser_support import ARTIFACTS, BROWSER_MARKS, CHROMIUM, CHROMIUM_ARGS, streamlit_app

pytestmark = BROWSER_MARKS


@pytest.fixture
def server(tmp_path):
    with streamlit_app(tmp_path, GENEX_MAX_RUNS="2") as url:
        yield url, tmp_path / "runs"


def _step(page) -> int:
    text = page.locator("[data-testid=stProgress]").first.inner_text(timeout=30_000)
    m = re.search(r"step ([\d,]+) / ([\d,]+)", text)
    return int(m.group(1).replace(",", "")) if m else -1


def _start(page, url: str) -> str:
    page.goto(url)
    start = page.get_by_role("button", name="Start", exact=True)
    start.wait_for(timeout=90_000)
    start.click()
    page.wait_for_function(
        "(() => { const p = document.querySelector('[data-testid=stProgress]');"
        " const m = p && p.innerText.match(/running · step ([\\d,]+) \\//);"
        " return m && parseInt(m[1].replace(/,/g, '')) > 0; })()", timeout=120_000)
    return re.search(r"run=([^&]+)", page.url).group(1)


def test_a_killed_worker_fails_its_run_in_its_tab_while_the_other_tab_keeps_training(server):
    from playwright.sync_api import expect, sync_playwright

    url, runs = server
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            victim_tab = browser.new_context().new_page()
            victim_tab.set_viewport_size({"width": 1400, "height": 1000})
            other_tab = browser.new_context().new_page()  # another browser session: another owner
            other_tab.set_viewport_size({"width": 1400, "height": 1000})
            victim = _start(victim_tab, url)
            other = _start(other_tab, url)
            assert victim != other
            pid = json.loads((runs / victim / "status.json").read_text())["pid"]
            assert pid != os.getpid()
            os.kill(pid, signal.SIGKILL)  # the worker training the victim's run

            failed = victim_tab.get_by_text(re.compile(r"The run failed: .*killed by SIGKILL"))
            expect(failed).to_be_visible(timeout=60_000)
            assert "failed" in victim_tab.locator("[data-testid=stProgress]").first.inner_text()
            victim_tab.screenshot(path=str(ARTIFACTS / "worker-killed.png"))

            before = _step(other_tab)
            deadline = time.monotonic() + 60
            while _step(other_tab) <= before + 50 and time.monotonic() < deadline:
                other_tab.wait_for_timeout(1000)
            assert _step(other_tab) > before + 50, "the other tab's run stopped training"
            assert "running" in other_tab.locator("[data-testid=stProgress]").first.inner_text()
            assert other_tab.locator("[data-testid=stException]").count() == 0
            status = json.loads((runs / victim / "status.json").read_text())
            assert status["status"] == "failed" and "SIGKILL" in status["error"]
        finally:
            browser.close()
