"""`edgeloop agent serve|stop`: run the device agent (same as `python -m device_agent serve`),
or stop the long-lived local agent the CLI shares between commands.

The agent's own argument parser owns its flags (listening, TLS and client authentication,
quotas, child limits, run-as); this command hands every argument to it unchanged, so the two
command lines can never drift apart. `edgeloop agent serve --help` prints the agent's help.
"""

from __future__ import annotations

import sys

import click


@click.group()
def agent() -> None:
    """Run the device agent on this machine, or stop the CLI's local one."""


@agent.command(
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("agent_args", nargs=-1, type=click.UNPROCESSED)
def serve(agent_args: tuple[str, ...]) -> None:
    """Serve the edgeloop gRPC protocol until interrupted (flags: `edgeloop agent serve --help`)."""
    from device_agent.__main__ import main as agent_main

    sys.exit(agent_main(["serve", *agent_args]))


@agent.command()
def stop() -> None:
    """Stop the long-lived local agent that `edgeloop` commands share (if one is running).

    It starts again on the next command that uses the local device, and stops by itself after
    $EDGELOOP_AGENT_IDLE_S seconds (default 600) with nothing to do.
    """
    from toolkit.transport.long_lived import stop as stop_agent

    pid = stop_agent()
    click.echo(f"stopped the local agent (pid {pid})" if pid else "no local agent was running")
