"""Checkup history: one row per prompt in a CSV for spreadsheets and in SQLite for queries.

Both are written by ``record()``, which the CLI calls after every prompt, so a run killed midway
keeps what it measured. The CSV is append-only: the header is written once, when the file is
empty; every write is flushed and fsynced, under an exclusive lock so two checkups at once
never interleave. A file whose header is not kennel's is refused rather than mixed into.

KENNEL_HOME/checkups/results.csv    (``--csv PATH`` elsewhere)
KENNEL_HOME/checkups.db             runs and results, with its own named migrations
"""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from kennel.checkup.runner import PromptResult, RunInfo
from kennel.errors import InvalidOptionError, KennelError
from kennel.settings import KennelHome
from kennel.store import db

CSV_COLUMNS: tuple[str, ...] = (
    "ts",
    "run_id",
    "target",
    "model",
    "model_version",
    "prompt_id",
    "ttft_ms",
    "latency_ms",
    "output_tokens",
    "tokens_per_s",
    "passed",
    "failed_assertions",
    "error",
)

MIGRATIONS: db.Migrations = (
    (
        "001_runs",
        """
        CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            started_at TEXT NOT NULL,
            suite TEXT NOT NULL,
            target TEXT NOT NULL,             -- the endpoint's base URL
            model TEXT NOT NULL,
            model_version TEXT NOT NULL       -- <sha256 of the base GGUF, 12 hex>@<version>, or ''
        );
        CREATE TABLE results (
            run_id TEXT NOT NULL REFERENCES runs(run_id),
            prompt_id TEXT NOT NULL,
            ts TEXT NOT NULL,                 -- when the prompt was sent
            ttft_ms REAL,
            latency_ms REAL,
            output_tokens INTEGER,
            tokens_per_s REAL,
            passed INTEGER NOT NULL,          -- 0 or 1
            score REAL NOT NULL,              -- weighted share of assertions that passed
            failed_assertions TEXT NOT NULL,  -- JSON list of descriptions
            error TEXT NOT NULL DEFAULT '',
            answer TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (run_id, prompt_id)
        );
        CREATE INDEX results_prompt ON results(prompt_id, ts);
        """,
    ),
)


def default_csv(home: KennelHome) -> Path:
    return home.root / "checkups" / "results.csv"


def db_path(home: KennelHome) -> Path:
    return home.root / "checkups.db"


def connect(path: Path) -> sqlite3.Connection:
    """The checkups database, created and migrated as needed."""
    return db.connect(path, MIGRATIONS)


def _num(x: float | None, digits: int) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def csv_row(info: RunInfo, result: PromptResult) -> dict[str, str]:
    r = result.response
    return {
        "ts": result.ts,
        "run_id": info.run_id,
        "target": info.target,
        "model": info.model,
        "model_version": info.model_version,
        "prompt_id": result.prompt_id,
        "ttft_ms": _num(r.ttft_ms, 1),
        "latency_ms": _num(r.latency_ms, 1),
        "output_tokens": "" if r.output_tokens is None else str(r.output_tokens),
        "tokens_per_s": _num(r.tokens_per_s, 2),
        "passed": "true" if result.passed else "false",
        "failed_assertions": _one_line("; ".join(result.failed_assertions)),
        "error": _one_line(r.error),
    }


@contextmanager
def _locked(f: IO[str]) -> Iterator[None]:
    if sys.platform == "win32":  # appends of one small write are atomic enough there
        yield
        return
    import fcntl

    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def append_csv(path: Path, rows: Sequence[dict[str, str]]) -> None:
    """Append ``rows`` (the header first if the file is new or empty), flushed and fsynced.
    With no rows: create the file with its header, or check the header of an existing one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        with path.open("a", newline="", encoding="utf-8") as f, _locked(f):
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
            if os.fstat(f.fileno()).st_size == 0:
                writer.writeheader()
            else:
                _check_header(path)
            writer.writerows(rows)
            f.write(buf.getvalue())  # one write: a reader never sees half a row from this call
            f.flush()
            os.fsync(f.fileno())
        if new:
            _fsync_dir(path.parent)
    except OSError as exc:
        raise KennelError(
            f"Cannot write the checkup results to {path}: {exc}.",
            hint="Free disk space or fix the permissions, or give another file with --csv.",
        ) from exc


def _check_header(path: Path) -> None:
    with path.open(newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), [])
    if tuple(header) != CSV_COLUMNS:
        raise InvalidOptionError(
            f"{path} is not a kennel checkup results file "
            f"(its columns are {', '.join(header[:6]) or 'none'}…).",
            hint="Give a new file with --csv, or move this one aside.",
        )


def _fsync_dir(folder: Path) -> None:
    if sys.platform == "win32":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def record(info: RunInfo, results: Sequence[PromptResult], *, csv_path: Path, db_file: Path) -> None:
    """Append ``results`` of run ``info``: rows to the CSV, then the run (once) and rows to SQLite."""
    append_csv(csv_path, [csv_row(info, r) for r in results])
    conn = connect(db_file)
    try:
        with db.transaction(conn):
            conn.execute(
                "INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?, ?, ?)",
                (info.run_id, info.started_at, info.suite, info.target, info.model, info.model_version),
            )
            for r in results:
                resp = r.response
                conn.execute(
                    "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        info.run_id,
                        r.prompt_id,
                        r.ts,
                        resp.ttft_ms,
                        resp.latency_ms,
                        resp.output_tokens,
                        resp.tokens_per_s,
                        int(r.passed),
                        r.score.ratio,
                        json.dumps(list(r.failed_assertions)),
                        resp.error or "",
                        resp.text,
                    ),
                )
    finally:
        conn.close()
