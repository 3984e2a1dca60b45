"""`edgeloop devices info|list|check|bootstrap`."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from toolkit.cli.main import LazyGroup

FLEET_COMMANDS = {
    "list": "toolkit.cli.fleet:list_cmd",
    "check": "toolkit.cli.fleet:check_cmd",
    "bootstrap": "toolkit.cli.fleet:bootstrap_cmd",
}


@click.group(cls=LazyGroup, lazy=FLEET_COMMANDS)
def devices() -> None:
    """Inspect, check and set up devices."""


def _gb(n: int) -> str:
    return f"{n / 2**30:.1f} GB"


@devices.command()
@click.argument("device")
@click.option("--json", "as_json", is_flag=True, help="Print the info as JSON.")
def info(device: str, as_json: bool) -> None:
    """Print what the agent on DEVICE reports (local, host:port or a profile name)."""
    from toolkit.devices.connect import open_device

    with open_device(device) as client:
        facts = client.info()
    if as_json:
        click.echo(json.dumps(asdict(facts), indent=2))
        return
    rows = [
        ("device", f"{facts.device_id} ({facts.address})"),
        ("hostname", facts.hostname),
        ("system", f"{facts.os}, {facts.arch}, Python {facts.python_version}"),
        ("cpu", f"{facts.cpu_model} × {facts.cpu_cores}"),
        ("memory", _gb(facts.memory_total_bytes)),
        ("disk free", _gb(facts.disk_free_bytes)),
        (
            "model cache",
            f"{facts.cache_used_bytes / 2**20:.1f} MB of {facts.cache_quota_bytes / 2**20:.0f} MB",
        ),
        (
            "temperature",
            f"{facts.temperature_c:.1f} °C" if facts.temperature_c is not None else "not readable",
        ),
        ("agent", f"{facts.agent_version} (protocol v{facts.protocol_version})"),
    ]
    for key, value in rows:
        click.echo(f"{key:<12} {value}")
    click.echo("runtimes")
    for r in facts.runtimes:
        state = f"{r.module} {r.version}" + (
            f" [{', '.join(r.accelerators)}]" if r.accelerators else ""
        )
        click.echo(
            f"  {r.name:<8} {'yes' if r.available else 'no ':<4} "
            f"{state if r.available else r.reason}"
        )
    click.echo("sensors")
    for s in facts.sensors:
        detail = f"{s.detail} @ {s.rate_hz:g} Hz" if s.available else s.reason
        click.echo(f"  {s.name:<16} {'yes' if s.available else 'no ':<4} {detail}")
