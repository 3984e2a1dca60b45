"""The dashboard's FastAPI app: routes to the pages, the exports and the JSON the pages refresh
from. `create_app(url)` opens the results database read-only; `edgeloop dashboard` serves it.

Routes:
    /devices                 fleet devices (live check via /api/devices/live) and seen devices
    /measurements            filtered, paginated measurements; .csv / .parquet export
    /compare                 two models on one device: distributions and the A/B verdict
    /lineage                 artifacts: recipe, parent chain, card, measurements per device
    /tuning, /tuning/{run}   tuning runs; the live page polls /api/tuning/{run}
    /gates                   validation history; /gates/{run}/junit|html the files it wrote
                             (only from --reports-dir folders: `reports`)
    /history                 a model's p50/p90 per device over days or tags, changes flagged

Every request's `Host` must be a name the dashboard serves and every response carries the
CSP, framing and nosniff headers (`web`); a token, when set, is checked by `auth`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)

from toolkit.dashboard import charts, views, web
from toolkit.dashboard.queries import Tables, export_rows
from toolkit.dashboard.reports import report_folders

TUNING_REFRESH_S = 5
STATIC = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}


def _templates() -> Any:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("toolkit.dashboard", "templates"),
        autoescape=select_autoescape(["html"]),
    )
    env.filters["when"] = views.when
    env.filters["num"] = _num
    env.filters["pct"] = lambda v: "" if v is None else f"{100 * float(v):.1f}%"
    env.filters["pathpart"] = lambda v: quote(str(v), safe="")  # one URL path segment
    return env


def _num(value: Any, digits: int = 4) -> str:
    """A number as people read it: 4 significant digits, '' for none."""
    if value is None:
        return ""
    try:
        return f"{float(value):.{digits}g}"
    except (TypeError, ValueError):
        return str(value)


def create_app(
    url: Optional[str] = None,
    token: Optional[str] = None,
    engine: Any = None,
    lists_ttl_s: float = views.LISTS_TTL_S,
    host: str = "127.0.0.1",
    server_names: Sequence[str] = (),
    reports_dirs: Sequence[Path] = (),
) -> FastAPI:
    """The dashboard over the results database at `url` (see `readonly.database_url`).

    Args:
        url: database URL or SQLite file; default $EDGELOOP_DB, else the embedded store.
        token: when set, every request must carry it (`auth.TokenMiddleware`).
        engine: an engine to read through instead of opening `url` (tests, benchmarks).
        lists_ttl_s: how long the lists of what exists (devices, models, ...) are reused
            before they are read again in the background; 0 reads them on every request.
        host: the address it listens on; a `Host` header may name it (unless a wildcard).
        server_names: further names a `Host` header may carry (loopback names always may).
        reports_dirs: folders gate reports are served from; a report elsewhere is refused.

    Raises:
        SetupError: no database at `url`, or one without a measurements table.
    """
    from toolkit.dashboard.readonly import database_url, readonly_engine
    from toolkit.db.engine import display_url

    shown = display_url(str(engine.url) if engine is not None else database_url(url))
    engine = engine if engine is not None else readonly_engine(url)
    tables = Tables(engine)
    if tables.get("measurements") is None:
        from toolkit.errors import SetupError

        raise SetupError(
            f"--db {shown}: no measurements table (nothing stored there yet; "
            "run `edgeloop profile MODEL` or `edgeloop db upgrade` first)"
        )
    source = views.Source(engine=engine, tables=tables, url=shown, lists_ttl_s=lists_ttl_s)
    env = _templates()
    app = FastAPI(title="edgeloop dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.source = source
    folders = report_folders(reports_dirs)
    if token:
        from toolkit.dashboard.auth import TokenMiddleware

        app.add_middleware(TokenMiddleware, token=token)
    # The last added runs first: headers on every answer, then Host, then the token.
    app.add_middleware(web.HostCheckMiddleware, names=web.served_names(host, server_names))
    app.add_middleware(web.SecurityHeadersMiddleware)

    def page(name: str, request: Request, **context: Any) -> HTMLResponse:
        html = env.get_template(name).render(
            request=request,
            db_url=source.url,
            rendered=views.now(),
            path=request.url.path,
            **context,
        )
        return HTMLResponse(html)

    def problem(request: Request, exc: Exception, status: int = 400) -> HTMLResponse:
        """The problem page: `status` (4xx) with the one-line message."""
        response = page("problem.html", request, message=str(exc))
        response.status_code = status
        return response

    @app.get("/", include_in_schema=False)
    def index() -> RedirectResponse:
        return RedirectResponse("/devices", status_code=307)

    @app.get(charts.PLOTLY_JS_ROUTE, include_in_schema=False)
    def plotly_js() -> FileResponse:
        return FileResponse(
            charts.plotly_js_path(),
            media_type="text/javascript",
            headers={"Cache-Control": "max-age=86400"},
        )

    @app.get("/static/{name}", include_in_schema=False)
    def static(request: Request, name: str) -> Response:
        if name not in STATIC:
            return problem(request, FileNotFoundError(f"/static/{name}: no such file"), 404)
        return FileResponse(Path(__file__).parent / "static" / name, media_type=STATIC[name])

    @app.get("/devices", response_class=HTMLResponse)
    def devices(request: Request) -> HTMLResponse:
        return page("devices.html", request, **views.devices_page(source))

    @app.get("/api/devices/live")
    def devices_live() -> JSONResponse:
        return JSONResponse(views.live_devices(source))

    @app.get("/measurements", response_class=HTMLResponse)
    def measurements(request: Request) -> HTMLResponse:
        try:
            context = views.measurements_page(source, request.query_params)
        except ValueError as exc:
            return problem(request, exc)
        return page("measurements.html", request, **context)

    @app.get("/measurements.csv")
    def measurements_csv(request: Request) -> Response:
        from toolkit.dashboard.exports import csv_chunks

        try:
            flt = views.resolved_filter(source, request.query_params)
        except ValueError as exc:
            return Response(str(exc), status_code=400, media_type="text/plain")
        names, rows = export_rows(source.engine, source.tables, flt)
        return StreamingResponse(
            csv_chunks(names, rows),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="measurements.csv"'},
        )

    @app.get("/measurements.parquet")
    def measurements_parquet(request: Request) -> Response:
        import pandas as pd

        try:
            flt = views.resolved_filter(source, request.query_params)
        except ValueError as exc:
            return Response(str(exc), status_code=400, media_type="text/plain")
        names, rows = export_rows(source.engine, source.tables, flt)
        frame = pd.DataFrame.from_records(list(rows), columns=names)
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        return Response(
            buffer.getvalue(),
            media_type="application/vnd.apache.parquet",
            headers={"Content-Disposition": 'attachment; filename="measurements.parquet"'},
        )

    @app.get("/compare", response_class=HTMLResponse)
    def compare(request: Request) -> HTMLResponse:
        return page("compare.html", request, **views.compare_page(source, request.query_params))

    @app.get("/lineage", response_class=HTMLResponse)
    def lineage(request: Request) -> HTMLResponse:
        return page("lineage.html", request, **views.lineage_page(source, request.query_params))

    @app.get("/tuning", response_class=HTMLResponse)
    def tuning_list(request: Request) -> HTMLResponse:
        return page("tuning_list.html", request, **views.tuning_list_page(source))

    @app.get("/tuning/{run_id:path}", response_class=HTMLResponse)
    def tuning(request: Request, run_id: str) -> HTMLResponse:
        data = views.tuning_data(source, run_id)
        if data["run"] is None and not data["trials"]:
            return problem(request, ValueError(f"no tuning run {run_id!r} in {source.url}"), 404)
        return page(
            "tuning.html",
            request,
            refresh_s=TUNING_REFRESH_S,
            pareto=charts.to_div(data["figures"]["pareto"], "pareto"),
            trajectory=charts.to_div(data["figures"]["trajectory"], "trajectory"),
            **{k: v for k, v in data.items() if k != "figures"},
        )

    @app.get("/api/tuning/{run_id:path}")
    def tuning_json(request: Request, run_id: str) -> JSONResponse:
        data = views.tuning_data(source, run_id)
        table = env.get_template("_trials.html").render(**data)
        return JSONResponse(
            {
                "run_id": run_id,
                "trials": len(data["trials"]),
                "budget": data["budget"],
                "front": data["front_numbers"],
                "table_html": table,
                "figures": {k: json.loads(fig.to_json()) for k, fig in data["figures"].items()},
            }
        )

    @app.get("/gates", response_class=HTMLResponse)
    def gates(request: Request) -> HTMLResponse:
        return page("gates.html", request, **views.gates_page(source, request.query_params))

    @app.get("/gates/{run_id:path}/{kind}")
    def gate_file(request: Request, run_id: str, kind: str) -> Response:
        from toolkit.dashboard.queries import gate_file as recorded
        from toolkit.dashboard.reports import ReportRefused, read_report

        try:
            report = read_report(
                recorded(source.engine, source.tables, run_id, kind), kind, folders
            )
        except ReportRefused as exc:
            return problem(request, LookupError(f"validation {run_id}: {exc}"), 404)
        shown = "attachment" if kind == "junit" else "inline"
        return Response(
            report.content,
            media_type=report.media_type,
            headers={
                "Content-Security-Policy": web.REPORT_CSP,
                "Content-Disposition": f"{shown}; filename*=UTF-8''{quote(report.name)}",
            },
        )

    @app.get("/history", response_class=HTMLResponse)
    def history(request: Request) -> HTMLResponse:
        return page("history.html", request, **views.history_page(source, request.query_params))

    return app
