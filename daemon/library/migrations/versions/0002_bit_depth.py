"""Library key field ``bit_depth``: the ADC bit depth of the capture format (``None`` for existing entries: unknown).

Adding the column keeps every existing row and its slug (a ``None`` field adds nothing to the slug), so existing
entries, directories and masters stay where they are and stay selectable for lights whose key has no bit depth.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("entries") as batch:
        batch.add_column(sa.Column("bit_depth", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("entries") as batch:
        batch.drop_column("bit_depth")
