"""The SQL :class:`~outdial.ports.Repository`: SQLite and PostgreSQL through SQLAlchemy Core.

One :class:`SqlRepository` wraps one SQLAlchemy engine; ``transaction()`` checks
a connection out of its pool, so one repository serves every thread of a process
(several dialer tasks, an asyncio runner's worker threads, web handlers).

**Transactions.**

- *SQLite*: every transaction starts with ``BEGIN IMMEDIATE`` (it takes the
  file's write lock at once, so a transaction never fails half-way when it first
  writes), in WAL mode with a busy timeout, so readers never block and a second
  process simply waits its turn. Inside one process a lock queues the threads,
  which is fairer than SQLite's busy polling. ``dispatch_lock`` asks for nothing
  more: the write lock already serialises claims.
- *PostgreSQL*: ``READ COMMITTED``. ``transaction(dispatch_lock=True)`` first
  takes ``pg_advisory_xact_lock`` on a constant key, so capacity checks and the
  claims that follow them are serialised across every worker (a snapshot cannot
  see another worker's uncommitted claim). In such a transaction
  ``due_recipients`` also locks what it returns with ``FOR UPDATE SKIP LOCKED``,
  passing over rows another transaction is changing. ``get_attempt`` and
  ``find_attempt`` lock the attempt (``FOR UPDATE``), so two handlers of the same
  webhook take turns and the second sees the first one's result (exactly once).

**Counters** (invariant 8) are moved in the same transaction as the recipients:
the unit of work adds the moves up and writes each campaign's counters once,
just before commit (one short row lock instead of one per recipient); reads made
inside the transaction add the moves not yet written.

**Round trips.** A unit of work does not read twice what it already holds: a
campaign it read or wrote, the recipient, campaign counters and attempt count
fetched together with an attempt (the runners ask for the recipient, campaign and
history in turn; a recipient's only attempt is its history), an attempt it locked
(``save_attempt`` then needs no re-read); updates write only the columns that
changed, the counters only the columns that moved. Decoded campaign settings are
kept per repository and reused while the version read with the row is the one
they were decoded at (every stored change bumps it; a transaction's own,
uncommitted changes are never cached). Hot statements, ``BEGIN``/``COMMIT`` and
savepoints go to the driver connection; SQLAlchemy's transaction object is only
joined when a statement goes through Core.

**Guards in the database.** ``save_recipient`` is a compare-and-set on the
status the caller read; ``save_attempt`` refuses a write whose ``claim_token`` is
older than the stored one (:class:`~outdial.errors.StaleClaim`); a partial unique
index refuses a second attempt in flight with the same recipient and number.
"""

from __future__ import annotations

import itertools
import json
import operator
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext, suppress
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

import attrs
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from outdial._attrs import copier
from outdial._memo import Memo
from outdial._time import UTC, to_utc
from outdial.calendar import BusinessHours
from outdial.campaign import AgentSettings, Campaign, CampaignCounters, CampaignStatus, ScheduleType
from outdial.errors import (
    DatabaseUnavailable,
    NotFound,
    OutdialError,
    RepositoryError,
    StaleClaim,
    StaleRead,
)
from outdial.outcomes import CallOutcome
from outdial.ports import DialStats, InFlightCounts, Page, page_bounds
from outdial.recipient import Attempt, AttemptStatus, Recipient, RecipientStatus
from outdial.retry import RetryPolicy
from outdial.serialization import structure, unstructure
from outdial.sql.schema import (
    ATTEMPTS,
    CAMPAIGN_RANK_SEQUENCE,
    CAMPAIGNS,
    COUNTERS,
    RECIPIENT_SEQ_SEQUENCE,
    RECIPIENTS,
    SUPPRESSIONS,
    WORKERS,
    UtcDateTime,
)

__all__ = [
    "COUNTER_SHARDS",
    "DAY_STARTS_COUNTED",
    "DISPATCH_LOCK_KEY",
    "MINUTE_STARTS_KEPT",
    "SqlRepository",
    "SqlUnitOfWork",
]

#: The PostgreSQL advisory lock key taken by ``transaction(dispatch_lock=True)``
#: (``b"outd"`` as an integer).
DISPATCH_LOCK_KEY: Final = 0x6F757464
#: ``Connection.info`` key set while a unit of work begins SQLAlchemy's transaction
#: object on a database transaction it already opened (the begin event then sends
#: nothing).
_BEGUN: Final = "outdial_begun"
#: First key of the per-campaign advisory lock that serialises imports.
_IMPORT_LOCK_SPACE: Final = 0x696D70  # b"imp"
#: A campaign's counters are the sum of up to this many rows (``shard`` 0 to 15).
#: Each PostgreSQL transaction adds its moves to one of them, so concurrent
#: transactions of the same campaign seldom wait for each other's commit on one
#: row; SQLite (one writer at a time) writes shard 0 only.
COUNTER_SHARDS: Final = 16

_CHUNK = 1_000  # rows per statement for IN lists and inserts
_COPY_AT_LEAST = 200  # PostgreSQL: batches this large are written with COPY
_PENDING = RecipientStatus.PENDING.value
_ENDED = AttemptStatus.ENDED.value
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FINAL = tuple(s.value for s in RecipientStatus if s.final)
_DISPATCHABLE = (
    CampaignStatus.SCHEDULED.value,
    CampaignStatus.ACTIVE.value,
    CampaignStatus.PAUSED.value,
)
_UNTITLED = ("", "Untitled Campaign")
_MINUTE = timedelta(seconds=60)
_US = timedelta(microseconds=1)
_STATUS_COLUMNS = tuple(s.value for s in RecipientStatus)
#: the columns that are fields of ``CampaignCounters``
_CAMPAIGN_COUNTERS = (*_STATUS_COLUMNS, "total", "answered", "attempts")
_OUTCOME_COLUMNS = {o.value: f"outcome_{o.value}" for o in CallOutcome}
_COUNTER_COLUMNS = (*_CAMPAIGN_COUNTERS, "answered_calls", *_OUTCOME_COLUMNS.values())


# -- rows <-> values -----------------------------------------------------------------------


def _campaign_values(c: Campaign) -> dict[str, Any]:
    return {
        "workspace_id": c.workspace_id,
        "name": c.name,
        "description": c.description,
        "status": c.status.value,
        "agent": unstructure(c.agent),
        "schedule_type": c.schedule_type.value,
        "scheduled_start_at": c.scheduled_start_at,
        "expires_at": c.expires_at,
        "timezone": c.timezone,
        "business_hours": None if c.business_hours is None else unstructure(c.business_hours),
        "rule_set": c.rule_set,
        "default_region": c.default_region,
        "concurrency_limit": c.concurrency_limit,
        "calls_per_minute": c.calls_per_minute,
        "min_spacing_us": c.min_spacing // _US,
        "daily_cap": c.daily_cap,
        "retry_policy": unstructure(c.retry_policy),
        "prompt_variables": dict(c.prompt_variables),
        "csv_column_headers": list(c.csv_column_headers),
        "max_recipients": c.max_recipients,
        "created_by": c.created_by,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
        "started_at": c.started_at,
        "completed_at": c.completed_at,
        "deleted_at": c.deleted_at,
        "status_reason": c.status_reason,
    }


def _counter_sum(name: str) -> Any:
    """The sum of a counter column over a campaign's shards (0 when it has none)."""
    type_: Any = sa.Float() if name == "answered_seconds" else sa.BigInteger()
    zero: Any = sa.literal_column("0")  # not a parameter: the hot reads bind none for it
    return sa.cast(sa.func.coalesce(sa.func.sum(COUNTERS.c[name]), zero), type_).label(name)


def _totals(campaign_id: Any, postgres: bool) -> tuple[Any, Any]:
    """What to outer-join for the counters of the campaign ``campaign_id`` names,
    and on what: on PostgreSQL the sum of its shards (a ``LATERAL`` sub-select:
    one index range per campaign read); on SQLite its one row (shard 0, the only
    one SQLite writes)."""
    if not postgres:
        return COUNTERS, COUNTERS.c.campaign_id == campaign_id
    sums = (
        sa.select(*(_counter_sum(name) for name in _CAMPAIGN_COUNTERS))
        .where(COUNTERS.c.campaign_id == campaign_id)
        .lateral("totals")
    )
    return sums, sa.true()


def _campaign_select(postgres: bool) -> sa.Select[Any]:
    """Campaign rows with their counters (the columns ``_campaign_from`` reads)."""
    totals, on = _totals(_C.id, postgres)
    return sa.select(*CAMPAIGNS.c, *(totals.c[name] for name in _CAMPAIGN_COUNTERS)).select_from(
        CAMPAIGNS.outerjoin(totals, on)
    )


_CAMPAIGN_CACHE_SIZE = 1_024
_set_counters = copier(Campaign, "counters")


def _campaign_from(m: Mapping[str, Any], counters: CampaignCounters) -> Campaign:
    hours = m["business_hours"]
    return Campaign(
        id=m["id"],
        workspace_id=m["workspace_id"],
        created_at=m["created_at"],
        name=m["name"],
        description=m["description"],
        status=CampaignStatus(m["status"]),
        agent=structure(m["agent"], AgentSettings),
        schedule_type=ScheduleType(m["schedule_type"]),
        scheduled_start_at=m["scheduled_start_at"],
        expires_at=m["expires_at"],
        timezone=m["timezone"],
        business_hours=None if hours is None else structure(hours, BusinessHours),
        rule_set=m["rule_set"],
        default_region=m["default_region"],
        concurrency_limit=m["concurrency_limit"],
        calls_per_minute=m["calls_per_minute"],
        min_spacing=timedelta(microseconds=m["min_spacing_us"]),
        daily_cap=m["daily_cap"],
        retry_policy=structure(m["retry_policy"], RetryPolicy),
        prompt_variables=m["prompt_variables"],
        csv_column_headers=tuple(m["csv_column_headers"]),
        max_recipients=m["max_recipients"],
        created_by=m["created_by"],
        counters=counters,
        updated_at=m["updated_at"],
        started_at=m["started_at"],
        completed_at=m["completed_at"],
        deleted_at=m["deleted_at"],
        status_reason=m["status_reason"],
        version=m["version"],
    )


def _recipient_values(r: Recipient) -> dict[str, Any]:
    return {
        "workspace_id": r.workspace_id,
        "phone": r.phone,
        "priority": r.priority,
        "status": r.status.value,
        "outcome": None if r.outcome is None else r.outcome.value,
        "attempts": r.attempts,
        "next_attempt_at": r.next_attempt_at,
        "last_attempt_at": r.last_attempt_at,
        "last_retry_delay_seconds": r.last_retry_delay_seconds,
        "duration_seconds": r.duration_seconds,
        "external_call_id": r.external_call_id,
        "error": r.error,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "first_name": r.first_name,
        "last_name": r.last_name,
        "email": r.email,
        "company": r.company,
        "variables": dict(r.variables),
        "time_zones": list(r.time_zones),
    }


def _recipient_from_row(row: Any) -> Recipient:
    return _recipient_from(row._mapping)


def _recipient_from(m: Mapping[str, Any]) -> Recipient:
    outcome = m["outcome"]
    return Recipient(
        id=m["id"],
        campaign_id=m["campaign_id"],
        workspace_id=m["workspace_id"],
        phone=m["phone"],
        created_at=m["created_at"],
        first_name=m["first_name"],
        last_name=m["last_name"],
        email=m["email"],
        company=m["company"],
        variables=m["variables"],
        priority=m["priority"],
        seq=m["seq"],
        time_zones=m["time_zones"],
        status=RecipientStatus(m["status"]),
        outcome=None if outcome is None else CallOutcome(outcome),
        attempts=m["attempts"],
        next_attempt_at=m["next_attempt_at"],
        last_attempt_at=m["last_attempt_at"],
        last_retry_delay_seconds=m["last_retry_delay_seconds"],
        duration_seconds=m["duration_seconds"],
        external_call_id=m["external_call_id"],
        error=m["error"],
        updated_at=m["updated_at"],
    )


def _attempt_values(a: Attempt) -> dict[str, Any]:
    return {
        "campaign_id": a.campaign_id,
        "recipient_id": a.recipient_id,
        "workspace_id": a.workspace_id,
        "number": a.number,
        "phone": a.phone,
        "status": a.status.value,
        "provider": a.provider,
        "external_call_id": a.external_call_id,
        "created_at": a.created_at,
        "placed_at": a.placed_at,
        "answered_at": a.answered_at,
        "ended_at": a.ended_at,
        "outcome": None if a.outcome is None else a.outcome.value,
        "duration_seconds": a.duration_seconds,
        "error": a.error,
        "last_sequence": a.last_sequence,
        "worker_id": a.worker_id,
        "claim_token": a.claim_token,
        "test_call": a.test_call,
    }


_ATTEMPT_READ = [c for c in ATTEMPTS.c if c.name not in ("recorded_at", "closed_at")]


def _attempt_from_row(row: Any) -> Attempt:
    return _attempt_from(row._mapping)


