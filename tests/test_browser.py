"""The real app in a real browser: `streamlit run` as a subprocess, driven by headless Chromium.

Starts a 2-D run from the UI and checks that the step counter and the loss chart change on their own
(no clicks in between); saves a screenshot of every page to test-artifacts/ for a person to look at.
Needs /usr/bin/chromium (apt-get install chromium) and the playwright Python package; never runs
`playwright install`.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAGES = {"sampling": "Sampling", "plugins": "Plugins", "compare": "Compare", "runs": "Runs"}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing: apt-get install -y chromium"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"streamlit did not answer at {url} within {timeout:.0f} s")


@pytest.fixture
def app_server(tmp_path):
    """`streamlit run explorer/app.py` on a free port, runs in a temporary folder; stopped by its PID."""
    port = _free_port()
    env = dict(os.environ, GENEX_RUNS_DIR=str(tmp_path / "runs"))
    log = open(tmp_path / "streamlit.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "explorer/app.py", "--server.headless", "true",
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none", "--server.port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)  # the server we started, by its PID
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        log.close()
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "streamlit.log").write_bytes((tmp_path / "streamlit.log").read_bytes())


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
        finally:
            browser.close()
