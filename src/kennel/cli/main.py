"""The `kennel` command: one typer app, one place where errors become messages and exit codes."""

from __future__ import annotations

import os
import sys

import typer
from rich.markup import escape

from kennel import __version__
from kennel.cli.commands import LazyGroup
from kennel.cli.output import err_console
from kennel.errors import KennelError

# the subcommands live in kennel/cli/commands.py and are imported only when one runs
app = typer.Typer(
    name="kennel",
    cls=LazyGroup,
    help="Run open-weight LLMs on hardware you own. Start with `kennel hw`, then `kennel fit MODEL`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        print(f"kennel {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """kennel: size, choose, get, serve and keep healthy the LLMs on your own machines."""


def run() -> None:
    """Console entry point. Usage errors are click's (exit 2); a KennelError becomes one line and
    exit 2; anything else is a bug: a short note and exit 1 (KENNEL_DEBUG=1 shows the traceback)."""
    try:
        app()
    except KennelError as exc:
        # escaped: a message is plain text, and `pip install 'kennel[guard]'` is not markup
        err_console().print(f"[bold red]error:[/] {escape(exc.message)}")
        if exc.hint:
            err_console().print(f"[dim]hint:[/] {escape(exc.hint)}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console().print("Interrupted.")
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("KENNEL_DEBUG"):
            raise
        err_console().print(f"[bold red]internal error:[/] {type(exc).__name__}: {exc}")
        err_console().print(
            "[dim]hint:[/] this is a bug in kennel; run again with KENNEL_DEBUG=1 "
            "for the traceback and report it."
        )
        sys.exit(1)


if __name__ == "__main__":
    run()
