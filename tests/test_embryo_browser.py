"""Embryo grading page in a real browser: upload a generated embryo and see both answers; upload bad files and
see a clear message, never an exception."""
from __future__ import annotations

import numpy as np
import pytest

from core import registry, synthetic
from core.imageio import encode_png
from tests.conftest import assert_no_errors, wait_for_app
from tests.test_embryo import bad_uploads

try:
    registry.card("embryo-grade")
except (KeyError, registry.CardError):
    pytest.skip("weights/embryo-grade is not installed", allow_module_level=True)


def upload(page, name: str, data: bytes, mime: str = "image/png") -> None:
    wait_for_app(page, 120_000)  # the previous run (heat maps, what-if) has finished: this upload starts a fresh run
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(
        {"name": name, "mimeType": mime, "buffer": data})


def test_upload_single_embryo_then_bad_files(app_url, page, tmp_path):
    page.goto(f"{app_url}/embryo")
    wait_for_app(page)
    upload(page, "blastocyst.png", encode_png(synthetic.embryo("blastocyst", size=128, seed=5, field=448)[0]))
    page.get_by_text("What drove each answer").wait_for(timeout=180_000)  # the model's first, cold load
    answers = page.locator('[data-testid="stMarkdown"] h3')
    answers.first.wait_for(timeout=30_000)
    assert answers.count() == 2 and all(" %" in answers.nth(i).inner_text() for i in range(2))
    body = page.inner_text("body")
    assert "embryo-grade v" in body and "may not show one whole embryo" not in body
    assert "A grey image, as time-lapse incubators record" not in body  # a colour photo
    assert_no_errors(page)

    grey = synthetic.embryo("cleavage", size=128, seed=6, field=448, grey=True)[0]
    upload(page, "frame.png", encode_png(grey))
    page.get_by_text("A grey image, as time-lapse incubators record").wait_for(timeout=60_000)
    assert_no_errors(page)

    empty = np.full((320, 320, 3), 160, np.uint8)
    upload(page, "empty.png", encode_png(empty))
    page.locator('[data-testid="stAlertContentError"]').filter(has_text="one flat colour").wait_for(timeout=60_000)
    assert_no_errors(page)
    dish_floor = np.uint8(np.clip(np.random.default_rng(0).normal(160, 12, (320, 320, 3)), 0, 255))  # no embryo
    upload(page, "floor.png", encode_png(dish_floor))
    page.get_by_text("may not show one whole embryo").wait_for(timeout=60_000)
    assert_no_errors(page)

    for name, (data, message) in bad_uploads(tmp_path).items():
        upload(page, name, data, "image/jpeg" if name.endswith(".jpg") else "image/png")
        page.locator('[data-testid="stAlertContentError"]').filter(has_text=message).wait_for(timeout=60_000)
        assert_no_errors(page)
