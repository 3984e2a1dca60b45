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
    if facts.attached:
        click.echo("attached (profile with --target ID)")
    for a in facts.attached:
        what = f"{a.name or a.kind} {a.model}".strip() if a.available else a.reason
        click.echo(f"  {a.id:<24} {'yes' if a.available else 'no ':<4} {what} @ {a.baud} baud")


@devices.command()
@click.option(
    "--serial",
    "serial_ports",
    is_flag=True,
    required=True,
    help="Scan this host's serial ports for MLPerf Tiny DUTs (the only scan so far).",
)
@click.option(
    "--port",
    "ports",
    multiple=True,
    metavar="PATH",
    help="Also probe this port (one the OS does not list, e.g. a pty); repeatable.",
)
@click.option(
    "--usb",
    multiple=True,
    metavar="VID:PID",
    help="Also treat this USB VID:PID as a board to probe; repeatable.",
)
@click.option("--baud", type=click.IntRange(min=1), default=115_200, show_default=True)
@click.option("--probe-all", is_flag=True, help="Probe every port, not only known boards.")
@click.option("--json", "as_json", is_flag=True, help="Print the ports as JSON.")
def scan(
    serial_ports: bool,
    ports: tuple[str, ...],
    usb: tuple[str, ...],
    baud: int,
    probe_all: bool,
    as_json: bool,
) -> None:
    """List serial ports with their USB VID:PID and board, and whether a DUT answered."""
    from device_agent.serial_dut.scan import SerialPort, list_serial_ports, parse_vid_pid, probe
    from toolkit.transport.serial_dut import describe_ports

    try:
        extra = {parse_vid_pid(v): f"user board {v}" for v in usb}
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--usb") from None
    found = list_serial_ports(extra)
    listed = {p.port for p in found}
    found += [SerialPort(port=p, description="given with --port") for p in ports if p not in listed]
    chosen = [p for p in found if probe_all or p.known or p.port in ports]
    probes = {p.port: probe(p.port, baud) for p in chosen}
    rows = describe_ports(found, probes)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        if r["dut"]:
            answer = f"DUT: {r['name']}" + (f", model {r['model']}" if r["model"] else "")
        elif r["probed"]:
            answer = f"no DUT: {r['reason']}"
        else:
            answer = "not probed (unknown board; --probe-all or --usb VID:PID)"
        click.echo(
            f"{r['port']:<16} {r['usb_vid_pid'] or '-':<10} "
            f"{r['board'] or r['description'] or '-'}  {answer}"
        )
