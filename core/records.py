"""Case records: every prediction made in the app, by a batch or by `python -m core predict`, kept in a database.

The database is any SQLAlchemy URL in DATABASE_URL (`sqlite:///path.db`, `postgresql://user@host/db`), by default
the SQLite file records.db in the project folder. Its schema is versioned with Alembic (core/migrations/) and is
upgraded to head on first use. Images are stored only when the caller passes them ("keep image" in the app).

Every write is one transaction: a record and its image are committed together or not at all. SQLite runs in WAL
mode with full sync, so concurrent writers wait for each other and a killed process leaves every committed record.
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, fields
from datetime import date, datetime, time as dtime, timedelta, timezone
from pathlib import Path
from typing import Iterable

from sqlalchemy import (JSON, Boolean, DateTime, ForeignKey, Integer, LargeBinary, String, Text, TypeDecorator, cast,
                        create_engine, event, func, or_, select)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from . import PROJECT_ROOT
from .results import SUMMARY_FACTS, csv_bytes, flat_results

DEFAULT_URL = f"sqlite:///{PROJECT_ROOT / 'records.db'}"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class UTCDateTime(TypeDecorator):
    """Stored as naive UTC (SQLite has no time zones), returned as aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        return value.replace(tzinfo=timezone.utc) if value is not None else None


class Base(DeclarativeBase):
    pass


class RecordRow(Base):
    __tablename__ = "records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    source: Mapped[str] = mapped_column(String(16))  # app | batch | cli
    task: Mapped[str] = mapped_column(String(64), index=True)
    model_id: Mapped[str] = mapped_column(String(64), index=True)
    model_version: Mapped[str] = mapped_column(String(64))
    model_sha256: Mapped[str] = mapped_column(String(64))
    input_name: Mapped[str] = mapped_column(String(512))
    input_sha256: Mapped[str] = mapped_column(String(64), index=True)
    input_bytes: Mapped[int | None] = mapped_column(Integer)
    input_width: Mapped[int | None] = mapped_column(Integer)
    input_height: Mapped[int | None] = mapped_column(Integer)
    case_code: Mapped[str | None] = mapped_column(String(128), index=True)
    username: Mapped[str | None] = mapped_column(String(128), index=True)
    labels: Mapped[dict] = mapped_column(JSON)  # output -> label
    summary: Mapped[dict] = mapped_column(JSON)  # Prediction.summary()
    whatif: Mapped[dict | None] = mapped_column(JSON)
    has_image: Mapped[bool] = mapped_column(Boolean, default=False)
    revised_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # last amend(), if any


class RecordImage(Base):
    __tablename__ = "record_images"

    record_id: Mapped[int] = mapped_column(ForeignKey("records.id", ondelete="CASCADE"), primary_key=True)
    mime: Mapped[str] = mapped_column(String(32))
    data: Mapped[bytes] = mapped_column(LargeBinary)


@dataclass
class Record:
    """One stored prediction, detached from the database."""

    id: int
    created_at: datetime
    source: str
    task: str
    model_id: str
    model_version: str
    model_sha256: str
    input_name: str
    input_sha256: str
    input_bytes: int | None
    input_width: int | None
    input_height: int | None
    case_code: str | None
    username: str | None
    labels: dict
    summary: dict
    whatif: dict | None
    has_image: bool
    revised_at: datetime | None = None
    image: bytes | None = None
    image_mime: str | None = None

    @classmethod
    def from_row(cls, row: dict, image=None) -> "Record":
        names = [f.name for f in fields(cls) if f.name not in ("image", "image_mime")]
        return cls(**{n: row[n] for n in names}, image=image.data if image else None,
                   image_mime=image.mime if image else None)


# --- engine ---------------------------------------------------------------------------------------------------------
def database_url(url: str | None = None) -> str:
    """The URL in use: the argument, else $DATABASE_URL, else the default SQLite file. postgresql:// means psycopg 3."""
    url = url or os.environ.get("DATABASE_URL") or DEFAULT_URL
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def describe_url(url: str | None = None) -> str:
    """The database for display, password hidden."""
    return make_url(database_url(url)).render_as_string(hide_password=True)


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def engine(url: str | None = None) -> Engine:
    """A shared engine for the URL, its schema upgraded to the newest migration (once per process)."""
    url = database_url(url)
    with _engines_lock:
        if url not in _engines:
            eng = _create_engine(url)
            upgrade(eng)
            _engines[url] = eng
        return _engines[url]


