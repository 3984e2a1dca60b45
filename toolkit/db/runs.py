"""Tuning runs by id across hosts: a run started on one host can be resumed on another that
points at the same database, from the `run.json` its `tune_runs` row keeps, under its tag."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional, Union

from sqlalchemy import Engine, select

from toolkit.db import schema
from toolkit.db.engine import display_url, get_engine, read, selected_url
from toolkit.db.labels import current_tag, select_tag
from toolkit.db.upgrade import ensure_current
from toolkit.paths import edgeloop_home

RUN_FILE = "run.json"


def prepare_resume(
    run_id: str, out_dir: Optional[Path] = None, engine: Optional[Engine] = None
) -> Optional[Path]:
    """Before `tune --resume RUN_ID`: writes `<out_dir>/<run_id>/run.json` from the database
    when this host lacks it, and labels the rows the resumed run writes with the run's tag
    unless `--tag` gave another.

    Args:
        run_id: the run's id (a folder path that holds a run.json is left alone).
        out_dir: folder holding runs (default `<edgeloop home>/runs`, as `tune` uses).
        engine: the database (default: `toolkit.db.engine.get_engine()`).

    Returns:
        The file written, or None (the run is here already, or the database does not know it).
    """
    if (Path(run_id) / RUN_FILE).is_file():
        run_id = Path(run_id).name
        folder = None
    else:
        folder = Path(out_dir or edgeloop_home() / "runs") / run_id
        if (folder / RUN_FILE).is_file():
            folder = None
    engine = engine or get_engine()
    ensure_current(engine)
    t = schema.tune_runs
    row = read(
        engine,
        lambda conn: conn.execute(
            select(t.c.config_json, t.c.tag).where(t.c.run_id == run_id)
        ).first(),
    )
    if row is None:
        return None
    if row.tag and current_tag() is None:
        select_tag(row.tag)
    if folder is None or not row.config_json:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RUN_FILE
    path.write_text(row.config_json)
    return path


def resume_command(run_id: str, out_dir: Optional[Union[str, Path]] = None) -> str:
    """The command that continues run `run_id`: `edgeloop tune --resume RUN_ID`, with the
    `--db` this process was given (password hidden) and `--out` when not the default."""
    words = ["edgeloop"]
    url = selected_url()
    if url:
        words += ["--db", display_url(url)]
    words += ["tune", "--resume", run_id]
    default = edgeloop_home() / "runs"
    if out_dir is not None and Path(out_dir).resolve() != default.resolve():
        words += ["--out", str(out_dir)]
    return shlex.join(words)
