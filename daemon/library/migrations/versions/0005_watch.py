"""Tables ``watch_lights`` and ``watch_keys``: the closed loop's lights and its standing plan (:mod:`daemon.watch`).

``watch_lights``: every light taken from a watched folder, once (unique path), with its dark's key and what became of
it (waiting, calibrated, unbuildable, failed). ``watch_keys``: the keys the waiting lights need, one row per camera and
key slug (missing, building in a job, built, unbuildable with the reason), so the plan survives restarts.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from daemon.library.models import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "watch_lights",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("path", sa.String(1024), nullable=False, unique=True),
        sa.Column("folder", sa.String(1024), nullable=False),
        sa.Column("camera", sa.String(255), nullable=False),
        sa.Column("slug", sa.String(255), nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("reason", sa.Text()),
        sa.Column("output", sa.Text()),
        sa.Column("master", sa.Text()),
        sa.Column("seen_utc", UTCDateTime(), nullable=False),
        sa.Column("done_utc", UTCDateTime()),
    )
    op.create_table(
        "watch_keys",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("camera", sa.String(255), nullable=False),
        sa.Column("slug", sa.String(255), nullable=False),
        sa.Column("key", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("reason", sa.Text()),
        sa.Column("job_id", sa.Integer()),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("added_utc", UTCDateTime(), nullable=False),
        sa.Column("updated_utc", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("camera", "slug", name="uq_watch_keys_camera_slug"),
    )


def downgrade() -> None:
    op.drop_table("watch_keys")
    op.drop_table("watch_lights")
