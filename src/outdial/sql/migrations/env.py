"""Alembic environment: runs on the connection :func:`outdial.sql.upgrade` hands over.

There is no ``alembic.ini``: the script location is found with
``importlib.resources`` and the connection (already inside a transaction) is in
``config.attributes["connection"]``.
"""

from __future__ import annotations

from alembic import context

from outdial.sql.schema import VERSION_TABLE, metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only through outdial.sql.upgrade
    raise RuntimeError("run outdial's migrations with outdial.sql.upgrade(url)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
