"""Columns ``jobs.owner`` and ``jobs.lease_until_utc``: which daemon process runs a job and until when its claim holds.

Several darkd hosts share one index (PostgreSQL): a job left ``running`` by a daemon that died is queued again only
when its lease ran out (or its process is known dead), never just because another daemon starts
(:mod:`daemon.jobs.queue`). Rows from before this revision have no owner and no lease: abandoned, as before.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from daemon.library.models import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("owner", sa.String(255)))
        batch.add_column(sa.Column("lease_until_utc", UTCDateTime()))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("lease_until_utc")
        batch.drop_column("owner")
