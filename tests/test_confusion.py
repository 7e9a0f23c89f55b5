"""Confusion-matrix page (AppTest through app.py): threshold, cell choice, gallery, and the what-if hand-off."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core import registry, synthetic

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    synthetic.evaluation_store(root, n=40)
    return root


@pytest.fixture
def app(store, monkeypatch):
    monkeypatch.setattr(registry.REGISTRY, "root", store)
    st.cache_data.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    at.switch_page("app_pages/confusion.py").run()
    assert not at.exception, at.exception[0].value
    return at


def header(at) -> str:
    return next(m.value for m in reversed(at.markdown) if m.value.startswith("**True "))


def cell_key(output="stage", model="embryo-grade", name="heldout"):
    return f"c_cell::{model}::{name}::{output}"


def test_cells_threshold_and_gallery(app, store):
    at = app
    assert at.selectbox(key=cell_key()).value in [(0, 1), (1, 0)]  # starts on the most frequent error
    at.selectbox(key=cell_key()).set_value((1, 1)).run()
    assert not at.exception
    n_05 = int(header(at).split(": ")[1].split()[0])
    assert header(at).startswith("**True blastocyst, called blastocyst") and n_05 > 10
    assert len([b for b in at.button if b.label == "Open in what-if"]) == min(n_05, 12)
    captions = [img.caption for e in at.get("image") for img in e.proto.imgs]
    assert captions and all(c.split(" — ")[0].count("/") == 1 for c in captions)  # folder/file: names repeat
    at.slider(key="c_stage_thr_stage").set_value(0.95).run()
    n_095 = int(header(at).split(": ")[1].split()[0])
    assert n_095 < n_05  # fewer blastocyst calls at a stricter threshold
    at.selectbox(key=cell_key()).set_value((1, 0)).run()
    n_missed = int(header(at).split(": ")[1].split()[0])
    assert n_missed + n_095 == 19  # the row of true blastocysts still sums to their count


def test_threshold_is_shared_with_the_metrics_page(app):
    at = app
    at.slider(key="c_stage_thr_stage").set_value(0.8).run()
    at.switch_page("app_pages/metrics.py").run()
    assert not at.exception
    assert at.slider(key="m_thr_stage").value == pytest.approx(0.8)


def test_what_if_button_opens_the_image_on_the_task_page(app):
    at = app
    buttons = [b for b in at.button if b.label == "Open in what-if"]
    if not (ROOT / "app_pages" / "embryo.py").is_file():
        assert buttons and all(b.disabled for b in buttons)
        pytest.skip("app_pages/embryo.py is not installed: the hand-off cannot be followed")
    name = next(img.caption for e in at.get("image") for img in e.proto.imgs).split(" — ")[0]
    buttons[0].click().run()
    assert any("Embryo" in t.value for t in at.title)
    # the task page reads the image itself (the synthetic store's model cannot load: an error, not the upload box)
    assert any(f"**{name}**" in i.value and "not saved to the case records" in i.value for i in at.info)
    assert not [r for r in at.radio if r.key == "embryo_source"]  # no choice of upload or example meanwhile
    at.switch_page("app_pages/embryo.py").run()  # AppTest's next run is on its own page, not st.switch_page's
    next(b for b in at.button if b.label == "Back to my images").click().run()
    assert not any("Opened from the Confusion" in i.value for i in at.info)
    assert at.radio(key="embryo_source").value == "Upload"


def test_multiclass_and_segmentation_evaluations(app):
    at = app
    at.selectbox(key="c_model").set_value("timelapse-stage").run()
    assert not at.exception
    assert at.selectbox(key=cell_key(model="timelapse-stage")).value != (0, 0)
    at.toggle(key="c_stage_use_stage").set_value(True).run()
    assert not at.exception and at.slider(key="c_stage_thrm_stage") is not None
    assert "sperm-seg" not in at.selectbox(key="c_model").options  # a segmentation evaluation has no matrix


def test_page_opens_on_a_classifier_when_a_detection_evaluation_was_last_picked(app):
    at = app
    at.switch_page("app_pages/metrics.py").run()
    at.selectbox(key="m_model").set_value("sperm-seg").run()
    assert not at.exception
    at.switch_page("app_pages/confusion.py").run()
    assert not at.exception
    assert at.selectbox(key="c_model").value != "sperm-seg" and at.selectbox(key=cell_key(model=at.selectbox(
        key="c_model").value, name=at.selectbox(key="c_eval").value)) is not None


def test_empty_store(tmp_path, monkeypatch):
    monkeypatch.setattr(registry.REGISTRY, "root", tmp_path)
    st.cache_data.clear()
    at = AppTest.from_file(str(ROOT / "app_pages" / "confusion.py"), default_timeout=60).run()
    assert not at.exception
    assert any("No stored evaluations" in i.value for i in at.info)


def test_heatmap_cells_carry_their_indices():
    """Each invisible marker of the clickable layer names its (true, called) cell."""
    page = ROOT / "app_pages" / "confusion.py"
    namespace: dict = {}
    exec(compile(page.read_text().split("# --- page")[0], str(page), "exec"), namespace)  # functions, not the page
    fig = namespace["heatmap"](np.array([[5, 1, 0], [2, 7, 1], [0, 0, 4]]), ["a", "b", "c"], True, "src")
    cells = fig.data[1]
    assert [tuple(c) for c in cells.customdata][:4] == [(0, 0), (0, 1), (0, 2), (1, 0)]
    assert list(cells.x[:4]) == ["a", "b", "c", "a"] and list(cells.y[:4]) == ["a", "a", "a", "b"]
    assert namespace["clicked_cell"]({"selection": {"points": [{"customdata": [2, 1]}]}}) == (2, 1)