def dispose(url: str | None = None) -> None:
    """Close the pooled connections of a URL's engine (tests, shutdown)."""
    with _engines_lock:
        eng = _engines.pop(database_url(url), None)
    if eng is not None:
        eng.dispose()


def _create_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    eng = create_engine(url, connect_args={"timeout": 60})

    @event.listens_for(eng, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself, so DDL is transactional too
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(eng, "begin")
    def _on_begin(conn):
        # Writers take the write lock up front, so they queue on busy_timeout instead of failing on upgrade.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")

    return eng


def _writer(eng: Engine):
    return eng.execution_options(write=True).begin()


def upgrade(eng: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` with Alembic; safe when several processes start at once."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = alembic_config()
    head = ScriptDirectory.from_config(cfg).get_current_head()
    for attempt in range(10):
        with eng.connect() as conn:
            if revision == "head" and MigrationContext.configure(conn).get_current_revision() == head:
                return
        try:
            with _writer(eng) as conn:
                if conn.dialect.name == "postgresql":  # one migrator at a time; the others then find it done
                    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(734216)")
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
            return
        except DBAPIError:
            if attempt == 9:
                raise
            time.sleep(0.2 * (attempt + 1))


def alembic_config():
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def current_revision(url: str | None = None) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


# --- writing ----------------------------------------------------------------------------------------------------------
def record(prediction, *, task: str, card=None, input_bytes: int | None = None, input_size: tuple[int, int] | None = None,
           case_code: str | None = None, user: str | None = None, whatif: dict | None = None,
           image: bytes | None = None, image_mime: str = "image/png", source: str = "app",
           url: str | None = None) -> int:
    """Store one prediction (a core.results.Prediction or its summary()) and return the record id.

    card: the model's registry Card (or a dict with id, version, sha256); looked up from the registry when omitted.
    input_size: (width, height). image: the image bytes to keep, only when the user asked to keep it.
    """
    return record_many([dict(prediction=prediction, task=task, card=card, input_bytes=input_bytes,
                             input_size=input_size, case_code=case_code, user=user, whatif=whatif, image=image,
                             image_mime=image_mime, source=source)], url=url)[0]


def record_many(items: Iterable[dict], url: str | None = None) -> list[int]:
    """Store several predictions (each a dict of record()'s keyword arguments) in one transaction."""
    rows = [_row(**item) for item in items]
    if not rows:
        return []
    with _writer(engine(url)) as conn:
        ids = []
        for values, image in rows:
            new_id = conn.execute(RecordRow.__table__.insert().values(**values).returning(RecordRow.id)).scalar_one()
            if image is not None:
                conn.execute(RecordImage.__table__.insert().values(record_id=new_id, mime=image[1], data=image[0]))
            ids.append(new_id)
    return ids


UNCHANGED = object()  # amend's image: leave the kept image as it is


def amend(record_id: int, *, case_code: str | None, image=UNCHANGED, image_mime: str = "image/png",
          prediction=None, url: str | None = None) -> None:
    """Set a record's case code and kept image (bytes; None removes it; UNCHANGED leaves it): the user typed the code
    or ticked "keep image" after the prediction was made. prediction: the same prediction as the user has since
    reviewed it (e.g. follicles unticked), stored in place of the first."""
    case_code = (case_code or "").strip()[:128] or None
    values = dict(case_code=case_code, revised_at=datetime.now(timezone.utc))
    if image is not UNCHANGED:
        values["has_image"] = image is not None
    if prediction is not None:
        summary = _row(prediction, task="")[0]["summary"]
        values.update(summary=summary, labels=summary.get("labels") or {})
    with _writer(engine(url)) as conn:
        conn.execute(RecordRow.__table__.update().where(RecordRow.id == record_id).values(**values))
        if image is UNCHANGED:
            return
        conn.execute(RecordImage.__table__.delete().where(RecordImage.record_id == record_id))
        if image is not None:
            conn.execute(RecordImage.__table__.insert().values(record_id=record_id, mime=image_mime, data=bytes(image)))


def delete(record_id: int, url: str | None = None) -> None:
    with _writer(engine(url)) as conn:
        conn.execute(RecordImage.__table__.delete().where(RecordImage.record_id == record_id))
        conn.execute(RecordRow.__table__.delete().where(RecordRow.id == record_id))


def set_case_code(record_id: int, case_code: str | None, url: str | None = None) -> None:
    """Move a record to another case (None: to no case)."""
    case_code = (case_code or "").strip()[:128] or None
    with _writer(engine(url)) as conn:
        conn.execute(RecordRow.__table__.update().where(RecordRow.id == record_id).values(
            case_code=case_code, revised_at=datetime.now(timezone.utc)))


def _row(prediction, task, card=None, input_bytes=None, input_size=None, case_code=None, user=None, whatif=None,
         image=None, image_mime="image/png", source="app"):
    summary = prediction.summary() if hasattr(prediction, "summary") else dict(prediction)
    summary = json.loads(json.dumps(summary, default=_json_default))  # what the database returns, exactly
    model = _model_facts(card, summary)
    case_code = (case_code or "").strip() or None
    values = dict(
        created_at=datetime.now(timezone.utc), source=source, task=task, model_id=model["id"],
        model_version=str(model["version"]), model_sha256=model["sha256"], input_name=str(summary.get("input", ""))[:512],
        input_sha256=summary.get("input_sha256") or "", input_bytes=input_bytes,
        input_width=int(input_size[0]) if input_size else None, input_height=int(input_size[1]) if input_size else None,
        case_code=case_code[:128] if case_code else None, username=user, labels=summary.get("labels") or {},
        summary=summary, whatif=json.loads(json.dumps(whatif, default=_json_default)) if whatif else None,
        has_image=image is not None,
    )
    return values, ((bytes(image), image_mime) if image is not None else None)


def _model_facts(card, summary: dict) -> dict:
    if card is None:
        from . import registry

        try:
            card = registry.card(summary.get("model", ""))
        except (KeyError, registry.CardError):
            card = {}
    if isinstance(card, dict):
        return {"id": card.get("id") or summary.get("model", ""), "version": card.get("version") or summary.get("version", ""),
                "sha256": card.get("sha256", "")}
    return {"id": card.id, "version": card.version, "sha256": card.sha256}


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (datetime, date)):
        return obj.isoformat()
    return str(obj)


# --- reading ------------------------------------------------------------------------------------------------------------
def query(*, start: date | datetime | None = None, end: date | datetime | None = None, task=None, model=None,
          case_code: str | None = None, input_sha256: str | None = None, viewer=None, limit: int | None = 5000,
          url: str | None = None) -> list[Record]:
    """Records newest first. start/end: dates are whole days (end inclusive), datetimes exact.
    task, model: one value or a list. case_code: part of the code, any case. input_sha256: of this very input.
    viewer: the signed-in user (an object with .name and .is_admin); None when sign-in is off (sees everything).
    A viewer who is not an admin sees only their own records."""
    stmt = select(RecordRow).order_by(RecordRow.created_at.desc(), RecordRow.id.desc())
    if start is not None:
        stmt = stmt.where(RecordRow.created_at >= _as_utc(start))
    if end is not None:
        stmt = stmt.where(RecordRow.created_at < _as_utc(end + timedelta(days=1) if _is_day(end) else end))
    if task:
        stmt = stmt.where(RecordRow.task.in_([task] if isinstance(task, str) else list(task)))
    if model:
        models = [model] if isinstance(model, str) else list(model)
        # a sperm field's heads are classified by a second model, named in its summary: its records are that model's too
        second = [cast(RecordRow.summary, Text).contains(json.dumps({"head_model": f"{m} v"})[1:-2]) for m in models]
        stmt = stmt.where(or_(RecordRow.model_id.in_(models), *second))
    if input_sha256:
        stmt = stmt.where(RecordRow.input_sha256 == input_sha256)
    if case_code and case_code.strip():
        stmt = stmt.where(func.lower(RecordRow.case_code).contains(case_code.strip().lower(), autoescape=True))
    stmt = _visible(stmt, viewer)
    if limit:
        stmt = stmt.limit(limit)
    with engine(url).connect() as conn:
        return [Record.from_row(r) for r in _rows(conn, stmt)]


def get(record_id: int, viewer=None, url: str | None = None) -> Record | None:
    """One record with its kept image, or None when it does not exist or the viewer may not see it."""
    stmt = _visible(select(RecordRow).where(RecordRow.id == int(record_id)), viewer)
    with engine(url).connect() as conn:
        rows = _rows(conn, stmt)
        if not rows:
            return None
        image = conn.execute(select(RecordImage.data, RecordImage.mime).where(RecordImage.record_id == rows[0]["id"])).first()
    return Record.from_row(rows[0], image)


def distinct(column: str, viewer=None, url: str | None = None) -> list[str]:
    """The values a column takes (for filter choices): 'task', 'model_id', 'username'."""
    col = getattr(RecordRow, column)
    stmt = _visible(select(col).distinct(), viewer).order_by(col)
    with engine(url).connect() as conn:
        return [v for (v,) in conn.execute(stmt) if v is not None]


def count(url: str | None = None) -> int:
    with engine(url).connect() as conn:
        return conn.execute(select(func.count()).select_from(RecordRow)).scalar_one()


def _visible(stmt, viewer):
    if viewer is not None and not getattr(viewer, "is_admin", False):
        stmt = stmt.where(RecordRow.username == viewer.name)
    return stmt


def _rows(conn, stmt) -> list[dict]:
    return [dict(r._mapping) for r in conn.execute(stmt)]


def _is_day(value) -> bool:
    return isinstance(value, date) and not isinstance(value, datetime)


def _as_utc(value) -> datetime:
    if _is_day(value):
        value = datetime.combine(value, dtime.min).astimezone()  # local midnight
    if value.tzinfo is None:
        value = value.astimezone()
    return value.astimezone(timezone.utc)


# --- export -------------------------------------------------------------------------------------------------------------
def frame(records: list[Record]):
    """One flat row per record (a pandas DataFrame): facts, then per output its label and label probabilities."""
    import pandas as pd

    rows = []
    for r in records:
        row = {"id": r.id, "time": r.created_at.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
               "revised": r.revised_at.astimezone().strftime("%Y-%m-%d %H:%M:%S") if r.revised_at else "", "task": r.task,
               "model": r.model_id, "version": r.model_version, "case_code": r.case_code or "", "user": r.username or "",
               "input": r.input_name, "input_sha256": r.input_sha256, "input_bytes": r.input_bytes,
               "width": r.input_width, "height": r.input_height, "source": r.source}
        thresholds = r.summary.get("thresholds") or {}
        for output, probs in (r.summary.get("probabilities") or {}).items():
            row[output] = r.labels.get(output, "")
            for label, p in probs.items():
                row[f"p_{output}_{label}"] = p
            if output in thresholds:
                row[f"threshold_{output}"] = thresholds[output]
        row.update(flat_results({k: v for k, v in r.summary.items() if k not in SUMMARY_FACTS}))  # counts, sizes …
        row["whatif"] = json.dumps(r.whatif) if r.whatif else ""
        row["image_kept"] = r.has_image
        row["model_sha256"] = r.model_sha256
        rows.append(row)
    return pd.DataFrame(rows)


def to_csv(records: list[Record]) -> bytes:
    table = frame(records)
    if len(table):  # with its offset from UTC: a file read elsewhere has no server clock to go by
        table["time"] = [r.created_at.astimezone().isoformat(timespec="seconds") for r in records]
        table["revised"] = [r.revised_at.astimezone().isoformat(timespec="seconds") if r.revised_at else ""
                            for r in records]
    return csv_bytes(table)
