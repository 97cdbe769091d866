"""Auth: token versions, case-insensitive usernames, login throttle keyed by address and name.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    duplicates = (
        op.get_bind()
        .execute(sa.text("SELECT lower(username) FROM users GROUP BY lower(username) HAVING count(*) > 1"))
        .scalars()
        .all()
    )
    if duplicates:
        # Refuse rather than pick a winner: an operator decides which account stays.
        raise RuntimeError(
            "usernames that differ only by case must be renamed before this migration: "
            + ", ".join(sorted(duplicates))
        )
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("token_version", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("uq_users_username_lower", "users", [sa.text("lower(username)")], unique=True)

    # The throttle holds only a few minutes of counters: it is rebuilt empty, not converted.
    op.drop_table("login_throttle")
    op.create_table(
        "login_throttle",
        sa.Column("key", sa.String(160), primary_key=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("window_started_at", TS, nullable=False),
        sa.Column("locked_until", TS, nullable=True),
        sa.Column("lockouts", sa.Integer(), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
    )
    op.create_index("ix_login_throttle_expires_at", "login_throttle", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_login_throttle_expires_at", table_name="login_throttle")
    op.drop_table("login_throttle")
    op.create_table(
        "login_throttle",
        sa.Column("username", sa.String(64), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_started_at", TS, nullable=False),
        sa.Column("locked_until", TS, nullable=True),
    )
    op.drop_index("uq_users_username_lower", table_name="users")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("token_version")
