"""Initial schema: entries, frames, jobs, job_log.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from daemon.library.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "entries",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("slug", sa.String(255), nullable=False),
        sa.Column("camera", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("exposure_s", sa.Float(), nullable=False),
        sa.Column("set_point_c", sa.Float(), nullable=False),
        sa.Column("gain", sa.Integer(), nullable=False),
        sa.Column("offset", sa.Integer(), nullable=False),
        sa.Column("binning", sa.Integer(), nullable=False),
        sa.Column("read_mode", sa.Integer(), nullable=True),
        sa.Column("usb_traffic", sa.Integer(), nullable=True),
        sa.Column("amp_glow", sa.String(8), nullable=True),
        sa.Column("overscan", sa.String(8), nullable=True),
        sa.Column("width_px", sa.Integer(), nullable=False),
        sa.Column("height_px", sa.Integer(), nullable=False),
        sa.Column("directory", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("frames_target", sa.Integer(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("review", sa.Boolean(), nullable=False),
        sa.Column("review_reason", sa.Text(), nullable=True),
        sa.Column("master_path", sa.Text(), nullable=True),
        sa.Column("master_sha256", sa.String(64), nullable=True),
        sa.Column("master_stats", sa.JSON(), nullable=True),
        sa.Column("master_created_utc", UTCDateTime(), nullable=True),
        sa.Column("valid_until_utc", UTCDateTime(), nullable=True),
        sa.Column("created_utc", UTCDateTime(), nullable=False),
        sa.Column("updated_utc", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_entries_slug", "entries", ["camera", "slug"])
    op.create_index("ix_entries_status", "entries", ["status"])
    op.create_table(
        "frames",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("entry_id", sa.Integer(), sa.ForeignKey("entries.id", ondelete="CASCADE"), nullable=False),
        sa.Column("path", sa.Text(), nullable=False, unique=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=True),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("temperature_start_c", sa.Float(), nullable=True),
        sa.Column("temperature_end_c", sa.Float(), nullable=True),
        sa.Column("quality_ok", sa.Boolean(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("created_utc", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_frames_entry_id", "frames", ["entry_id"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("camera", sa.String(255), nullable=True),
        sa.Column("progress_done", sa.Integer(), nullable=False),
        sa.Column("progress_total", sa.Integer(), nullable=False),
        sa.Column("step", sa.Text(), nullable=True),
        sa.Column("eta_s", sa.Float(), nullable=True),
        sa.Column("warnings", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("created_utc", UTCDateTime(), nullable=False),
        sa.Column("started_utc", UTCDateTime(), nullable=True),
        sa.Column("finished_utc", UTCDateTime(), nullable=True),
        sa.Column("updated_utc", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.create_table(
        "job_log",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("time_utc", UTCDateTime(), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
    )
    op.create_index("ix_job_log_job_id", "job_log", ["job_id"])


def downgrade() -> None:
    op.drop_table("job_log")
    op.drop_table("jobs")
    op.drop_table("frames")
    op.drop_table("entries")
