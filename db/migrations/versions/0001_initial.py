"""Initial schema: users, login throttle, categories (seeded), logs, products, models, reports.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from db.categories import CATEGORIES

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("hashed_password", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("role IN ('admin', 'seller')", name="ck_users_role"),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )
    op.create_table(
        "login_throttle",
        sa.Column("username", sa.String(64), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_started_at", TS, nullable=False),
        sa.Column("locked_until", TS, nullable=True),
    )
    categories = op.create_table(
        "categories",
        sa.Column("prdtypecode", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(128), nullable=False),
    )
    op.bulk_insert(categories, [{"prdtypecode": code, "name": name} for code, name in CATEGORIES.items()])
    op.create_table(
        "prediction_logs",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column(
            "user_id",
            sa.Integer(),
            sa.ForeignKey("users.id", ondelete="SET NULL", name="fk_prediction_logs_user_id_users"),
            nullable=True,
        ),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("inputs", JSONType, nullable=False),
        sa.Column("model_kind", sa.String(16), nullable=True),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("predictions", JSONType, nullable=False),
        sa.Column("top_prdtypecode", sa.Integer(), nullable=True),
        sa.Column("top_probability", sa.Float(), nullable=True),
        sa.Column("suggestion_size", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.UniqueConstraint("request_id", name="uq_prediction_logs_request_id"),
    )
    op.create_index("ix_prediction_logs_user_created", "prediction_logs", ["user_id", "created_at"])
    op.create_index("ix_prediction_logs_created_at", "prediction_logs", ["created_at"])
    op.create_index("ix_prediction_logs_model_kind", "prediction_logs", ["model_kind"])
    op.create_index("ix_prediction_logs_outcome", "prediction_logs", ["outcome"])
    op.create_table(
        "products",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("product_id", sa.String(64), nullable=False),
        sa.Column("designation", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("image_ref", sa.String(255), nullable=True),
        sa.Column(
            "prdtypecode",
            sa.Integer(),
            sa.ForeignKey("categories.prdtypecode", name="fk_products_prdtypecode_categories"),
            nullable=False,
        ),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("label_status", sa.String(16), nullable=False),
        sa.Column("quarantine_reason", sa.Text(), nullable=True),
        sa.Column("request_id", sa.String(36), nullable=True),
        sa.Column(
            "created_by",
            sa.Integer(),
            sa.ForeignKey("users.id", ondelete="SET NULL", name="fk_products_created_by_users"),
            nullable=True,
        ),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint(
            "label_status IN ('unverified', 'verified', 'quarantined')",
            name="ck_products_label_status",
        ),
        sa.UniqueConstraint("product_id", name="uq_products_product_id"),
    )
    op.create_index("ix_products_prdtypecode", "products", ["prdtypecode"])
    op.create_index("ix_products_created_at", "products", ["created_at"])
    op.create_index("ix_products_label_status", "products", ["label_status"])
    op.create_index("ix_products_request_id", "products", ["request_id"])
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("location", sa.String(512), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("metrics", JSONType, nullable=False),
        sa.Column("gate", JSONType, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("promoted_at", TS, nullable=True),
        sa.CheckConstraint(
            "status IN ('candidate', 'production', 'retired', 'rejected')",
            name="ck_model_versions_status",
        ),
        sa.UniqueConstraint("version", name="uq_model_versions_version"),
    )
    op.create_index("ix_model_versions_status", "model_versions", ["status"])
    op.create_table(
        "monitoring_reports",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("window_start", TS, nullable=False),
        sa.Column("window_end", TS, nullable=False),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("report", JSONType, nullable=False),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.Column("flags", JSONType, nullable=False),
    )
    op.create_index("ix_monitoring_reports_window_end", "monitoring_reports", ["window_end"])


def downgrade() -> None:
    op.drop_table("monitoring_reports")
    op.drop_table("model_versions")
    op.drop_table("products")
    op.drop_table("prediction_logs")
    op.drop_table("categories")
    op.drop_table("login_throttle")
    op.drop_table("users")
