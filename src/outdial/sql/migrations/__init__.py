"""Alembic migrations of the outdial schema (run with :func:`outdial.sql.upgrade`)."""
