"""Campaign counters in shards: several rows per campaign, summed when read.

Every transaction that moves a campaign's counters used to update the campaign's
one counters row, and held that row's lock until its commit was on disk: on
PostgreSQL the workers' transactions took turns there, one ``fsync`` after
another, however many workers ran. A campaign's counters are now the sum of up
to :data:`~outdial.sql.repository.COUNTER_SHARDS` rows, ``(campaign_id, shard)``;
a PostgreSQL transaction adds its moves to one shard, so concurrent ones rarely
meet on a row and commit together. Rows already there become shard 0 (SQLite
only ever writes shard 0: it has one writer at a time anyway).

Downgrading adds every campaign's shards into its shard 0 first.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

_TABLE = "outdial_campaign_counters"
_PK = "pk_outdial_campaign_counters"
_OUTCOMES = (
    "answered",
    "no_answer",
    "busy",
    "voicemail",
    "invalid_number",
    "declined",
    "error",
    "opted_out",
)
#: every counter column (as of this revision)
_COUNTERS = (
    "total",
    "pending",
    "queued",
    "calling",
    "completed",
    "failed",
    "skipped",
    "answered",
    "attempts",
    "answered_calls",
    "answered_seconds",
    *(f"outcome_{outcome}" for outcome in _OUTCOMES),
)


def upgrade() -> None:
    with op.batch_alter_table(_TABLE) as batch:
        batch.add_column(sa.Column("shard", sa.Integer, nullable=False, server_default="0"))
        batch.drop_constraint(_PK, type_="primary")
        batch.create_primary_key(_PK, ["campaign_id", "shard"])


def downgrade() -> None:
    columns = _COUNTERS
    sums = ", ".join(
        f"{c} = (SELECT sum(s.{c}) FROM {_TABLE} AS s "  # noqa: S608 - fixed names only
        f"WHERE s.campaign_id = {_TABLE}.campaign_id)"
        for c in columns
    )
    op.execute(f"UPDATE {_TABLE} SET {sums} WHERE shard = 0")  # noqa: S608 - fixed names only
    op.execute(
        f"INSERT INTO {_TABLE} (campaign_id, shard, {', '.join(columns)}) "  # noqa: S608
        f"SELECT campaign_id, 0, {', '.join(f'sum({c})' for c in columns)} FROM {_TABLE} "
        f"WHERE campaign_id NOT IN (SELECT campaign_id FROM {_TABLE} WHERE shard = 0) "
        "GROUP BY campaign_id"
    )
    op.execute(f"DELETE FROM {_TABLE} WHERE shard <> 0")  # noqa: S608 - fixed names only
    with op.batch_alter_table(_TABLE) as batch:
        batch.drop_constraint(_PK, type_="primary")
        batch.create_primary_key(_PK, ["campaign_id"])
        batch.drop_column("shard")
