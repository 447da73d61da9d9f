"""SQL persistence: SQLite as the embedded default, PostgreSQL for many workers.

Installed with the ``sql`` extra (``pip install 'outdial[sql]'``: SQLAlchemy 2,
Alembic and psycopg 3)::

    repo = outdial.sql.connect("sqlite:///campaigns.db", create=True)
    repo = outdial.sql.connect("postgresql+psycopg://app@db.internal/outdial")

- :func:`connect` checks the URL, reaches the server and checks the schema
  version: a wrong or unreachable URL raises
  :class:`~outdial.errors.DatabaseUnavailable` with the reason, a database at an
  older schema raises :class:`~outdial.errors.SchemaOutOfDate` naming the command
  to run (``outdial db upgrade URL``). ``create=True`` upgrades first.
- :func:`upgrade` brings an empty or older database to the current schema (the
  Alembic migrations ship inside this package; no ``alembic.ini`` is needed).
- :class:`SqlRepository` implements :class:`outdial.ports.Repository`;
  :class:`Heartbeat` keeps a worker's heartbeat while it runs.

URLs: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``,
``sqlite://`` (in memory, one process) and ``postgresql+psycopg://...``
(``postgresql://`` and ``postgres://`` mean the same). SQLite URLs accept
``?timeout=SECONDS`` (how long to wait for another process's write lock,
default 30) and ``?synchronous=normal|full`` (default ``normal``: a committed
transaction survives a crash of the process, ``full`` also a power cut).
"""

from __future__ import annotations

try:
    import alembic  # noqa: F401
    import sqlalchemy as sa
except ImportError as exc:  # pragma: no cover - exercised without the extra
    from outdial.errors import MissingExtra

    raise MissingExtra("sql", exc.name or "sqlalchemy") from exc

import select
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, pool

from outdial.errors import DatabaseUnavailable, SchemaOutOfDate
from outdial.sql.heartbeat import Heartbeat
from outdial.sql.repository import _BEGUN, DISPATCH_LOCK_KEY, SqlRepository, SqlUnitOfWork
from outdial.sql.schema import VERSION_TABLE

__all__ = [
    "DISPATCH_LOCK_KEY",
    "Heartbeat",
    "SqlRepository",
    "SqlUnitOfWork",
    "connect",
    "create_engine",
    "current_revision",
    "head_revision",
    "upgrade",
]

_EXAMPLES = "sqlite:///path/to/campaigns.db or postgresql+psycopg://user:password@host:5432/dbname"
_SYNCHRONOUS = ("off", "normal", "full", "extra")
#: execution option of the connections that only read (SQLite: no write lock)
_READ_ONLY = "outdial_read_only"
#: advisory lock key held while migrations run on PostgreSQL (b"outm")
_MIGRATION_LOCK_KEY = 0x6F75746D


# -- URLs and engines --------------------------------------------------------------------------


def shown_url(url: str | sa.URL) -> str:
    """``url`` as errors and logs show it: as given, with the password masked."""
    try:
        parsed = url if isinstance(url, sa.URL) else sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        return str(url)
    return parsed.render_as_string(hide_password=True)


def _parse(url: str | sa.URL) -> sa.URL:
    """The URL with the driver outdial uses; ``DatabaseUnavailable`` if it cannot be used."""
    if isinstance(url, sa.URL):
        parsed = url
    else:
        try:
            parsed = sa.make_url(url)
        except (sa.exc.ArgumentError, ValueError):
            raise DatabaseUnavailable(
                str(url), f"not a database URL (expected {_EXAMPLES})"
            ) from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgres", "postgresql"):
        if driver not in ("", "psycopg"):
            raise DatabaseUnavailable(
                shown_url(parsed),
                f"outdial talks to PostgreSQL through psycopg 3, not {driver}: use "
                "postgresql+psycopg://...",
            )
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if driver not in ("", "pysqlite"):
            raise DatabaseUnavailable(
                shown_url(parsed), f"outdial uses the standard library's sqlite3, not {driver}"
            )
        return parsed.set(drivername="sqlite+pysqlite")
    raise DatabaseUnavailable(
        shown_url(parsed),
        f"outdial stores campaigns in SQLite or PostgreSQL, not {backend!r} (expected {_EXAMPLES})",
    )


