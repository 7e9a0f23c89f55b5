"""Case records: round trip, filters, visibility, CSV, migrations, concurrent writers and a writer killed mid-write.

Every test runs against SQLite, and against PostgreSQL when TEST_DATABASE_URL is set (.ci/postgres.sh starts one).
"""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from sqlalchemy import create_engine, text, update

from core import records
from core.results import Prediction

ROOT = Path(__file__).resolve().parent.parent
CARD = {"id": "embryo-grade", "version": "1.2", "sha256": "f" * 64}


def _pg_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        pytest.skip("TEST_DATABASE_URL is not set: start PostgreSQL with `eval \"$(.ci/postgres.sh)\"`")
    return records.database_url(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """An empty database: a fresh SQLite file, or a fresh schema on the PostgreSQL test server."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'records.db'}"
        yield url
    else:
        base = _pg_url()
        schema = f"t_{uuid.uuid4().hex[:12]}"
        admin = create_engine(base)
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        url = f"{base}?options=-csearch_path%3D{schema}"
        yield url
        records.dispose(url)
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
    records.dispose(url)


def prediction(name="a.png", p=0.8, sha=None) -> Prediction:
    return Prediction("embryo-grade", "1.2", name, sha or "ab" * 32,
                      probabilities={"stage": {"cleavage": 1 - p, "blastocyst": p}}, thresholds={"stage": 0.6},
                      extras={"cells": 4, "heads": [{"id": 1}], "ci95_normal_classifier": [1.5, 22.0]})


def test_round_trip_keeps_every_fact_and_the_image_only_when_asked(db_url):
    kept = records.record(prediction(), task="embryo", card=CARD, input_bytes=1234, input_size=(640, 480),
                          case_code="  IVF-042 ", user="ann", whatif={"blur_sigma": 1.5, "brightness": -10},
                          image=b"\x89PNG fake", url=db_url)
    plain = records.record(prediction("b.png", 0.1), task="embryo", card=CARD, url=db_url)
    r = records.get(kept, url=db_url)
    assert (r.model_id, r.model_version, r.model_sha256) == ("embryo-grade", "1.2", "f" * 64)
    assert (r.input_name, r.input_sha256, r.input_bytes, r.input_width, r.input_height) == ("a.png", "ab" * 32, 1234, 640, 480)
    assert r.case_code == "IVF-042" and r.username == "ann" and r.task == "embryo" and r.source == "app"
    assert r.labels == {"stage": "blastocyst"}
    assert r.summary == prediction().summary()
    assert r.whatif == {"blur_sigma": 1.5, "brightness": -10}
    assert r.has_image and r.image == b"\x89PNG fake" and r.image_mime == "image/png"
    assert datetime.now(timezone.utc) - r.created_at < timedelta(minutes=1)
    other = records.get(plain, url=db_url)
    assert not other.has_image and other.image is None and other.case_code is None and other.labels == {"stage": "cleavage"}
    assert records.get(999_999, url=db_url) is None


def test_filters_visibility_and_csv_export(db_url):
    ids = {}
    for name, task, model, case, user in [("a", "embryo", "embryo-grade", "IVF-1", "ann"),
                                          ("b", "embryo", "embryo-dish", "IVF-2", "bob"),
                                          ("c", "pcos", "pcos", "US-7", "ann"),
                                          ("d", "pcos", "pcos", None, None)]:
        card = {"id": model, "version": "1", "sha256": ""}
        ids[name] = records.record(prediction(name), task=task, card=card, case_code=case, user=user, url=db_url)
    old = datetime.now(timezone.utc) - timedelta(days=10)
    with records.engine(db_url).begin() as conn:
        conn.execute(update(records.RecordRow).where(records.RecordRow.id == ids["d"]).values(created_at=old))

    def names(**kw):
        return {r.input_name for r in records.query(url=db_url, **kw)}

    assert names() == {"a", "b", "c", "d"}
    assert [r.input_name for r in records.query(url=db_url)][-1] == "d"  # newest first
    assert names(task="pcos") == {"c", "d"}
    assert names(model=["embryo-grade", "embryo-dish"]) == {"a", "b"}
    assert names(case_code="ivf") == {"a", "b"} and names(case_code="us-7") == {"c"}
    assert names(case_code="%") == set()  # wildcards are literal
    today = date.today()
    assert names(start=today) == {"a", "b", "c"}
    assert names(end=today - timedelta(days=5)) == {"d"}
    assert names(start=today - timedelta(days=11), end=today - timedelta(days=9)) == {"d"}
    ann = SimpleNamespace(name="ann", is_admin=False)
    boss = SimpleNamespace(name="boss", is_admin=True)
    assert names(viewer=ann) == {"a", "c"} and names(viewer=boss) == {"a", "b", "c", "d"}
    assert records.get(ids["b"], viewer=ann, url=db_url) is None
    assert records.get(ids["b"], viewer=boss, url=db_url).input_name == "b"
    assert records.distinct("task", url=db_url) == ["embryo", "pcos"]
    assert records.distinct("model_id", viewer=ann, url=db_url) == ["embryo-grade", "pcos"]

    table = pd.read_csv(io.BytesIO(records.to_csv(records.query(task="embryo", url=db_url))))
    assert set(table["input"]) == {"a", "b"}
    assert {"id", "time", "task", "model", "version", "case_code", "user", "input_sha256", "stage",
            "p_stage_blastocyst", "whatif", "image_kept"} <= set(table.columns)
    assert table.loc[table["input"] == "a", "p_stage_blastocyst"].item() == pytest.approx(0.8)
    assert (table["threshold_stage"] == 0.6).all() and (table["cells"] == 4).all()  # task results ride along
    assert "heads" not in table and "timings_ms" not in table  # per-object lists stay in the record's JSON
    assert (table["ci95_normal_classifier_low"] == 1.5).all() and (table["ci95_normal_classifier_high"] == 22).all()
    assert table["time"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d").all()  # with its UTC offset


def test_a_sperm_field_is_found_under_its_head_classifier_too(db_url):
    """A field's record is the segmenter's, but its shares rest on the head classifier: filtering History by
    sperm-head left every field out."""
    for name, model, extras in [("field", "sperm-seg", {"head_model": "sperm-head v3.1"}), ("crop", "sperm-head", {}),
                                ("unclassified field", "sperm-seg", {"head_model": None})]:
        records.record(Prediction(model, "3", name, "cd" * 32, extras=extras), task="sperm",
                       card={"id": model, "version": "3", "sha256": ""}, url=db_url)

    def names(model):
        return {r.input_name for r in records.query(model=model, url=db_url)}

    assert names("sperm-head") == {"field", "crop"}
    assert names("sperm-seg") == {"field", "unclassified field"}
    assert names("sperm") == set()


def test_history_csv_keeps_warnings_and_never_holds_a_formula(db_url):
    """The History CSV dropped what the page warned of (a list), so an export lost which results were in doubt."""
    pred = Prediction("embryo-grade", "1.2", "=cmd|'/c calc'!A1.png", "ab" * 32,
                      probabilities={"stage": {"cleavage": 0.2, "blastocyst": 0.8}},
                      extras={"warnings": ["No zona-like outline"], "caveats": {"quality": "day 3: untested"}})
    records.record(pred, task="embryo", card=CARD, case_code="@SUM(1)", url=db_url)
    table = pd.read_csv(io.BytesIO(records.to_csv(records.query(url=db_url))))
    assert table.loc[0, "warnings"] == "No zona-like outline | day 3: untested"
    assert table.loc[0, "input"] == "'=cmd|'/c calc'!A1.png" and table.loc[0, "case_code"] == "'@SUM(1)"


def test_schema_is_at_head_matches_the_models_and_migrates_down_and_up(db_url):
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = records.alembic_config()
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert records.current_revision(db_url) == head
    eng = records.engine(db_url)
    with eng.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), records.Base.metadata) == []
    records.record(prediction(), task="embryo", card=CARD, url=db_url)
    with eng.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    with eng.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() is None
    records.upgrade(eng)
    assert records.current_revision(db_url) == head and records.count(db_url) == 0


def test_a_revision_is_dated_and_records_of_the_first_schema_are_kept_through_the_upgrade(db_url):
    """A report printed before a record was revised (a time-lapse review, a case code typed later) could not be told
    from the record as it is now: the record now says when it was last revised."""
    from alembic import command

    first = records.record(prediction(), task="embryo", card=CARD, url=db_url)
    cfg = records.alembic_config()
    eng = records.engine(db_url)
    with eng.begin() as conn:  # a database made before revisions were dated
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
    records.upgrade(eng)
    assert records.get(first, url=db_url).revised_at is None
    records.amend(first, case_code="IVF-7", url=db_url)
    revised = records.get(first, url=db_url).revised_at
    assert revised is not None and revised >= records.get(first, url=db_url).created_at
    records.set_case_code(first, "IVF-8", url=db_url)
    assert records.get(first, url=db_url).revised_at >= revised
    assert records.frame(records.query(url=db_url))["revised"].iloc[0] != ""


def test_eight_threads_writing_500_records_each_lose_nothing(db_url):
    records.engine(db_url)  # migrate once before the threads start
    errors: list[BaseException] = []

    def writer(t: int):
        try:
            for i in range(500):
                records.record(_numbered(t, i), task="embryo", card=CARD, case_code=f"T{t}", user=f"user{t}",
                               whatif={"i": i}, image=f"{t}/{i}".encode() if i % 50 == 0 else None, url=db_url)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors[0]
    rows = records.query(limit=None, url=db_url)
    assert len(rows) == 4000 and len({r.id for r in rows}) == 4000
    for r in rows:
        t, i = int(r.case_code[1:]), r.whatif["i"]
        assert r.summary == _numbered(t, i) and r.username == f"user{t}" and r.has_image == (i % 50 == 0)
    kept = [r for r in rows if r.has_image][:3]
    for r in kept:
        assert records.get(r.id, url=db_url).image == f"{r.case_code[1:]}/{r.whatif['i']}".encode()


def _numbered(t: int, i: int) -> dict:
    p = round((t * 500 + i) / 4000, 6)
    return {"model": "embryo-grade", "version": "1.2", "input": f"t{t}-{i}.png", "input_sha256": f"{t:02d}{i:062d}",
            "labels": {"stage": "blastocyst" if p >= 0.5 else "cleavage"},
            "probabilities": {"stage": {"cleavage": round(1 - p, 6), "blastocyst": p}}}


WRITER = textwrap.dedent("""
    import sys
    from core import records
    url = sys.argv[1]
    i = 0
    while True:
        summary = {"model": "m", "version": "1", "input": f"k{i}.png", "input_sha256": f"{i:064d}",
                   "labels": {"o": "x"}, "probabilities": {"o": {"x": 1.0}}, "payload": "z" * (i % 997)}
        new_id = records.record(summary, task="t", card={"id": "m", "version": "1", "sha256": ""},
                                image=bytes([i % 256]) * 5000, whatif={"i": i}, url=url)
        print(new_id, i, flush=True)
        i += 1
""")


def test_writer_killed_mid_write_leaves_a_clean_database_with_every_committed_record(db_url):
    records.engine(db_url)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, db_url], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    committed = {}
    try:
        for line in proc.stdout:
            new_id, i = map(int, line.split())
            committed[new_id] = i
            if len(committed) >= 300:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    records.dispose(db_url)  # open it afresh, as the restarted app would
    if db_url.startswith("sqlite"):
        with create_engine(db_url).connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    rows = {r.id: r for r in records.query(limit=None, url=db_url)}
    assert set(committed) <= set(rows)
    assert len(rows) - len(committed) <= 2  # at most the lines in flight when it was killed
    for new_id, i in committed.items():
        r = rows[new_id]
        assert r.whatif == {"i": i} and r.summary["payload"] == "z" * (i % 997) and r.input_sha256 == f"{i:064d}"
        assert records.get(new_id, url=db_url).image == bytes([i % 256]) * 5000
    records.record(prediction(), task="embryo", card=CARD, url=db_url)  # and it still takes writes


def test_processes_opening_a_new_database_at_once_migrate_it_once_and_all_write(db_url):
    script = textwrap.dedent("""
        import sys
        from core import records
        for i in range(20):
            records.record({"model": "m", "version": "1", "input": f"p{sys.argv[2]}-{i}", "input_sha256": "",
                            "probabilities": {"o": {"x": 1.0}}}, task="t", card={"id": "m", "version": "1", "sha256": ""},
                           url=sys.argv[1])
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, db_url, str(k)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
             for k in range(4)]
    for proc in procs:
        assert proc.wait(120) == 0, proc.stderr.read()
    from alembic.script import ScriptDirectory

    assert records.current_revision(db_url) == ScriptDirectory.from_config(records.alembic_config()).get_current_head()
    assert sorted(r.input_name for r in records.query(limit=None, url=db_url)) == sorted(
        f"p{k}-{i}" for k in range(4) for i in range(20))
