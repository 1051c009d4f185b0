"""Watching a run versus not: the default preset trained headless (`genex run`) and in the app with
the Train page open and refreshing in headless Chromium, in one run of this script.

    python benchmarks/live_vs_headless.py [--preset explorer/presets/ring8-nonsaturating.toml] [--steps N]

Prints steps/s headless and live (both from the runs' own logs, over the same steps, the first
10% left out as warm-up), their ratio (target >= 0.8, goal 0.9), how often the live part of the page
redrew per second (target >= 1.5, goal 2), the Streamlit server's CPU time per redraw (the
server-side cost of one refresh; target < 20 ms), and the time from the browser connecting to the
Train page's controls (cold: the first tab after the server started; warm: a second tab; target
<= 4 s, goal 3 s). Needs /usr/bin/chromium and the playwright package (never `playwright install`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from browser_support import CHROMIUM, CHROMIUM_ARGS, streamlit_app  # noqa: E402

PRESET = ROOT / "explorer" / "presets" / "ring8-nonsaturating.toml"
CLK = os.sysconf("SC_CLK_TCK")

# Records every change of the progress line (the live part redraws it with each refresh: the step moves).
WATCH_JS = """
() => {
  window.__genex = [];
  let last = null;
  setInterval(() => {
    const p = document.querySelector('[data-testid=stProgress]');
    const t = p ? p.innerText : null;
    if (t && t !== last) { window.__genex.push([performance.now(), t]); last = t; }
  }, 20);
}
"""


def rate(records: list[dict], lo: int, hi: int) -> float:
    """Steps per second between the first logged step >= lo and the last <= hi."""
    rows = [(r["step"], r["time"]) for r in records if "g_loss" in r and lo <= r["step"] <= hi]
    (s0, t0), (s1, t1) = rows[0], rows[-1]
    return (s1 - s0) / (t1 - t0)


def read_metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]


def server_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK  # utime + stime of the server process only (workers are others)


def streamlit_pid(port: str) -> int:
    out = subprocess.run(["pgrep", "-f", f"server.port {port}"], capture_output=True, text=True).stdout.split()
    return int(out[0])


def headless(preset: Path, steps: int | None, work: Path) -> Path:
    out = work / "headless"
    cmd = [sys.executable, "-m", "explorer", "run", str(preset), "--out", str(out), "--device", "cpu"]
    if steps:
        cmd += ["--steps", str(steps)]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


def live(preset: Path, steps: int | None, work: Path) -> dict:
    from playwright.sync_api import sync_playwright

    result: dict = {}
    with streamlit_app(work) as url, sync_playwright() as pw:
        pid = streamlit_pid(url.rsplit(":", 1)[1])
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            start = page.get_by_role("button", name="Start", exact=True)
            t0 = time.monotonic()
            page.goto(url)
            start.wait_for(timeout=120_000)
            result["first_paint_cold_s"] = time.monotonic() - t0
            second = browser.new_page(viewport={"width": 1400, "height": 1100})
            t0 = time.monotonic()
            second.goto(url)
            second.get_by_role("button", name="Start", exact=True).wait_for(timeout=60_000)
            result["first_paint_warm_s"] = time.monotonic() - t0
            second.close()
            if steps:
                box = page.get_by_label("steps", exact=True).first
                box.fill(str(steps))
                box.press("Enter")
                page.wait_for_timeout(1500)
            page.evaluate(WATCH_JS)
            start.click()
            page.wait_for_function("document.querySelector('[data-testid=stProgress]')"
                                   " && /running/.test(document.querySelector('[data-testid=stProgress]').innerText)",
                                   timeout=120_000)
            cpu0, w0 = server_cpu_s(pid), time.monotonic()
            page.wait_for_function("/finished|failed|stopped/.test(document.querySelector('[data-testid=stProgress]').innerText)",
                                   timeout=3_600_000, polling=500)
            cpu1, w1 = server_cpu_s(pid), time.monotonic()
            changes = page.evaluate("window.__genex")
            page.screenshot(path=str(work / "live.png"))
        finally:
            browser.close()
    running = [(t, s) for t, s in changes if "running" in s]
    refreshes = len(running) - 1
    seconds = (running[-1][0] - running[0][0]) / 1000 if refreshes > 0 else float("nan")
    result["refreshes_per_s"] = refreshes / seconds
    result["server_ms_per_refresh"] = 1000 * (cpu1 - cpu0) / max(1, refreshes)
    result["server_cpu_share"] = (cpu1 - cpu0) / (w1 - w0)
    runs = [p for p in (work / "runs").iterdir() if (p / "metrics.jsonl").exists()]
    result["run"] = runs[0]
    status_texts = [s for _, s in running]
    m = re.search(r"step [\d,]+ / [\d,]+", status_texts[-1]) if status_texts else None
    result["status_line"] = m.group(0) if m else ""
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", type=Path, default=PRESET)
    ap.add_argument("--steps", type=int, default=None, help="train this many steps instead of the preset's")
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} is missing: apt-get install -y chromium")
    with tempfile.TemporaryDirectory(prefix="genex-live-") as tmp:
        work = Path(tmp)
        h_dir = headless(args.preset, args.steps, work)
        lv = live(args.preset, args.steps, work)
        h_rec, l_rec = read_metrics(h_dir), read_metrics(lv["run"])
        total = max(r["step"] for r in h_rec if "g_loss" in r)
        lo = total // 10
        h_rate, l_rate = rate(h_rec, lo, total), rate(l_rec, lo, total)
        print(f"preset {args.preset.name}, {total} steps; rates over steps {lo}..{total}")
        print(f"headless `genex run`        {h_rate:8.1f} steps/s")
        print(f"live, Train page open       {l_rate:8.1f} steps/s")
        print(f"ratio live / headless       {l_rate / h_rate:8.2f}   (target >= 0.8, goal 0.9)")
        print(f"live part refreshes         {lv['refreshes_per_s']:8.2f} /s  (target >= 1.5, goal 2)")
        print(f"server CPU per refresh      {lv['server_ms_per_refresh']:8.1f} ms  (target < 20; "
              f"server busy {100 * lv['server_cpu_share']:.0f}% of the time)")
        print(f"controls shown, cold tab    {lv['first_paint_cold_s']:8.2f} s   (target <= 4, goal 3)")
        print(f"controls shown, warm tab    {lv['first_paint_warm_s']:8.2f} s")
        print(f"last status line seen       {lv['status_line']}")


if __name__ == "__main__":
    main()
