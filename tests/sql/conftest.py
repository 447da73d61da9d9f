"""Fixtures for the SQL tests: fresh SQLite files and fresh PostgreSQL databases.

- ``sqlite_url``: a SQLite file at the newest schema in ``tmp_path`` (copied from
  a template migrated once per session, so each test starts empty and fast).
- ``pg_url``: a PostgreSQL database at the newest schema, emptied before each
  test (one database per test module, made from the session's ``postgres_url``).
- :func:`fresh_pg_database`: an empty database of its own (migration tests).
- ``url`` / ``repo`` / ``open_repo``: the same test on each engine (parametrized
  ``sqlite`` and ``postgres``): the fresh database's URL, a repository connected to
  it, and a factory of repositories on it (as separate processes would open).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from outdial.sql import SqlRepository, connect, upgrade
from outdial.sql.schema import CAMPAIGN_RANK_SEQUENCE, RECIPIENT_SEQ_SEQUENCE, metadata


def url_text(url: sa.URL) -> str:
    return url.render_as_string(hide_password=False)


@contextmanager
def fresh_pg_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the test server; dropped afterwards."""
    name = f"outdial_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield url_text(sa.make_url(server_url).set(database=name))
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "outdial.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    target = tmp_path / "outdial.db"
    shutil.copyfile(sqlite_template, target)
    return f"sqlite:///{target}"


@pytest.fixture(scope="module")
def pg_module_url(postgres_url: str) -> Iterator[str]:
    with fresh_pg_database(postgres_url) as url:
        upgrade(url)
        yield url


_TABLES = ", ".join(table.name for table in metadata.sorted_tables)


@pytest.fixture
def pg_url(pg_module_url: str) -> str:
    engine = sa.create_engine(pg_module_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"TRUNCATE {_TABLES} CASCADE")
            for sequence in (RECIPIENT_SEQ_SEQUENCE, CAMPAIGN_RANK_SEQUENCE):
                conn.exec_driver_sql(f"ALTER SEQUENCE {sequence} RESTART")
    finally:
        engine.dispose()
    return pg_module_url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest) -> str:
    """A fresh database at the newest schema, on each engine."""
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


@pytest.fixture
def repo(url: str) -> Iterator[SqlRepository]:
    repository = connect(url)
    yield repository
    repository.close()


@pytest.fixture
def open_repo(url: str) -> Iterator[Callable[[], SqlRepository]]:
    """Opens repositories (as separate processes would) on one fresh database."""
    opened: list[SqlRepository] = []

    def opener() -> SqlRepository:
        repository = connect(url)
        opened.append(repository)
        return repository

    yield opener
    for repository in opened:
        repository.close()
