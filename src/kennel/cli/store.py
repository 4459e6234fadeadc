"""`kennel pull`, `import`, `ls`, `rm`, `gc`, `export`: getting models onto the machine."""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from kennel.catalog.entries import CatalogEntry
from kennel.cli.output import console, err_console, print_json, status
from kennel.errors import NotInStoreError
from kennel.settings import KennelHome
from kennel.store import bundle, maintenance
from kennel.store.add import import_gguf
from kennel.store.names import parse_ref
from kennel.store.pull import PullTarget, plan_pull, pull
from kennel.store.registry import BlobInfo, Store, VersionInfo
from kennel.units import fmt_bytes

JSON = typer.Option(False, "--json", help="Print JSON for scripts.")
MESSAGE = typer.Option("", "-m", "--message", help="Why: kept in the audit log (`kennel history`).")


def open_store() -> Store:
    return Store.open(KennelHome.from_env())


@contextmanager
def byte_progress(enabled: bool) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar per file on stderr: (label, bytes done, bytes total)."""
    if not enabled:
        yield lambda label, done, total: None
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console(),
        transient=False,
    )
    tasks: dict[str, TaskID] = {}

    def update(label: str, done: int, total: int) -> None:
        if not tasks:  # shown from the first byte on: an error before that stays the first line
            bar.start()
        if label not in tasks:
            tasks[label] = bar.add_task(label.rsplit("/", 1)[-1], total=total)
        bar.update(tasks[label], completed=done, total=total)

    try:
        yield update
    finally:
        if tasks:
            bar.stop()


def _blob_if_kept(store: Store, digest: str) -> BlobInfo | None:
    try:
        return store.blob(digest)
    except NotInStoreError:  # a removed version's blob may be gone
        return None


def version_dict(v: VersionInfo, store: Store) -> dict[str, Any]:
    blobs = [b for d, _, _ in v.profile.blobs() if (b := _blob_if_kept(store, d)) is not None]
    return {
        "model": v.model,
        "version": v.version,
        "tags": list(v.tags),
        "created_at": v.created_at,
        "actor": v.actor,
        "message": v.message,
        "removed": v.removed,
        "size_bytes": sum(b.size for b in blobs),
        "file": v.profile.base_file,
        "blobs": [{"digest": b.digest, "size": b.size, "kind": b.kind} for b in blobs],
        "profile": v.profile.model_dump(mode="json", exclude_none=True),
    }


def _default_quant(entry: CatalogEntry) -> str:
    from kennel.catalog.recommend import best_quant
    from kennel.fit import calibration
    from kennel.hardware.probe import probe

    home = KennelHome.from_env()
    hw = probe(home)
    cal = calibration.load(
        home, hw, calibration.backend_of(hw, 1 if hw.llama is None or hw.llama.gpu_offload else 0)
    )
    return best_quant(entry, hw, cal)


def pull_cmd(
    ref: str = typer.Argument(..., help="A catalog NAME[:QUANT] or hf.co/OWNER/REPO[:QUANT]."),
    file: str | None = typer.Option(None, "--file", help="Pick the GGUF file in the repo exactly."),
    revision: str | None = typer.Option(None, "--revision", help="Hub branch, tag or commit."),
    name: str | None = typer.Option(
        None, "--name", help="Name in the store (default: the catalog or file name)."
    ),
    message: str = MESSAGE,
    json_out: bool = JSON,
) -> None:
    """Download a GGUF, or a safetensors model for vLLM, into the store: resumable, checked against the
    hub's sha256.

    Without :QUANT, a catalog model comes at the quantization `kennel recommend` picks for this machine.
    A repo without GGUF files but with config.json and *.safetensors is pulled as the files vLLM
    loads (config, tokenizer, weights) and served with `--engine vllm` (the default for it). A
    prompt-injection classifier (`kennel pull prompt-guard-2-86m`) is pulled with its ONNX export,
    or exported at pull time, for `kennel serve --guard-classifier NAME`.
    """
    with status(f"Looking up {ref}…", enabled=not json_out):
        target = plan_pull(ref, file=file, revision=revision, name=name, default_quant=_default_quant)
    with open_store() as store:
        if not json_out:
            err_console().print(
                f"Pulling [bold]{target.name}[/] from hf.co/{target.repo} ({fmt_bytes(target.size)}"
                f"{_parts(target)})"
            )
        with byte_progress(not json_out) as progress:
            v = pull(store, target, message=message, progress=progress)
        _report_version(store, v, "pull", json_out)


def _parts(target: PullTarget) -> str:
    if target.classifier:
        return f", a prompt-injection classifier for `kennel serve --guard-classifier {target.name}`"
    if target.format == "transformers":
        return f", {len(target.files)} files for vLLM"
    return f", {len(target.files)} shards" if len(target.files) > 1 else ""


def _report_version(store: Store, v: VersionInfo, kind: str, json_out: bool) -> None:
    if json_out:
        print_json(kind, {"version": version_dict(v, store)})
        return
    size = sum(store.blob(d).size for d, _, _ in v.profile.blobs())
    console().print(
        f"[green]✓[/] {v.model}@{v.version} ({v.profile.base_file}, {fmt_bytes(size)}) "
        f"tagged {', '.join(v.tags) or '-'}. Versions: kennel ls {v.model}"
    )


def import_cmd(
    path: Path = typer.Argument(..., help="A .gguf file (first shard of a split one) or a bundle .tar."),
    name: str | None = typer.Option(None, "--name", help="Name in the store."),
    message: str = MESSAGE,
    json_out: bool = JSON,
) -> None:
    """Add a local GGUF, or a bundle from `kennel export`, to the store (checked, copied, never moved)."""
    with open_store() as store, byte_progress(not json_out) as progress:
        if path.is_file() and tarfile.is_tarfile(path):
            v = bundle.import_bundle(store, path, name=name, message=message, progress=progress)
        else:
            v = import_gguf(
                store,
                path,
                name=name,
                message=message,
                progress=lambda done: progress(path.name, done, path.stat().st_size),
            )
        _report_version(store, v, "import", json_out)


def ls(
    name: str | None = typer.Argument(None, help="One model: list its versions and tags."),
    all_versions: bool = typer.Option(False, "--all", help="With NAME: include removed versions."),
    json_out: bool = JSON,
) -> None:
    """What the store holds: models, their tags and sizes; or the versions of one model."""
    with open_store() as store:
        if name:
            ref = parse_ref(name)
            versions = store.versions(ref.name, include_removed=all_versions)
            if json_out:
                print_json("ls", {"model": ref.name, "versions": [version_dict(v, store) for v in versions]})
                return
            t = _table("version", "tags", "file", "size", "created", "by", "message")
            for v in versions:
                size = sum(store.blob(d).size for d, _, _ in v.profile.blobs()) if not v.removed else 0
                t.add_row(
                    f"@{v.version}" + (" [dim](removed)[/]" if v.removed else ""),
                    ", ".join(v.tags),
                    v.profile.base_file,
                    fmt_bytes(size) if size else "-",
                    v.created_at,
                    v.actor,
                    v.message,
                )
            console().print(t)
            return
        rows: list[dict[str, Any]] = []
        for m in store.models():
            tags = store.tags(m)
            live = store.versions(m)
            if not live:
                continue
            latest = store.version(m, tags["latest"]) if "latest" in tags else live[-1]
            size = sum(b.size for b in {store.blob(d) for v in live for d, _, _ in v.profile.blobs()})
            rows.append(
                {
                    "name": m,
                    "tags": tags,
                    "versions": len(live),
                    "latest_version": latest.version,
                    "file": latest.profile.base_file,
                    "size_bytes": size,
                    "updated_at": live[-1].created_at,
                }
            )
        if json_out:
            print_json("ls", {"models": rows})
            return
        if not rows:
            console().print("The store is empty. Get a model: kennel recommend, then kennel pull NAME.")
            return
        t = _table("name", "tags", "versions", "file", "size", "updated")
        for r in rows:
            tag_text = ", ".join(f"{k}→@{v}" for k, v in r["tags"].items())
            t.add_row(
                r["name"],
                tag_text,
                str(r["versions"]),
                r["file"],
                fmt_bytes(r["size_bytes"]),
                r["updated_at"],
            )
        console().print(t)


def _table(*cols: str) -> Table:
    t = Table(header_style="bold", box=None, pad_edge=False)
    for c in cols:
        t.add_column(c, justify="right" if c in ("size", "versions") else "left")
    return t


def rm(
    ref: str = typer.Argument(..., help="NAME (every version), NAME:TAG (the tag) or NAME@VERSION."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Say what would be removed and freed; change nothing."
    ),
    message: str = MESSAGE,
    json_out: bool = JSON,
) -> None:
    """Remove a model, a tag or a version. Refuses what a tag or a running server uses; keeps
    blobs that another version or model still uses."""
    with open_store() as store:
        plan = maintenance.plan_rm(store, ref)
        doc = {
            "model": plan.model,
            "versions": list(plan.versions),
            "tags": list(plan.tags),
            "blobs": [b.digest for b in plan.blobs],
            "freed_bytes": plan.freed_bytes,
            "blocked": list(plan.blocked),
            "dry_run": dry_run,
        }
        if not dry_run:
            maintenance.execute_rm(store, plan, message=message)
        if json_out:
            print_json("rm", doc)
            return
        if plan.blocked:  # only a dry run gets here: execute_rm refuses
            console().print(f"[red]Would be refused[/]: {'; '.join(plan.blocked)}.")
        else:
            console().print(f"{'Would' if dry_run else 'Done:'} {plan.describe()}.")


def gc(
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be freed; change nothing."),
    json_out: bool = JSON,
) -> None:
    """Delete blobs no version uses and interrupted downloads nobody is resuming."""
    with open_store() as store:
        plan = maintenance.plan_gc(store)
        if not dry_run:
            maintenance.execute_gc(store, plan)
        if json_out:
            print_json(
                "gc",
                {
                    "orphan_blobs": [d for d, _ in plan.orphan_blobs],
                    "partial_files": [str(p) for p, _ in plan.partial_files],
                    "freed_bytes": plan.freed_bytes,
                    "dry_run": dry_run,
                },
            )
            return
        verb = "Would free" if dry_run else "Freed"
        console().print(
            f"{verb} {fmt_bytes(plan.freed_bytes)}: {len(plan.orphan_blobs)} unused blob(s), "
            f"{len(plan.partial_files)} interrupted download(s)."
        )


def export(
    ref: str = typer.Argument(..., help="NAME, NAME:TAG or NAME@VERSION."),
    out: Path = typer.Option(..., "-o", "--output", help="The bundle file to write, e.g. qwen.tar."),
    json_out: bool = JSON,
) -> None:
    """Write a model version as one verified bundle for an air-gapped machine (`kennel import` there)."""
    with open_store() as store, byte_progress(not json_out) as progress:
        manifest = bundle.export_bundle(store, parse_ref(ref), out, progress=progress)
    size = out.stat().st_size
    if json_out:
        print_json(
            "export",
            {
                "bundle": str(out),
                "size_bytes": size,
                "model": manifest["model"],
                "version": manifest["version"],
                "blobs": manifest["blobs"],
            },
        )
        return
    console().print(
        f"[green]✓[/] {manifest['model']}@{manifest['version']} → {out} ({fmt_bytes(size)}). "
        f"On the other machine: kennel import {out.name}"
    )
