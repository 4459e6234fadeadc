"""`kennel guard add-example`, `kennel guard examples`: the known attacks the guard's similarity
stage compares requests with (`kennel serve --guard-embedding-model NAME`)."""

from __future__ import annotations

import typer
from rich.table import Table

from kennel.cli.help_format import KennelCommand, KennelGroup
from kennel.cli.output import console, err_console, print_json
from kennel.guard.similarity import LANGS, add_example, shipped_examples, user_examples
from kennel.settings import KennelHome

guard_app = typer.Typer(
    cls=KennelGroup,
    name="guard",
    help="The prompt-injection guard's known attacks: add your own (add-example), list them (examples).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)


@guard_app.command("add-example", cls=KennelCommand)
def add_example_cmd(
    text: str = typer.Argument(..., help="The attack, as an attacker would write it."),
    lang: str = typer.Option("other", "--lang", help=f"Its language: {', '.join(LANGS)}."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Add an attack to your own set (KENNEL_HOME/guard/examples.jsonl; one already there is not
    added twice); a server with the similarity stage compares requests with it from its next
    start."""
    home = KennelHome.from_env().writable()
    before = len(user_examples(home))
    path = add_example(home, text, lang)
    count = len(user_examples(home))
    if json_out:
        print_json("guard-example", {"path": str(path), "added": count > before, "count": count})
        return
    what = "Added to" if count > before else "Already in"
    err_console().print(f"{what} {path} ({count} of your own).")


@guard_app.command("examples", cls=KennelCommand)
def examples_cmd(
    mine: bool = typer.Option(False, "--mine", help="Only the ones you added."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """The known attacks: kennel's multilingual set and the ones you added."""
    home = KennelHome.from_env()
    examples = user_examples(home) if mine else [*shipped_examples(), *user_examples(home)]
    if json_out:
        print_json(
            "guard-examples",
            {"examples": [{"text": e.text, "lang": e.lang, "source": e.source} for e in examples]},
        )
        return
    table = Table("source", "lang", "text")
    for e in examples:
        table.add_row(e.source, e.lang, e.text)
    console().print(table)
