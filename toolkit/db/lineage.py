"""Artifact lineage: what each artifact was made from and how, and what it measured.

`compress()` records every artifact it exports (file sha256, the parent model's state
sha256, the recipe, the card) with `record_compression`; a tuning run claims the artifacts it
built (`claim_artifact`). `lineage()` walks artifact → recipe → parent → ... and gathers each
artifact's measurements; `edgeloop results --lineage SHA` prints it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from sqlalchemy import Connection, Engine, select

from toolkit.db import schema
from toolkit.db.engine import get_engine, write
from toolkit.db.labels import current_tag
from toolkit.db.upgrade import ensure_current
from toolkit.db.upsert import insert_missing

MAX_DEPTH = 64
"""Parents followed at most (a guard against a cycle written by hand)."""


@dataclass(frozen=True)
class ArtifactRow:
    """One artifact as stored (`schema.artifacts`)."""

    sha256: str
    parent_sha256: Optional[str]
    model_sha256: Optional[str]
    format: Optional[str]
    recipe: list[Any]
    model: str
    created: float
    run_id: Optional[str]
    tag: Optional[str]


@dataclass(frozen=True)
class MeasurementRow:
    """The figures of one stored measurement of an artifact."""

    device_id: str
    runtime: str
    p50_ms: Optional[float]
    p90_ms: Optional[float]
    peak_rss_mb: Optional[float]
    ok: bool
    run_id: Optional[str]
    tag: Optional[str]


@dataclass(frozen=True)
class Lineage:
    """An artifact, its ancestors (parent first) and its measurements."""

    artifact: ArtifactRow
    ancestors: list[ArtifactRow] = field(default_factory=list)
    root_sha256: Optional[str] = None  # the first parent with no row of its own (a base model)
    measurements: list[MeasurementRow] = field(default_factory=list)


def record_compression(card: Any, model: Any, engine: Optional[Engine] = None) -> None:
    """Records every artifact `card` (a `ModelCard`) lists that was written.

    Args:
        card: the compressed model's card.
        model: the compressed torch model; its state sha256 is the `parent_sha256` of what is
            compressed from it next (None where its state cannot be hashed: a quantized
            model holding packed parameters, which nothing continues from).
        engine: the database (default: `toolkit.db.engine.get_engine()`).
    """
    from toolkit.compress.metrics import state_sha256

    try:
        model_sha256: Optional[str] = state_sha256(model)
    except (RuntimeError, TypeError, AttributeError):
        model_sha256 = None
    engine = engine or get_engine()
    ensure_current(engine)
    card_json = json.dumps(card.to_json(), default=str, sort_keys=True)
    rows = [
        {
            "sha256": record.sha256,
            "parent_sha256": card.parent_sha256,
            "model_sha256": model_sha256,
            "format": record.format,
            "recipe_json": json.dumps(card.recipe, default=str),
            "card_json": card_json,
            "created": time.time(),
            "run_id": None,
            "tag": current_tag(),
        }
        for record in card.artifacts.values()
        if record.path and record.sha256
    ]

    def insert(conn: Connection) -> None:
        for row in rows:
            insert_missing(conn, schema.artifacts, row)

    write(engine, insert)


def claim_artifact(engine: Engine, sha256: str, run_id: str) -> None:
    """Marks the artifact `sha256` as built by tuning run `run_id` (if no run claimed it)."""
    t = schema.artifacts
    write(
        engine,
        lambda conn: conn.execute(
            t.update().where(t.c.sha256 == sha256, t.c.run_id.is_(None)).values(run_id=run_id)
        ),
    )


def find_artifact(conn: Connection, sha: str) -> Optional[ArtifactRow]:
    """The artifact whose file sha256 starts with `sha`, else one whose model state sha256 is
    `sha` (a parent is named by its state sha)."""
    t = schema.artifacts
    found = conn.execute(
        select(t).where(t.c.sha256.startswith(sha)).order_by(t.c.created).limit(2)
    ).all()
    if len(found) > 1:
        raise LookupError(f"artifact sha {sha!r} is ambiguous: give more characters")
    if not found:
        found = conn.execute(
            select(t).where(t.c.model_sha256 == sha).order_by(t.c.created).limit(1)
        ).all()
    return _artifact(found[0]) if found else None


def lineage(sha: str, engine: Optional[Engine] = None) -> Optional[Lineage]:
    """The lineage of the artifact `sha` (a file sha256 or a prefix); None when unknown.

    Raises:
        LookupError: the prefix matches several artifacts.
    """
    engine = engine or get_engine()
    ensure_current(engine)
    with engine.connect() as conn:
        artifact = find_artifact(conn, sha)
        if artifact is None:
            return None
        ancestors: list[ArtifactRow] = []
        parent, seen = artifact.parent_sha256, {artifact.sha256}
        while parent and len(ancestors) < MAX_DEPTH:
            t = schema.artifacts
            row = conn.execute(
                select(t).where(t.c.model_sha256 == parent).order_by(t.c.created).limit(1)
            ).first()
            if row is None or row.sha256 in seen:
                break
            seen.add(row.sha256)
            ancestors.append(_artifact(row))
            parent = row.parent_sha256
        m = schema.measurements.c
        rows = conn.execute(
            select(m.device_id, m.runtime, m.p50_ms, m.p90_ms, m.peak_rss_mb, m.ok, m.run_id, m.tag)
            .where(m.model_sha256 == artifact.sha256)
            .order_by(m.id)
        ).all()
    measurements = [
        MeasurementRow(
            r.device_id, r.runtime, r.p50_ms, r.p90_ms, r.peak_rss_mb, bool(r.ok), r.run_id, r.tag
        )
        for r in rows
    ]
    return Lineage(artifact, ancestors, parent, measurements)


def _artifact(row: Any) -> ArtifactRow:
    card = json.loads(row.card_json or "{}")
    return ArtifactRow(
        sha256=row.sha256,
        parent_sha256=row.parent_sha256,
        model_sha256=row.model_sha256,
        format=row.format,
        recipe=json.loads(row.recipe_json or "[]"),
        model=str(card.get("model", "")),
        created=float(row.created),
        run_id=row.run_id,
        tag=row.tag,
    )


def render(found: Lineage) -> str:
    """The lineage as text: recipe → parent chain → measurements."""
    a = found.artifact
    lines = [
        f"artifact {a.sha256}  ({a.format}, model {a.model or '?'}"
        + (f", run {a.run_id}" if a.run_id else "")
        + (f", tag {a.tag}" if a.tag else "")
        + ")",
        f"  recipe: {_recipe(a.recipe)}",
    ]
    for depth, parent in enumerate(found.ancestors, start=1):
        lines.append(
            f"{'  ' * depth}← parent {parent.sha256[:16]} ({parent.format}) recipe "
            f"{_recipe(parent.recipe)}"
        )
    if found.root_sha256:
        lines.append(
            f"{'  ' * (len(found.ancestors) + 1)}← base model state {found.root_sha256[:16]}"
        )
    lines.append(f"measurements: {len(found.measurements)}")
    for m in found.measurements:
        figures = ", ".join(
            f"{name} {value:.3f}"
            for name, value in (
                ("p50_ms", m.p50_ms),
                ("p90_ms", m.p90_ms),
                ("peak_rss_mb", m.peak_rss_mb),
            )
            if value is not None
        )
        lines.append(
            f"  {m.device_id} {m.runtime}: {figures if m.ok else 'FAILED'}"
            + (f"  run {m.run_id}" if m.run_id else "")
            + (f"  tag {m.tag}" if m.tag else "")
        )
    return "\n".join(lines)


def _recipe(recipe: list[Any]) -> str:
    if not recipe:
        return "(export only)"
    return " → ".join(json.dumps(step, sort_keys=True, default=str) for step in recipe)
