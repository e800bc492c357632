"""Table ``camera_defaults``: each camera's state as its driver reports it on connect, and its read-mode labels.

A light shot by another program with the driver's defaults does not state read mode, USB traffic, amp glow or
overscan; darkd fills them from this record (:mod:`daemon.light_rule`). One row per camera (the INDI device name).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from daemon.library.models import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "camera_defaults",
        sa.Column("camera", sa.String(255), primary_key=True),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.Column("read_mode_labels", sa.JSON(), nullable=False),
        sa.Column("recorded_utc", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("camera_defaults")
