"""`kennel backup` and `kennel restore`: KENNEL_HOME (databases, keys, checkups, and with --models
the model files) as one verified file, and back."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from kennel.backup.archive import Progress as ProgressFn
from kennel.backup.archive import Summary, backup, restore
from kennel.cli.output import console, err_console, print_json
from kennel.settings import KennelHome
from kennel.units import fmt_bytes


def _bar(enabled: bool) -> tuple[Progress | None, ProgressFn | None]:
    if not enabled:
        return None, None
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err_console(),
        transient=True,
    )
    task = bar.add_task("Copying", total=None)

    def update(stage: str, done: int, total: int) -> None:
        bar.update(
            task, description="Model files" if stage == "blobs" else "Restoring", completed=done, total=total
        )

    return bar, update


def _report(kind: str, s: Summary, *, json_out: bool, verb: str) -> None:
    doc = {
        "file": str(s.file),
        "bytes": s.size,
        "databases": s.count("database"),
        "files": s.count("file"),
        "blobs": s.count("blob"),
        "entries": [e.__dict__ for e in s.entries],
    }
    if json_out:
        print_json(kind, doc)
        return
    console().print(
        f"{verb} {s.count('database')} databases, {s.count('file')} files and {s.count('blob')} model files "
        f"({fmt_bytes(s.size)}), each checked by sha256."
    )


def backup_cmd(
    out: Path = typer.Option(..., "-o", "--output", help="The backup file to write (one tar file)."),
    models: bool = typer.Option(
        False, "--models", help="Also the model files (large); else only their records."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Back up KENNEL_HOME into one file: the store's versions, tags and audit log, API keys (hashes),
    checkup results and alert state, calibration; consistent even while a server runs."""
    bar, update = _bar(models and not json_out)
    home = KennelHome.from_env()
    if bar is None:
        summary = backup(home, out, models=models)
    else:
        with bar:
            summary = backup(home, out, models=models, progress=update)
    _report("backup", summary, json_out=json_out, verb=f"Backed up {home.root} to {summary.file}:")


def restore_cmd(
    file: Path = typer.Argument(..., help="A file made by `kennel backup`."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Restore a backup into an empty KENNEL_HOME (set KENNEL_HOME to a new folder first). Every
    entry is checked before anything becomes the home."""
    bar, update = _bar(not json_out)
    home = KennelHome.from_env()
    if bar is None:
        summary = restore(home, file)
    else:
        with bar:
            summary = restore(home, file, progress=update)
    _report("restore", summary, json_out=json_out, verb=f"Restored into {home.root}:")
