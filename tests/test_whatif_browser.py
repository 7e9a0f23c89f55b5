"""Browser test of the what-if panel on its harness page: a slider and a painted stroke change the prediction."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import pytest

from core import synthetic
from tests.conftest import ROOT, _free_port, assert_no_errors

CAPTION = """expected => [...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
    .some(e => e.textContent.includes('Changes applied:') && e.textContent.includes(expected))"""


@pytest.fixture(scope="module")
def harness_url():
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "WHATIF_WEIGHTS"}  # the numpy stand-in model
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "tests" / "whatif_harness" / "page.py"),
         "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        raise RuntimeError("the what-if harness did not start within 90 s")
    yield url
    proc.terminate()
    proc.wait(10)


def modified_label(page) -> str:
    return page.locator('[data-testid="stMetricLabel"]').nth(1).inner_text().strip()


def test_slider_and_painting_change_the_prediction(harness_url, page):
    page.goto(harness_url)
    page.wait_for_function(CAPTION, arg="none", timeout=60_000)
    assert modified_label(page) == "spot: present"

    slider = page.locator('[data-testid="stSlider"]').filter(has_text="Brightness").locator('input[type="range"]')
    slider.press("Home")  # the minimum, -100 grey levels: the bright square is no longer bright
    page.wait_for_function(CAPTION, arg="Brightness -100 levels", timeout=30_000)
    assert modified_label(page) == "spot: absent"
    assert page.get_by_text("the prediction changed from").count() == 1
    page.get_by_role("button", name="Reset adjustments").click()
    page.wait_for_function(CAPTION, arg="none", timeout=30_000)
    assert modified_label(page) == "spot: present"

    page.get_by_role("tab", name="Paint & occlude").click()
    brush = page.locator('[data-testid="stSlider"]').filter(has_text="Brush size").locator('input[type="range"]')
    brush.press("End")  # the widest brush
    time.sleep(1)
    canvas = page.locator("canvas").last
    canvas.wait_for(timeout=30_000)
    box = canvas.bounding_box()
    _, truth = synthetic.bright_spot(True, 192, seed=3, side=40)  # the harness's default image
    x0, y0, x1, y1 = truth["box"]
    scale = box["width"] / 192
    for row in range(y0 - 4, y1 + 8, 12):  # brush strokes across the square, overlapping
        page.mouse.move(box["x"] + (x0 - 10) * scale, box["y"] + row * scale)
        page.mouse.down()
        for col in range(x0 - 10, x1 + 12, 4):
            page.mouse.move(box["x"] + col * scale, box["y"] + row * scale)
        page.mouse.up()
    page.wait_for_function(CAPTION, arg="fill with surrounding background", timeout=30_000)
    page.wait_for_function("() => document.querySelectorAll('[data-testid=\"stMetricLabel\"]')[1]"
                           ".innerText.trim() === 'spot: absent'", timeout=30_000)
    assert_no_errors(page)


def test_bad_upload_is_a_clear_message(harness_url, page, tmp_path):
    page.goto(harness_url)
    page.wait_for_function(CAPTION, arg="none", timeout=60_000)
    bad = tmp_path / "scan.png"
    bad.write_text("this is not an image")
    page.locator('[data-testid="stFileUploader"] input[type=file]').first.set_input_files(str(bad))
    page.wait_for_selector('[data-testid="stAlertContentError"]', timeout=30_000)
    assert "scan.png" in page.locator('[data-testid="stAlertContentError"]').first.inner_text()
    assert_no_errors(page)
