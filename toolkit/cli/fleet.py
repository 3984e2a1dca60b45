"""`edgeloop devices list|check|bootstrap`: fleets, health checks, agent deployment over SSH."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import click

from toolkit.devices.fleet import Fleet, load_fleet
from toolkit.devices.parallel import DEFAULT_MAX_PARALLEL
from toolkit.devices.profile import DeviceProfile, load_profile
from toolkit.errors import ConfigError
from toolkit.paths import profile_dirs


def _all_profiles() -> list[DeviceProfile]:
    """Every single-device profile in the profile folders (first of a name wins)."""
    seen: dict[str, DeviceProfile] = {}
    for folder in profile_dirs():
        for path in sorted(folder.glob("*.y*ml")) if folder.is_dir() else []:
            profile = load_profile(str(path))
            seen.setdefault(profile.name, profile)
    if not seen:
        searched = ", ".join(str(d) for d in profile_dirs())
        raise ConfigError(f"no device profiles found (searched {searched}); pass --fleet")
    return list(seen.values())


def select_fleet(
    fleet: Optional[str], devices: tuple[str, ...], tags: tuple[str, ...] = ()
) -> Fleet:
    """--fleet F and/or --device D...; neither: every profile in the profile folders.
    --select-tag T (repeatable) keeps the devices whose profile has every tag given."""
    if fleet and devices:
        loaded = load_fleet(fleet)
        extra = Fleet.of(devices).devices
        chosen = Fleet(loaded.name, loaded.devices + extra, loaded.description, loaded.source)
    elif fleet:
        chosen = load_fleet(fleet)
    elif devices:
        chosen = Fleet.of(devices)
    else:
        chosen = Fleet("profiles", tuple(_all_profiles()))
    return chosen.select(tags)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _where(p: DeviceProfile) -> str:
    if p.transport == "local":
        return "local agent"
    if p.ssh is not None and (p.transport == "ssh" or p.tunnel == "ssh"):
        user = f"{p.ssh.user}@" if p.ssh.user else ""
        return f"ssh {user}{p.ssh.host}:{p.ssh.port}" + (" (tunnel)" if p.tunnel else "")
    return p.address or ""


fleet_option = click.option("--fleet", "-f", help="Fleet YAML (path or name in profiles/fleets).")
device_option = click.option(
    "--device",
    "-d",
    "devices",
    multiple=True,
    help="A device (local, host:port, profile); repeatable.",
)
# Not --tag: on profile/validate/tune, --tag is a label stored with the results.
select_tag_option = click.option(
    "--select-tag",
    "select_tags",
    multiple=True,
    metavar="TAG",
    help="Only the devices whose profile lists this tag (`tags:`); repeat to require several.",
)
max_parallel_option = click.option(
    "--max-parallel",
    "--workers",
    "max_parallel",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_PARALLEL,
    show_default=True,
    help="Devices worked on at once.",
)


def device_timeout_option(default: float, what: str):  # noqa: ANN201 - a click decorator
    return click.option(
        "--device-timeout",
        type=click.FloatRange(min=0),
        default=default,
        show_default=True,
        metavar="SECONDS",
        help=f"A device still busy after this is a named failure ({what}); 0: no limit.",
    )


@click.command("list")
@fleet_option
@device_option
@select_tag_option
@click.option("--json", "as_json", is_flag=True, help="Print the profiles as JSON.")
def list_cmd(
    fleet: Optional[str], devices: tuple[str, ...], select_tags: tuple[str, ...], as_json: bool
) -> None:
    """List the devices of a fleet (or every profile) as configured; contacts nothing."""
    from dataclasses import asdict

    chosen = select_fleet(fleet, devices, select_tags)
    if as_json:
        click.echo(
            json.dumps(
                {"fleet": chosen.name, "devices": [asdict(d) for d in chosen.devices]}, indent=2
            )
        )
        return
    rows = [["device", "transport", "where", "budgets", "tags"]]
    for d in chosen.devices:
        budgets = ", ".join(f"{k}={v:g}" for k, v in d.budgets.items()) or "-"
        rows.append([d.name, d.transport, _where(d), budgets, ",".join(d.tags) or "-"])
    click.echo(f"fleet {chosen.name}: {len(chosen.devices)} devices")
    click.echo(_table(rows))


@click.command("check")
@fleet_option
@device_option
@select_tag_option
@max_parallel_option
@device_timeout_option(30.0, "DOWN, timed out")
@click.option("--json", "as_json", is_flag=True, help="Print the health records as JSON.")
def check_cmd(
    fleet: Optional[str],
    devices: tuple[str, ...],
    select_tags: tuple[str, ...],
    max_parallel: int,
    device_timeout: float,
    as_json: bool,
) -> None:
    """Check every device, --max-parallel at once; exit code 1 when any is unreachable.

    Progress (done / failed / remaining) goes to stderr as devices answer.
    """
    from toolkit.cli.progress import FleetProgress
    from toolkit.devices.health import check_fleet

    chosen = select_fleet(fleet, devices, select_tags)
    progress = FleetProgress("devices check", len(chosen.devices), enabled=not as_json)

    def one(r, tally) -> None:  # noqa: ANN001
        progress(f"{r.device}: " + ("ok" if r.reachable else f"FAIL DOWN ({r.error})"), tally)

    try:
        results = check_fleet(chosen, max_parallel, device_timeout, on_done=one)
    finally:
        progress.close()
    if as_json:
        click.echo(json.dumps([r.to_json() for r in results], indent=2))
    else:
        rows = [["device", "state", "agent", "runtimes", "sensors", "disk free", "temp", "ms"]]
        for r in results:
            if not r.reachable:
                rows.append([r.device, "DOWN", r.error[:90], "", "", "", "", f"{r.check_ms:.0f}"])
                continue
            rows.append(
                [
                    r.device,
                    "ok",
                    f"{r.agent_version} v{r.protocol_version}",
                    ", ".join(r.runtimes) or "-",
                    ", ".join(r.sensors) or "-",
                    f"{(r.disk_free_mb or 0) / 1024:.1f} GB",
                    "-" if r.temperature_c is None else f"{r.temperature_c:.0f} C",
                    f"{r.check_ms:.0f}",
                ]
            )
        click.echo(_table(rows))
    if not all(r.reachable for r in results):
        sys.exit(1)  # not ctx.exit: main() runs click with standalone_mode=False


@click.command("bootstrap")
@click.argument("device")
@click.option(
    "--accept-new-host-key",
    is_flag=True,
    help="Record the device's SSH host key in known_hosts if it is unknown.",
)
@click.option(
    "--requirement",
    "-r",
    "requirements",
    multiple=True,
    help="Agent requirement for the device, e.g. 'tflite-runtime==2.14.0' 'numpy<2' "
    "(repeatable; default deploy/requirements-agent.txt).",
)
@click.option(
    "--online",
    is_flag=True,
    help="Let the device install from its own package index (no wheelhouse).",
)
@click.option(
    "--mode",
    type=click.Choice(["auto", "system", "user", "process"]),
    default="auto",
    show_default=True,
    help="How to run the agent.",
)
@click.option(
    "--wheelhouse-cache",
    type=click.Path(path_type=Path),
    help="Host folder caching wheelhouses (default EDGELOOP_HOME/wheelhouses).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def bootstrap_cmd(
    device: str,
    accept_new_host_key: bool,
    requirements: tuple[str, ...],
    online: bool,
    mode: str,
    wheelhouse_cache: Optional[Path],
    as_json: bool,
) -> None:
    """Install or upgrade the agent on DEVICE over SSH, start it, and check GetInfo."""
    from dataclasses import asdict

    from toolkit.transport.ssh.bootstrap import BootstrapOptions, bootstrap_device

    profile = load_profile(device)
    options = BootstrapOptions(
        requirements=requirements,
        online=online,
        mode=mode,
        wheelhouse_cache=wheelhouse_cache,
        accept_new_host_key=accept_new_host_key,
    )
    result = bootstrap_device(profile, options, log=(lambda _m: None) if as_json else click.echo)
    if as_json:
        click.echo(json.dumps(asdict(result), indent=2, default=str))
        return
    runtimes = ", ".join(f"{r.name} {r.version}" for r in result.info.runtimes if r.available)
    click.echo(
        f"{result.device}: agent {result.info.agent_version} up on {result.endpoint} "
        f"(127.0.0.1:{result.agent_port} there, {result.mode}) in {result.seconds:.1f} s; "
        f"runtimes: {runtimes or 'none'}"
    )
