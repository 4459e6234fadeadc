"""The command table in kennel/cli/commands.py: lazy imports, help that matches each command."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from kennel.cli.commands import COMMANDS, load_command
from kennel.cli.main import app

# what a command needs and `kennel --help` / `--version` must not pay for
HEAVY = (
    "numpy",
    "gguf",
    "httpx",
    "pydantic",
    "sqlite3",
    "yaml",
    "kennel.store",
    "kennel.fit",
    "kennel.server",
)

PROBE = """
import sys
sys.argv = ["kennel", {arg!r}]
from kennel.cli.main import run
try:
    run()
except SystemExit:
    pass
print("MODULES", " ".join(sorted(sys.modules)))
"""


@pytest.mark.parametrize("arg", ["--version", "--help"])
def test_version_and_help_import_no_command_module(arg: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(arg=arg)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    loaded = out.split("MODULES", 1)[1].split()
    heavy = sorted(m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert heavy == []
    assert not any(m.startswith("kennel.cli.") and m not in _CLI_CORE for m in loaded)


_CLI_CORE = {"kennel.cli.main", "kennel.cli.commands", "kennel.cli.help_format", "kennel.cli.output"}


@pytest.mark.parametrize("entry", COMMANDS, ids=lambda e: e.name)
def test_listed_summary_is_the_commands_own_help(entry) -> None:  # type: ignore[no-untyped-def]
    command = load_command(entry)
    first_paragraph = (command.help or "").split("\n\n")[0]
    assert " ".join(first_paragraph.split()) == entry.summary
    assert command.name == entry.name


def test_every_command_help_runs_and_flags_show_no_type() -> None:
    runner = CliRunner()
    for argv in _every_command():
        result = runner.invoke(app, [*argv, "--help"])
        assert result.exit_code == 0, (argv, result.output)
        assert "<bool>" not in result.output, argv


def test_every_help_fits_80_columns_without_cutting_an_option() -> None:
    """rich narrows the option names with the type column when the terminal is 80 wide, and cuts
    what no longer fits with an ellipsis (`--guard-embedding-mod…` in `kennel serve --help`)."""
    runner = CliRunner()
    for argv in _every_command():
        result = runner.invoke(app, [*argv, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
        assert result.exit_code == 0, (argv, result.output)
        lines = result.output.splitlines()
        assert max(len(line) for line in lines) <= 80, argv
        cut = [line for line in lines if re.match(r"│\s+-[\w-]*…", line)]  # an option's name
        assert cut == [], (argv, cut)

    serve = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "80"}, terminal_width=80).output
    assert "…" not in serve
    for option in ("--guard-embedding-model", "--guard-stage-threshold"):
        assert f"│ {option} " in serve
    assert "<int> [1<=x<=65535]" in serve and "<int range>" not in serve


def _every_command() -> list[list[str]]:
    """Every command and subcommand, as the words that name it on the command line."""
    names = []
    for entry in COMMANDS:
        command = load_command(entry)
        names.append([entry.name])
        names += [[entry.name, sub] for sub in getattr(command, "commands", {})]
    return names


def test_top_level_help_lists_every_command_in_order_and_suggests_on_typo() -> None:
    runner = CliRunner()
    listing = runner.invoke(app, ["--help"]).output
    listed = [
        line.strip("│ ").split(" ")[0]
        for line in listing.splitlines()
        if line.startswith("│ ") and line[2] != " "
    ]
    names = [name for name in listed if name and not name.startswith("-")]
    assert names == [entry.name for entry in COMMANDS]
    typo = runner.invoke(app, ["lss"])
    assert typo.exit_code == 2
    assert "Did you mean 'ls'" in typo.output
