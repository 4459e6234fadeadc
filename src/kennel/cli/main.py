"""The `kennel` command: one typer app, one place where errors become messages and exit codes."""

from __future__ import annotations

import os
import sys

import typer

from kennel import __version__
from kennel.cli import backup as backup_cmd
from kennel.cli import catalog as catalog_cmd
from kennel.cli import doctor as doctor_cmd
from kennel.cli import fit as fit_cmd
from kennel.cli import hw as hw_cmd
from kennel.cli import run as run_cmd
from kennel.cli import serve as serve_cmd
from kennel.cli import store as store_cmd
from kennel.cli import versions as versions_cmd
from kennel.cli.checkup import checkup_app
from kennel.cli.keys import keys_app
from kennel.cli.output import err_console
from kennel.errors import KennelError

app = typer.Typer(
    name="kennel",
    help="Run open-weight LLMs on hardware you own. Start with `kennel hw`, then `kennel fit MODEL`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
app.command("hw")(hw_cmd.hw)
app.command("fit")(fit_cmd.fit)
app.command("doctor")(doctor_cmd.doctor)
app.command("catalog")(catalog_cmd.catalog)
app.command("show")(catalog_cmd.show)
app.command("recommend")(catalog_cmd.recommend_cmd)
app.command("pull")(store_cmd.pull_cmd)
app.command("import")(store_cmd.import_cmd)
app.command("ls")(store_cmd.ls)
app.command("rm")(store_cmd.rm)
app.command("gc")(store_cmd.gc)
app.command("export")(store_cmd.export)
app.command("create")(versions_cmd.create)
app.command("tag")(versions_cmd.tag_cmd)
app.command("rollback")(versions_cmd.rollback)
app.command("history")(versions_cmd.history)
app.command("diff")(versions_cmd.diff)
app.command("serve")(serve_cmd.serve)
app.command("ps")(serve_cmd.ps)
app.command("run")(run_cmd.run)
app.command("backup")(backup_cmd.backup_cmd)
app.command("restore")(backup_cmd.restore_cmd)
app.add_typer(keys_app, name="keys")
app.add_typer(checkup_app, name="checkup")


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
        err_console().print(f"[bold red]error:[/] {exc.message}")
        if exc.hint:
            err_console().print(f"[dim]hint:[/] {exc.hint}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console().print("Interrupted.")
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("KENNEL_DEBUG"):
            raise
        err_console().print(f"[bold red]internal error:[/] {type(exc).__name__}: {exc}")
        err_console().print(
            "[dim]hint:[/] this is a bug in kennel; run again with KENNEL_DEBUG=1 for the traceback and report it."
        )
        sys.exit(1)


if __name__ == "__main__":
    run()
