"""`edgeloop`: the command line, a thin layer over the Python API.

Subcommands live one module each and are imported only when used, so `edgeloop --help`
and `edgeloop agent serve` start fast. Every EdgeloopError ends the command with its one-line
message (no traceback unless --debug).

Exit codes: 0 success; 1 an error (device, export, configuration); 2 bad input found before
any work (a usage error, or a model that does not fit its dataset: `SetupError`); 3 `tune`
found no candidate that meets the budgets (INFEASIBLE); 130 interrupted.
"""

from __future__ import annotations

import importlib
import sys

import click

from toolkit import __version__
from toolkit.cli.db import db_option
from toolkit.errors import EdgeloopError, SetupError

ERROR_EXIT = 1
SETUP_ERROR_EXIT = 2  # bad input found before any work; click's usage errors use 2 as well
INFEASIBLE_EXIT = 3  # tune: no candidate met the budgets

COMMANDS = {
    "agent": "toolkit.cli.agent:agent",
    "compare": "toolkit.cli.compare:compare",
    "dashboard": "toolkit.cli.dashboard:dashboard",
    "devices": "toolkit.cli.devices:devices",
    "profile": "toolkit.cli.profile:profile",
    "results": "toolkit.cli.results:results",
    "compress": "toolkit.cli.compress:compress",
    "db": "toolkit.cli.db:db",
    "evaluate": "toolkit.cli.evaluate:evaluate",
    "tune": "toolkit.cli.tune:tune",
    "demo": "toolkit.cli.tune:demo",
    "validate": "toolkit.cli.validate:validate",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported from "module:attr" strings on first use."""

    def __init__(self, *args, lazy: dict[str, str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str):
        if name in self.lazy:
            module_name, attr = self.lazy[name].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeloop")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.option("-v", "--verbose", is_flag=True,
              help="Show third-party output (warnings, converter logs) instead of sending it to "
                   "the output folder's edgeloop.log.")
@db_option
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: bool) -> None:
    """edgeloop: compress, convert and measure models on real devices.

    \b
    Exit codes: 0 success; 1 an error; 2 bad input found before any work
    (usage, or a model that does not fit its dataset); 3 tune found no
    candidate within the budgets (INFEASIBLE); 130 interrupted.
    """
    ctx.obj = {"debug": debug, "verbose": verbose}


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: runs the CLI, turning our errors into one line and an exit code
    (2 for a SetupError, else 1)."""
    args = argv if argv is not None else sys.argv[1:]
    debug = "--debug" in args
    if not {"-v", "--verbose"} & set(args):
        from toolkit.logs import quiet_environment

        quiet_environment()  # before the libraries that read it are imported
    from toolkit.transport.local import prefer_long_lived

    try:
        with prefer_long_lived():  # "local" is the agent later calls reuse
            code = cli.main(args=argv, prog_name="edgeloop", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except EdgeloopError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(SETUP_ERROR_EXIT if isinstance(exc, SetupError) else ERROR_EXIT)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
