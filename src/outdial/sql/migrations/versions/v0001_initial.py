"""The first schema: campaigns, their counters, recipients, attempts, suppressions.

Revision ID: 0001
Revises:
Create Date: 2026-03-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
#: the call outcomes of this revision (one counter column each)
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


def _instant() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _counter(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger, nullable=False)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute("CREATE SEQUENCE outdial_recipient_seq")
        op.execute("CREATE SEQUENCE outdial_campaign_rank")
    op.create_table(
        "outdial_campaigns",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("workspace_id", sa.Text, nullable=False),
        sa.Column("rank", sa.BigInteger, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("agent", _JSON, nullable=False),
        sa.Column("schedule_type", sa.Text, nullable=False),
        sa.Column("scheduled_start_at", _instant()),
        sa.Column("expires_at", _instant()),
        sa.Column("timezone", sa.Text, nullable=False),
        sa.Column("business_hours", _JSON),
        sa.Column("rule_set", sa.Text),
        sa.Column("default_region", sa.Text),
        sa.Column("concurrency_limit", sa.Integer, nullable=False),
        sa.Column("calls_per_minute", sa.Float),
        sa.Column("min_spacing_us", sa.BigInteger, nullable=False),
        sa.Column("daily_cap", sa.Integer),
        sa.Column("retry_policy", _JSON, nullable=False),
        sa.Column("prompt_variables", _JSON, nullable=False),
        sa.Column("csv_column_headers", _JSON, nullable=False),
        sa.Column("max_recipients", sa.Integer, nullable=False),
        sa.Column("created_by", sa.Text),
        sa.Column("created_at", _instant(), nullable=False),
        sa.Column("updated_at", _instant()),
        sa.Column("started_at", _instant()),
        sa.Column("completed_at", _instant()),
        sa.Column("deleted_at", _instant()),
        sa.Column("status_reason", sa.Text),
        sa.Column("version", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outdial_campaigns"),
    )
    op.create_index(
        "ix_outdial_campaigns_workspace", "outdial_campaigns", ["workspace_id", "created_at"]
    )
    op.create_index("ix_outdial_campaigns_status", "outdial_campaigns", ["status"])

    op.create_table(
        "outdial_campaign_counters",
        sa.Column("campaign_id", sa.Text, nullable=False),
        *(
            _counter(name)
            for name in (
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
            )
        ),
        sa.Column("answered_seconds", sa.Float, nullable=False),
        *(_counter(f"outcome_{outcome}") for outcome in _OUTCOMES),
        sa.PrimaryKeyConstraint("campaign_id", name="pk_outdial_campaign_counters"),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["outdial_campaigns.id"],
            name="fk_outdial_campaign_counters_campaign_id",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "outdial_recipients",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("campaign_id", sa.Text, nullable=False),
        sa.Column("workspace_id", sa.Text, nullable=False),
        sa.Column("phone", sa.Text, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", _instant()),
        sa.Column("last_attempt_at", _instant()),
        sa.Column("last_retry_delay_seconds", sa.Float),
        sa.Column("duration_seconds", sa.Float),
        sa.Column("external_call_id", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("created_at", _instant(), nullable=False),
        sa.Column("updated_at", _instant()),
        sa.Column("first_name", sa.Text),
        sa.Column("last_name", sa.Text),
        sa.Column("email", sa.Text),
        sa.Column("company", sa.Text),
        sa.Column("variables", _JSON, nullable=False),
        sa.Column("time_zones", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outdial_recipients"),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["outdial_campaigns.id"],
            name="fk_outdial_recipients_campaign_id",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("campaign_id", "phone", name="uq_outdial_recipients_phone"),
        sa.UniqueConstraint("campaign_id", "seq", name="uq_outdial_recipients_seq"),
    )
    ready = "status = 'pending' AND next_attempt_at IS NULL"
    op.create_index(
        "ix_outdial_recipients_ready",
        "outdial_recipients",
        ["campaign_id", sa.text("priority DESC"), "seq"],
        postgresql_where=sa.text(ready),
        sqlite_where=sa.text(ready),
    )
    waiting = "status = 'pending' AND next_attempt_at IS NOT NULL"
    op.create_index(
        "ix_outdial_recipients_waiting",
        "outdial_recipients",
        ["campaign_id", "next_attempt_at"],
        postgresql_where=sa.text(waiting),
        sqlite_where=sa.text(waiting),
    )

    op.create_table(
        "outdial_attempts",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("campaign_id", sa.Text, nullable=False),
        sa.Column("recipient_id", sa.Text, nullable=False),
        sa.Column("workspace_id", sa.Text, nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("phone", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("provider", sa.Text),
        sa.Column("external_call_id", sa.Text),
        sa.Column("created_at", _instant(), nullable=False),
        sa.Column("placed_at", _instant()),
        sa.Column("answered_at", _instant()),
        sa.Column("ended_at", _instant()),
        sa.Column("outcome", sa.Text),
        sa.Column("duration_seconds", sa.Float),
        sa.Column("error", sa.Text),
        sa.Column("last_sequence", sa.BigInteger, nullable=False),
        sa.Column("worker_id", sa.Text),
        sa.Column("claim_token", sa.BigInteger, nullable=False),
        sa.Column("test_call", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outdial_attempts"),
        sa.UniqueConstraint("provider", "external_call_id", name="uq_outdial_attempts_external"),
    )
    op.create_index("ix_outdial_attempts_recipient", "outdial_attempts", ["recipient_id", "number"])
    op.create_index(
        "ix_outdial_attempts_campaign", "outdial_attempts", ["campaign_id", "created_at"]
    )
    op.create_index(
        "ix_outdial_attempts_unfinished",
        "outdial_attempts",
        ["created_at"],
        postgresql_where=sa.text("status <> 'ended'"),
        sqlite_where=sa.text("status <> 'ended'"),
    )

    op.create_table(
        "outdial_suppressions",
        sa.Column("workspace_id", sa.Text, nullable=False),
        sa.Column("phone", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", _instant(), nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "phone", name="pk_outdial_suppressions"),
    )


def downgrade() -> None:
    for table in (
        "outdial_suppressions",
        "outdial_attempts",
        "outdial_recipients",
        "outdial_campaign_counters",
        "outdial_campaigns",
    ):
        op.drop_table(table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP SEQUENCE outdial_campaign_rank")
        op.execute("DROP SEQUENCE outdial_recipient_seq")
