"""Browser benchmark of the what-if loop: slider change -> prediction updated on screen, p50 over N changes.

Default: trains the tiny Keras what-if toy model (a few seconds) into a temp weights folder, serves the test harness
page (tests/whatif_harness/page.py) on a free loopback port and drives it with headless Chromium (Playwright).
`--url` benchmarks a page already running instead (e.g. a task page; `--upload` gives it an image first, `--open`
clicks the expander or tab that holds the what-if panel).

Each change presses ArrowRight (then ArrowLeft) on the Brightness slider's thumb; the clock stops when the panel's
"Changes applied: … Brightness +N levels" caption, which is drawn after the new outputs, shows the new value.

    python scripts/bench_whatif_browser.py [--changes 25] [--json]
    python scripts/bench_whatif_browser.py --url http://127.0.0.1:8501/embryo --upload embryo.png --open What-if
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
STEP = 5  # the Brightness slider's step (core.whatif.PERTURBATIONS["brightness"].step)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_harness(weights: Path, model_id: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "WHATIF_WEIGHTS": str(weights), "WHATIF_MODEL": model_id, "PYTHONPATH": str(ROOT),
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "tests" / "whatif_harness" / "page.py"),
         "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                return proc, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("the harness page did not start within 90 s")


CAPTION_JS = """expected => [...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
    .some(e => e.textContent.includes('Changes applied:') && e.textContent.includes(expected))"""


def expected_caption(value: int) -> str:
    return f"Brightness {value:+d} levels" if value else "Changes applied: none"


def measure(url: str, changes: int, upload: str | None = None, open_text: str | None = None,
            timeout_ms: int = 60_000) -> list[float]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        if upload:
            page.wait_for_selector('[data-testid="stFileUploader"] input[type=file]', state="attached",
                                   timeout=timeout_ms)
            page.locator('[data-testid="stFileUploader"] input[type=file]').first.set_input_files(upload)
        if open_text:
            target = page.locator('[data-testid="stExpander"] summary, [role="tab"]').filter(has_text=open_text).first
            target.wait_for(timeout=timeout_ms)
            target.click()
        page.wait_for_function(CAPTION_JS, arg=expected_caption(0), timeout=timeout_ms)
        thumb = page.locator('[data-testid="stSlider"]').filter(has_text="Brightness").locator('input[type="range"]')
        thumb.focus()
        value, times = 0, []
        for i in range(changes):
            direction = 1 if i < changes - changes // 4 else -1  # mostly up, then back down: every value is new
            value += direction * STEP
            start = time.perf_counter()
            thumb.press("ArrowRight" if direction > 0 else "ArrowLeft")
            page.wait_for_function(CAPTION_JS, arg=expected_caption(value), polling="raf", timeout=timeout_ms)
            times.append(1000 * (time.perf_counter() - start))
            time.sleep(0.2)  # let the rerun settle (status widget, late deltas) before the next change
        browser.close()
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", help="benchmark this running page instead of the harness")
    ap.add_argument("--upload", help="image to upload into the page's first file uploader (with --url)")
    ap.add_argument("--open", help="with --url: click the expander or tab whose title contains this text")
    ap.add_argument("--changes", type=int, default=25, help="slider changes to time (>= 20)")
    ap.add_argument("--model", default="whatif-keras", help="harness model: whatif-keras or whatif-torch")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    proc = None
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url
        if url is None:
            sys.path.insert(0, str(ROOT))
            from tests.whatif_harness import models

            (models.keras_model if args.model == "whatif-keras" else models.torch_model)(Path(tmp))
            proc, url = serve_harness(Path(tmp), args.model)
        try:
            times = measure(url, args.changes, args.upload, args.open)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(10)
    q = statistics.quantiles(times, n=20)
    result = {"url": args.url or f"harness ({args.model})", "changes": len(times),
              "p50_ms": round(statistics.median(times), 1), "p95_ms": round(q[18], 1),
              "min_ms": round(min(times), 1), "max_ms": round(max(times), 1), "cpu_count": os.cpu_count(),
              "load_avg_1min": round(os.getloadavg()[0], 2), "times_ms": [round(t, 1) for t in times]}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"slider change -> prediction shown: p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms over "
              f"{result['changes']} changes ({result['url']}; load average {result['load_avg_1min']} on "
              f"{result['cpu_count']} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
