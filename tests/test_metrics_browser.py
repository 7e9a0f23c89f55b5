"""Browser tests of the Metrics and Confusion pages (Playwright + system Chromium) on a generated evaluation store
served by its own app (REPRO_WEIGHTS_DIR), including a click on a confusion-matrix cell."""
from __future__ import annotations

import io
import zipfile

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from core import synthetic
from tests.conftest import ROOT, assert_no_errors, streamlit_server, wait_for_app


@pytest.fixture(scope="module")
def store_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    synthetic.evaluation_store(root, n=40)
    with streamlit_server(env={"REPRO_WEIGHTS_DIR": str(root)}) as url:
        yield url


def open_page(page, url: str, stem: str) -> None:
    page.goto(url)  # the app's navigation first, then the page by its URL path
    wait_for_app(page)
    page.goto(f"{url}/{stem}")
    wait_for_app(page, 90_000)


def test_confusion_page_cell_click_shows_its_images(page, store_url):
    open_page(page, store_url, "confusion")
    page.wait_for_selector('[data-testid="stPlotlyChart"] .js-plotly-plot', timeout=90_000)
    assert page.get_by_text("True cleavage, called blastocyst").count() + \
        page.get_by_text("True blastocyst, called cleavage").count() == 1
    # the clickable layer of the counts matrix: markers in order (0,0), (0,1), (1,0), (1,1)
    marker = page.locator('[data-testid="stPlotlyChart"]').first.locator(".scatterlayer .trace").first.locator(".point")
    assert marker.count() == 4
    for _ in range(3):  # a click that lands while a rerun redraws the chart is lost: click again
        box = marker.nth(3).bounding_box()
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        try:
            page.get_by_text("True blastocyst, called blastocyst").wait_for(timeout=30_000)
            break
        except PlaywrightTimeout:
            wait_for_app(page)
    page.get_by_text("True blastocyst, called blastocyst").wait_for(timeout=30_000)
    wait_for_app(page)
    page.get_by_role("button", name="Open in what-if").first.wait_for(timeout=30_000)
    assert page.locator('[data-testid="stImage"]').count() >= 4
    assert_no_errors(page)


def test_metrics_page_figures_and_bad_upload(page, store_url, tmp_path):
    open_page(page, store_url, "metrics")
    page.get_by_text("stage: metrics at this threshold").wait_for(timeout=60_000)
    page.locator('[data-testid="stDataFrame"]').nth(1).wait_for(timeout=60_000)
    page.wait_for_selector('[data-testid="stPlotlyChart"] .js-plotly-plot', timeout=90_000)
    assert page.get_by_text("near-copies of training images").count() >= 1  # the planted leak
    assert page.get_by_text("sha256").count() >= 1  # every figure names its model file
    bad = tmp_path / "labelled.zip"
    bad.write_text("this is text, not a zip archive")
    page.locator('[data-testid="stForm"] input[type=file]').set_input_files(str(bad))
    page.get_by_text("labelled.zip").first.wait_for(timeout=30_000)
    page.get_by_role("button", name="Evaluate").click()
    page.get_by_text("could not be evaluated").wait_for(timeout=60_000)
    assert page.get_by_text("not a zip file").count() >= 1
    assert_no_errors(page)
    wrong = tmp_path / "wrong.zip"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("cats/a.png", b"x")
    wrong.write_bytes(buf.getvalue())
    page.locator('[data-testid="stForm"] input[type=file]').set_input_files(str(wrong))
    page.get_by_text("wrong.zip").first.wait_for(timeout=30_000)
    page.get_by_role("button", name="Evaluate").click()
    page.get_by_text("do not match this model").wait_for(timeout=60_000)
    assert_no_errors(page)
