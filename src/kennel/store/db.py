"""The store's SQLite database: named, append-only migrations and short immediate transactions.

A migration, once released, is never edited: a change to the schema is a new entry at the end of
MIGRATIONS. Each runs in its own transaction together with the row that records it, so a crash
leaves the database either before or after it. Every write elsewhere goes through
``transaction()`` (BEGIN IMMEDIATE), so a killed process leaves no half-done change: SQLite rolls
back the journal on next open.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kennel.errors import StoreError, home_not_writable

# (name, SQL) pairs; another database (keys.db) passes its own tuple to connect()/migrate()
Migrations = tuple[tuple[str, str], ...]

MIGRATIONS: Migrations = (
    (
        "001_blobs",
        """
        CREATE TABLE blobs (
            digest TEXT PRIMARY KEY,           -- sha256 hex of the bytes
            size INTEGER NOT NULL,
            kind TEXT NOT NULL,                -- gguf | adapter
            file_name TEXT NOT NULL,           -- name it had where it came from
            source TEXT NOT NULL,              -- hf.co/OWNER/REPO@COMMIT, a path, or a bundle
            added_at TEXT NOT NULL
        );
        """,
    ),
    (
        "002_models_versions_tags",
        """
        CREATE TABLE models (
            name TEXT PRIMARY KEY,
            created_at TEXT NOT NULL,
            catalog_name TEXT                  -- the catalog entry it came from, if any
        );
        CREATE TABLE versions (
            model TEXT NOT NULL REFERENCES models(name),
            version INTEGER NOT NULL,
            profile TEXT NOT NULL,             -- canonical YAML of the profile
            created_at TEXT NOT NULL,
            actor TEXT NOT NULL,
            message TEXT NOT NULL DEFAULT '',
            removed_at TEXT,                   -- versions are never edited, removal is marked
            PRIMARY KEY (model, version)
        );
        CREATE TABLE version_blobs (
            model TEXT NOT NULL,
            version INTEGER NOT NULL,
            digest TEXT NOT NULL REFERENCES blobs(digest),
            role TEXT NOT NULL,                -- base | adapter
            position INTEGER NOT NULL,         -- shard order of a split GGUF
            PRIMARY KEY (model, version, role, position),
            FOREIGN KEY (model, version) REFERENCES versions(model, version)
        );
        CREATE TABLE tags (
            model TEXT NOT NULL REFERENCES models(name),
            tag TEXT NOT NULL,
            version INTEGER NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (model, tag),
            FOREIGN KEY (model, version) REFERENCES versions(model, version)
        );
        """,
    ),
    (
        "003_audit",
        """
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,               -- OS user, or the API key's name
            action TEXT NOT NULL,              -- pull | import | create | tag | untag | rollback | rm | gc
            model TEXT,
            tag TEXT,
            version_before INTEGER,
            version_after INTEGER,
            detail TEXT NOT NULL DEFAULT '',   -- what changed (a diff, a digest, freed bytes)
            message TEXT NOT NULL DEFAULT ''   -- why: the user's -m
        );
        CREATE INDEX audit_model ON audit(model, id);
        """,
    ),
    (
        "004_lineage",
        """
        CREATE TABLE lineage (
            model TEXT NOT NULL,
            version INTEGER NOT NULL,
            doc TEXT NOT NULL,                 -- JSON: what a fine-tuned version was made from and how
            PRIMARY KEY (model, version),
            FOREIGN KEY (model, version) REFERENCES versions(model, version)
        );
        """,
    ),
)


# what SQLite says when the folder or disk, not the database, is the problem
_NOT_WRITABLE = re.compile(r"readonly|read-only|unable to open|disk is full|disk I/O|permission", re.I)


def connect(path: Path, migrations: Migrations | None = None) -> sqlite3.Connection:
    """Open (creating and migrating) the store database, or another one with its own migrations
    (None: the store's MIGRATIONS)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise home_not_writable(path.parent, exc.strerror or exc) from exc
    conn: sqlite3.Connection | None = None
    try:
        conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        migrate(conn, migrations)
    except (sqlite3.DatabaseError, StoreError) as exc:
        if conn is not None:
            conn.close()
        if isinstance(exc, StoreError):
            raise
        if isinstance(exc, sqlite3.OperationalError) and _NOT_WRITABLE.search(str(exc)):
            raise home_not_writable(path, exc) from exc
        raise StoreError(
            f"The store database {path} cannot be opened: {exc}.",
            hint=(
                "If the disk is full, free space; "
                "if the file is damaged, move it aside and re-import your models."
            ),
        ) from exc
    return conn


def migrate(conn: sqlite3.Connection, migrations: Migrations | None = None) -> list[str]:
    """Apply the migrations this database has not seen, in order; return their names."""
    # looked up at call time, not bound as a default, so MIGRATIONS stays the one source (and patchable)
    migrations = MIGRATIONS if migrations is None else migrations
    conn.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    done = {r[0] for r in conn.execute("SELECT name FROM migrations")}
    unknown = done - {name for name, _ in migrations}
    if unknown:
        raise StoreError(
            f"The store was written by a newer kennel (migrations {', '.join(sorted(unknown))}).",
            hint="Upgrade kennel, or point KENNEL_HOME at another folder.",
        )
    applied = []
    for name, sql in migrations:
        if name in done:
            continue
        with transaction(conn):
            for statement in filter(str.strip, sql.split(";")):  # comments in MIGRATIONS never hold ';'
                conn.execute(statement)
            conn.execute("INSERT INTO migrations VALUES (?, datetime('now'))", (name,))
        applied.append(name)
    return applied


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
