"""The prediction log keeps the title as typed (`prediction_logs.designation`), for a while.

The API writes it cut to LOG_TITLE_MAX_CHARS and clears it after LOG_TITLE_RETENTION_DAYS
(api/retention.py), a sweep on the existing `created_at` index.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("prediction_logs") as batch:
        batch.add_column(sa.Column("designation", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("prediction_logs") as batch:
        batch.drop_column("designation")
