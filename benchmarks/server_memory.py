"""The app server's memory across runs: runs train in worker processes and ended runs are read back
from their folders, so the server should not grow with every run.

    python benchmarks/server_memory.py [--runs 5] [--steps 1500] [--tabs 3]

Serves the app, opens it in headless Chromium, and prints the Streamlit server's resident memory
(RSS; workers are separate processes) after the first page draw (the baseline), after each run
started from the Train page has finished, and after the tabs are closed. Needs /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from browser_support import CHROMIUM, CHROMIUM_ARGS, streamlit_app  # noqa: E402

DONE = "/finished|failed|stopped/.test((document.querySelector('[data-testid=stProgress]') || {}).innerText || '')"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--tabs", type=int, default=3)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="genex-mem-") as tmp, streamlit_app(Path(tmp)) as url, sync_playwright() as pw:
        port = url.rsplit(":", 1)[1]
        pid = int(subprocess.run(["pgrep", "-f", f"server.port {port}"], capture_output=True, text=True).stdout.split()[0])
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pages = []
        for _ in range(args.tabs):
            page = browser.new_context().new_page()
            page.set_viewport_size({"width": 1400, "height": 1000})
            page.goto(url)
            page.get_by_role("button", name="Start", exact=True).wait_for(timeout=120_000)
            pages.append(page)
        time.sleep(2)
        base = rss_mb(pid)
        print(f"server RSS after {args.tabs} tabs drew the Train page: {base:7.1f} MB (baseline)")
        for page in pages:  # every tab trains the same short pipeline
            box = page.get_by_label("steps", exact=True).first
            box.fill(str(args.steps))
            box.press("Enter")
            page.wait_for_timeout(1500)
        for i in range(args.runs):
            page = pages[i % len(pages)]
            page.get_by_role("button", name="Start", exact=True).click()
            page.wait_for_function(DONE.replace("finished|failed|stopped", "running"), timeout=120_000)
            page.wait_for_function(DONE, timeout=1_800_000, polling=1000)
            print(f"after run {i + 1} finished:                       {rss_mb(pid):7.1f} MB")
        for page in pages:
            page.context.close()
        time.sleep(5)
        end = rss_mb(pid)
        print(f"after the tabs closed:                         {end:7.1f} MB  ({end - base:+.1f} MB over the baseline)")
        browser.close()


if __name__ == "__main__":
    main()
