"""Table ``master_history``: every master's statistics as a time series per camera and key (``daemon.health``).

One row per (entry, master creation time, quantity): bias and overscan level, read noise, dark current, hot pixels,
amp-glow amplitude, cooler power (with the ambient temperature when the frames recorded it).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from daemon.library.models import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "master_history",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("camera", sa.String(255), nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("slug", sa.String(255), nullable=False),
        sa.Column("series", sa.String(255), nullable=False),
        sa.Column("set_point_c", sa.Float()),
        sa.Column("exposure_s", sa.Float()),
        sa.Column("created_utc", UTCDateTime(), nullable=False),
        sa.Column("quantity", sa.String(64), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("uncertainty", sa.Float()),
        sa.Column("unit", sa.String(32), nullable=False),
        sa.Column("ambient_c", sa.Float()),
        sa.Column("method", sa.Text()),
        sa.Column("recorded_utc", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("entry_id", "created_utc", "quantity", name="uq_master_history_point"),
    )
    op.create_index("ix_master_history_camera", "master_history", ["camera", "quantity", "created_utc"])


def downgrade() -> None:
    op.drop_index("ix_master_history_camera", table_name="master_history")
    op.drop_table("master_history")
