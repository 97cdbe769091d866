"""One product per prediction: `products.request_id` becomes unique.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A prediction confirmed twice before this revision: the latest confirmation is the
    # seller's final choice (as the live statistics already counted it); older ones go.
    op.execute(
        sa.text(
            "DELETE FROM products WHERE request_id IS NOT NULL AND id NOT IN "
            "(SELECT MAX(id) FROM products WHERE request_id IS NOT NULL GROUP BY request_id)"
        )
    )
    op.drop_index("ix_products_request_id", table_name="products")
    op.create_index("ix_products_request_id", "products", ["request_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_products_request_id", table_name="products")
    op.create_index("ix_products_request_id", "products", ["request_id"])
