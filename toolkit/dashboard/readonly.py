"""A read-only SQLAlchemy engine over the results database (SQLite file or PostgreSQL URL).

The dashboard never writes: SQLite is opened with `mode=ro` and `PRAGMA query_only`, and
PostgreSQL sessions start with read-only transactions, so a bug in a page cannot change a lab's
results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from toolkit.errors import SetupError


def database_url(url: Optional[str] = None) -> str:
    """The results database: `url` (`--db`, a URL or a SQLite file) > $EDGELOOP_DB > the
    embedded SQLite under EDGELOOP_HOME (`toolkit.db.engine.resolve_url` owns the rule)."""
    from toolkit.db.engine import resolve_url
    from toolkit.errors import ResultsStoreError

    try:
        return resolve_url(url)
    except ResultsStoreError as exc:
        raise SetupError(f"--db: {exc}") from None


def readonly_engine(url: Optional[str] = None) -> Any:
    """An engine that can only read `url` (default: `database_url()`).

    Raises:
        SetupError: a SQLite file that does not exist (nothing has been measured there yet),
            or a URL SQLAlchemy cannot read.
    """
    from sqlalchemy import create_engine, event
    from sqlalchemy.engine import make_url

    text = database_url(url)
    parsed = make_url(text)
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database or "")
        if not parsed.database or not path.is_file():
            raise SetupError(
                f"--db {text}: no results database at {path} (run `edgeloop "
                "profile MODEL` first, or pass --db URL)"
            )
        engine = create_engine(f"sqlite:///file:{path.resolve()}?mode=ro&uri=true")

        @event.listens_for(engine, "connect")
        def _sqlite_read_only(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA query_only = 1")
            cursor.execute("PRAGMA busy_timeout = 5000")
            cursor.close()

        return engine
    engine = create_engine(parsed, pool_pre_ping=True)

    @event.listens_for(engine, "connect")
    def _server_read_only(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        cursor.close()
        dbapi_connection.commit()

    return engine
