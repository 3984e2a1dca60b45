"""`edgeloop dashboard`: serve the lab dashboard (read-only) over the results database."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click


@click.command()
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8750,
    show_default=True,
    help="TCP port (0: a free one, printed at start).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; beyond loopback --tls-cert, --tls-key and --token-file are "
    "required.",
)
@click.option(
    "--db",
    "db_url",
    help="Results database URL or SQLite file [$EDGELOOP_DB, else the embedded "
    "store under EDGELOOP_HOME].",
)
@click.option(
    "--token-file",
    type=click.Path(path_type=Path),
    help="File holding the token every request must carry (not readable by other "
    "users); required beyond loopback.",
)
@click.option(
    "--tls-cert",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Server certificate (PEM) to serve HTTPS; required beyond loopback.",
)
@click.option("--tls-key", type=click.Path(path_type=Path, dir_okay=False), help="Its key (PEM).")
@click.option(
    "--server-name",
    "server_names",
    multiple=True,
    help="A name the dashboard is reached by (the Host header a browser sends: a DNS name or "
    "address); repeatable. Loopback names and the --host address are always accepted; "
    "any other Host is refused (DNS rebinding).",
)
@click.option(
    "--reports-dir",
    "reports_dirs",
    multiple=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder that `edgeloop validate --junit/--html` writes gate reports to; repeatable. "
    "The Gates page serves a recorded report only from inside these folders.",
)
@click.option(
    "--lists-ttl",
    "lists_ttl_s",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds the lists of devices, models, runtimes and tags are reused before "
    "they are read again in the background (each is a scan of the whole "
    "measurements table); 0 reads them on every request.",
)
def dashboard(
    port: int,
    host: str,
    db_url: Optional[str],
    token_file: Optional[Path],
    lists_ttl_s: float,
    tls_cert: Optional[Path],
    tls_key: Optional[Path],
    server_names: tuple[str, ...],
    reports_dirs: tuple[Path, ...],
) -> None:
    """Serve the web dashboard: devices, measurements, lineage, compare, tuning runs, gates,
    history. Read-only; works offline (plotly.js is served from the installed package)."""
    import socket

    import uvicorn

    from toolkit.dashboard.app import create_app
    from toolkit.dashboard.auth import check_listen, load_dashboard_token
    from toolkit.dashboard.readonly import database_url
    from toolkit.dashboard.web import served_names
    from toolkit.errors import SetupError

    if (tls_cert is None) != (tls_key is None):
        raise SetupError("--tls-cert and --tls-key go together: pass both")
    tls = tls_cert is not None
    token = load_dashboard_token(token_file)
    policy = check_listen(host, token, tls=tls)
    for path in (tls_cert, tls_key):
        if path is not None and not path.is_file():
            raise SetupError(
                f"{'--tls-cert' if path is tls_cert else '--tls-key'} {path}: no such file"
            )
    app = create_app(
        db_url,
        token=token,
        lists_ttl_s=lists_ttl_s,
        host=host,
        server_names=server_names,
        reports_dirs=reports_dirs,
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SetupError(f"--host {host} --port {port}: cannot listen ({exc.strerror})") from None
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
    )
    try:
        config.load()  # reads the certificate and key now: a bad one is one line, not a trace
    except (OSError, ValueError) as exc:
        sock.close()
        raise SetupError(f"--tls-cert {tls_cert} --tls-key {tls_key}: {exc}") from None
    sock.listen(2048)  # connections wait in the backlog until uvicorn accepts them
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    click.echo(
        f"edgeloop dashboard on {'https' if tls else 'http'}://{shown}:{bound}/ reading "
        f"{_shown_url(database_url(db_url))} ({policy}; answers Host "
        f"{', '.join(sorted(served_names(host, server_names)))})",
        err=True,
    )
    import threading

    if lists_ttl_s > 0:
        threading.Thread(target=app.state.source.prime, daemon=True, name="dashboard-prime").start()
    uvicorn.Server(config).run(sockets=[sock])


def _shown_url(url: str) -> str:
    from toolkit.db.engine import display_url

    return display_url(url)
