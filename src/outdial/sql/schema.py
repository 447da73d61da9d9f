"""The SQL schema (SQLAlchemy Core): what the newest migration leaves in the database.

Every table is prefixed ``outdial_`` so the schema can live next to an
application's own tables; Alembic's version table is ``outdial_alembic_version``.

- ``outdial_campaigns`` - one row per campaign (drafts are campaigns in status
  ``draft``); settings that are values (agent, business hours, retry policy,
  prompt variables, CSV headers) are JSON written by :mod:`outdial.serialization`.
- ``outdial_campaign_counters`` - the campaign's recipient counters (by status,
  answered, attempts, final recipients by outcome, answered talk time), moved in
  the same transaction as the recipients (invariant 8). A campaign's counters
  are the sum of its rows ``(campaign_id, shard)``: a PostgreSQL transaction adds
  its moves to one shard, so concurrent workers seldom wait for each other's
  commit on one row (SQLite writes shard 0 only). They live beside the campaign
  row, not in it, so that editing a campaign and counting its calls never wait
  for each other.
- ``outdial_recipients`` - unique ``(campaign_id, phone)``; the due queue is two
  partial indexes on pending recipients: *ready* ones (no due time) in dial order
  ``(campaign_id, priority DESC, seq)`` and *waiting* ones by
  ``(campaign_id, next_attempt_at)``.
- ``outdial_attempts`` - the insert-only call history, updated only forwards.
  ``recorded_at`` / ``closed_at`` are stamped by the database's clock when the
  attempt is recorded and when it is recorded as ended: they are in commit order
  (unlike ``created_at`` / ``ended_at``, the worker's clock), so the table itself
  proves the concurrency caps. A partial unique index on ``(recipient_id,
  number)`` of attempts in flight refuses a second claim of the same call.
- ``outdial_suppressions`` - the do-not-call list, per workspace.
- ``outdial_workers`` - heartbeats (``heartbeat_at`` is deliberately not indexed:
  it changes every few seconds).

Instants are ``TIMESTAMP WITH TIME ZONE`` on PostgreSQL; SQLite has no such type,
so :class:`UtcDateTime` stores UTC and attaches UTC again on the way out.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

from outdial._time import UTC, to_utc
from outdial.outcomes import CallOutcome

__all__ = [
    "ATTEMPTS",
    "CAMPAIGNS",
    "CAMPAIGN_RANK_SEQUENCE",
    "COUNTERS",
    "RECIPIENTS",
    "RECIPIENT_SEQ_SEQUENCE",
    "SUPPRESSIONS",
    "VERSION_TABLE",
    "WORKERS",
    "JsonValue",
    "UtcDateTime",
    "metadata",
]

VERSION_TABLE = "outdial_alembic_version"
#: PostgreSQL sequences (SQLite takes ``max() + 1`` under its write lock).
RECIPIENT_SEQ_SEQUENCE = "outdial_recipient_seq"
CAMPAIGN_RANK_SEQUENCE = "outdial_campaign_rank"


class UtcDateTime(sa.TypeDecorator[datetime]):
    """An aware instant stored in UTC.

    Binding a naive datetime raises :class:`~outdial.errors.NaiveDatetimeError`;
    values always come back aware, in UTC.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.DateTime())
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value if value.tzinfo is UTC else to_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):  # pragma: no cover - a driver returning text
            value = datetime.fromisoformat(str(value))
        instant: datetime = value
        if instant.tzinfo is None:
            return instant.replace(tzinfo=UTC)
        return instant if instant.tzinfo is UTC else instant.astimezone(UTC)


#: JSON text on SQLite, ``jsonb`` on PostgreSQL.
JsonValue = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

_T = sa.Text
_I = sa.Integer
_B = sa.BigInteger

CAMPAIGNS = sa.Table(
    "outdial_campaigns",
    metadata,
    sa.Column("id", _T, primary_key=True),
    sa.Column("workspace_id", _T, nullable=False),
    sa.Column("rank", _B, nullable=False),  # insertion order (ties of created_at)
    sa.Column("name", _T, nullable=False),
    sa.Column("description", _T, nullable=False),
    sa.Column("status", _T, nullable=False),
    sa.Column("agent", JsonValue, nullable=False),
    sa.Column("schedule_type", _T, nullable=False),
    sa.Column("scheduled_start_at", UtcDateTime()),
    sa.Column("expires_at", UtcDateTime()),
    sa.Column("timezone", _T, nullable=False),
    sa.Column("business_hours", JsonValue),
    sa.Column("rule_set", _T),
    sa.Column("default_region", _T),
    sa.Column("concurrency_limit", _I, nullable=False),
    sa.Column("calls_per_minute", sa.Float),
    sa.Column("min_spacing_us", _B, nullable=False),
    sa.Column("daily_cap", _I),
    sa.Column("retry_policy", JsonValue, nullable=False),
    sa.Column("prompt_variables", JsonValue, nullable=False),
    sa.Column("csv_column_headers", JsonValue, nullable=False),
    sa.Column("max_recipients", _I, nullable=False),
    sa.Column("created_by", _T),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime()),
    sa.Column("started_at", UtcDateTime()),
    sa.Column("completed_at", UtcDateTime()),
    sa.Column("deleted_at", UtcDateTime()),
    sa.Column("status_reason", _T),
    sa.Column("version", _I, nullable=False),
    sa.Index("ix_outdial_campaigns_workspace", "workspace_id", "created_at"),
    sa.Index("ix_outdial_campaigns_status", "status"),
)