def _sqlite_path(url: sa.URL) -> Path | None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _sqlite_engine(url: sa.URL, shown: str, *, create: bool) -> sa.Engine:
    query = dict(url.query)
    timeout_text = str(query.pop("timeout", "30"))
    synchronous = str(query.pop("synchronous", "normal")).lower()
    try:
        timeout = float(timeout_text)
    except ValueError:
        raise DatabaseUnavailable(
            shown, f"timeout={timeout_text!r} is not a number of seconds"
        ) from None
    if synchronous not in _SYNCHRONOUS:
        raise DatabaseUnavailable(
            shown, f"synchronous={synchronous!r} is not one of {', '.join(_SYNCHRONOUS)}"
        )
    path = _sqlite_path(url)
    if path is not None:
        if not path.parent.is_dir():
            raise DatabaseUnavailable(shown, f"directory {path.parent} does not exist")
        if not create and not path.exists():
            raise DatabaseUnavailable(
                shown, f"no database file {path} (create it with `outdial db upgrade {shown}`)"
            )
    kwargs: dict[str, Any] = {
        "connect_args": {"timeout": timeout, "check_same_thread": False},
    }
    if path is None:
        kwargs["poolclass"] = pool.StaticPool  # one in-memory database, shared
    else:
        kwargs.update(poolclass=pool.QueuePool, pool_size=8, max_overflow=16)
    engine = sa.create_engine(url.set(query=query), **kwargs)
    busy_ms = int(timeout * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # transactions are begun below, not by sqlite3
        dbapi_connection.create_function(
            "outdial_casefold",
            1,
            lambda text: None if text is None else str(text).casefold(),
            deterministic=True,
        )
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous.upper()}")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # Take the write lock at once: a transaction never fails half-way with
        # SQLITE_BUSY when it first writes, and claims are serialised. Only the
        # checks made while connecting read without it. A unit of work that already
        # sent BEGIN IMMEDIATE itself marks the connection (see SqlUnitOfWork._join).
        if conn.info.get(_BEGUN):
            return
        if conn.get_execution_options().get(_READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _postgres_engine(url: sa.URL) -> sa.Engine:
    engine = sa.create_engine(
        url,
        pool_size=8,
        max_overflow=16,
        connect_args={"connect_timeout": 10, "application_name": "outdial"},
    )

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        # Instead of a pre-ping round trip: a pooled connection the server closed
        # (restart, pg_terminate_backend, idle timeout) has its socket readable (the
        # server's goodbye, then end of file) while nothing was asked. The pool then
        # drops it and checks out a fresh one.
        if not _idle_and_open(dbapi_connection):
            raise sa.exc.DisconnectionError("the server closed this pooled connection")

    return engine


def _idle_and_open(dbapi_connection: Any) -> bool:
    """Whether a pooled psycopg connection looks usable, without a round trip: open,
    idle, and nothing unread on its socket (an idle connection is sent nothing but
    the server's goodbye; outdial does not LISTEN)."""
    try:
        if dbapi_connection.closed or dbapi_connection.broken:
            return False
        pgconn = dbapi_connection.pgconn
        if pgconn.status != 0 or pgconn.transaction_status != 0:  # CONNECTION_OK, IDLE
            return False
        return not _readable(pgconn.socket)
    except Exception:  # a closed socket, a driver error: not usable either way
        return False


def _readable(fd: int) -> bool:
    """Whether ``fd`` has something to read (or is closed), without waiting."""
    if hasattr(select, "poll"):  # no FD_SETSIZE limit (a busy process has many files)
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
    readable, _, _ = select.select([fd], [], [], 0)  # pragma: no cover - Windows
    return bool(readable)


def create_engine(url: str | sa.URL, *, create: bool = False) -> sa.Engine:
    """The SQLAlchemy engine outdial uses for ``url`` (SQLite: WAL, busy timeout,
    ``BEGIN IMMEDIATE``; PostgreSQL: psycopg 3, a pooled connection the server
    closed is replaced at check-out). Nothing is connected yet.

    ``DatabaseUnavailable`` for a URL outdial cannot use; a SQLite file must exist
    unless ``create`` is true.
    """
    parsed = _parse(url)
    shown = shown_url(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            return _sqlite_engine(parsed, shown, create=create)
        return _postgres_engine(parsed)
    except (ImportError, sa.exc.NoSuchModuleError, sa.exc.ArgumentError) as exc:
        raise DatabaseUnavailable(shown, f"cannot load the database driver: {exc}") from exc


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines[:2]) if lines else type(exc).__name__


@contextmanager
def _connection(engine: sa.Engine, shown: str) -> Iterator[sa.Connection]:
    """A connection (``DatabaseUnavailable`` if the server cannot be reached)."""
    try:
        conn = engine.connect()
    except sa.exc.DBAPIError as exc:
        raise DatabaseUnavailable(shown, _reason(exc)) from exc
    with conn:
        yield conn


@contextmanager
def _reading(engine: sa.Engine, shown: str) -> Iterator[sa.Connection]:
    """A connection for checks that only read (on SQLite they need no write lock)."""
    with _connection(engine, shown) as conn:
        yield conn.execution_options(**{_READ_ONLY: True})


# -- migrations ----------------------------------------------------------------------------------


@contextmanager
def _alembic_config() -> Iterator[Config]:
    with resources.as_file(resources.files("outdial.sql") / "migrations") as location:
        config = Config()
        config.set_main_option("script_location", str(location))
        yield config


def head_revision() -> str:
    """The schema revision this version of outdial needs."""
    with _alembic_config() as config:
        head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def _revision_of(conn: sa.Connection) -> str | None:
    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def current_revision(url: str | sa.URL) -> str | None:
    """The schema revision of the database at ``url`` (None: no outdial schema yet)."""
    engine = create_engine(url)
    shown = shown_url(url)
    try:
        with _reading(engine, shown) as conn:
            try:
                return _revision_of(conn)
            except sa.exc.DBAPIError as exc:
                raise DatabaseUnavailable(shown, _reason(exc)) from exc
    finally:
        engine.dispose()


def _upgrade(engine: sa.Engine, revision: str, shown: str) -> None:
    with _connection(engine, shown) as conn, _alembic_config() as config:
        try:
            with conn.begin():
                if engine.dialect.name == "postgresql":
                    # Two workers starting at once: one migrates, the other waits, then
                    # finds nothing left to do.
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))
                config.attributes["connection"] = conn
                command.upgrade(config, revision)
        except sa.exc.DBAPIError as exc:
            raise DatabaseUnavailable(shown, f"the schema upgrade failed: {_reason(exc)}") from exc


