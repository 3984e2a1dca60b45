"""Alembic environment: runs on the connection `toolkit.db.upgrade` hands over (inside its
transaction and lock), or, from the `alembic` command line, on `sqlalchemy.url` / the URL
`toolkit.db.engine.resolve_url()` gives."""

from __future__ import annotations

from alembic import context

from toolkit.db.schema import metadata


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:  # the alembic command line
    from toolkit.db.engine import get_engine

    with get_engine(context.config.get_main_option("sqlalchemy.url")).connect() as conn:
        _run(conn)
        conn.commit()
