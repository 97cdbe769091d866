"""Shadow predictions: the answer of a published, unpromoted version, beside production's.

The API runs the shadowed version (the model store's shadow pointer) on a share of live
requests after answering with production, off the request path, and stores its ranking here
under the request's id, so that both live hit rates are read on the same confirmed products.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "shadow_predictions",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("predictions", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sa.Column("top_prdtypecode", sa.Integer(), nullable=True),
        sa.Column("suggestion_size", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.UniqueConstraint("request_id", "model_version", name="uq_shadow_predictions_request_id"),
    )
    op.create_index(
        "ix_shadow_predictions_version_created", "shadow_predictions", ["model_version", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_shadow_predictions_version_created", table_name="shadow_predictions")
    op.drop_table("shadow_predictions")
