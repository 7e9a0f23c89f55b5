"""Alembic environment for the case-records database (core/records.py).

The app upgrades the database itself on first use. By hand (DATABASE_URL selects the database):
    alembic -c core/migrations/alembic.ini upgrade head
    alembic -c core/migrations/alembic.ini revision --autogenerate -m "what changed"
"""
from alembic import context
from sqlalchemy import create_engine, pool

from core import records

config = context.config
target_metadata = records.Base.metadata


def run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True,
                      render_as_batch=connection.dialect.name == "sqlite")  # SQLite alters tables by copying
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=records.database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif config.attributes.get("connection") is not None:  # called from core.records.upgrade
    run(config.attributes["connection"])
else:
    with create_engine(records.database_url(), poolclass=pool.NullPool).connect() as conn:
        run(conn)
        conn.commit()
