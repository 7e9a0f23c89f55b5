"""Browser tests of Batch scoring and History, on an app of their own: a tiny model in a temp weights folder and a
temp case-records database, so they touch neither weights/ nor records.db."""
from __future__ import annotations

from pathlib import Path

import pytest

from core import records
from core.imageio import encode_png
from core import synthetic
from tests.conftest import assert_no_errors, streamlit_server, wait_for_app
from tests.test_batch import make_tiny_weights, write_inputs

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def records_app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("records_app")
    weights = make_tiny_weights(tmp / "weights")
    url = f"sqlite:///{tmp / 'records.db'}"
    env = {"REPRO_WEIGHTS_DIR": str(weights), "DATABASE_URL": url, "OMP_NUM_THREADS": "1"}
    with streamlit_server(env=env, log=tmp / "streamlit.log") as base:
        yield type("App", (), {"url": base, "db": url, "tmp": tmp})
    records.dispose(url)


def test_batch_page_uploads_images_and_a_bad_file(records_app, page):
    files = write_inputs(records_app.tmp / "uploads", 4, corrupt=("text.png",))
    page.goto(f"{records_app.url}/batch")
    wait_for_app(page)
    page.get_by_text("Score a whole set of images").wait_for()
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files([str(p) for p in files])
    page.get_by_text("text.png").first.wait_for()
    page.get_by_role("button", name="Score").click()
    page.get_by_text("scored,").first.wait_for(timeout=90_000)
    wait_for_app(page)
    assert_no_errors(page)
    body = page.locator('[data-testid="stMain"]').inner_text()
    assert "4 scored, 1 skipped" in body.replace("*", "")
    assert "Skipped files (1)" in body
    page.get_by_role("button", name="Download CSV").wait_for(timeout=60_000)
    assert page.get_by_role("button", name="Download CSV").count() == 1
    page.get_by_role("button", name="Download Excel").wait_for(timeout=60_000)
    page.screenshot(path=str(ROOT / ".pytest_cache" / "batch.png"), full_page=True)
    assert records.count(records_app.db) >= 4


def test_history_page_lists_filters_and_opens_a_record(records_app, page):
    img = synthetic.embryo(size=96, seed=5)[0]
    from core.results import Prediction

    pred = Prediction("tiny-cls", "0.1", "case-image.png", "cd" * 32, {"quality": {"not_good": 0.2, "good": 0.8}})
    new_id = records.record(pred, task="embryo", case_code="IVF-BROWSER", image=encode_png(img),
                            whatif={"brightness": 12}, input_size=(96, 96), url=records_app.db)
    page.goto(f"{records_app.url}/history")
    wait_for_app(page)
    page.get_by_text("select a row to open it").wait_for()
    assert_no_errors(page)
    page.get_by_label("Case code contains").fill("browser")
    page.get_by_label("Case code contains").press("Enter")
    page.get_by_text("1 record ·").wait_for()
    page.goto(f"{records_app.url}/history?record={new_id}")
    wait_for_app(page)
    page.get_by_text(f"Record #{new_id}").wait_for()
    assert_no_errors(page)
    page.get_by_text("96×96 px").wait_for()
    body = page.locator('[data-testid="stMain"]').inner_text()
    assert "good 80.0%" in body and "case IVF-BROWSER" in body and "What-if settings" in body
    assert page.locator('[data-testid="stJson"]').count() >= 1
    assert page.get_by_role("button", name="Report (PDF)").count() == 1
    page.locator('[data-testid="stImage"] img').first.wait_for()  # the stored image renders after the text
    assert page.locator('[data-testid="stImage"] img').count() >= 1
    page.screenshot(path=str(ROOT / ".pytest_cache" / "history.png"), full_page=True)


def test_history_selection_does_not_follow_its_row_position_into_another_record(records_app, page):
    """Open the newest record, then filter: Streamlit keeps a selection by row position, which must not open the
    record that now sits in that row (another case)."""
    from core.results import Prediction

    ids = {code: records.record(Prediction("tiny-cls", "0.1", f"{code}.png", code.encode().hex().ljust(64, "0"),
                                           {"quality": {"not_good": 0.4, "good": 0.6}}),
                                task="embryo", case_code=code, url=records_app.db) for code in ("IVF-OLDER", "IVF-NEWEST")}
    page.goto(f"{records_app.url}/history")
    wait_for_app(page)
    grid = page.locator('[class*="st-key-history_table"] [data-testid="stDataFrame"]')
    grid.wait_for(state="visible", timeout=60_000)
    bounds = grid.bounding_box()
    page.mouse.click(bounds["x"] + 12, bounds["y"] + 35 * 1.5)  # the first row: the newest record
    page.get_by_text(f"Record #{ids['IVF-NEWEST']}").wait_for(timeout=60_000)
    wait_for_app(page)  # the record's image and reports are drawn after its title
    page.get_by_label("Case code contains").fill("IVF-OLDER")
    page.get_by_label("Case code contains").press("Enter")
    page.get_by_text("1 record ·").wait_for(timeout=60_000)
    wait_for_app(page)
    body = page.locator('[data-testid="stMain"]').inner_text()
    assert f"Record #{ids['IVF-OLDER']} ·" not in body and f"Record #{ids['IVF-NEWEST']} ·" not in body
    assert_no_errors(page)
