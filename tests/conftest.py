"""Shared fixtures for the outdial test suite.

``postgres_url`` gives a SQLAlchemy URL of a throwaway PostgreSQL server (see
``tests/support/postgres.py``).  It is session scoped, so under pytest-xdist each
worker that needs it starts its own server.  When no server can be had the test
is skipped, except under ``CI=true``, where missing infrastructure is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import structlog

from support.postgres import PostgresUnavailable, throwaway_postgres

# Library logs are rendered and dropped in tests (structlog.testing.capture_logs still
# sees them): thousands of expected warnings would otherwise bury pytest's output.
structlog.configure(logger_factory=structlog.ReturnLoggerFactory())


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL (``postgresql+psycopg://...``) of a PostgreSQL database for tests."""
    try:
        with throwaway_postgres() as url:
            yield url
    except PostgresUnavailable as exc:  # raised only while starting, never after yield
        if _in_ci():
            pytest.fail(f"PostgreSQL is required under CI=true: {exc}", pytrace=False)
        pytest.skip(f"no PostgreSQL server: {exc}")
