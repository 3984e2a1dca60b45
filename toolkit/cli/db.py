"""`edgeloop db`: the results database's schema (`upgrade`, `current`), and the options every
command that stores results shares: `--db URL` and `--tag LABEL`."""

from __future__ import annotations

from typing import Any, Optional

import click


def _select_db(_ctx: click.Context, _param: click.Parameter, value: Optional[str]) -> None:
    if value is None:  # SQLAlchemy is not imported at parse time unless a URL is given
        return
    from toolkit.db.engine import select_url

    select_url(value)


def _select_tag(_ctx: click.Context, _param: click.Parameter, value: Optional[str]) -> None:
    from toolkit.db.labels import select_tag

    select_tag(value)


db_option = click.option(
    "--db",
    metavar="URL",
    expose_value=False,
    is_eager=True,
    callback=_select_db,
    help="Results database (sqlite:///file or postgresql+psycopg://user@host/db). "
    "[EDGELOOP_DB, else SQLite under EDGELOOP_HOME]",
)
tag_option = click.option(
    "--tag",
    metavar="LABEL",
    expose_value=False,
    is_eager=True,
    callback=_select_tag,
    help="A label stored with every row this command writes (e.g. a git sha).",
)


@click.group()
def db() -> None:
    """The results database: its schema revision, and upgrading it."""


@db.command()
@db_option
def upgrade() -> None:
    """Bring the database to this edgeloop's schema (also done on first use)."""
    from toolkit.db.engine import get_engine
    from toolkit.db.upgrade import upgrade as run_upgrade
    from toolkit.db.upgrade import where

    engine = get_engine()
    found = run_upgrade(engine)
    if found.before == found.after:
        click.echo(f"{where(engine)}: at {found.after} already")
    else:
        click.echo(f"{where(engine)}: upgraded {found.before or 'empty'} -> {found.after}")


@db.command()
@db_option
def current() -> None:
    """Print the database's schema revision and this edgeloop's."""
    from toolkit.db.engine import get_engine
    from toolkit.db.upgrade import current_revision, head_revision, where

    engine = get_engine()
    found = _or_error(engine, current_revision)
    click.echo(
        f"{where(engine)}: {found or 'empty (no revision)'} (this edgeloop: {head_revision()})"
    )


def _or_error(engine: Any, read: Any) -> Any:
    from sqlalchemy.exc import SQLAlchemyError

    from toolkit.db.upgrade import unusable

    try:
        return read(engine)
    except SQLAlchemyError as exc:
        raise unusable(engine, exc) from None
