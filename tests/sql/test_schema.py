"""Migrations, schema versions and the errors a wrong database URL gives."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from outdial.cli import db_cmd
from outdial.errors import DatabaseUnavailable, RepositoryError, SchemaOutOfDate
from outdial.outcomes import CallOutcome
from outdial.recipient import AttemptStatus, RecipientStatus
from outdial.sql import connect, current_revision, head_revision, upgrade
from outdial.sql.schema import VERSION_TABLE, metadata
from sql.conftest import fresh_pg_database

UTC = timezone.utc
T0 = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
FIRST = "0001"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database (no outdial schema at all)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
    else:
        with fresh_pg_database(request.getfixturevalue("postgres_url")) as url:
            yield url


def _insert_first_revision_data(url: str) -> None:
    """Rows as a database at revision 0001 held them (raw SQL: the schema of then)."""
    engine = sa.create_engine(url)
    json_empty = "'{}'"
    stamp = "'2026-03-02 14:00:00'" if engine.dialect.name == "sqlite" else "'2026-03-02T14:00Z'"
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO outdial_campaigns (id, workspace_id, rank, name, description, status,"
                " agent, schedule_type, timezone, concurrency_limit, min_spacing_us, retry_policy,"
                " prompt_variables, csv_column_headers, max_recipients, created_at, version)"
                f" VALUES ('c1', 'w1', 1, 'Old', '', 'active', {json_empty}, 'immediate', 'UTC',"
                f" 2, 0, '{{\"max_attempts\": 3}}', {json_empty}, '[]', 100, {stamp}, 4)"
            )
            outcomes = ("no_answer", "busy", "voicemail", "invalid_number", "declined")
            conn.exec_driver_sql(
                "INSERT INTO outdial_campaign_counters (campaign_id, total, pending, queued,"
                " calling, completed, failed, skipped, answered, attempts, answered_calls,"
                " answered_seconds, outcome_answered, outcome_error, outcome_opted_out, "
                + ", ".join(f"outcome_{o}" for o in outcomes)
                + ") VALUES ('c1', 2, 0, 1, 0, 1, 0, 0, 1, 2, 1, 30.0, 1, 0, 0, "
                + ", ".join("0" for _ in outcomes)
                + ")"
            )
            for rid, phone, seq, status, outcome, attempts in (
                ("r1", "+12125550101", 1, "completed", "'answered'", 1),
                ("r2", "+12125550102", 2, "queued", "NULL", 1),
            ):
                conn.exec_driver_sql(
                    "INSERT INTO outdial_recipients (id, campaign_id, workspace_id, phone, seq,"
                    " priority, status, outcome, attempts, created_at, variables, time_zones)"
                    f" VALUES ('{rid}', 'c1', 'w1', '{phone}', {seq}, 0, '{status}', {outcome},"
                    f" {attempts}, {stamp}, {json_empty}, '[]')"
                )
            for aid, rid, status, outcome, ended in (
                ("a1", "r1", "ended", "'answered'", stamp),
                ("a2", "r2", "dialing", "NULL", "NULL"),
            ):
                conn.exec_driver_sql(
                    "INSERT INTO outdial_attempts (id, campaign_id, recipient_id, workspace_id,"
                    " number, phone, status, provider, created_at, ended_at, outcome,"
                    " duration_seconds, last_sequence, claim_token, test_call)"
                    f" VALUES ('{aid}', 'c1', '{rid}', 'w1', 1, '+1', '{status}', 'fake',"
                    f" {stamp}, {ended}, {outcome}, 30.0, -1, 0, false)"
                )
    finally:
        engine.dispose()


def test_upgrade_from_the_first_revision_to_head_keeps_the_data(empty_url: str) -> None:
    upgrade(empty_url, FIRST)
    assert current_revision(empty_url) == FIRST
    _insert_first_revision_data(empty_url)
    with pytest.raises(SchemaOutOfDate) as info:
        connect(empty_url)
    assert (info.value.current, info.value.expected) == (FIRST, head_revision())
    assert f"outdial db upgrade {empty_url}" in str(info.value)

    upgrade(empty_url)
    assert current_revision(empty_url) == head_revision()
    with connect(empty_url) as repo, repo.transaction() as uow:
        campaign = uow.get_campaign("c1", "w1")
        assert (campaign.name, campaign.version, campaign.max_attempts) == ("Old", 4, 3)
        assert (campaign.counters.total, campaign.counters.queued) == (2, 1)
        assert uow.get_recipient("r1").status is RecipientStatus.COMPLETED
        assert uow.duration_totals("c1") == (1, 30.0)
        assert dict(uow.outcome_counts("c1")) == {CallOutcome.ANSWERED: 1}
        in_flight = uow.in_flight()
        assert (in_flight.total, dict(in_flight.by_campaign)) == (1, {"c1": 1})
        (dialing,) = uow.unfinished_attempts(started_before=T0 + timedelta(hours=1))
        assert (dialing.id, dialing.status) == ("a2", AttemptStatus.DIALING)
        # The second revision's guard is in force for rows written from now on.
        with pytest.raises(RepositoryError, match="in flight"):
            uow.add_attempt(attrs.evolve(dialing, id="a3"))
    engine = sa.create_engine(empty_url)
    try:
        with engine.connect() as conn:
            stamps: dict[Any, Any] = dict(
                conn.exec_driver_sql(
                    "SELECT id, recorded_at IS NOT NULL AND (closed_at IS NOT NULL) = "
                    "(status = 'ended') FROM outdial_attempts"
                ).all()
            )
        assert stamps == {"a1": True, "a2": True}  # backfilled by the migration
    finally:
        engine.dispose()


def test_an_empty_database_gets_the_whole_schema_and_upgrading_again_does_nothing(
    empty_url: str,
) -> None:
    if empty_url.startswith("sqlite"):
        Path(sa.make_url(empty_url).database or "").touch()  # an empty file: an empty database
    assert current_revision(empty_url) is None
    upgrade(empty_url)
    upgrade(empty_url)
    assert current_revision(empty_url) == head_revision()
    engine = sa.create_engine(empty_url)
    try:
        tables = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert tables == {t.name for t in metadata.sorted_tables} | {VERSION_TABLE}


def test_the_schema_module_matches_what_the_migrations_build(empty_url: str) -> None:
    upgrade(empty_url)
    engine = sa.create_engine(empty_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"version_table": VERSION_TABLE, "compare_type": False}
            )
            differences = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_connect_to_a_database_without_the_schema_says_what_to_run(empty_url: str) -> None:
    if empty_url.startswith("sqlite"):
        Path(sa.make_url(empty_url).database or "").touch()
    with pytest.raises(SchemaOutOfDate) as info:
        connect(empty_url)
    assert info.value.current is None
    assert "outdial db upgrade" in str(info.value)


def test_connect_with_create_builds_the_schema(empty_url: str) -> None:
    with connect(empty_url, create=True) as repo, repo.transaction() as uow:
        assert uow.dispatchable_campaigns() == []
    assert current_revision(empty_url) == head_revision()


def test_the_db_upgrade_command_upgrades_and_reports_the_revision(empty_url: str) -> None:
    out = io.StringIO()
    assert db_cmd(["upgrade", empty_url], out=out) == 0
    assert out.getvalue().strip() == f"{empty_url} is at schema {head_revision()}"
    out = io.StringIO()
    assert db_cmd(["current", empty_url], out=out) == 0
    assert out.getvalue().strip() == head_revision()


# -- wrong URLs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("not a url", "not a database URL"),
        ("mysql://user@localhost/db", "SQLite or PostgreSQL"),
        ("postgresql+asyncpg://user@localhost/db", "psycopg"),
        ("sqlite+aiosqlite:///x.db", "sqlite3"),
    ],
)
def test_a_url_outdial_cannot_use_is_refused_with_the_reason(url: str, says: str) -> None:
    with pytest.raises(DatabaseUnavailable, match=says) as info:
        connect(url)
    assert isinstance(info.value, ConnectionError)


def test_a_missing_sqlite_file_or_folder_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    with pytest.raises(DatabaseUnavailable, match="no database file") as info:
        connect(f"sqlite:///{missing}")
    assert "outdial db upgrade" in str(info.value)
    assert not missing.exists()  # a failed connect leaves no empty file behind
    with pytest.raises(DatabaseUnavailable, match="does not exist"):
        connect(f"sqlite:///{tmp_path / 'no-such-folder' / 'x.db'}", create=True)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database file at all" * 100)
    with pytest.raises(DatabaseUnavailable, match="not a database"):
        connect(f"sqlite:///{junk}")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_server_is_refused_with_the_reason_and_no_password() -> None:
    url = f"postgresql://app:s3cret@127.0.0.1:{_closed_port()}/outdial"
    with pytest.raises(DatabaseUnavailable) as info:
        connect(url)
    message = str(info.value)
    assert "s3cret" not in message and "***" in message
    assert "refused" in message.lower() or "connect" in message.lower()


@pytest.mark.postgres
def test_a_database_that_does_not_exist_is_refused(postgres_url: str) -> None:
    url = sa.make_url(postgres_url).set(database="no_such_database")
    with pytest.raises(DatabaseUnavailable, match="no_such_database"):
        connect(url.render_as_string(hide_password=False))


@pytest.mark.postgres
def test_postgres_urls_without_a_driver_use_psycopg(pg_url: str) -> None:
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with connect(plain) as repo:
        assert repo.engine.url.drivername == "postgresql+psycopg"
        with repo.transaction() as uow:
            assert uow.dispatchable_campaigns() == []
