"""Worker heartbeats, commit-order stamps on attempts, a hot-queue setup.

- ``outdial_workers`` (worker id, started, last heartbeat; the heartbeat column
  is not indexed: it changes every few seconds);
- ``outdial_attempts.recorded_at`` / ``closed_at``: the database's clock when an
  attempt was recorded and recorded as ended (rows already there get their
  ``created_at`` / ``ended_at``);
- a partial unique index: a recipient cannot have the same attempt number in
  flight twice, so two workers that claimed one recipient from the same snapshot
  cannot both commit;
- on PostgreSQL, storage settings for tables updated all the time: a lower
  ``fillfactor`` (room for HOT updates) and eager autovacuum.

Revision ID: 0002
Revises: 0001
Create Date: 2026-03-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

#: table -> storage parameters (PostgreSQL only)
_HOT_TABLES = {
    "outdial_recipients": "fillfactor = 85, autovacuum_vacuum_scale_factor = 0.02, "
    "autovacuum_analyze_scale_factor = 0.02",
    "outdial_attempts": "fillfactor = 85, autovacuum_vacuum_scale_factor = 0.02, "
    "autovacuum_analyze_scale_factor = 0.02",
    "outdial_campaign_counters": "fillfactor = 50, autovacuum_vacuum_scale_factor = 0.0, "
    "autovacuum_vacuum_threshold = 1000",
    "outdial_workers": "fillfactor = 50, autovacuum_vacuum_scale_factor = 0.0, "
    "autovacuum_vacuum_threshold = 200",
}


def upgrade() -> None:
    op.create_table(
        "outdial_workers",
        sa.Column("worker_id", sa.Text, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("worker_id", name="pk_outdial_workers"),
    )
    op.add_column("outdial_attempts", sa.Column("recorded_at", sa.DateTime(timezone=True)))
    op.add_column("outdial_attempts", sa.Column("closed_at", sa.DateTime(timezone=True)))
    op.execute(
        "UPDATE outdial_attempts SET recorded_at = created_at, "
        "closed_at = CASE WHEN status = 'ended' THEN coalesce(ended_at, created_at) END"
    )
    in_flight = "status <> 'ended' AND NOT test_call"
    op.create_index(
        "uq_outdial_attempts_in_flight",
        "outdial_attempts",
        ["recipient_id", "number"],
        unique=True,
        postgresql_where=sa.text(in_flight),
        sqlite_where=sa.text(in_flight),
    )
    if op.get_bind().dialect.name == "postgresql":
        for table, settings in _HOT_TABLES.items():
            op.execute(f"ALTER TABLE {table} SET ({settings})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, settings in _HOT_TABLES.items():
            names = ", ".join(part.split("=")[0].strip() for part in settings.split(","))
            op.execute(f"ALTER TABLE {table} RESET ({names})")
    op.drop_index("uq_outdial_attempts_in_flight", table_name="outdial_attempts")
    op.drop_column("outdial_attempts", "closed_at")
    op.drop_column("outdial_attempts", "recorded_at")
    op.drop_table("outdial_workers")
