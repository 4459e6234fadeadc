"""`kennel create`, `tag`, `rollback`, `history`, `diff`: changing a deployed model without fear."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from kennel.cli.output import console, print_json
from kennel.cli.store import JSON, MESSAGE, open_store, version_dict
from kennel.errors import InvalidOptionError
from kennel.store.add import build_profile
from kennel.store.names import check_name, parse_ref
from kennel.store.profile import ProfileSpec


def create(
    name: str = typer.Argument(..., help="The model to create or give a new version."),
    file: Path | None = typer.Option(
        None, "-f", "--file", help="Profile YAML: from, adapter, template, system, parameters, context."
    ),
    from_: str | None = typer.Option(
        None, "--from", help="Start from NAME[:TAG|@V], sha256:HEX or a .gguf path."
    ),
    tag: list[str] = typer.Option([], "--tag", help="Tags to point at the new version (default: latest)."),
    message: str = MESSAGE,
    json_out: bool = JSON,
) -> None:
    """Make a new immutable version of NAME from a profile (base GGUF + LoRA + template + system
    prompt + sampling + context). Tags other than those given stay where they are."""
    model = check_name(name)
    if file is None and from_ is None:
        raise InvalidOptionError(
            "Give a profile with -f FILE.yaml, or --from to start from a model or GGUF.",
            hint="Example profile:  from: qwen2.5-0.5b\\n  system: You answer in Vietnamese.",
        )
    spec = ProfileSpec.load(file) if file else ProfileSpec()
    with open_store() as store:
        profile = build_profile(
            store, model, spec, base_dir=(file.parent if file else Path.cwd()), from_ref=from_
        )
        v = store.add_version(model, profile, action="create", message=message, tags=tag or ["latest"])
        if json_out:
            print_json("create", {"version": version_dict(v, store)})
            return
        console().print(f"[green]✓[/] {v.model}@{v.version} tagged {', '.join(v.tags)}.")


def tag_cmd(
    ref: str = typer.Argument(..., help="NAME@VERSION or NAME:TAG to point at."),
    tag: str = typer.Argument(..., help="The tag to set, e.g. prod or candidate."),
    message: str = MESSAGE,
    json_out: bool = JSON,
) -> None:
    """Point TAG of a model at a version (creating the tag or moving it)."""
    r = parse_ref(ref)
    with open_store() as store:
        before, after = store.set_tag(r, tag, message=message)
    if json_out:
        print_json("tag", {"model": r.name, "tag": tag, "version_before": before, "version_after": after})
        return
    moved = f"moved from @{before}" if before is not None else "created"
    console().print(f"[green]✓[/] {r.name}:{tag} → @{after} ({moved}).")


def rollback(
    name: str = typer.Argument(..., help="The model."),
    to: int | None = typer.Option(
        None, "--to", min=1, help="The version to go back to (default: the one before)."
    ),
    tag: str = typer.Option("latest", "--tag", help="The tag to move back, e.g. prod."),
    message: str = MESSAGE,
    json_out: bool = JSON,
) -> None:
    """Move a tag back to an earlier version, in one step."""
    with open_store() as store:
        before, after = store.rollback(
            check_name(name), tag=check_name(tag, what="tag"), to=to, message=message
        )
    if json_out:
        print_json("rollback", {"model": name, "tag": tag, "version_before": before, "version_after": after})
        return
    console().print(f"[green]✓[/] {name}:{tag} rolled back from @{before} to @{after}.")


def history(
    name: str = typer.Argument(..., help="The model."),
    json_out: bool = JSON,
) -> None:
    """Every change to a model: who, when, what (as a diff), why."""
    from kennel.finetune.lineage import describe

    with open_store() as store:
        entries = store.history(check_name(name))
        lineages = {
            e.version_after: doc
            for e in entries
            if e.action == "finetune" and e.version_after and (doc := store.lineage(name, e.version_after))
        }
    if json_out:
        events = [
            {**asdict(e), **({"lineage": lineages[e.version_after]} if e.version_after in lineages else {})}
            for e in entries
        ]
        print_json("history", {"model": name, "events": events})
        return
    t = Table(header_style="bold", box=None, pad_edge=False, show_lines=False)
    for col in ("when", "who", "action", "what", "why"):
        t.add_column(col)
    for e in entries:
        if e.tag:
            what = (
                f"{e.tag}: "
                + (f"@{e.version_before} → " if e.version_before else "")
                + (f"@{e.version_after}" if e.version_after else "removed")
            )
        elif e.action == "rm":
            what = f"@{e.version_before} removed"
        else:
            what = f"@{e.version_after}" if e.version_after else ""
        t.add_row(e.at, e.actor, e.action, what, escape(e.message))
        if e.detail and e.action not in ("rm",):
            t.add_row("", "", "", f"[dim]{escape(_indent(e.detail))}[/]", "")
        if e.action == "finetune" and e.version_after in lineages:
            t.add_row("", "", "", f"[dim]{escape(chr(10).join(describe(lineages[e.version_after])))}[/]", "")
    console().print(t)


def show_version(ref: str, *, json_out: bool) -> None:
    """`kennel show NAME@V`: a version's profile, tags and, when it was fine-tuned, its lineage."""
    from kennel.finetune.lineage import describe

    r = parse_ref(ref)
    with open_store() as store:
        v = store.resolve(r)
        doc = version_dict(v, store)
        lineage = store.lineage(v.model, v.version)
    if json_out:
        print_json("show", {"version": {**doc, "lineage": lineage}})
        return
    c = console()
    c.print(f"[bold]{v.model}@{v.version}[/] tags: {', '.join(v.tags) or '-'}; {v.created_at} by {v.actor}")
    if v.message:
        c.print(f"  {escape(v.message)}")
    c.print(escape(v.profile.to_yaml().rstrip()))
    if lineage:
        c.print("[bold]Lineage[/]")
        for line in describe(lineage):
            c.print(f"  {escape(line)}")


def _indent(text: str, limit: int = 30) -> str:
    lines = [ln for ln in text.rstrip().splitlines() if not ln.startswith(("---", "+++"))]
    return "\n".join(lines[:limit] + (["…"] if len(lines) > limit else []))


def diff(
    name: str = typer.Argument(..., help="The model."),
    v1: int = typer.Argument(..., help="Older version number."),
    v2: int = typer.Argument(..., help="Newer version number."),
    json_out: bool = JSON,
) -> None:
    """What changed between two versions of a model's profile."""
    with open_store() as store:
        text = store.diff(check_name(name), v1, v2)
    if json_out:
        print_json("diff", {"model": name, "from": v1, "to": v2, "diff": text})
        return
    console().print(escape(text) if text else f"{name}@{v1} and @{v2} have the same profile.")
