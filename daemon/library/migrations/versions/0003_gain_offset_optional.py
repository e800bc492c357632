"""Library key fields ``gain`` and ``offset`` may be ``NULL`` (the camera has no such control); one entry per directory.

FLI cameras have neither a gain nor an offset control, Moravian cameras no offset (``indi-fli/fli_ccd.cpp``,
``indi-mi/mi_ccd.cpp``); their darks are keyed with ``None`` there. Existing rows keep their values and slugs.

``entries.directory`` becomes unique, so that two hosts planning the same key at once on one shared index (PostgreSQL)
cannot both create an entry for it: the second insert fails and that host finds the first one's entry.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("entries") as batch:
        batch.alter_column("gain", existing_type=sa.Integer(), nullable=True)
        batch.alter_column("offset", existing_type=sa.Integer(), nullable=True)
        batch.create_unique_constraint("uq_entries_directory", ["directory"])


def downgrade() -> None:
    with op.batch_alter_table("entries") as batch:
        batch.drop_constraint("uq_entries_directory", type_="unique")
        batch.alter_column("gain", existing_type=sa.Integer(), nullable=False)
        batch.alter_column("offset", existing_type=sa.Integer(), nullable=False)