def _attempt_from(m: Mapping[str, Any]) -> Attempt:
    outcome = m["outcome"]
    return Attempt(
        id=m["id"],
        campaign_id=m["campaign_id"],
        recipient_id=m["recipient_id"],
        workspace_id=m["workspace_id"],
        number=m["number"],
        phone=m["phone"],
        created_at=m["created_at"],
        status=AttemptStatus(m["status"]),
        provider=m["provider"],
        external_call_id=m["external_call_id"],
        placed_at=m["placed_at"],
        answered_at=m["answered_at"],
        ended_at=m["ended_at"],
        outcome=None if outcome is None else CallOutcome(outcome),
        duration_seconds=m["duration_seconds"],
        error=m["error"],
        last_sequence=m["last_sequence"],
        worker_id=m["worker_id"],
        claim_token=m["claim_token"],
        test_call=bool(m["test_call"]),
    )


_COUNTER_FIELDS = tuple(field.name for field in attrs.fields(CampaignCounters))
assert set(_COUNTER_FIELDS) == set(_CAMPAIGN_COUNTERS)


def _counters_from(
    m: Mapping[str, Any] | None, moves: Mapping[str, float] | None
) -> CampaignCounters:
    if m is None:
        m = {}
    if moves:
        return CampaignCounters(
            *[int(m.get(name) or 0) + int(moves.get(name, 0)) for name in _COUNTER_FIELDS]
        )
    return CampaignCounters(*[int(m.get(name) or 0) for name in _COUNTER_FIELDS])


def _answered(status: str, outcome: str | None) -> int:
    return int(status == RecipientStatus.COMPLETED.value and outcome == CallOutcome.ANSWERED.value)


def _final_outcome(status: str, outcome: str | None) -> str | None:
    return outcome if status in _FINAL else None


def _answered_duration(status: str, outcome: str | None, duration: float | None) -> float | None:
    if status != _ENDED or outcome != CallOutcome.ANSWERED.value:
        return None
    return duration


