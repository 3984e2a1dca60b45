"""INSERT ... ON CONFLICT DO UPDATE for SQLite and PostgreSQL (the sqlite3 era's INSERT OR
REPLACE), one statement, so two writers of the same key never fail or duplicate."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Table


def upsert(conn: Connection, table: Table, values: dict[str, Any]) -> None:
    """Inserts `values` into `table`, or updates the other columns of the row with the same
    primary key."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - only the two dialects edgeloop ships for
        raise NotImplementedError(f"upsert on {conn.dialect.name}")
    keys = [c.name for c in table.primary_key.columns]
    statement = insert(table).values(values)
    changed = {k: statement.excluded[k] for k in values if k not in keys}
    conn.execute(statement.on_conflict_do_update(index_elements=keys, set_=changed))


def insert_missing(conn: Connection, table: Table, values: dict[str, Any]) -> None:
    """Inserts `values` unless a row with the same primary key exists (then nothing)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    conn.execute(insert(table).values(values).on_conflict_do_nothing())
