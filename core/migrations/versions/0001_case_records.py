"""Case records and their optionally kept images.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op

from core.records import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "records",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("model_id", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=False),
        sa.Column("input_name", sa.String(512), nullable=False),
        sa.Column("input_sha256", sa.String(64), nullable=False),
        sa.Column("input_bytes", sa.Integer),
        sa.Column("input_width", sa.Integer),
        sa.Column("input_height", sa.Integer),
        sa.Column("case_code", sa.String(128)),
        sa.Column("username", sa.String(128)),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("summary", sa.JSON, nullable=False),
        sa.Column("whatif", sa.JSON),
        sa.Column("has_image", sa.Boolean, nullable=False),
    )
    for column in ("created_at", "task", "model_id", "input_sha256", "case_code", "username"):
        op.create_index(f"ix_records_{column}", "records", [column])
    op.create_table(
        "record_images",
        sa.Column("record_id", sa.Integer, sa.ForeignKey("records.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("mime", sa.String(32), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("record_images")
    op.drop_table("records")
