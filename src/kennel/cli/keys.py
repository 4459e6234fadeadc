"""`kennel keys create`, `ls`, `revoke`, `export`: API keys for the OpenAI-compatible server.

A secret is printed once, by `create`, alone on stdout (so ``KEY=$(kennel keys create ci)`` works);
everything else goes to stderr there. No other command prints a secret; only `export` writes the
hashes, for replicas started with `kennel serve --keys-file`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from kennel.cli.help_format import KennelCommand, KennelGroup
from kennel.cli.output import console, err_console, print_json
from kennel.server.keyfile import HashedKey, export_document, write_keys_file
from kennel.server.keys import ApiKey, KeyStore, parse_expires, utcnow
from kennel.settings import KennelHome

JSON = typer.Option(False, "--json", help="Print JSON for scripts.")

keys_app = typer.Typer(
    cls=KennelGroup,
    name="keys",
    help="API keys for `kennel serve`: create (the secret is shown once), ls, revoke, export (a keys file "
    "that replicas share).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)


def open_keys() -> KeyStore:
    return KeyStore.open(KennelHome.from_env())


def _summary(key: ApiKey) -> str:
    models = ", ".join(key.models) if key.models else "all"
    rpm = f"{key.rpm}/min" if key.rpm is not None else "unlimited"
    expires = key.expires_at.isoformat(timespec="minutes") if key.expires_at else "never"
    return f"role: {key.role}; models: {models}; requests: {rpm}; expires: {expires}"


@keys_app.command("create", cls=KennelCommand)
def create(
    name: str = typer.Argument(..., help="A name for the key, e.g. ci or alice-laptop."),
    models: str | None = typer.Option(
        None, "--models", help="Comma-separated models the key may use (default: all)."
    ),
    model: list[str] | None = typer.Option(
        None, "--model", help="A model the key may use; repeat for more. NAME, NAME:TAG or NAME@VERSION."
    ),
    rpm: int | None = typer.Option(None, "--rpm", help="Requests per minute (default: unlimited)."),
    expires: str | None = typer.Option(
        None, "--expires", help="30d, 12h, 2w or a date like 2027-01-31 (default: never)."
    ),
    guard: str | None = typer.Option(
        None,
        "--guard",
        help="Prompt-injection guard for this key: off, log, flag or block (default: the model's).",
    ),
    role: str = typer.Option(
        "user",
        "--role",
        help="user: status and chat in the web console, and the API; admin: also changes things "
        "(the console's admin pages, and Ollama's store API where store_api is on).",
    ),
    json_out: bool = JSON,
) -> None:
    """Create an API key. Its secret is printed once: kennel keeps only a hash of it."""
    when = parse_expires(expires) if expires is not None else None
    with open_keys() as keys:
        key, secret = keys.create(
            name,
            models=[*(model or []), *([models] if models else [])],
            rpm=rpm,
            expires=when,
            guard=guard,
            role=role,
        )
    if json_out:
        print_json("keys.create", {"key": key.to_dict(), "secret": secret})
        return
    err = err_console()
    err.print(f"[green]✓[/] Created API key [bold]{key.name}[/] ({_summary(key)}).")
    sys.stdout.write(secret + "\n")
    sys.stdout.flush()
    err.print(
        "[yellow]Copy this key now: it cannot be shown again.[/] "
        "Clients send it as 'Authorization: Bearer <key>'. "
        f"Lost it? `kennel keys revoke {escape(key.name)}`, then create another."
    )


@keys_app.command("ls", cls=KennelCommand)
def ls(
    all_keys: bool = typer.Option(False, "--all", help="Include revoked keys."),
    json_out: bool = JSON,
) -> None:
    """List API keys: name, prefix, role, models, limit, expiry, state. Never the secrets."""
    with open_keys() as keys:
        listed = keys.list(include_revoked=all_keys)
    now = utcnow()
    if json_out:
        print_json("keys.ls", {"keys": [k.to_dict(now) for k in listed]})
        return
    if not listed:
        console().print("No API keys. Create one: kennel keys create NAME")
        return
    t = Table(header_style="bold", box=None, pad_edge=False)
    for col in ("name", "prefix", "role", "models", "rpm", "expires", "state", "created", "by"):
        t.add_column(col, justify="right" if col == "rpm" else "left")
    for k in listed:
        state = k.state(now)
        colour = {"active": "green", "expired": "yellow", "revoked": "red"}[state]
        t.add_row(
            k.name,
            k.prefix + "…",
            k.role,
            ", ".join(k.models) if k.models else "all",
            str(k.rpm) if k.rpm is not None else "-",
            k.expires_at.isoformat(timespec="minutes") if k.expires_at else "never",
            f"[{colour}]{state}[/]",
            k.created_at.isoformat(timespec="minutes"),
            k.created_by,
        )
    console().print(t)


@keys_app.command("revoke", cls=KennelCommand)
def revoke(
    name: str = typer.Argument(..., help="The key's name, as `kennel keys ls` shows it."),
    json_out: bool = JSON,
) -> None:
    """Revoke an API key: a running server refuses it from its next request on."""
    with open_keys() as keys:
        key = keys.revoke(name)
    if json_out:
        print_json("keys.revoke", {"key": key.to_dict()})
        return
    console().print(
        f"[green]✓[/] Revoked API key [bold]{key.name}[/] ({key.prefix}…). Requests with it now get 401."
    )


@keys_app.command("export", cls=KennelCommand)
def export(
    output: Path | None = typer.Option(
        None, "-o", "--output", help="The keys file to write (default: print it on stdout)."
    ),
    json_out: bool = typer.Option(
        False, "--json", help="With -o, print what was written as JSON for scripts (the file is JSON anyway)."
    ),
) -> None:
    """Write the active keys, as hashes (never the secrets), to a keys file for `kennel serve --keys-file`.

    Replicas (pods, compose services) started with the same file accept the same keys. After
    `create` or `revoke`, export again over the same file: servers re-read it within a second,
    or at once on SIGHUP.
    """
    now = utcnow()
    with open_keys() as keys:
        hashed = [HashedKey(key, sha256) for key, sha256 in keys.hashed(now=now)]
    doc = export_document(hashed, now=now)
    names = [h.key.name for h in hashed]
    if output is None:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        sys.stdout.flush()
    else:
        write_keys_file(output, doc)
        if json_out:
            print_json("keys.export", {"path": str(output), "keys": names, "exported_at": doc["exported_at"]})
    where = "stdout" if output is None else str(output)
    target = "PATH" if output is None else str(output)
    err = err_console()
    err.print(
        f"[green]✓[/] Wrote {len(names)} API key{'' if len(names) == 1 else 's'} (hashes only) to {where}."
    )
    if not names:
        err.print("[yellow]No active keys:[/] servers given this file on a network address refuse to start.")
    err.print(
        f"Next: mount it where the servers run (e.g. as a Kubernetes Secret) and start them with "
        f"`kennel serve --keys-file {target}`; export again after create or revoke."
    )
