"""Validation runs and their per-device, per-check gate results in the results database.

`run_gate` records its finished `GateReport` here (`record_gate`); the CLI adds where it wrote
the JUnit XML and HTML report (`attach_reports`). A CI dashboard reads `validation_runs` and
`gate_results` (`toolkit.db.schema`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from sqlalchemy import Connection, Engine

from toolkit.db import schema
from toolkit.db.engine import get_engine, write
from toolkit.db.labels import current_tag
from toolkit.db.upgrade import ensure_current
from toolkit.db.upsert import upsert


def record_gate(report: Any, engine: Optional[Engine] = None) -> str:
    """Writes a `toolkit.validate.result.GateReport`: one `validation_runs` row and one
    `gate_results` row per device and check (replacing those of an earlier write of the same
    run). Returns the run id."""
    engine = engine or get_engine()
    ensure_current(engine)
    run_id = str(report.settings.get("run_id") or f"validate-{report.started_unix:.6f}")
    started = float(report.started_unix)
    run = {
        "run_id": run_id,
        "started": started,
        "fleet": report.fleet,
        "artifact": report.artifact,
        "artifact_sha256": report.artifact_sha256,
        "passed": bool(report.passed),
        "devices": len(report.devices),
        "failed_devices": sum(not d.passed for d in report.devices),
        "tag": current_tag(),
    }
    checks = [
        {
            "run_id": run_id,
            "fleet": report.fleet,
            "device": check.device,
            "check": check.check,
            "passed": bool(check.passed),
            "detail": _detail(check),
            "started": started,
        }
        for device in report.devices
        for check in device.checks
    ]

    def insert(conn: Connection) -> None:
        upsert(conn, schema.validation_runs, run)
        g = schema.gate_results
        conn.execute(g.delete().where(g.c.run_id == run_id))
        if checks:
            conn.execute(g.insert(), checks)

    write(engine, insert)
    return run_id


def attach_reports(
    run_id: str,
    junit_path: Optional[Path] = None,
    html_path: Optional[Path] = None,
    engine: Optional[Engine] = None,
) -> None:
    """Records where a validation run's JUnit XML and HTML report were written."""
    values = {
        name: str(Path(path).resolve())
        for name, path in (("junit_path", junit_path), ("html_path", html_path))
        if path is not None
    }
    if not values:
        return
    engine = engine or get_engine()
    v, g = schema.validation_runs, schema.gate_results

    def update(conn: Connection) -> None:
        conn.execute(v.update().where(v.c.run_id == run_id).values(values))
        conn.execute(g.update().where(g.c.run_id == run_id).values(values))

    write(engine, update)


def _detail(check: Any) -> str:
    """The check's message and figures, always as one JSON object (`message` always there)."""
    figures = {
        name: getattr(check, name)
        for name in ("measured", "limit", "unit", "duration_s", "detail")
        if getattr(check, name) not in (None, "")
    }
    return json.dumps({"message": check.message, **figures}, default=str, sort_keys=True)
