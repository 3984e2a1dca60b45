"""`edgeloop agent serve`: run the device agent (same as `python -m device_agent serve`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.group()
def agent() -> None:
    """Run the device agent on this machine."""


@agent.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; beyond loopback needs TLS.",
)
@click.option("--port", default=50051, show_default=True, help="Port (0: any free port).")
@click.option(
    "--cache-dir", default="~/.cache/edgeloop-agent", show_default=True, help="Model cache folder."
)
@click.option("--max-model-mb", default=512, show_default=True, help="Largest model accepted (MB).")
@click.option("--quota-mb", default=4096, show_default=True, help="Model cache quota (MB).")
@click.option(
    "--tls-cert", type=click.Path(dir_okay=False, exists=True), help="Server certificate (PEM)."
)
@click.option(
    "--tls-key", type=click.Path(dir_okay=False, exists=True), help="Server private key (PEM)."
)
@click.option(
    "--client-ca",
    type=click.Path(dir_okay=False, exists=True),
    help="CA for client certificates (mTLS).",
)
@click.option(
    "--device-id", default="", help="Device id to report (default: hostname + machine id)."
)
@click.option(
    "--power-command", default="", help="Command that prints watts (the 'command' power sensor)."
)
def serve(
    host,
    port,
    cache_dir,
    max_model_mb,
    quota_mb,
    tls_cert,
    tls_key,
    client_ca,
    device_id,
    power_command,
) -> None:
    """Serve the edgeloop gRPC protocol until interrupted."""
    from device_agent.__main__ import main as agent_main

    argv = [
        "serve",
        "--host",
        host,
        "--port",
        str(port),
        "--cache-dir",
        cache_dir,
        "--max-model-mb",
        str(max_model_mb),
        "--quota-mb",
        str(quota_mb),
        "--device-id",
        device_id,
        "--power-command",
        power_command,
    ]
    for flag, value in (
        ("--tls-cert", tls_cert),
        ("--tls-key", tls_key),
        ("--client-ca", client_ca),
    ):
        if value:
            argv += [flag, str(Path(value))]
    sys.exit(agent_main(argv))
