"""The ``postgres_url`` fixture hands out a working, private PostgreSQL database."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from support.postgres import DATABASE, ENV_BIN, find_pg_bin


def _fake_bin(directory: Path, names: tuple[str, ...]) -> Path:
    directory.mkdir()
    for name in names:
        exe = directory / name
        exe.write_text("#!/bin/sh\nexit 0\n")
        exe.chmod(0o755)
    return directory


@pytest.mark.postgres
def test_fixture_server_answers_select_1(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("select 1")).scalar_one() == 1
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_fixture_database_is_the_test_database_and_takes_writes(postgres_url: str) -> None:
    url = sa.make_url(postgres_url)
    assert url.drivername == "postgresql+psycopg"
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            assert conn.execute(sa.text("select current_database()")).scalar_one() == DATABASE
            conn.execute(sa.text("create temporary table probe (n int)"))
            conn.execute(sa.text("insert into probe values (1), (2), (3)"))
            assert conn.execute(sa.text("select sum(n) from probe")).scalar_one() == 6
    finally:
        engine.dispose()


def test_pg_bin_from_env_is_searched_first(tmp_path: Path) -> None:
    fake = _fake_bin(tmp_path / "bin", ("initdb", "pg_ctl", "postgres"))
    assert find_pg_bin({ENV_BIN: str(fake), "PATH": ""}) == fake
    assert find_pg_bin({"PATH": ""}) != fake


def test_pg_bin_without_pg_ctl_is_passed_over(tmp_path: Path) -> None:
    partial = _fake_bin(tmp_path / "bin", ("initdb", "postgres"))
    assert find_pg_bin({ENV_BIN: str(partial), "PATH": ""}) != partial


def test_pg_bin_is_found_through_path(tmp_path: Path) -> None:
    fake = _fake_bin(tmp_path / "bin", ("initdb", "pg_ctl", "postgres"))
    found = find_pg_bin({"PATH": str(fake)})
    # /usr/lib/postgresql/*/bin, when present, comes before PATH.
    system = find_pg_bin({"PATH": ""})
    assert found == (system if system is not None else fake)
