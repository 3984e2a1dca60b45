"""The results database: one SQLAlchemy Core schema (`schema`), one way to reach it (`engine`),
Alembic migrations applied on first use (`upgrade`), and the lab's records on top (`lineage`,
`validation`). SQLite under `EDGELOOP_HOME` is the embedded default; `EDGELOOP_DB` (or the CLI's
`--db`) points every command at a shared PostgreSQL."""