def _first_line(exc: sa.exc.DBAPIError) -> str:
    text = str(exc.orig if exc.orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _folded(column: Any, postgres: bool) -> Any:
    """``column`` case-folded in SQL (Python's ``str.casefold`` on SQLite)."""
    return sa.func.lower(column) if postgres else sa.func.outdial_casefold(column)


# -- statements built once ------------------------------------------------------------------

_P = sa.bindparam
_R = RECIPIENTS.c
_A = ATTEMPTS.c
_C = CAMPAIGNS.c
# Literal, not bound: the planners match these against the partial indexes' predicates.
_IS_PENDING = _R.status == sa.literal_column("'pending'")
_NOT_ENDED = _A.status != sa.literal_column("'ended'")

_CAMPAIGN_EXISTS = sa.select(_C.id).where(_C.id == _P("id"))
# (the reads of campaigns with their counters differ by dialect: see _Statements)
_GET_RECIPIENT = sa.select(RECIPIENTS).where(_R.id == _P("id"))
# An attempt, its recipient, its campaign's version and stored counters, and how
# many attempts the recipient has, in one round trip (the runners read the attempt,
# its recipient, campaign and history in turn). The campaign's settings come from
# the repository's cache while its version is the one read here.
_HISTORY = ATTEMPTS.alias("history")


def _attempt_select(postgres: bool, *, with_recipient: bool = False) -> sa.Select[Any]:
    """Attempt rows with the recipient, campaign version, counters and history count
    (the columns ``SqlUnitOfWork._hold`` reads, by position). ``with_recipient``: only
    attempts whose recipient exists (an inner join, so that both rows can be locked);
    otherwise a test call's attempt, which has none, comes with null recipient columns."""
    totals, on = _totals(_A.campaign_id, postgres)
    recipient_on = RECIPIENTS.c.id == _A.recipient_id
    joined = (
        ATTEMPTS.join(RECIPIENTS, recipient_on)
        if with_recipient
        else ATTEMPTS.outerjoin(RECIPIENTS, recipient_on)
    )
    return sa.select(
        *_ATTEMPT_READ,
        *(column.label(f"r_{column.name}") for column in RECIPIENTS.c),
        _C.version.label("c_version"),
        *(totals.c[name].label(f"n_{name}") for name in _CAMPAIGN_COUNTERS),
        sa.select(sa.func.count())
        .where(_HISTORY.c.recipient_id == _A.recipient_id)
        .scalar_subquery()
        .label("history"),
    ).select_from(
        joined.outerjoin(CAMPAIGNS, CAMPAIGNS.c.id == _A.campaign_id).outerjoin(totals, on)
    )


_ATTEMPT_NAMES = tuple(column.name for column in _ATTEMPT_READ)
_RECIPIENT_NAMES = tuple(column.name for column in RECIPIENTS.c)
_AT_RECIPIENT = len(_ATTEMPT_NAMES)  # where the recipient's columns start in such a row
_AT_VERSION = _AT_RECIPIENT + len(_RECIPIENT_NAMES)
_AT_COUNTERS = _AT_VERSION + 1
_AT_HISTORY = _AT_COUNTERS + len(_CAMPAIGN_COUNTERS)
_STORED_ATTEMPT = sa.select(
    _A.status,
    _A.outcome,
    _A.duration_seconds,
    _A.test_call,
    _A.campaign_id,
    _A.claim_token,
    _A.provider,
    _A.external_call_id,
).where(_A.id == _P("id"))
_EXTERNAL_OWNER = sa.select(_A.id).where(
    _A.provider == _P("provider"), _A.external_call_id == _P("external"), _A.id != _P("id")
)
_READY = (
    sa.select(RECIPIENTS)
    .where(_R.campaign_id == _P("cid"), _IS_PENDING, _R.next_attempt_at.is_(None))
    .order_by(_R.priority.desc(), _R.seq)
    .limit(_P("limit"))
)
_WAITING_DUE = (
    sa.select(RECIPIENTS)
    .where(
        _R.campaign_id == _P("cid"),
        _IS_PENDING,
        _R.next_attempt_at.is_not(None),
        _R.next_attempt_at <= _P("now", type_=_R.next_attempt_at.type),
    )
    .order_by(_R.priority.desc(), _R.seq)
    .limit(_P("limit"))
)
_NEXT_DUE = sa.select(sa.func.min(_R.next_attempt_at)).where(
    _R.campaign_id == _P("cid"),
    _IS_PENDING,
    _R.next_attempt_at.is_not(None),
    _R.next_attempt_at > _P("now", type_=_R.next_attempt_at.type),
)
_LAST_START = (
    sa.select(_A.created_at)
    .where(
        _A.campaign_id == _P("cid"),
        _A.test_call.is_(False),
        _A.created_at <= _P("now", type_=_A.created_at.type),
    )
    .order_by(_A.created_at.desc())
    .limit(1)
)
_STARTS_BETWEEN = (
    sa.select(_A.created_at)
    .where(
        _A.campaign_id == _P("cid"),
        _A.test_call.is_(False),
        _A.created_at > _P("after", type_=_A.created_at.type),
        _A.created_at <= _P("now", type_=_A.created_at.type),
    )
    .order_by(_A.created_at.desc())
    .limit(_P("keep"))
)
_COUNT_STARTS = sa.select(sa.func.count()).select_from(
    sa.select(_A.id)
    .where(
        _A.campaign_id == _P("cid"),
        _A.test_call.is_(False),
        _A.created_at >= _P("since", type_=_A.created_at.type),
        _A.created_at <= _P("now", type_=_A.created_at.type),
    )
    .limit(_P("keep"))
    .subquery()
)
_LAST_AND_PACING = sa.select(
    _LAST_START.scalar_subquery().label("last"), _C.calls_per_minute, _C.daily_cap
).where(_C.id == _P("cid"))
#: ``dial_stats`` reads at least this many starts (more when the campaign's own
#: ``calls_per_minute`` / ``daily_cap`` is larger), so its cost stays flat however
#: fast calls start; the engine only looks at the newest ``calls_per_minute``
#: starts of the last minute and compares ``starts_today`` with ``daily_cap``.
MINUTE_STARTS_KEPT: Final = 64
DAY_STARTS_COUNTED: Final = 1_000
_IN_FLIGHT = (
    sa.select(_A.campaign_id, _A.workspace_id, _A.test_call, sa.func.count())
    .where(_NOT_ENDED)
    .group_by(_A.campaign_id, _A.workspace_id, _A.test_call)
)
_UNFINISHED = (
    sa.select(*_ATTEMPT_READ)
    .where(_NOT_ENDED, _A.created_at < _P("before", type_=_A.created_at.type))
    .order_by(_A.created_at)
)
_ATTEMPTS_FOR = (
    sa.select(*_ATTEMPT_READ).where(_A.recipient_id == _P("rid")).order_by(_A.number, _A.created_at)
)
_ATTEMPT_STARTS = (
    sa.select(_A.recipient_id, _A.created_at)
    .where(
        _A.recipient_id.in_(_P("ids", expanding=True)),
        _A.test_call.is_(False),
        _A.created_at >= _P("since", type_=_A.created_at.type),
    )
    .order_by(_A.created_at)
)
_EXISTING_PHONES = sa.select(_R.phone).where(
    _R.campaign_id == _P("cid"), _R.phone.in_(_P("phones", expanding=True))
)
_EXISTING_RECIPIENT_IDS = sa.select(_R.id).where(_R.id.in_(_P("ids", expanding=True)))
_MAX_SEQ = sa.select(sa.func.coalesce(sa.func.max(_R.seq), 0)).where(_R.campaign_id == _P("cid"))
_MAX_RANK = sa.select(sa.func.coalesce(sa.func.max(_C.rank), 0))
_SUPPRESSED = sa.select(SUPPRESSIONS.c.phone).where(
    SUPPRESSIONS.c.workspace_id == _P("ws"),
    SUPPRESSIONS.c.phone.in_(_P("phones", expanding=True)),
)
_UNSUPPRESS = sa.delete(SUPPRESSIONS).where(
    SUPPRESSIONS.c.workspace_id == _P("ws"), SUPPRESSIONS.c.phone == _P("phone")
)
# sums over the campaign's shards: always one row (zeros for a campaign without any)
_DURATIONS = sa.select(_counter_sum("answered_calls"), _counter_sum("answered_seconds")).where(
    COUNTERS.c.campaign_id == _P("cid")
)
_COUNTERS_ROW = sa.select(*(_counter_sum(n) for n in _COUNTER_COLUMNS)).where(
    COUNTERS.c.campaign_id == _P("cid")
)
_RECIPIENT_STATE = sa.select(_R.status, _R.campaign_id).where(_R.id == _P("id"))
_PHONE_TAKEN = sa.select(_R.id).where(
    _R.campaign_id == _P("cid"), _R.phone == _P("phone"), _R.id != _P("id")
)
_CAMPAIGN_STATE = sa.select(_C.workspace_id, _C.version).where(_C.id == _P("id"))
_RECIPIENT_UPDATE_COLUMNS = tuple(
    _recipient_values(
        Recipient(id="", campaign_id="", workspace_id="", phone="", created_at=_EPOCH)
    )
)
_UPDATE_STATEMENTS_KEPT = 256


def _changed_columns(params: Mapping[str, Any], before: Mapping[str, Any]) -> tuple[str, ...]:
    """The recipient columns a write changes (the status always: it is the
    compare-and-set)."""
    return tuple(
        name
        for name in _RECIPIENT_UPDATE_COLUMNS
        if name == "status" or params[name] != before[name]
    )


def _recipient_update(columns: tuple[str, ...], final: bool) -> sa.Update:
    """``UPDATE`` of ``columns`` as a compare-and-set on the status read (and, for a
    final recipient, the outcome read); built once per column set."""
    return _RECIPIENT_UPDATES[columns, final]


def _build_recipient_update(key: tuple[tuple[str, ...], bool]) -> sa.Update:
    columns, final = key
    statement = (
        sa.update(RECIPIENTS)
        .where(
            _R.id == _P("r_id"),
            _R.campaign_id == _P("r_campaign_id"),
            _R.status == _P("r_previous_status"),
        )
        .values({name: _P(name, type_=_R[name].type) for name in columns})
    )
    if final:
        statement = statement.where(
            _R.outcome.is_not_distinct_from(_P("r_previous_outcome", type_=_R.outcome.type))
        )
    return statement


_RECIPIENT_UPDATES: Memo[tuple[tuple[str, ...], bool], sa.Update] = Memo(
    _build_recipient_update, _UPDATE_STATEMENTS_KEPT
)
_ATTEMPT_UPDATE_COLUMNS = tuple(
    _attempt_values(
        Attempt(
            id="",
            campaign_id="",
            recipient_id="",
            workspace_id="",
            number=0,
            phone="",
            created_at=_EPOCH,
        )
    )
)
_CAMPAIGN_UPDATE_COLUMNS = tuple(
    _campaign_values(Campaign(id="", workspace_id="", created_at=_EPOCH))
)
_UPDATE_CAMPAIGN = (
    sa.update(CAMPAIGNS)
    .where(_C.id == _P("c_id"), _C.workspace_id == _P("c_ws"), _C.version == _P("c_version"))
    .values(
        {
            **{name: _P(name, type_=_C[name].type) for name in _CAMPAIGN_UPDATE_COLUMNS},
            "version": _C.version + 1,
        }
    )
)
#: counter columns in the order their moves are written, and the whole-number ones
_COUNTER_ORDER = {name: i for i, name in enumerate((*_COUNTER_COLUMNS, "answered_seconds"))}
_INTEGRAL = frozenset(_COUNTER_COLUMNS)


def _move_counters(deltas: tuple[str, ...], postgres: bool) -> Any:
    """The statement adding the ``d_<column>`` parameters named in ``deltas`` to a
    campaign's counters (only the columns that move: built once per set).

    SQLite: ``UPDATE`` of the campaign's one row. PostgreSQL: an upsert into the
    shard named by the ``shard`` parameter (``INSERT ... ON CONFLICT DO UPDATE``:
    the shard's row is made by the first move that lands in it).
    """
    return _COUNTER_MOVES[deltas, postgres]


def _build_counter_move(key: tuple[tuple[str, ...], bool]) -> Any:
    deltas, postgres = key
    types = {
        delta: sa.Float() if delta == "d_answered_seconds" else sa.BigInteger() for delta in deltas
    }
    if postgres:
        insert = pg_dialect.insert(COUNTERS)
        zero: Any = sa.literal_column("0")
        return insert.values(
            {
                "campaign_id": _P("c_id"),
                "shard": _P("shard", type_=sa.Integer()),
                **{
                    name: _P(f"d_{name}", type_=types[f"d_{name}"])
                    if f"d_{name}" in types
                    else zero
                    for name in (*_COUNTER_COLUMNS, "answered_seconds")
                },
            }
        ).on_conflict_do_update(
            index_elements=[COUNTERS.c.campaign_id, COUNTERS.c.shard],
            set_={d[2:]: COUNTERS.c[d[2:]] + insert.excluded[d[2:]] for d in deltas},
        )
    return (
        sa.update(COUNTERS)
        .where(COUNTERS.c.campaign_id == _P("c_id"))
        .values({d[2:]: COUNTERS.c[d[2:]] + _P(d, type_=types[d]) for d in deltas})
    )


_COUNTER_MOVES: Memo[tuple[tuple[str, ...], bool], Any] = Memo(
    _build_counter_move, _UPDATE_STATEMENTS_KEPT
)


_ATTEMPT_BINDS = {name: _P(name, type_=_A[name].type) for name in _ATTEMPT_UPDATE_COLUMNS}
_ENDING = _P("status", type_=_A.status.type) == sa.literal_column("'ended'")


class _Statements:
    """Statements that differ between SQLite and PostgreSQL, built once per dialect."""

    def __init__(self, postgres: bool) -> None:
        insert = pg_dialect.insert if postgres else sqlite_dialect.insert
        # the database clock on PostgreSQL; a bound stamp (taken under SQLite's write
        # lock) on SQLite: either way later transactions get later stamps
        stamp: Any = (
            sa.func.clock_timestamp() if postgres else _P("stamp", type_=_A.recorded_at.type)
        )
        self.insert_attempt = (
            insert(ATTEMPTS)
            .values(
                {
                    **_ATTEMPT_BINDS,
                    "id": _P("id"),
                    "recorded_at": stamp,
                    "closed_at": sa.case((_ENDING, stamp), else_=None),
                }
            )
            .on_conflict_do_nothing()
            # rowcount of an INSERT is only kept when asked for (SQLAlchemy 2.1)
            .execution_options(preserve_rowcount=True)
        )
        self._stamp = stamp
        self._attempt_updates: dict[tuple[str, ...], sa.Update] = {}
        self.suppress = insert(SUPPRESSIONS).on_conflict_do_nothing()
        # Batch checks of an import: on PostgreSQL one array parameter, whose prepared
        # plan stays an index lookup as the table grows (a list of 1,000 parameters
        # got a generic plan estimated on the empty table: a scan per batch).
        if postgres:
            texts = pg_dialect.ARRAY(sa.Text)
            self.existing_phones = sa.select(_R.phone).where(
                _R.campaign_id == _P("cid"), _R.phone == sa.any_(_P("phones", type_=texts))
            )
            self.existing_ids = sa.select(_R.id).where(_R.id == sa.any_(_P("ids", type_=texts)))
        else:
            self.existing_phones = _EXISTING_PHONES
            self.existing_ids = _EXISTING_RECIPIENT_IDS
        beat = insert(WORKERS)
        self.heartbeat = beat.on_conflict_do_update(
            index_elements=[WORKERS.c.worker_id],
            set_={"heartbeat_at": beat.excluded.heartbeat_at},
        )
        # campaigns and attempts read with their counters (summed over the shards on
        # PostgreSQL)
        self.campaigns = _campaign_select(postgres)
        self.get_campaign = self.campaigns.where(_C.id == _P("id"))
        # every dispatch round reads them (literal statuses: the statement has no list
        # parameter)
        self.dispatchable_campaigns = self.campaigns.where(
            _C.status.in_([sa.literal_column(f"'{status}'") for status in _DISPATCHABLE]),
            _C.deleted_at.is_(None),
        ).order_by(_C.created_at, _C.rank)
        attempts = _attempt_select(postgres)
        by_id = _A.id == _P("id")
        by_call = (_A.provider == _P("provider"), _A.external_call_id == _P("external"))
        self.get_attempt = attempts.where(by_id)
        self.find_attempt = attempts.where(*by_call)
        # the same for an attempt without a recipient row (a test call), where the
        # statements above found none (None: they cannot miss one, see below)
        self.get_attempt_alone: sa.Select[Any] | None = None
        self.find_attempt_alone: sa.Select[Any] | None = None
        self.stored_attempt = _STORED_ATTEMPT
        self.claim_ready = _READY
        self.claim_waiting = _WAITING_DUE
        if postgres:  # row locks (SQLite's write lock already covers the whole file)
            # The attempt's recipient is locked with it. Under READ COMMITTED a lock that
            # had to wait re-reads the rows it locks at their newest versions, but a row
            # it only joins keeps the version of the statement's snapshot: a recipient
            # that the transaction waited for had just moved (a placement recorded) would
            # be read stale, and a save decided from it refused.
            both = _attempt_select(postgres, with_recipient=True)
            self.get_attempt = both.where(by_id).with_for_update(of=[ATTEMPTS, RECIPIENTS])
            self.find_attempt = both.where(*by_call).with_for_update(of=[ATTEMPTS, RECIPIENTS])
            self.get_attempt_alone = attempts.where(by_id).with_for_update(of=ATTEMPTS)
            self.find_attempt_alone = attempts.where(*by_call).with_for_update(of=ATTEMPTS)
            self.stored_attempt = _STORED_ATTEMPT.with_for_update()
            self.claim_ready = _READY.with_for_update(skip_locked=True)
            self.claim_waiting = _WAITING_DUE.with_for_update(skip_locked=True)

    def update_attempt(self, columns: tuple[str, ...]) -> sa.Update:
        """``UPDATE`` of an attempt's ``columns`` (``closed_at`` follows the status)."""
        statement = self._attempt_updates.get(columns)
        if statement is None:
            values: dict[str, Any] = {name: _ATTEMPT_BINDS[name] for name in columns}
            if "status" in columns:
                values["closed_at"] = sa.case(
                    (_ENDING, sa.func.coalesce(_A.closed_at, self._stamp)), else_=None
                )
            statement = sa.update(ATTEMPTS).where(_A.id == _P("a_id")).values(values)
            if len(self._attempt_updates) >= _UPDATE_STATEMENTS_KEPT:
                self._attempt_updates.clear()
            self._attempt_updates[columns] = statement
        return statement


_STATEMENTS = {True: _Statements(postgres=True), False: _Statements(postgres=False)}

_DISPATCH_LOCK = sa.select(sa.func.pg_advisory_xact_lock(DISPATCH_LOCK_KEY))


# -- hot statements straight to the driver ---------------------------------------------------


def _sqlite_instant(text: Any) -> datetime:
    """A stored SQLite instant (``YYYY-MM-DD HH:MM:SS.ffffff``, UTC) as an aware value."""
    if isinstance(text, datetime):  # pragma: no cover - a driver that parses itself
        return text if text.tzinfo is not None else text.replace(tzinfo=UTC)
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _pg_instant(value: datetime) -> datetime:
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def _sqlite_bind(value: Any) -> Any:
    """A parameter as :class:`~outdial.sql.schema.UtcDateTime` / ``JSON`` store it on
    SQLite (instants as UTC text with microseconds, documents as JSON text)."""
    if isinstance(value, datetime):
        if value.tzinfo is not UTC:
            value = to_utc(value)
        return value.replace(tzinfo=None).isoformat(" ", "microseconds")
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return value


def _pg_bind(value: Any) -> Any:
    """A parameter as psycopg takes it (aware UTC instants, documents as ``jsonb``)."""
    if isinstance(value, datetime):
        return value if value.tzinfo is UTC else to_utc(value)
    if isinstance(value, (dict, list)):
        from psycopg.types.json import Jsonb

        return Jsonb(value)
    return value


#: bound parameter types whose values the drivers take as they are
_PLAIN_TYPES = (sa.String, sa.Integer, sa.Float, sa.Boolean)


def _no_values(params: Mapping[str, Any]) -> tuple[()]:
    return ()


def _encoder(type_: Any, postgres: bool) -> Any:
    """How a parameter of ``type_`` is converted for the driver (None: not at all)."""
    if isinstance(type_, _PLAIN_TYPES) and not isinstance(type_, sa.JSON):
        return None
    return _pg_bind if postgres else _sqlite_bind


def _decoder(type_: Any, postgres: bool) -> Any:
    if isinstance(type_, UtcDateTime):
        return _pg_instant if postgres else _sqlite_instant
    if postgres:
        return None
    if isinstance(type_, sa.JSON):
        return json.loads
    if isinstance(type_, sa.Boolean):
        return bool
    return None


class _Compiled:
    """One statement compiled for one dialect: its SQL text, how to bind its
    parameters and how to decode the columns of its rows."""

    __slots__ = (
        "columns",
        "convert_at",
        "decoders",
        "defaults",
        "names",
        "positional",
        "postgres",
        "sql",
        "statement",
        "take",
    )

    def __init__(self, statement: Any, dialect: sa.Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.statement = statement  # kept alive: the cache is keyed by its id
        self.sql: str = compiled.string
        self.postgres = dialect.name == "postgresql"
        self.positional = bool(compiled.positional)
        self.names: tuple[str, ...] = tuple(
            compiled.positiontup if compiled.positional else compiled.params
        )
        self.defaults: dict[str, Any] = dict(compiled.params)
        # the parameters' values in order, and how those that need it are converted
        self.take: Any = operator.itemgetter(*self.names) if self.names else _no_values
        self.convert_at: tuple[tuple[int, Any], ...] = tuple(
            (i, convert)
            for i, convert in enumerate(
                _encoder(compiled.binds[name].type, self.postgres) for name in self.names
            )
            if convert is not None
        )
        columns = list(getattr(statement, "selected_columns", ()))
        if not columns and getattr(statement, "_returning", None):
            columns = list(statement._returning)
        self.columns: tuple[str, ...] = tuple(c.name for c in columns)
        self.decoders = tuple(
            (i, d)
            for i, d in enumerate(_decoder(c.type, self.postgres) for c in columns)
            if d is not None
        )

    def bind(self, params: Mapping[str, Any]) -> Any:
        try:  # the usual case: every parameter given
            values = list(self.take(params)) if len(self.names) != 1 else [self.take(params)]
            given = True
        except KeyError:
            defaults = self.defaults
            values = [params[n] if n in params else defaults[n] for n in self.names]
            given = False
        for i, convert in self.convert_at:
            value = values[i]
            if value is not None and (given or self.names[i] in params):
                values[i] = convert(value)
        if self.positional:
            return values
        return dict(zip(self.names, values, strict=True))


class _Driver:
    """Sends outdial's hot statements to the DB-API connection itself.

    SQLAlchemy Core costs more per statement (compilation cache look-up, result
    objects, type processing per column) than SQLite takes to run one, so each
    statement is compiled once per dialect here (the same SQL text SQLAlchemy
    sends), its parameters converted the way the column types would convert them,
    and its rows decoded by column position. Driver errors still come out as
    SQLAlchemy's wrapped ``DBAPIError`` (``IntegrityError``...), with the same
    disconnect handling.
    """

    __slots__ = ("_cache", "_dialect")

    def __init__(self, dialect: sa.Dialect) -> None:
        self._dialect = dialect
        self._cache: dict[int, _Compiled] = {}

    def compiled(self, statement: Any) -> _Compiled:
        found = self._cache.get(id(statement))
        if found is not None and found.statement is statement:
            return found
        if len(self._cache) >= _UPDATE_STATEMENTS_KEPT * 4:
            self._cache.clear()
        found = self._cache[id(statement)] = _Compiled(statement, self._dialect)
        return found

    def names(self, statement: Any) -> tuple[str, ...]:
        """The names of the columns ``statement`` selects, in order."""
        return self.compiled(statement).columns


#: parameters one batch statement may bind (SQLite's historical limit; PostgreSQL takes 65,535)
_BATCH_PARAMETERS = {False: 999, True: 65_535}
#: the attempt columns a claim batch inserts (``recorded_at``/``closed_at`` follow)
_CLAIM_ATTEMPT_COLUMNS = ("id", *_ATTEMPT_UPDATE_COLUMNS)
#: PostgreSQL type of each recipient column, for the casts of ``UPDATE ... FROM (VALUES ...)``
_PG: sa.Dialect = pg_dialect.dialect()  # type: ignore[no-untyped-call]
_PG_RECIPIENT_TYPES = {c.name: c.type.compile(dialect=_PG) for c in RECIPIENTS.c}
#: SQLite runs ``UPDATE ... FROM`` from 3.33 and ``RETURNING`` from 3.35; older: one by one
_SQLITE_BATCHES = sqlite3.sqlite_version_info >= (3, 35, 0)
_BATCH_SQL_KEPT = 512
_BATCH_SQL: dict[tuple[Any, ...], str] = {}


def _batch_sql(key: tuple[Any, ...], build: Any) -> str:
    """The SQL text of a batch statement, built once per shape (``key``)."""
    sql = _BATCH_SQL.get(key)
    if sql is None:
        if len(_BATCH_SQL) >= _BATCH_SQL_KEPT:
            _BATCH_SQL.clear()
        sql = _BATCH_SQL[key] = build()
    return sql


#: psycopg's named parameters in compiled SQL text, and the prefix that renames the
#: attempt's apart from the recipient's when the two writes share a statement
_NAMED = re.compile(r"%\((\w+)\)s")
_APART = "att__"
#: ``psycopg.pq.TransactionStatus.INERROR``: a statement of the transaction failed
_PG_IN_ERROR: Final = 3
#: attempt columns whose change no constraint can refuse (a change of ``status`` only
#: when the attempt leaves flight: the in-flight unique index cannot refuse that)
_SAFE_ATTEMPT_COLUMNS = frozenset(
    (
        "status",
        "placed_at",
        "answered_at",
        "ended_at",
        "outcome",
        "duration_seconds",
        "error",
        "last_sequence",
        "worker_id",
        "claim_token",
    )
)


def _deferrable(columns: tuple[str, ...], params: Mapping[str, Any]) -> bool:
    """Whether an attempt write of ``columns`` cannot be refused by the database (so
    it may be sent later, with the next statement)."""
    if not _SAFE_ATTEMPT_COLUMNS.issuperset(columns):
        return False
    return "status" not in columns or params["status"] == _ENDED


def _claims_insert_sql(rows: int, postgres: bool) -> str:
    """``INSERT`` of ``rows`` attempts (``ON CONFLICT DO NOTHING RETURNING id``), the
    parameters in :data:`_CLAIM_ATTEMPT_COLUMNS` order then, on PostgreSQL, the status
    again (``closed_at`` follows it as in the one-row insert), on SQLite the two stamps."""

    def build() -> str:
        mark = "%s" if postgres else "?"
        values = ", ".join(mark for _ in _CLAIM_ATTEMPT_COLUMNS)
        if postgres:
            row = f"({values}, clock_timestamp(), CASE WHEN {mark} = 'ended' "
            row += "THEN clock_timestamp() END)"
        else:
            row = f"({values}, {mark}, {mark})"
        names = ", ".join((*_CLAIM_ATTEMPT_COLUMNS, "recorded_at", "closed_at"))
        return (
            f"INSERT INTO {ATTEMPTS.name} ({names}) VALUES "  # noqa: S608 - schema names only
            + ", ".join(row for _ in range(rows))
            + " ON CONFLICT DO NOTHING RETURNING id"
        )

    return _batch_sql(("insert", rows, postgres), build)


def _claims_update_sql(rows: int, columns: tuple[str, ...], final: bool, postgres: bool) -> str:
    """One compare-and-set ``UPDATE ... FROM (VALUES ...) RETURNING id`` of ``rows``
    recipients: per row the id, campaign, status and outcome read, then ``columns``
    (the same guard as :func:`_recipient_update`)."""

    def build() -> str:
        keys = ("r_id", "r_campaign_id", "r_previous_status", "r_previous_outcome")
        if postgres:
            types = ("text", "text", "text", "text", *(_PG_RECIPIENT_TYPES[n] for n in columns))
            row = "(" + ", ".join(f"%s::{t}" for t in types) + ")"
            names = [*keys, *(f"v_{name}" for name in columns)]
            alias = f"v({', '.join(names)})"
            ref = [f"v.{n}" for n in names]
            same_outcome = f"r.outcome IS NOT DISTINCT FROM {ref[3]}"
            returning = "r.id"
        else:  # SQLite names the columns of VALUES column1, column2...
            row = "(" + ", ".join("?" for _ in range(len(keys) + len(columns))) + ")"
            alias = "v"
            ref = [f"v.column{i + 1}" for i in range(len(keys) + len(columns))]
            same_outcome = f"r.outcome IS {ref[3]}"
            returning = "id"  # SQLite's RETURNING names the updated table's columns bare
        sets = ", ".join(f"{name} = {ref[4 + i]}" for i, name in enumerate(columns))
        where = f"r.id = {ref[0]} AND r.campaign_id = {ref[1]} AND r.status = {ref[2]}"
        if final:
            where += f" AND {same_outcome}"
        return (
            f"UPDATE {RECIPIENTS.name} AS r SET {sets} FROM (VALUES "  # noqa: S608 - schema names
            + ", ".join(row for _ in range(rows))
            + f") AS {alias} WHERE {where} RETURNING {returning}"
        )

    return _batch_sql(("update", rows, columns, final, postgres), build)


class _Moves:
    """Counter moves of one transaction not yet written: campaign -> column -> delta."""

    __slots__ = ("counters", "version")

    def __init__(self) -> None:
        self.counters: dict[str, dict[str, float]] = {}
        self.version = 0  # bumped by every change (counters computed from it are stale)

    def add(self, campaign_id: str, **deltas: float) -> None:
        moves = self.counters.setdefault(campaign_id, {})
        self.version += 1
        for name, delta in deltas.items():
            if delta:
                moves[name] = moves.get(name, 0) + delta

    def outcome(self, campaign_id: str, old: str | None, new: str | None, n: int = 1) -> None:
        """``n`` final recipients moved from outcome ``old`` to ``new`` (None: none)."""
        if old == new:
            return
        moves = self.counters.setdefault(campaign_id, {})
        self.version += 1
        if old is not None:
            column = _OUTCOME_COLUMNS[old]
            moves[column] = moves.get(column, 0) - n
        if new is not None:
            column = _OUTCOME_COLUMNS[new]
            moves[column] = moves.get(column, 0) + n

    def merge(self, other: _Moves) -> None:
        for campaign_id, deltas in other.counters.items():
            self.add(campaign_id, **deltas)

    def clear(self) -> None:
        self.counters.clear()
        self.version += 1


class SqlUnitOfWork:
    """One transaction on a :class:`SqlRepository` (implements ``UnitOfWork``).

    Only valid inside its ``with repository.transaction()`` block; using it
    afterwards raises :class:`~outdial.errors.RepositoryError`.
    """

    def __init__(self, repository: SqlRepository, conn: sa.Connection, *, dispatch: bool) -> None:
        self._repo = repository
        self._conn = conn
        self._pg = repository.postgres
        self._dispatch = dispatch
        self._open = True
        self._moves = _Moves()
        self._known: set[str] = set()  # campaign ids seen to exist in this transaction
        self._q = _STATEMENTS[self._pg]
        self._driver = repository._driver
        self._dbapi: Any = None
        self._cursor: Any = None
        self._depth = 0  # savepoints open (see SqlRepository._savepoint)
        # attempts read with a lock (or written) in this transaction: id -> stored values
        self._held: dict[str, dict[str, Any]] = {}
        # what this transaction already read: campaign id -> (stored counters, value)
        # and recipient id -> value (re-reading them would cost a round trip each)
        self._seen_campaigns: dict[str, tuple[Mapping[str, Any], Campaign]] = {}
        self._seen_recipients: dict[str, Recipient] = {}
        # campaign id -> the ``_moves.version`` its seen value's counters were counted at
        self._counted: dict[str, int] = {}
        # campaigns this transaction wrote: their rows are not committed yet, so the
        # repository's cache of decoded campaigns must not learn them from here
        self._written: set[str] = set()
        # recipient id -> its only attempt, when the read that held the attempt counted
        # one attempt for the recipient (``attempts_for`` then needs no query)
        self._histories: dict[str, Attempt] = {}
        # the counters shard this transaction adds its moves to (PostgreSQL; chosen at
        # its first counters write)
        self._shard: int | None = None
        # PostgreSQL: an attempt UPDATE held back so that the recipient write that follows
        # it goes in the same statement (see save_attempt); sent before anything else
        self._deferred: tuple[tuple[str, ...], dict[str, Any]] | None = None
        # SQLAlchemy's transaction on the connection, begun only when a statement goes
        # through SQLAlchemy (the hot statements go to the driver: see _begin)
        self._tx: sa.RootTransaction | None = None

    # -- plumbing -------------------------------------------------------------------------------

    def _check(self) -> None:
        if not self._open:
            raise RepositoryError("this unit of work is closed: its transaction block has ended")

    def _c(self) -> sa.Connection:
        """The SQLAlchemy connection, inside SQLAlchemy's view of the transaction."""
        if not self._open:
            raise RepositoryError("this unit of work is closed: its transaction block has ended")
        if self._deferred is not None:
            self._send_deferred()
        if self._tx is None:
            self._join()
        return self._conn

    def _join(self) -> None:
        """Begin SQLAlchemy's transaction object on the connection without sending
        anything: the database transaction is already open (see :meth:`_begin`)."""
        conn = self._conn
        conn.info[_BEGUN] = True  # the SQLite engine's begin event must not BEGIN again
        try:
            self._tx = conn.begin()
        finally:
            conn.info.pop(_BEGUN, None)

    def _driver_connection(self) -> Any:
        dbapi = self._dbapi
        if dbapi is None:
            dbapi = self._dbapi = self._conn.connection.driver_connection
        return dbapi

    def _failed(self, exc: Exception, sql: str, args: Any) -> None:
        """Raise ``exc`` wrapped (and a lost connection invalidated) as Core does."""
        if self._tx is None:
            self._join()  # so SQLAlchemy does not roll the transaction back by itself
        self._conn._handle_dbapi_exception(exc, sql, args, None, None)

    def _begin(self) -> None:
        """Open the database transaction on the driver connection.

        SQLAlchemy's begin/commit plumbing (events, transaction objects) costs
        more than a small transaction, so the hot path talks to the driver, and
        SQLAlchemy's transaction object is only begun (:meth:`_c`) when a
        statement goes through it. SQLite gets ``BEGIN IMMEDIATE`` here (the
        write lock at once); psycopg begins by itself with the first statement.
        """
        if self._pg:
            return
        try:
            self._driver_connection().execute("BEGIN IMMEDIATE")
        except Exception as exc:
            self._failed(exc, "BEGIN IMMEDIATE", ())

    def _commit(self) -> None:
        """Write the counter moves and commit."""
        if self._deferred is not None:
            self._send_deferred()
        for statement, params in self._counter_writes():
            self._run(statement, params)
        self._end(commit=True)

    def _end(self, commit: bool) -> None:
        """Commit (or roll back) the transaction, through whichever layer began it.

        A PostgreSQL transaction in which a statement failed (an error caught on the
        way, by a savepoint-less ``except``) is rolled back by ``COMMIT`` without a
        word; committing it raises :class:`~outdial.errors.RepositoryError` instead,
        so a failed transaction is never taken for a stored one.
        """
        self._deferred = None  # sent by _commit; dropped by a rollback
        if commit and self._pg and self._failed_on_server():  # the caller rolls back
            raise RepositoryError(
                "the transaction was rolled back: a statement in it failed earlier "
                "(nothing of it was stored)"
            )
        tx = self._tx
        if tx is not None:
            if commit:
                tx.commit()
            else:
                tx.rollback()
            return
        dbapi = self._driver_connection()
        try:
            if commit:
                dbapi.commit()
            else:
                dbapi.rollback()
        except Exception as exc:
            self._failed(exc, "COMMIT" if commit else "ROLLBACK", ())

    def _release(self) -> None:
        """Close this transaction's cursor."""
        cursor, self._cursor = self._cursor, None
        if cursor is not None:
            with suppress(Exception):  # a broken connection is dropped by the pool anyway
                cursor.close()

    def _close(self) -> None:
        self._open = False

    def _failed_on_server(self) -> bool:
        """Whether PostgreSQL has this transaction in its failed state (no round trip)."""
        dbapi = self._driver_connection()
        return bool(dbapi.info.transaction_status == _PG_IN_ERROR)

    def _send_deferred(self) -> None:
        """Send the held-back attempt write on its own (something else comes first)."""
        deferred, self._deferred = self._deferred, None
        if deferred is not None:
            self._run(self._q.update_attempt(deferred[0]), deferred[1])

    def _run(self, statement: Any, params: Mapping[str, Any]) -> Any:
        """Execute ``statement`` through the driver (see :class:`_Driver`); the cursor."""
        compiled = self._driver.compiled(statement)
        return self._execute(compiled.sql, compiled.bind(params))

    def _statement(self, sql: str) -> None:
        """Send ``sql`` (no parameters) to the driver: savepoints."""
        self._execute(sql)

    def _rows(self, statement: Any, params: Mapping[str, Any]) -> list[list[Any]]:
        """The rows of ``statement``, their columns decoded (instants, JSON, booleans)."""
        rows = [list(row) for row in self._run(statement, params).fetchall()]
        decoders = self._driver.compiled(statement).decoders
        if decoders:
            for row in rows:
                for i, decode in decoders:
                    value = row[i]
                    if value is not None:
                        row[i] = decode(value)
        return rows

    def _dicts(self, statement: Any, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The rows of ``statement`` as column name -> decoded value."""
        names = self._driver.names(statement)
        return [dict(zip(names, row, strict=True)) for row in self._rows(statement, params)]

    def _stamp(self) -> datetime | None:
        """The ``stamp`` parameter: None on PostgreSQL (its clock stamps), else this
        process's clock, read under SQLite's write lock."""
        return None if self._pg else datetime.now(UTC)

    def _require_campaign(self, campaign_id: str) -> None:
        if campaign_id in self._known:
            return
        if not self._rows(_CAMPAIGN_EXISTS, {"id": campaign_id}):
            raise NotFound("campaign", campaign_id)
        self._known.add(campaign_id)

    def _flush(self) -> None:
        """Write the counter moves of this transaction: one UPDATE per campaign touched,
        just before commit, so the counters row is locked as briefly as possible."""
        for statement, params in self._counter_writes():
            self._run(statement, params)

    def _counter_writes(self) -> list[tuple[Any, dict[str, Any]]]:
        """The statements that write the counter moves (the moves are then taken as
        written: the caller sends them, or the transaction fails)."""
        writes: list[tuple[Any, dict[str, Any]]] = []
        for campaign_id, moves in self._moves.counters.items():
            deltas = sorted(
                (_COUNTER_ORDER[name], f"d_{name}", int(delta) if name in _INTEGRAL else delta)
                for name, delta in moves.items()
                if delta and (name not in _INTEGRAL or int(delta))
            )
            if not deltas:
                continue
            params: dict[str, Any] = {name: delta for _, name, delta in deltas}
            statement = _move_counters(tuple(params), self._pg)
            params["c_id"] = campaign_id
            if self._pg:  # one shard per transaction (two could deadlock with another's)
                if self._shard is None:
                    self._shard = self._repo._counter_shard()
                params["shard"] = self._shard
            writes.append((statement, params))
            seen = self._seen_campaigns.get(campaign_id)
            if seen is not None:  # the moves are in the stored row now
                stored = dict(seen[0])
                for name, delta in moves.items():
                    if name in stored:
                        stored[name] = int(stored[name] or 0) + int(delta)
                self._seen_campaigns[campaign_id] = (stored, seen[1])
                self._counted.pop(campaign_id, None)
        self._moves.clear()
        return writes

    def _counters(self, campaign_id: str, row: Any) -> CampaignCounters:
        return _counters_from(row, self._moves.counters.get(campaign_id))

    def _campaign(self, row: Any) -> Campaign:
        return self._campaign_from(row._mapping)

    def _campaign_from(self, m: Mapping[str, Any]) -> Campaign:
        """The campaign of a ``_campaign_select`` row with its current counters.

        Decoding the settings (business hours, retry policy...) costs more than
        the query, so the repository keeps the last decoded value per campaign and
        reuses it while the stored version is the same (every change of a stored
        campaign bumps its version).
        """
        campaign_id = m["id"]
        self._known.add(campaign_id)
        stored = {name: m[name] for name in _CAMPAIGN_COUNTERS}
        counters = self._counters(campaign_id, stored)
        cached = self._cached(campaign_id, m["version"])
        if cached is not None:
            campaign = self._with_counters(cached, counters)
        else:
            campaign = _campaign_from(m, counters)
            if campaign_id not in self._written:  # committed: the same for every reader
                cache = self._repo._campaigns
                if len(cache) >= _CAMPAIGN_CACHE_SIZE:
                    cache.clear()
                cache[campaign_id] = (campaign.version, campaign)
        self._seen_campaigns[campaign_id] = (stored, campaign)
        self._counted[campaign_id] = self._moves.version
        return campaign

    def _cached(self, campaign_id: str, version: int) -> Campaign | None:
        """The repository's decoded campaign if it is at ``version`` (stored, committed)."""
        cached = self._repo._campaigns.get(campaign_id)
        if cached is None or cached[0] != version or campaign_id in self._written:
            return None
        return cached[1]

    @staticmethod
    def _with_counters(campaign: Campaign, counters: CampaignCounters) -> Campaign:
        return campaign if campaign.counters == counters else _set_counters(campaign, counters)

    # -- campaigns ------------------------------------------------------------------------------

    def add_campaign(self, campaign: Campaign) -> None:
        """Store a new campaign with zero counters; ``RepositoryError`` if the id is taken."""
        conn = self._c()
        if conn.execute(_CAMPAIGN_EXISTS, {"id": campaign.id}).first() is not None:
            raise RepositoryError(f"campaign {campaign.id!r} already exists")
        if self._pg:
            rank = conn.execute(sa.select(sa.func.nextval(CAMPAIGN_RANK_SEQUENCE))).scalar_one()
        else:
            rank = conn.execute(_MAX_RANK).scalar_one() + 1
        values = _campaign_values(campaign)
        conn.execute(
            sa.insert(CAMPAIGNS),
            {**values, "id": campaign.id, "rank": rank, "version": campaign.version},
        )
        conn.execute(
            sa.insert(COUNTERS),
            {
                "campaign_id": campaign.id,
                **dict.fromkeys(_COUNTER_COLUMNS, 0),
                "answered_seconds": 0.0,
            },
        )
        self._known.add(campaign.id)
        self._written.add(campaign.id)
        zero = dict.fromkeys(_CAMPAIGN_COUNTERS, 0)
        self._counted.pop(campaign.id, None)
        self._seen_campaigns[campaign.id] = (
            zero,
            attrs.evolve(campaign, counters=CampaignCounters()),
        )

    def get_campaign(self, campaign_id: str, workspace_id: str | None = None) -> Campaign:
        """The campaign with current counters (deleted ones too); ``NotFound`` if it does
        not exist or belongs to another workspace than ``workspace_id``.

        A campaign this transaction already read (or wrote) is not read again: its
        counters are the stored ones plus this transaction's moves.
        """
        self._check()
        seen = self._seen_campaigns.get(campaign_id)
        if seen is not None:
            stored, campaign = seen
            if workspace_id is not None and campaign.workspace_id != workspace_id:
                raise NotFound("campaign", campaign_id)
            version = self._moves.version
            if self._counted.get(campaign_id) != version:  # moves since: count again
                campaign = self._with_counters(campaign, self._counters(campaign_id, stored))
                self._seen_campaigns[campaign_id] = (stored, campaign)
                self._counted[campaign_id] = version
            return campaign
        rows = self._dicts(self._q.get_campaign, {"id": campaign_id})
        if not rows or (workspace_id is not None and rows[0]["workspace_id"] != workspace_id):
            raise NotFound("campaign", campaign_id)
        return self._campaign_from(rows[0])

    def get_campaign_settings(self, campaign_id: str) -> Campaign:
        """:meth:`get_campaign` without counting again: a campaign this transaction already
        read (or wrote) comes back as it was (its counters may not include the moves made
        since); any other is read. ``NotFound`` if it does not exist."""
        self._check()
        seen = self._seen_campaigns.get(campaign_id)
        return seen[1] if seen is not None else self.get_campaign(campaign_id)

    def save_campaign(self, campaign: Campaign) -> Campaign:
        """Store ``campaign`` with the stored counters and ``version + 1``; returns it.

        ``RepositoryError`` when ``campaign.version`` is not the stored version;
        ``NotFound`` if it does not exist in the campaign's workspace.
        """
        conn = self._c()
        params = _campaign_values(campaign)
        params.update(c_id=campaign.id, c_ws=campaign.workspace_id, c_version=campaign.version)
        self._written.add(campaign.id)
        if conn.execute(_UPDATE_CAMPAIGN, params).rowcount != 1:
            state = conn.execute(_CAMPAIGN_STATE, {"id": campaign.id}).first()
            if state is None or state.workspace_id != campaign.workspace_id:
                raise NotFound("campaign", campaign.id)
            raise StaleRead(
                "campaign",
                campaign.id,
                f"was changed since it was read (version {campaign.version}, "
                f"stored version {state.version})",
            )
        seen = self._seen_campaigns.get(campaign.id)
        if seen is not None:
            stored: Mapping[str, Any] = seen[0]
        else:
            row = conn.execute(_COUNTERS_ROW, {"cid": campaign.id}).first()
            stored = {} if row is None else dict(row._mapping)
        counters = self._counters(campaign.id, stored)
        saved = attrs.evolve(campaign, counters=counters, version=campaign.version + 1)
        self._seen_campaigns[campaign.id] = (stored, saved)
        self._counted[campaign.id] = self._moves.version
        return saved

    def _campaign_query(self) -> sa.Select[Any]:
        return self._q.campaigns

    def list_campaigns(
        self,
        workspace_id: str,
        *,
        statuses: Sequence[CampaignStatus] = (),
        search: str | None = None,
        page: int = 1,
        page_size: int = 20,
        include_deleted: bool = False,
    ) -> Page:
        """A page of the workspace's campaigns, newest first; ``search`` matches the name
        case-insensitively; deleted campaigns only with ``include_deleted``."""
        conn = self._c()
        offset, limit = page_bounds(page, page_size)
        conditions: list[Any] = [_C.workspace_id == workspace_id]
        if not include_deleted:
            conditions.append(_C.deleted_at.is_(None))
        if statuses:
            conditions.append(_C.status.in_([s.value for s in statuses]))
        if search:
            needle = search.casefold()
            conditions.append(_folded(_C.name, self._pg).contains(needle, autoescape=True))
        total = conn.execute(
            sa.select(sa.func.count()).select_from(CAMPAIGNS).where(*conditions)
        ).scalar_one()
        rows = conn.execute(
            self._campaign_query()
            .where(*conditions)
            .order_by(_C.created_at.desc(), _C.rank.desc())
            .offset(offset)
            .limit(limit)
        )
        items = tuple(self._campaign(row) for row in rows)
        return Page(items=items, page=page, page_size=page_size, total=total)

    def find_recent_draft(
        self, workspace_id: str, created_by: str | None, since: datetime
    ) -> Campaign | None:
        """The newest untitled draft (name ``""`` or ``"Untitled Campaign"``) that
        ``created_by`` created at or after ``since``, not deleted; None if none."""
        row = (
            self._c()
            .execute(
                self._campaign_query()
                .where(
                    _C.workspace_id == workspace_id,
                    _C.status == CampaignStatus.DRAFT.value,
                    _C.deleted_at.is_(None),
                    _C.name.in_(_UNTITLED),
                    _C.created_by.is_not_distinct_from(created_by),
                    _C.created_at >= to_utc(since, "since"),
                )
                .order_by(_C.created_at.desc(), _C.rank.desc())
                .limit(1)
            )
            .first()
        )
        return None if row is None else self._campaign(row)

    def dispatchable_campaigns(self) -> list[tuple[Campaign, CampaignCounters]]:
        """Scheduled, active and paused campaigns that are not deleted, oldest first, each
        with its current counters (the campaign's own, read in the same query)."""
        self._check()
        found = [self._campaign_from(m) for m in self._dicts(self._q.dispatchable_campaigns, {})]
        return [(c, c.counters) for c in found]

    # -- recipients -----------------------------------------------------------------------------

    def add_recipients(self, recipients: Sequence[Recipient]) -> int:
        """Insert recipients (several campaigns allowed); returns how many were inserted.

        A phone already in the same campaign (stored or earlier in the batch) is
        skipped. ``seq`` grows in insertion order within a campaign. ``NotFound``
        for an unknown campaign, ``RepositoryError`` for an id that is taken;
        either way nothing is inserted. Rows are written in batches (``COPY`` on
        PostgreSQL), so memory stays flat however many are given.
        """
        conn = self._c()
        ids: set[str] = set()
        order: dict[str, list[Recipient]] = {}
        for r in recipients:
            if r.id in ids:
                raise RepositoryError(f"recipient {r.id!r} already exists")
            ids.add(r.id)
            order.setdefault(r.campaign_id, []).append(r)
        del ids
        for campaign_id in order:
            self._require_campaign(campaign_id)
        for chunk in _chunks([r.id for r in recipients]):
            taken = conn.execute(self._q.existing_ids, {"ids": list(chunk)}).first()
            if taken is not None:
                raise RepositoryError(f"recipient {taken.id!r} already exists")
        inserted = 0
        moves = _Moves()
        savepoint = conn.begin_nested()
        try:
            for campaign_id, batch in order.items():
                inserted += self._insert(campaign_id, batch, moves)
        except sa.exc.IntegrityError as exc:
            savepoint.rollback()
            raise RepositoryError(
                f"recipients could not be added: {_first_line(exc)} (an id or a phone was "
                "taken by a concurrent transaction); nothing was added"
            ) from exc
        except BaseException:
            savepoint.rollback()
            raise
        savepoint.commit()
        self._moves.merge(moves)
        return inserted

    def _insert(self, campaign_id: str, batch: list[Recipient], moves: _Moves) -> int:
        conn = self._conn
        if self._pg:
            conn.execute(
                sa.select(
                    sa.func.pg_advisory_xact_lock(_IMPORT_LOCK_SPACE, sa.func.hashtext(campaign_id))
                )
            )
            next_seq = 0
        else:
            next_seq = conn.execute(_MAX_SEQ, {"cid": campaign_id}).scalar_one() + 1
        seen: set[str] = set()
        inserted = 0
        for chunk in _chunks(batch):
            phones = [r.phone for r in chunk]
            stored = set(
                conn.execute(
                    self._q.existing_phones, {"cid": campaign_id, "phones": phones}
                ).scalars()
            )
            fresh: list[Recipient] = []
            for r in chunk:
                if r.phone in stored or r.phone in seen:
                    continue
                seen.add(r.phone)
                fresh.append(r)
            if not fresh:
                continue
            if self._pg:
                seqs = sorted(
                    conn.execute(
                        sa.select(sa.func.nextval(RECIPIENT_SEQ_SEQUENCE)).select_from(
                            sa.func.generate_series(1, len(fresh))
                        )
                    ).scalars()
                )
            else:
                seqs = list(range(next_seq, next_seq + len(fresh)))
                next_seq += len(fresh)
            self._write_recipients(campaign_id, fresh, seqs)
            inserted += len(fresh)
            counts: dict[str, float] = {"total": len(fresh)}
            for r in fresh:
                status = r.status.value
                counts[status] = counts.get(status, 0) + 1
                outcome = None if r.outcome is None else r.outcome.value
                counts["answered"] = counts.get("answered", 0) + _answered(status, outcome)
                moves.outcome(campaign_id, None, _final_outcome(status, outcome))
            moves.add(campaign_id, **counts)
        return inserted

    def _write_recipients(self, campaign_id: str, fresh: list[Recipient], seqs: list[int]) -> None:
        if self._pg and len(fresh) >= _COPY_AT_LEAST:
            self._copy_recipients(campaign_id, fresh, seqs)
            return
        rows = []
        for r, seq in zip(fresh, seqs, strict=True):
            values = _recipient_values(r)
            values.update(id=r.id, campaign_id=campaign_id, seq=seq)
            rows.append(values)
        self._conn.execute(sa.insert(RECIPIENTS), rows)

    def _copy_recipients(self, campaign_id: str, fresh: list[Recipient], seqs: list[int]) -> None:
        names = ["id", "campaign_id", "seq", *_RECIPIENT_UPDATE_COLUMNS]
        dbapi = self._conn.connection.driver_connection
        assert dbapi is not None
        statement = f"COPY {RECIPIENTS.name} ({', '.join(names)}) FROM STDIN"
        dumps = json.dumps
        with dbapi.cursor() as cursor, cursor.copy(statement) as copy:
            for r, seq in zip(fresh, seqs, strict=True):
                values = _recipient_values(r)
                values["variables"] = dumps(values["variables"])
                values["time_zones"] = dumps(values["time_zones"])
                for key in ("next_attempt_at", "last_attempt_at", "created_at", "updated_at"):
                    at = values[key]
                    if at is not None:
                        values[key] = to_utc(at, f"recipient.{key}")
                copy.write_row([r.id, campaign_id, seq, *values.values()])

    def get_recipient(self, recipient_id: str) -> Recipient:
        """The stored recipient; ``NotFound("recipient", id)`` if there is none."""
        self._check()
        seen = self._seen_recipients.get(recipient_id)
        if seen is not None:
            return seen
        rows = self._dicts(_GET_RECIPIENT, {"id": recipient_id})
        if not rows:
            raise NotFound("recipient", recipient_id)
        return _recipient_from(rows[0])

    def save_recipient(self, recipient: Recipient, previous: Recipient) -> None:
        """Store ``recipient`` (its ``seq`` stays the stored one) and move the counters
        from ``previous``'s state to the new one, as one compare-and-set.

        ``NotFound`` if it does not exist; ``RepositoryError`` if the stored
        status is not ``previous.status`` (or, for a final recipient, its outcome
        changed: the caller's view is stale), if it changes campaign, or if its
        new phone is already in the campaign.
        """
        self._check()
        if recipient.phone != previous.phone:
            taken = (
                self._c()
                .execute(
                    _PHONE_TAKEN,
                    {"cid": recipient.campaign_id, "phone": recipient.phone, "id": recipient.id},
                )
                .first()
            )
            if taken is not None:
                raise RepositoryError(
                    f"recipient {recipient.id!r}: {recipient.phone} is already in the campaign"
                )
        params = _recipient_values(recipient)
        before = _recipient_values(previous)
        # Only what the caller changed is written (the status always: it is the CAS).
        columns = _changed_columns(params, before)
        old_status = before["status"]
        old_outcome = before["outcome"]
        params.update(
            r_id=recipient.id,
            r_campaign_id=recipient.campaign_id,
            r_previous_status=old_status,
            r_previous_outcome=old_outcome,
        )
        statement = _recipient_update(columns, old_status in _FINAL)
        deferred, self._deferred = self._deferred, None
        if deferred is None:
            cursor = self._run(statement, params)
        else:  # the attempt's write and this one, in one statement
            cursor = self._execute(*self._with_attempt_update(deferred, statement, params))
        if cursor.rowcount != 1:
            self._refuse_recipient(recipient, previous)
        self._recipient_moved(recipient.id, recipient.campaign_id, params, before)

    def _with_attempt_update(
        self,
        deferred: tuple[tuple[str, ...], dict[str, Any]],
        statement: Any,
        params: Mapping[str, Any],
    ) -> tuple[str, dict[str, Any]]:
        """``WITH a AS (<the attempt's UPDATE>) <the recipient's UPDATE>``, and its
        parameters (the attempt's renamed apart): PostgreSQL runs a data-modifying
        ``WITH`` to completion whatever the main statement does, so this is the two
        writes, and its row count is the recipient's compare-and-set."""
        columns, attempt_params = deferred
        first = self._driver.compiled(self._q.update_attempt(columns))
        second = self._driver.compiled(statement)

        def build() -> str:
            renamed = _NAMED.sub(lambda m: f"%({_APART}{m.group(1)})s", first.sql)
            return f"WITH {_APART}a AS ({renamed}) {second.sql}"

        sql = _batch_sql(("attempt+recipient", first.sql, second.sql), build)
        args: dict[str, Any] = second.bind(params)
        for name, value in first.bind(attempt_params).items():
            args[_APART + name] = value
        return sql, args

    def _recipient_moved(
        self,
        recipient_id: str,
        campaign_id: str,
        params: Mapping[str, Any],
        before: Mapping[str, Any],
    ) -> None:
        """After a stored recipient write: forget its cached read and move its
        campaign's counters from ``before``'s status and outcome to ``params``'s."""
        self._seen_recipients.pop(recipient_id, None)
        old_status, old_outcome = before["status"], before["outcome"]
        new_status, new_outcome = params["status"], params["outcome"]
        answered = _answered(new_status, new_outcome) - _answered(old_status, old_outcome)
        if new_status != old_status:
            self._moves.add(campaign_id, **{old_status: -1, new_status: 1, "answered": answered})
        elif answered:
            self._moves.add(campaign_id, answered=answered)
        self._moves.outcome(
            campaign_id,
            _final_outcome(old_status, old_outcome),
            _final_outcome(new_status, new_outcome),
        )

    def list_recipients(
        self,
        campaign_id: str,
        *,
        statuses: Sequence[RecipientStatus] = (),
        search: str | None = None,
        page: int = 1,
        page_size: int = 50,
    ) -> Page:
        """A page of the campaign's recipients in ``seq`` order; ``search`` matches
        phone, first name, last name or email case-insensitively."""
        conn = self._c()
        offset, limit = page_bounds(page, page_size)
        conditions: list[Any] = [_R.campaign_id == campaign_id]
        if statuses:
            conditions.append(_R.status.in_([s.value for s in statuses]))
        if search:
            needle = search.casefold()
            conditions.append(
                sa.or_(
                    *(
                        _folded(column, self._pg).contains(needle, autoescape=True)
                        for column in (_R.phone, _R.first_name, _R.last_name, _R.email)
                    )
                )
            )
        if search:
            total = conn.execute(
                sa.select(sa.func.count()).select_from(RECIPIENTS).where(*conditions)
            ).scalar_one()
        else:  # the counters are exact: no need to count rows
            row = conn.execute(_COUNTERS_ROW, {"cid": campaign_id}).first()
            counters = self._counters(campaign_id, None if row is None else row._mapping)
            wanted = statuses or tuple(RecipientStatus)
            total = sum(getattr(counters, s.value) for s in set(wanted))
        rows = conn.execute(
            sa.select(RECIPIENTS).where(*conditions).order_by(_R.seq).offset(offset).limit(limit)
        )
        items = tuple(_recipient_from_row(row) for row in rows)
        return Page(items=items, page=page, page_size=page_size, total=total)

    def due_recipients(self, campaign_id: str, now: datetime, limit: int) -> list[Recipient]:
        """Up to ``limit`` pending recipients due at ``now`` (``next_attempt_at`` None or
        <= now), highest priority first, then insertion order.

        Two index scans (ready recipients in dial order, waiting ones that fell
        due), merged. In a PostgreSQL dispatch transaction the rows are locked
        ``FOR UPDATE SKIP LOCKED``.
        """
        self._check()
        if limit <= 0:
            return []
        params = {"cid": campaign_id, "now": to_utc(now, "now"), "limit": limit}
        ready, waiting = _READY, _WAITING_DUE
        if self._dispatch:
            ready, waiting = self._q.claim_ready, self._q.claim_waiting
        found = [_recipient_from(m) for m in self._dicts(ready, params)]
        found += [_recipient_from(m) for m in self._dicts(waiting, params)]
        found.sort(key=lambda r: (-r.priority, r.seq))
        return found[:limit]

    def next_due_at(self, campaign_id: str, now: datetime) -> datetime | None:
        """The earliest ``next_attempt_at`` later than ``now`` among pending recipients."""
        rows = self._rows(_NEXT_DUE, {"cid": campaign_id, "now": to_utc(now, "now")})
        value: datetime | None = rows[0][0] if rows else None
        return value

    def skip_pending(self, campaign_id: str, reason: str, now: datetime) -> int:
        """Every pending recipient becomes skipped (``error = reason``, ``updated_at =
        now``); counters move. Returns how many. ``NotFound`` for an unknown campaign."""
        conn = self._c()
        self._require_campaign(campaign_id)
        update = (
            sa.update(RECIPIENTS)
            .where(_R.campaign_id == campaign_id, _IS_PENDING)
            .values(
                status=RecipientStatus.SKIPPED.value, error=reason, updated_at=to_utc(now, "now")
            )
            .returning(_R.outcome)
        )
        by_outcome: dict[str | None, int] = {}
        if self._pg:
            changed = update.cte("changed")
            rows = conn.execute(
                sa.select(changed.c.outcome, sa.func.count()).group_by(changed.c.outcome)
            )
            for outcome, n in rows:
                by_outcome[outcome] = n
        else:
            for (outcome,) in conn.execute(update):
                by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
        skipped = sum(by_outcome.values())
        self._seen_recipients.clear()
        if skipped:
            self._moves.add(campaign_id, pending=-skipped, skipped=skipped)
            for outcome, n in by_outcome.items():
                self._moves.outcome(campaign_id, None, outcome, n)
        return skipped

    def outcome_counts(self, campaign_id: str) -> Mapping[CallOutcome, int]:
        """Final recipients by their last outcome (recipients without one are left out)."""
        rows = self._dicts(_COUNTERS_ROW, {"cid": campaign_id})
        stored: Mapping[str, Any] = rows[0] if rows else {}
        moves = self._moves.counters.get(campaign_id, {})
        counts = {
            CallOutcome(outcome): int(stored.get(column) or 0) + int(moves.get(column, 0))
            for outcome, column in _OUTCOME_COLUMNS.items()
        }
        return MappingProxyType({o: n for o, n in counts.items() if n})

    def duration_totals(self, campaign_id: str) -> tuple[int, float]:
        """(ended, answered, non-test attempts with a duration; their total seconds)."""
        rows = self._rows(_DURATIONS, {"cid": campaign_id})
        row = rows[0] if rows else None
        count, total = (0, 0.0) if row is None else (int(row[0]), float(row[1]))
        moves = self._moves.counters.get(campaign_id, {})
        count += int(moves.get("answered_calls", 0))
        total += float(moves.get("answered_seconds", 0.0))
        return (count, total) if count else (0, 0.0)

    # -- attempts -------------------------------------------------------------------------------

    def _attempt_moves(self, a: Any, sign: int) -> None:
        """Move the campaign counters an attempt contributes to (``sign`` +1 or -1)."""
        if a["test_call"]:
            return
        duration = _answered_duration(a["status"], a["outcome"], a["duration_seconds"])
        self._moves.add(
            a["campaign_id"],
            attempts=sign,
            answered_calls=0 if duration is None else sign,
            answered_seconds=0.0 if duration is None else sign * duration,
        )

    def _attempt_change(self, old: Any, new: Any) -> None:
        """Move the counters from what ``old`` contributed to what ``new`` does."""
        if old["campaign_id"] != new["campaign_id"] or bool(old["test_call"]) != bool(
            new["test_call"]
        ):
            self._attempt_moves(old, -1)
            self._attempt_moves(new, +1)
            return
        if new["test_call"]:
            return
        before = _answered_duration(old["status"], old["outcome"], old["duration_seconds"])
        after = _answered_duration(new["status"], new["outcome"], new["duration_seconds"])
        if before == after:
            return
        if before is None:
            calls, seconds = 1, after
        elif after is None:
            calls, seconds = -1, -before
        else:
            calls, seconds = 0, after - before
        self._moves.add(new["campaign_id"], answered_calls=calls, answered_seconds=seconds or 0.0)

    def add_attempt(self, attempt: Attempt) -> None:
        """Record a new attempt; a non-test attempt counts in its campaign's ``attempts``.

        ``RepositoryError`` if the id (or the provider's call id) is taken, or if
        the recipient already has this attempt number in flight; ``NotFound`` if a
        non-test attempt's campaign does not exist.
        """
        self._check()
        to_utc(attempt.created_at, "attempt.created_at")
        if not attempt.test_call:
            self._require_campaign(attempt.campaign_id)
        params = _attempt_values(attempt)
        params["id"] = attempt.id
        params["stamp"] = self._stamp()
        self._histories.pop(attempt.recipient_id, None)
        if self._run(self._q.insert_attempt, params).rowcount != 1:
            raise RepositoryError(self._attempt_conflict(attempt))
        self._attempt_moves(params, +1)
        self._held[attempt.id] = params

    def add_claims(self, claims: Sequence[tuple[Attempt, Recipient, Recipient]]) -> None:
        """``add_attempt(attempt); save_recipient(recipient, previous)`` for each claim, in
        order, as one multi-row ``INSERT`` of the attempts and one compare-and-set
        ``UPDATE ... FROM (VALUES ...)`` of the recipients per set of changed columns
        (usually one); the error of the first claim, in order, that those calls would
        refuse. Unusual batches (an id twice, a phone change, a missing campaign...)
        take the one-by-one calls.
        """
        self._check()
        if not claims:
            return
        if not self._batchable(claims):
            for attempt, recipient, previous in claims:
                self.add_attempt(attempt)
                self.save_recipient(recipient, previous)
            return
        postgres = self._pg
        bind = _pg_bind if postgres else _sqlite_bind
        stamp = self._stamp()
        attempts: list[dict[str, Any]] = []
        inserted: set[str] = set()
        per_row = len(_CLAIM_ATTEMPT_COLUMNS) + (1 if postgres else 2)
        chunk = _BATCH_PARAMETERS[postgres] // per_row
        for start in range(0, len(claims), chunk):
            part = claims[start : start + chunk]
            args: list[Any] = []
            for attempt, _, _ in part:
                params = _attempt_values(attempt)
                params["id"] = attempt.id
                params["stamp"] = stamp
                attempts.append(params)
                args.extend(
                    None if (value := params[name]) is None else bind(value)
                    for name in _CLAIM_ATTEMPT_COLUMNS
                )
                if postgres:
                    args.append(params["status"])
                else:
                    args.append(bind(stamp))
                    args.append(bind(stamp) if params["status"] == "ended" else None)
            sql = _claims_insert_sql(len(part), postgres)
            inserted.update(row[0] for row in self._execute(sql, args).fetchall())
        # the recipients' compare-and-set, one statement per (changed columns, final) shape
        Shape = tuple[tuple[str, ...], bool]  # (changed columns, final before)
        groups: dict[Shape, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
        for _, recipient, previous in claims:
            params = _recipient_values(recipient)
            before = _recipient_values(previous)
            columns = _changed_columns(params, before)
            params["id"] = recipient.id
            params["campaign_id"] = recipient.campaign_id
            groups.setdefault((columns, before["status"] in _FINAL), []).append((params, before))
        updated: set[str] = set()
        for (columns, final), rows in groups.items():
            chunk = _BATCH_PARAMETERS[postgres] // (4 + len(columns))
            for start in range(0, len(rows), chunk):
                batch = rows[start : start + chunk]
                args = []
                for params, before in batch:
                    args.extend(
                        (params["id"], params["campaign_id"], before["status"], before["outcome"])
                    )
                    args.extend(
                        None if (value := params[name]) is None else bind(value) for name in columns
                    )
                sql = _claims_update_sql(len(batch), columns, final, postgres)
                updated.update(row[0] for row in self._execute(sql, args).fetchall())
        if len(inserted) != len(claims) or len(updated) != len(claims):
            for attempt, recipient, previous in claims:
                if attempt.id not in inserted:
                    raise RepositoryError(self._attempt_conflict(attempt))
                if recipient.id not in updated:
                    self._refuse_recipient(recipient, previous)
            raise RepositoryError("a claim batch was not stored whole")  # pragma: no cover
        for params in attempts:
            self._histories.pop(params["recipient_id"], None)
            self._attempt_moves(params, +1)
            self._held[params["id"]] = params
        for rows in groups.values():
            for params, before in rows:
                self._recipient_moved(params["id"], params["campaign_id"], params, before)

    def _batchable(self, claims: Sequence[tuple[Attempt, Recipient, Recipient]]) -> bool:
        """Whether ``claims`` can go as batch statements with the very effect (and error)
        of the one-by-one calls: distinct attempts and recipients, no phone change,
        aware instants, every (non-test) campaign there (and a SQLite that has
        ``UPDATE ... FROM`` and ``RETURNING``)."""
        if not (self._pg or _SQLITE_BATCHES):
            return False
        attempt_ids = {a.id for a, _, _ in claims}
        recipient_ids = {r.id for _, r, _ in claims}
        if len(attempt_ids) != len(claims) or len(recipient_ids) != len(claims):
            return False
        campaigns: set[str] = set()
        for attempt, recipient, previous in claims:
            if recipient.phone != previous.phone or attempt.created_at.tzinfo is None:
                return False
            if not attempt.test_call:
                campaigns.add(attempt.campaign_id)
        for campaign_id in campaigns:
            if campaign_id not in self._known:
                if not self._rows(_CAMPAIGN_EXISTS, {"id": campaign_id}):
                    return False
                self._known.add(campaign_id)
        return True

    def _refuse_recipient(self, recipient: Recipient, previous: Recipient) -> None:
        """Raise what ``save_recipient`` raises when its compare-and-set matched no row."""
        state = self._c().execute(_RECIPIENT_STATE, {"id": recipient.id}).first()
        if state is None:
            raise NotFound("recipient", recipient.id)
        if state.campaign_id != recipient.campaign_id:
            raise RepositoryError(f"recipient {recipient.id!r} cannot change campaign")
        raise StaleRead(
            "recipient",
            recipient.id,
            f"is {state.status}, not {previous.status.value} as the caller read it "
            "(or it changed since)",
        )

    def _execute(self, sql: str, args: Sequence[Any] | Mapping[str, Any] | None = None) -> Any:
        """Send ``sql`` with positional (or, on PostgreSQL, named) ``args`` (None: no
        parameters) to the driver, after any held-back attempt write; the cursor."""
        if not self._open:
            raise RepositoryError("this unit of work is closed: its transaction block has ended")
        if self._deferred is not None:
            self._send_deferred()
        cursor = self._cursor
        if cursor is None:  # one cursor per transaction (each result is read at once)
            cursor = self._cursor = self._driver_connection().cursor()
        try:
            return cursor.execute(sql) if args is None else cursor.execute(sql, args)
        except Exception as exc:
            self._failed(exc, sql, () if args is None else args)

    def _attempt_conflict(self, attempt: Attempt) -> str:
        conn = self._c()
        if conn.execute(_STORED_ATTEMPT, {"id": attempt.id}).first() is not None:
            return f"attempt {attempt.id!r} already exists"
        owner = self._external_owner(attempt)
        if owner is not None:
            return owner
        return (
            f"attempt {attempt.id!r}: recipient {attempt.recipient_id!r} already has attempt "
            f"number {attempt.number} in flight"
        )

    def _external_owner(self, attempt: Attempt) -> str | None:
        """Why ``attempt``'s provider call id cannot be used (None if it can)."""
        if attempt.provider is None or attempt.external_call_id is None:
            return None
        owner = (
            self._c()
            .execute(
                _EXTERNAL_OWNER,
                {
                    "provider": attempt.provider,
                    "external": attempt.external_call_id,
                    "id": attempt.id,
                },
            )
            .first()
        )
        if owner is None:
            return None
        return (
            f"attempt {attempt.id!r}: {attempt.provider} call {attempt.external_call_id!r} "
            f"already belongs to attempt {owner.id!r}"
        )

    def _refused_call_id(self, attempt: Attempt, exc: sa.exc.DBAPIError) -> str:
        """Why the database refused ``attempt``'s update: on SQLite the attempt that owns
        its call id (read now); on PostgreSQL, whose transaction is aborted and cannot
        read, the call id itself."""
        if not self._pg:
            return self._external_owner(attempt) or f"attempt {attempt.id!r}: {_first_line(exc)}"
        if attempt.provider is not None and attempt.external_call_id is not None:
            return (
                f"attempt {attempt.id!r}: {attempt.provider} call {attempt.external_call_id!r} "
                f"already belongs to another attempt ({_first_line(exc)})"
            )
        return f"attempt {attempt.id!r}: {_first_line(exc)}"

    def _hold(self, row: list[Any]) -> Attempt:
        """The attempt of a locked ``_attempt_select`` row, remembered so that saving it
        needs no re-read; its recipient, campaign and (when it is the recipient's only
        attempt) history are kept for the reads that follow."""
        held = dict(zip(_ATTEMPT_NAMES, row[:_AT_RECIPIENT], strict=True))
        attempt = _attempt_from(held)
        self._held[attempt.id] = held
        if row[_AT_RECIPIENT] is not None:
            recipient = _recipient_from(
                dict(zip(_RECIPIENT_NAMES, row[_AT_RECIPIENT:_AT_VERSION], strict=True))
            )
            self._seen_recipients[recipient.id] = recipient
        if row[_AT_HISTORY] == 1:
            self._histories[attempt.recipient_id] = attempt
        else:
            self._histories.pop(attempt.recipient_id, None)
        version = row[_AT_VERSION]
        campaign_id = attempt.campaign_id
        if version is not None and campaign_id not in self._seen_campaigns:
            cached = self._cached(campaign_id, version)
            if cached is None:
                self.get_campaign(campaign_id)  # settings changed (or not seen yet)
            else:
                stored = dict(zip(_CAMPAIGN_COUNTERS, row[_AT_COUNTERS:_AT_HISTORY], strict=True))
                self._known.add(campaign_id)
                self._seen_campaigns[campaign_id] = (
                    stored,
                    self._with_counters(cached, self._counters(campaign_id, stored)),
                )
                self._counted[campaign_id] = self._moves.version
        return attempt

    def get_attempt(self, attempt_id: str) -> Attempt | None:
        """The attempt, or None. On PostgreSQL its row and its recipient's stay locked
        until commit."""
        q = self._q
        rows = self._rows(q.get_attempt, {"id": attempt_id})
        if not rows and q.get_attempt_alone is not None:  # a test call, or no such attempt
            rows = self._rows(q.get_attempt_alone, {"id": attempt_id})
        return self._hold(rows[0]) if rows else None

    def find_attempt(self, provider: str, external_call_id: str) -> Attempt | None:
        """The attempt the provider knows as ``external_call_id``; None if none (locked
        until commit on PostgreSQL, with its recipient)."""
        q = self._q
        args = {"provider": provider, "external": external_call_id}
        rows = self._rows(q.find_attempt, args)
        if not rows and q.find_attempt_alone is not None:  # a test call, or no such call
            rows = self._rows(q.find_attempt_alone, args)
        return self._hold(rows[0]) if rows else None

    def save_attempt(self, attempt: Attempt) -> None:
        """Update an attempt.

        Fencing: ``StaleClaim`` when the stored ``claim_token`` is greater than
        ``attempt.claim_token`` (a newer claim owns the attempt); an equal token is
        the owner writing. ``NotFound`` if it does not exist; ``RepositoryError``
        if its provider call id belongs to another attempt (a unique index decides:
        on PostgreSQL the transaction is then aborted and must be left).
        """
        self._check()
        stored = self._held.get(attempt.id)
        if stored is None:
            rows = self._dicts(self._q.stored_attempt, {"id": attempt.id})
            if not rows:
                raise NotFound("attempt", attempt.id)
            stored = rows[0]
        if stored["claim_token"] > attempt.claim_token:
            raise StaleClaim(attempt.id, attempt.claim_token)
        to_utc(attempt.created_at, "attempt.created_at")
        if not attempt.test_call and attempt.campaign_id != stored["campaign_id"]:
            self._require_campaign(attempt.campaign_id)
        params = _attempt_values(attempt)
        if all(name in stored for name in _ATTEMPT_UPDATE_COLUMNS):
            columns = tuple(n for n in _ATTEMPT_UPDATE_COLUMNS if params[n] != stored[n])
            if not columns:
                return  # nothing changed (the fencing check above still applied)
        else:
            columns = _ATTEMPT_UPDATE_COLUMNS
        params["a_id"] = attempt.id
        params["stamp"] = self._stamp()
        self._histories.pop(attempt.recipient_id, None)
        self._histories.pop(stored.get("recipient_id", attempt.recipient_id), None)
        if self._pg and _deferrable(columns, params):
            # No constraint can refuse this write (no unique or foreign key column
            # changes; the attempt leaves flight or stays as it was), and the row is
            # locked by this transaction: it is held back to go out with the recipient
            # write that follows (one statement), or before any other statement.
            if self._deferred is not None:
                self._send_deferred()
            self._deferred = (columns, params)
            self._attempt_change(stored, params)
            self._held[attempt.id] = params
            return
        try:
            self._run(self._q.update_attempt(columns), params)
        except sa.exc.IntegrityError as exc:
            # The unique index on (provider, external_call_id) refused it (no read
            # beforehand: this is the write every placed call makes). On PostgreSQL
            # the transaction cannot go on after this, not even to read the owner.
            raise RepositoryError(self._refused_call_id(attempt, exc)) from exc
        self._attempt_change(stored, params)
        self._held[attempt.id] = params

    def attempts_for(self, recipient_id: str) -> list[Attempt]:
        """The recipient's attempts by number (then creation)."""
        only = self._histories.get(recipient_id)
        if only is not None:  # counted by the read that held it, in this transaction
            self._check()
            return [only]
        return [_attempt_from(m) for m in self._dicts(_ATTEMPTS_FOR, {"rid": recipient_id})]

    def attempt_starts(
        self, recipient_ids: Iterable[str], since: datetime
    ) -> Mapping[str, list[datetime]]:
        """For every id asked, the sorted ``created_at`` (>= since) of its non-test
        attempts (an empty list when it has none)."""
        conn = self._c()
        since = to_utc(since, "since")
        wanted = list(dict.fromkeys(recipient_ids))
        starts: dict[str, list[datetime]] = {rid: [] for rid in wanted}
        for chunk in _chunks(wanted):
            for rid, at in conn.execute(_ATTEMPT_STARTS, {"ids": list(chunk), "since": since}):
                starts[rid].append(at)
        return starts

    def in_flight(self) -> InFlightCounts:
        """Attempts not ended: by campaign (test calls excluded), by workspace and in
        total (test calls included: they use the provider's capacity)."""
        by_campaign: dict[str, int] = {}
        by_workspace: dict[str, int] = {}
        total = 0
        for campaign_id, workspace_id, test_call, n in self._rows(_IN_FLIGHT, {}):
            total += n
            by_workspace[workspace_id] = by_workspace.get(workspace_id, 0) + n
            if not test_call:
                by_campaign[campaign_id] = by_campaign.get(campaign_id, 0) + n
        return InFlightCounts(by_campaign=by_campaign, by_workspace=by_workspace, total=total)

    def dial_stats(self, campaign_id: str, now: datetime, day_start: datetime) -> DialStats:
        """Non-test attempt starts of the campaign: those in ``(now - 60 s, now]``, the
        latest one at or before ``now`` and how many in ``[day_start, now]``.

        Bounded so the cost stays flat however fast calls start: the minute's starts
        are the newest ``max(calls_per_minute, MINUTE_STARTS_KEPT)`` of them, and the
        day's count stops at ``max(daily_cap, DAY_STARTS_COUNTED)`` (the engine only
        needs the newest ``calls_per_minute`` starts and a comparison with
        ``daily_cap``, so its decisions are the same).
        """
        self._check()
        now = to_utc(now, "now")
        day_start = to_utc(day_start, "day_start")
        rows = self._rows(_LAST_AND_PACING, {"cid": campaign_id, "now": now})
        if not rows or rows[0][0] is None:
            return DialStats()
        last: datetime = rows[0][0]
        per_minute = int(rows[0][1] or 0)
        cap = int(rows[0][2] or 0)
        minute: tuple[datetime, ...] = ()
        if last > now - _MINUTE:
            newest = self._rows(
                _STARTS_BETWEEN,
                {
                    "cid": campaign_id,
                    "after": now - _MINUTE,
                    "now": now,
                    "keep": max(per_minute, MINUTE_STARTS_KEPT),
                },
            )
            minute = tuple(row[0] for row in reversed(newest))
        today = 0
        if last >= day_start:
            today = self._rows(
                _COUNT_STARTS,
                {
                    "cid": campaign_id,
                    "since": day_start,
                    "now": now,
                    "keep": max(cap, DAY_STARTS_COUNTED),
                },
            )[0][0]
        return DialStats(starts_since_minute=minute, last_start_at=last, starts_today=today)

    def unfinished_attempts(self, *, started_before: datetime) -> list[Attempt]:
        """Attempts not ended (test calls too) created before ``started_before``, oldest
        first."""
        rows = self._c().execute(_UNFINISHED, {"before": to_utc(started_before, "started_before")})
        return [_attempt_from_row(row) for row in rows]

    # -- suppression ----------------------------------------------------------------------------

    def suppress(self, workspace_id: str, phone: str, reason: str, now: datetime) -> None:
        """Put ``phone`` on the workspace's do-not-call list (a second time changes
        nothing: the first reason and time are kept)."""
        self._c().execute(
            self._q.suppress,
            {
                "workspace_id": workspace_id,
                "phone": phone,
                "reason": reason,
                "created_at": to_utc(now, "now"),
            },
        )

    def unsuppress(self, workspace_id: str, phone: str) -> None:
        """Take ``phone`` off the workspace's list (nothing happens if it is not on it)."""
        self._c().execute(_UNSUPPRESS, {"ws": workspace_id, "phone": phone})

    def suppressed(self, workspace_id: str, phones: Iterable[str]) -> set[str]:
        """The ``phones`` that are on the workspace's do-not-call list."""
        conn = self._c()
        wanted = list(dict.fromkeys(phones))
        found: set[str] = set()
        for chunk in _chunks(wanted):
            found.update(
                conn.execute(_SUPPRESSED, {"ws": workspace_id, "phones": list(chunk)}).scalars()
            )
        return found


class SqlRepository:
    """A :class:`~outdial.ports.Repository` in SQLite or PostgreSQL.

    Made by :func:`outdial.sql.connect`, which checks the URL, the server and the
    schema version first. Thread-safe: every ``transaction()`` uses its own
    pooled connection. Also records worker heartbeats (:meth:`heartbeat`,
    :meth:`dead_workers`). :meth:`close` releases the connections.
    """

    blocking = True  # every call does I/O: async runners offload it to a thread

    def __init__(self, engine: sa.Engine, *, url: str | None = None) -> None:
        self.engine = engine
        self.url = url or engine.url.render_as_string(hide_password=True)
        self.postgres = engine.dialect.name == "postgresql"
        # SQLite: one writer at a time anyway; queue this process's threads on a lock
        # instead of letting them poll the file lock.
        self._serial: threading.RLock | None = None if self.postgres else threading.RLock()
        self._local = threading.local()
        # campaign id -> (stored columns, decoded campaign): see SqlUnitOfWork._campaign
        self._campaigns: dict[str, tuple[int, Campaign]] = {}
        self._driver = _Driver(engine.dialect)
        self._kept: sa.Connection | None = None  # SQLite: see _connection
        # counters shards: each transaction takes the next of a sequence of pseudo-random
        # shards, different in every process (see COUNTER_SHARDS)
        self._turns = itertools.count()
        self._salt = os.getpid()

    def __repr__(self) -> str:
        return f"SqlRepository({self.url!r})"

    def _counter_shard(self) -> int:
        """The counters shard for a new PostgreSQL transaction's moves.

        Any shard is correct (reads add them all up); spreading the transactions
        over them is what lets concurrent ones commit without waiting for each
        other on one row. ``next`` on an ``itertools.count`` is atomic under the GIL.
        """
        return hash((self._salt, next(self._turns))) % COUNTER_SHARDS

    def __enter__(self) -> SqlRepository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every pooled connection (the repository may be used again afterwards)."""
        if self._serial is not None:
            with self._serial:
                self._drop_kept()
        self.engine.dispose()

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return "postgresql" if self.postgres else "sqlite"

    @contextmanager
    def transaction(self, *, dispatch_lock: bool = False) -> Iterator[SqlUnitOfWork]:
        """Open a unit of work; commit when the block exits, roll back on an exception.

        ``dispatch_lock`` serialises claims between workers (PostgreSQL: an advisory
        transaction lock; SQLite: implied by ``BEGIN IMMEDIATE``). A nested block on
        the same thread is a savepoint of the outer transaction. Database failures
        come out as :class:`~outdial.errors.RepositoryError` (or
        :class:`~outdial.errors.DatabaseUnavailable` when the server went away).
        """
        outer: SqlUnitOfWork | None = getattr(self._local, "uow", None)
        if outer is not None and outer._open:
            with self._savepoint(outer) as uow:
                yield uow
            return
        with self._serial if self._serial is not None else nullcontext():
            try:
                with self._connection() as conn:
                    uow = SqlUnitOfWork(self, conn, dispatch=dispatch_lock)
                    try:
                        uow._begin()
                        try:
                            if dispatch_lock and self.postgres:
                                uow._run(_DISPATCH_LOCK, {})
                            self._local.uow = uow
                            try:
                                yield uow
                                uow._commit()
                            finally:
                                uow._close()
                                self._local.uow = None
                        except BaseException:
                            uow._end(commit=False)
                            raise
                    finally:
                        uow._release()
            except sa.exc.DBAPIError as exc:
                raise self._translate(exc) from exc

    @contextmanager
    def _connection(self) -> Iterator[sa.Connection]:
        """A connection for one transaction.

        PostgreSQL: one from the pool. SQLite: this process's transactions take
        turns on ``_serial`` anyway, so they share one connection, kept checked
        out between them (a pool check-out and check-in per transaction cost more
        than a small transaction itself); a database error drops it.
        """
        if self._serial is None:
            with self.engine.connect() as pooled:
                yield pooled
            return
        kept = self._kept
        if kept is None or kept.closed or kept.invalidated:
            kept = self._kept = self.engine.connect()
        conn: sa.Connection = kept
        try:
            yield conn
        except Exception as exc:
            if isinstance(exc, sa.exc.DBAPIError):
                self._drop_kept()
            raise
        except BaseException:
            self._drop_kept()
            raise

    def _drop_kept(self) -> None:
        conn, self._kept = self._kept, None
        if conn is not None:
            conn.close()

    @contextmanager
    def _savepoint(self, outer: SqlUnitOfWork) -> Iterator[SqlUnitOfWork]:
        outer._flush()  # moves made so far belong to the outer block
        known = set(outer._known)
        # SAVEPOINT / RELEASE straight to the driver (SQLAlchemy's nested transaction
        # objects cost more than the statements); names follow the nesting depth
        outer._depth += 1
        name = f"outdial_{outer._depth}"
        outer._statement(f"SAVEPOINT {name}")
        try:
            yield outer
            outer._flush()
        except BaseException:
            outer._deferred = None  # made inside the savepoint: undone with it
            try:
                outer._statement(f"ROLLBACK TO SAVEPOINT {name}")
                outer._statement(f"RELEASE SAVEPOINT {name}")
            finally:
                outer._depth -= 1
            outer._moves.clear()
            outer._known = known
            outer._held.clear()
            outer._seen_campaigns.clear()
            outer._counted.clear()
            outer._seen_recipients.clear()
            outer._histories.clear()
            raise
        try:
            outer._statement(f"RELEASE SAVEPOINT {name}")
        finally:
            outer._depth -= 1

    def _translate(self, exc: sa.exc.DBAPIError) -> OutdialError:
        reason = _first_line(exc)
        if exc.connection_invalidated:
            return DatabaseUnavailable(self.url, f"lost the connection: {reason}")
        return RepositoryError(f"database error on {self.url}: {reason}")

    # -- worker liveness ----------------------------------------------------------------------

    def heartbeat(self, worker_id: str, now: datetime) -> None:
        """Record that ``worker_id`` is alive at ``now`` (the first beat registers it)."""
        now = to_utc(now, "now")
        with self.transaction() as uow:
            uow._c().execute(
                uow._q.heartbeat, {"worker_id": worker_id, "started_at": now, "heartbeat_at": now}
            )

    def dead_workers(self, now: datetime, timeout: timedelta) -> list[str]:
        """Workers whose last heartbeat is older than ``now - timeout``, oldest first.

        Their unfinished attempts are the ones to reconcile with the provider at
        once (never to put back to pending blindly).
        """
        cutoff = to_utc(now, "now") - timeout
        with self.transaction() as uow:
            rows = uow._c().execute(
                sa.select(WORKERS.c.worker_id)
                .where(WORKERS.c.heartbeat_at < cutoff)
                .order_by(WORKERS.c.heartbeat_at)
            )
            return list(rows.scalars())

    def last_heartbeats(self) -> dict[str, datetime]:
        """Every registered worker and its last heartbeat."""
        with self.transaction() as uow:
            rows = uow._c().execute(sa.select(WORKERS.c.worker_id, WORKERS.c.heartbeat_at))
            return {row.worker_id: row.heartbeat_at for row in rows}

    def forget_worker(self, worker_id: str) -> None:
        """Remove a worker that stopped cleanly (nothing happens if it is unknown)."""
        with self.transaction() as uow:
            uow._c().execute(sa.delete(WORKERS).where(WORKERS.c.worker_id == worker_id))


if TYPE_CHECKING:
    from outdial.ports import Repository, UnitOfWork

    def _checks(repo: SqlRepository, uow: SqlUnitOfWork) -> tuple[Repository, UnitOfWork]:
        return repo, uow
