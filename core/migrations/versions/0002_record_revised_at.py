"""When a record was last revised (a result reviewed or re-timed, a case code or kept image changed after it was
made): reports and History say so, so a report printed before a revision can be told from the record now.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""
import sqlalchemy as sa
from alembic import op

from core.records import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("records", sa.Column("revised_at", UTCDateTime, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("records") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("revised_at")
