"""record_prediction in a page: one record per prediction across reruns, case code and "keep image" applied even when
set afterwards, report buttons, and a database failure shown as a warning, never an exception."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import records

ROOT = Path(__file__).resolve().parent.parent


def page():
    import streamlit as st

    from core import synthetic
    from core.imageio import encode_png, read_image
    from core.results import Prediction
    from ui.records import case_controls, record_prediction

    with st.sidebar:
        case_controls()
    image = read_image(encode_png(synthetic.embryo(size=64, seed=st.session_state.get("seed", 0))[0]), name="e.png")
    pred = Prediction("embryo-grade", "1.0", image.name, image.sha256, {"stage": {"cleavage": 0.4, "blastocyst": 0.6}})
    st.session_state["last_id"] = record_prediction(pred, "embryo", image=image, whatif={"blur_sigma": 0.0})


@pytest.fixture
def db(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'records.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.chdir(ROOT)
    yield url
    records.dispose(url)


def test_one_record_per_prediction_with_case_code_and_image_added_later(db):
    at = AppTest.from_function(page, default_timeout=30).run()
    assert not at.exception
    first = at.session_state["last_id"]
    r = records.get(first)
    assert r.case_code is None and not r.has_image and r.input_width == 64 and r.whatif == {"blur_sigma": 0.0}
    assert "no case code" in at.caption[0].value
    assert {b.label for b in at.get("download_button")} == {"Report (PDF)", "Report (HTML)"}
    at.run()
    assert records.count() == 1
    at.sidebar.text_input(key="case_code").input("IVF-77").run()
    at.sidebar.checkbox(key="keep_image").check().run()
    r = records.get(first)
    assert records.count() == 1 and r.case_code == "IVF-77" and r.image[:4] == b"\x89PNG"
    assert "IVF-77" in at.caption[0].value and "image kept" in at.caption[0].value
    # the next patient's code typed while this result is on screen: the record stays with its case unless moved
    at.sidebar.text_input(key="case_code").input("IVF-78").run()
    assert records.get(first).case_code == "IVF-77" and "IVF-77" in at.caption[0].value
    assert "now reads **IVF-78**: it applies to your next image" in at.caption[1].value
    at.button(key=f"move-{first}").click().run()
    assert records.get(first).case_code == "IVF-78" and "IVF-78" in at.caption[0].value and len(at.caption) == 1
    at.sidebar.text_input(key="case_code").input("![x](http://evil/x.png) *A*").run()
    assert r"\!\[x\](http\://evil/x.png) \*A\*" in at.caption[1].value  # typed text, never an image or emphasis
    at.session_state["seed"] = 1  # another image: a new record
    at.run()
    assert records.count() == 2 and at.session_state["last_id"] != first


def test_unwritable_database_warns_and_the_page_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    at = AppTest.from_function(page, default_timeout=30).run()
    assert not at.exception
    assert "could not be saved to the case records" in at.warning[0].value
    assert at.session_state["last_id"] is None


def test_an_evaluation_image_opened_from_the_confusion_page_is_not_recorded(db):
    at = AppTest.from_function(page, default_timeout=30)
    at.session_state["handed_image"] = {"model": "embryo-grade", "path": "/data/hv/D3_001.jpg", "layout": None}
    at.run()
    assert not at.exception and at.session_state["last_id"] is None and records.count() == 0
    assert "not saved to the case records" in at.caption[0].value and not at.get("download_button")
    at.session_state["handed_image"] = {"model": "pcos", "path": "/data/pcos/1.jpg", "layout": None}  # another page's
    at.run()
    assert records.count() == 1


def test_server_files_are_for_admins_or_a_browser_on_the_server(monkeypatch):
    """With sign-in off, anyone who could reach the app over the network could score or stage folders of the
    server's disk (and keep the images for all to see in History)."""
    from types import SimpleNamespace

    import ui.records as ui_records
    from core.auth import User

    for address, allowed in [(None, True), ("127.0.0.1", True), ("::1", True), ("10.0.0.5", False)]:
        monkeypatch.setattr(ui_records.st, "context", SimpleNamespace(ip_address=address))
        assert ui_records.may_read_server_files(None) is allowed, address
    monkeypatch.setattr(ui_records.st, "context", SimpleNamespace(ip_address="10.0.0.5"))
    assert ui_records.may_read_server_files(User("boss", "admin"))
    assert not ui_records.may_read_server_files(User("ann", "user"))


def test_a_file_name_is_shown_as_written_never_as_markdown():
    """A non-image named '[Open report](https:example.com) **x**.jpg' gave an error box with a live link in it."""
    from streamlit.testing.v1 import AppTest

    def upload_page():
        import streamlit as st

        from ui.common import read_upload

        read_upload(st.file_uploader("f", key="f"))

    at = AppTest.from_function(upload_page, default_timeout=30).run()
    at.file_uploader[0].upload("[Open report](https:example.com) **x**.jpg", b"not an image", "image/jpeg").run()
    (error,) = at.error
    assert r"\[Open report\](https\:example.com) \*\*x\*\*.jpg" in error.value
