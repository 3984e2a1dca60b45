"""`edgeloop agent serve`: run the device agent (same as `python -m device_agent serve`).

The agent's own argument parser owns its flags (listening, TLS and client authentication,
quotas, child limits, run-as); this command hands every argument to it unchanged, so the two
command lines can never drift apart. `edgeloop agent serve --help` prints the agent's help.
"""

from __future__ import annotations

import sys

import click


@click.group()
def agent() -> None:
    """Run the device agent on this machine."""


@agent.command(
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("agent_args", nargs=-1, type=click.UNPROCESSED)
def serve(agent_args: tuple[str, ...]) -> None:
    """Serve the edgeloop gRPC protocol until interrupted (flags: `edgeloop agent serve --help`)."""
    from device_agent.__main__ import main as agent_main

    sys.exit(agent_main(["serve", *agent_args]))
