"""History page (AppTest): filters, opening a record, reports, CSV; sign-in off and on (users and admins)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import update
from streamlit.testing.v1 import AppTest

from core import auth, records, synthetic
from core.imageio import encode_png
from core.results import Prediction

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "app_pages" / "history.py")


@pytest.fixture
def db(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'records.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.chdir(ROOT)
    yield url
    records.dispose(url)


def add(name, model="embryo-grade", task="embryo", case=None, user=None, image=None, whatif=None, days_ago=0,
        extras=None):
    outputs = ({"pcos": {"healthy": 0.35, "pcos": 0.65}} if model == "pcos" else {} if model == "sperm-seg"
               else {"stage": {"cleavage": 0.35, "blastocyst": 0.65}})
    pred = Prediction(model, "1.0", name, "ab" * 32, outputs, extras=extras or {})
    new_id = records.record(pred, task=task, card={"id": model, "version": "1.0", "sha256": "e" * 64}, case_code=case,
                            user=user, image=image, whatif=whatif, input_size=(64, 64))
    if days_ago:
        with records.engine().begin() as conn:
            conn.execute(update(records.RecordRow).where(records.RecordRow.id == new_id)
                         .values(created_at=datetime.now(timezone.utc) - timedelta(days=days_ago)))
    return new_id


def texts(at) -> str:
    return " ".join(str(e.value) for kind in ("markdown", "caption", "info", "warning", "error", "subheader")
                    for e in getattr(at, kind))


def table_ids(at) -> list[int]:
    return [int(i) for i in at.dataframe[0].value["id"]]


def test_empty_history_says_where_records_come_from(db):
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert "No records match" in texts(at)


def test_filters_open_a_record_with_its_image_whatif_and_reports(db):
    img = synthetic.embryo(size=64)[0]
    a = add("a.png", case="IVF-001", image=encode_png(img), whatif={"blur_sigma": 1.5})
    b = add("b.png", model="pcos", task="pcos", case="US-2",
            extras={"warnings": ["This may not be a B-mode ultrasound frame: it is in colour."], "mm_per_px": 0.15,
                    "size_questioned": False})
    old = add("old.png", case="IVF-000", days_ago=60)
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert table_ids(at) == [b, a]  # newest first; the 60-day-old one is outside the default 30 days
    assert at.dataframe[0].value["result"].tolist() == ["⚠ Resembles: PCOS-labelled frames",  # it was warned
                                                       "stage: blastocyst"]
    at.multiselect[0].select("pcos").run()  # task
    assert table_ids(at) == [b]
    at.multiselect[0].unselect("pcos").run()
    at.text_input[0].input("ivf").run()  # case code
    assert table_ids(at) == [a]
    at.date_input[0].set_value((datetime.now().date() - timedelta(days=90), datetime.now().date())).run()
    assert table_ids(at) == [a, old]
    labels = [b.label for b in at.get("download_button")]
    assert "Download these 2 records (CSV)" in labels

    at.query_params["record"] = str(a)
    at.run()
    assert not at.exception
    assert f"Record #{a}" in texts(at) and "blastocyst 65.0%" in texts(at)
    assert len(at.get("image")) == 1 and at.json[0].value is not None
    assert {"Report (PDF)", "Report (HTML)"} <= {b.label for b in at.get("download_button")}

    add("field.png", model="sperm-seg", task="sperm", case="IVF-003",
        extras={"n_heads": 12, "pct_normal_classifier": 28.3, "pct_normal_both": 8.3})
    at.run()  # not blank; the strict share, as the page leads with it
    assert at.dataframe[0].value["result"].iloc[0] == "heads found 12, normal by both, strict (%) 8.3"
    assert "user" not in at.dataframe[0].value.columns  # sign-in is off: always empty

    at.query_params["record"] = str(b)
    at.run()
    assert "not kept with this record" in texts(at)
    assert "This may not be a B-mode ultrasound frame: it is in colour." in [w.value for w in at.warning]  # as shown
    assert "mm per pixel" in at.table[0].value.index  # details named as in reports, not "mm_per_px"
    details = at.table[0].value["Details"]
    assert "no" in details.tolist() and not details.isin(["True", "False"]).any()  # yes / no, as in reports
    # a PCOS record reads as the card words it, not "pcos: pcos"
    assert "**Resembles: PCOS-labelled frames** · PCOS-labelled frames 65.0%, healthy-labelled frames 35.0%" in texts(at)


def test_sign_in_on_users_see_their_own_records_and_admins_all(db):
    mine = add("mine.png", user="ann")
    theirs = add("theirs.png", user="bob")
    secrets = {"auth": {"users": {"ann": {"password_hash": auth.hash_password("s3cret")},
                                  "boss": {"password_hash": auth.hash_password("b0ss"), "role": "admin"}}}}

    def app():
        import runpy

        from ui.records import require_login

        require_login()
        runpy.run_path("app_pages/history.py")

    at = AppTest.from_function(app, default_timeout=60)
    at.secrets["auth"] = secrets["auth"]
    at.run()
    assert not at.exception
    assert "Sign in" in [t.value for t in at.title] and not at.dataframe  # nothing shown before sign-in
    at.text_input[0].input("ann")
    at.text_input[1].input("wrong")
    at.button[0].click().run()
    assert "wrong password" in texts(at) and not at.dataframe
    at.text_input[0].input("ann")
    at.text_input[1].input("s3cret")
    at.button[0].click().run()
    assert not at.exception
    assert table_ids(at) == [mine] and "Signed in as **ann**" in texts(at)
    at.query_params["record"] = str(theirs)
    at.run()
    assert "not yours to see" in texts(at)

    admin = AppTest.from_function(app, default_timeout=60)
    admin.secrets["auth"] = secrets["auth"]
    admin.run()
    admin.text_input[0].input("boss")
    admin.text_input[1].input("b0ss")
    admin.button[0].click().run()
    assert table_ids(admin) == [theirs, mine] and "(admin)" in texts(admin)
    admin.session_state["case_code"] = "BOSS-CASE"
    admin.session_state["_recorded"] = {"k": (1, "BOSS-CASE", False, "r")}
    admin.button(key="auth_sign_out").click().run()
    assert "Sign in" in [t.value for t in admin.title]
    # the next person at this browser inherits nothing: not the case code, not the records said saved
    assert "case_code" not in admin.session_state and "_recorded" not in admin.session_state


def test_sign_in_off_by_default_and_records_carry_no_user(db):
    def app():
        from ui.records import current_user, require_login

        import streamlit as st

        st.write(f"user={require_login()} current={current_user()}")

    at = AppTest.from_function(app, default_timeout=30).run()
    assert not at.exception and "user=None current=None" in texts(at)


def test_history_opened_directly_with_sign_in_on_shows_no_records_before_sign_in(db):
    add("secret.png", user="ann", case="IVF-SECRET")
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.secrets["auth"] = {"users": {"ann": {"password_hash": auth.hash_password("pw"), "role": "user"}}}
    at.run()
    assert not at.exception
    assert "Sign in" in [t.value for t in at.title] and not at.dataframe and "IVF-SECRET" not in texts(at)
