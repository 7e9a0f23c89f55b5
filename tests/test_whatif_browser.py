"""Browser test of the what-if panel on its harness page: a slider and a painted stroke change the prediction."""
from __future__ import annotations

import pytest

from core import synthetic
from tests.conftest import ROOT, assert_no_errors, streamlit_server, wait_for_app

CAPTION = """expected => [...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
    .some(e => e.textContent.includes('Changes applied:') && e.textContent.includes(expected))"""


@pytest.fixture(scope="module")
def harness_url():
    # without WHATIF_WEIGHTS the harness uses its numpy stand-in model
    with streamlit_server(ROOT / "tests" / "whatif_harness" / "page.py", env={"WHATIF_WEIGHTS": None}) as url:
        yield url


def modified_label(page) -> str:
    return page.locator('[data-testid="stMetricLabel"]').nth(1).inner_text().strip()


def test_slider_and_painting_change_the_prediction(harness_url, page):
    page.goto(harness_url)
    page.wait_for_function(CAPTION, arg="none", timeout=60_000)
    assert modified_label(page) == "spot: present"

    slider = page.locator('[data-testid="stSlider"]').filter(has_text="Brightness").locator('input[type="range"]')
    slider.press("Home")  # the minimum, -100 grey levels: the bright square is no longer bright
    page.wait_for_function(CAPTION, arg="Brightness -100 levels", timeout=30_000)
    assert modified_label(page) == "spot: no spot"
    assert page.get_by_text("the prediction changed from").count() == 1
    page.get_by_role("button", name="Reset adjustments").click()
    page.wait_for_function(CAPTION, arg="none", timeout=30_000)
    assert modified_label(page) == "spot: present"

    page.get_by_role("tab", name="Paint & occlude").click()
    brush = page.locator('[data-testid="stSlider"]').filter(has_text="Brush size").locator('input[type="range"]')
    brush.press("End")  # the widest brush
    wait_for_app(page)  # the canvas is rebuilt for the new width: a stroke drawn meanwhile is dropped
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
                           ".innerText.trim() === 'spot: no spot'", timeout=30_000)
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