def upgrade(url: str | sa.URL, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (default: the newest schema).

    An empty database gets the whole schema; an older one the migrations it
    lacks, with its data in place. A SQLite file is created if it does not exist.
    This is what ``outdial db upgrade URL`` runs.
    """
    engine = create_engine(url, create=True)
    try:
        _upgrade(engine, revision, shown_url(url))
    finally:
        engine.dispose()


def connect(url: str | sa.URL, *, create: bool = False) -> SqlRepository:
    """A :class:`SqlRepository` on ``url``, after checking that it can be used.

    Raises :class:`~outdial.errors.DatabaseUnavailable` when the URL is wrong, the
    server cannot be reached or refuses the credentials (the reason says which),
    and :class:`~outdial.errors.SchemaOutOfDate` when the schema is not the one
    this version of outdial needs (run ``outdial db upgrade URL``). With
    ``create=True`` the database is created or upgraded first.
    """
    engine = create_engine(url, create=create)
    shown = shown_url(url)
    try:
        if create:
            _upgrade(engine, "head", shown)
        expected = head_revision()
        with _reading(engine, shown) as conn:
            try:
                current = _revision_of(conn)
            except sa.exc.DBAPIError as exc:
                raise DatabaseUnavailable(shown, _reason(exc)) from exc
        if current != expected:
            raise SchemaOutOfDate(shown, current, expected)
    except BaseException:
        engine.dispose()
        raise
    return SqlRepository(engine, url=shown)
