"""The repository contract, unchanged, against SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from contract.repository_contract import RepositoryContract
from outdial.ports import Repository
from outdial.sql import connect


class TestSqliteRepository(RepositoryContract):
    @pytest.fixture
    def repo(self, sqlite_url: str) -> Iterator[Repository]:
        repository = connect(sqlite_url)
        yield repository
        repository.close()


@pytest.mark.postgres
class TestPostgresRepository(RepositoryContract):
    @pytest.fixture
    def repo(self, pg_url: str) -> Iterator[Repository]:
        repository = connect(pg_url)
        yield repository
        repository.close()