COUNTERS = sa.Table(
    "outdial_campaign_counters",
    metadata,
    sa.Column(
        "campaign_id",
        _T,
        sa.ForeignKey("outdial_campaigns.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("total", _B, nullable=False),
    sa.Column("pending", _B, nullable=False),
    sa.Column("queued", _B, nullable=False),
    sa.Column("calling", _B, nullable=False),
    sa.Column("completed", _B, nullable=False),
    sa.Column("failed", _B, nullable=False),
    sa.Column("skipped", _B, nullable=False),
    sa.Column("answered", _B, nullable=False),
    sa.Column("attempts", _B, nullable=False),
    sa.Column("answered_calls", _B, nullable=False),  # answered attempts with a duration
    sa.Column("answered_seconds", sa.Float, nullable=False),
    # final recipients by their last outcome
    *(sa.Column(f"outcome_{o.value}", _B, nullable=False) for o in CallOutcome),
    # a campaign's counters are the sum of its shards (migration 0003)
    sa.Column("shard", _I, primary_key=True, nullable=False, default=0, server_default="0"),
)

RECIPIENTS = sa.Table(
    "outdial_recipients",
    metadata,
    sa.Column("id", _T, primary_key=True),
    sa.Column(
        "campaign_id",
        _T,
        sa.ForeignKey("outdial_campaigns.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("workspace_id", _T, nullable=False),
    sa.Column("phone", _T, nullable=False),
    sa.Column("seq", _B, nullable=False),
    sa.Column("priority", _I, nullable=False),
    sa.Column("status", _T, nullable=False),
    sa.Column("outcome", _T),
    sa.Column("attempts", _I, nullable=False),
    sa.Column("next_attempt_at", UtcDateTime()),
    sa.Column("last_attempt_at", UtcDateTime()),
    sa.Column("last_retry_delay_seconds", sa.Float),
    sa.Column("duration_seconds", sa.Float),
    sa.Column("external_call_id", _T),
    sa.Column("error", _T),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime()),
    sa.Column("first_name", _T),
    sa.Column("last_name", _T),
    sa.Column("email", _T),
    sa.Column("company", _T),
    sa.Column("variables", JsonValue, nullable=False),
    sa.Column("time_zones", JsonValue, nullable=False),
    sa.UniqueConstraint("campaign_id", "phone", name="uq_outdial_recipients_phone"),
    sa.UniqueConstraint("campaign_id", "seq", name="uq_outdial_recipients_seq"),
)
sa.Index(
    "ix_outdial_recipients_ready",
    RECIPIENTS.c.campaign_id,
    RECIPIENTS.c.priority.desc(),
    RECIPIENTS.c.seq,
    postgresql_where=sa.text("status = 'pending' AND next_attempt_at IS NULL"),
    sqlite_where=sa.text("status = 'pending' AND next_attempt_at IS NULL"),
)
sa.Index(
    "ix_outdial_recipients_waiting",
    RECIPIENTS.c.campaign_id,
    RECIPIENTS.c.next_attempt_at,
    postgresql_where=sa.text("status = 'pending' AND next_attempt_at IS NOT NULL"),
    sqlite_where=sa.text("status = 'pending' AND next_attempt_at IS NOT NULL"),
)

ATTEMPTS = sa.Table(
    "outdial_attempts",
    metadata,
    sa.Column("id", _T, primary_key=True),
    sa.Column("campaign_id", _T, nullable=False),  # no foreign key: test calls
    sa.Column("recipient_id", _T, nullable=False),
    sa.Column("workspace_id", _T, nullable=False),
    sa.Column("number", _I, nullable=False),
    sa.Column("phone", _T, nullable=False),
    sa.Column("status", _T, nullable=False),
    sa.Column("provider", _T),
    sa.Column("external_call_id", _T),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("placed_at", UtcDateTime()),
    sa.Column("answered_at", UtcDateTime()),
    sa.Column("ended_at", UtcDateTime()),
    sa.Column("outcome", _T),
    sa.Column("duration_seconds", sa.Float),
    sa.Column("error", _T),
    sa.Column("last_sequence", _B, nullable=False),
    sa.Column("worker_id", _T),
    sa.Column("claim_token", _B, nullable=False),
    sa.Column("test_call", sa.Boolean, nullable=False),
    sa.Column("recorded_at", UtcDateTime()),  # database clock: recorded (commit order)
    sa.Column("closed_at", UtcDateTime()),  # database clock: recorded as ended
    sa.Index("ix_outdial_attempts_recipient", "recipient_id", "number"),
    sa.Index("ix_outdial_attempts_campaign", "campaign_id", "created_at"),
    sa.UniqueConstraint("provider", "external_call_id", name="uq_outdial_attempts_external"),
)
sa.Index(
    "ix_outdial_attempts_unfinished",
    ATTEMPTS.c.created_at,
    postgresql_where=sa.text("status <> 'ended'"),
    sqlite_where=sa.text("status <> 'ended'"),
)
sa.Index(
    "uq_outdial_attempts_in_flight",
    ATTEMPTS.c.recipient_id,
    ATTEMPTS.c.number,
    unique=True,
    postgresql_where=sa.text("status <> 'ended' AND NOT test_call"),
    sqlite_where=sa.text("status <> 'ended' AND NOT test_call"),
)

SUPPRESSIONS = sa.Table(
    "outdial_suppressions",
    metadata,
    sa.Column("workspace_id", _T, primary_key=True),
    sa.Column("phone", _T, primary_key=True),
    sa.Column("reason", _T, nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
)

WORKERS = sa.Table(
    "outdial_workers",
    metadata,
    sa.Column("worker_id", _T, primary_key=True),
    sa.Column("started_at", UtcDateTime(), nullable=False),
    sa.Column("heartbeat_at", UtcDateTime(), nullable=False),  # not indexed on purpose
)
