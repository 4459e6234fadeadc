"""The store: blobs on disk, models, immutable versions, movable tags and an audit log in SQLite.

Every change is one transaction that also writes its audit row, so the log and the state never
disagree, and a process killed mid-change leaves the previous state intact.
"""

from __future__ import annotations

import getpass
import json
import os
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kennel.errors import InUseError, InvalidNameError, NotInStoreError, StoreError
from kennel.settings import KennelHome
from kennel.store import db
from kennel.store.blobs import BlobStore
from kennel.store.names import DEFAULT_TAG, Ref, check_name, parse_ref
from kennel.store.profile import Profile, diff_profiles


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def os_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


@dataclass(frozen=True)
class BlobInfo:
    digest: str
    size: int
    kind: str
    file_name: str
    source: str
    added_at: str


@dataclass(frozen=True)
class VersionInfo:
    model: str
    version: int
    profile: Profile
    created_at: str
    actor: str
    message: str
    removed: bool
    tags: tuple[str, ...]


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: str
    actor: str
    action: str
    model: str | None
    tag: str | None
    version_before: int | None
    version_after: int | None
    detail: str
    message: str


class Store:
    """The model store under KENNEL_HOME/store. Open with ``Store.open(home)``; close when done."""

    def __init__(self, root: Path, conn: sqlite3.Connection) -> None:
        self.root = root
        self.conn = conn
        self.blobs = BlobStore(root)

    @classmethod
    def open(cls, home: KennelHome) -> Store:
        root = home.root / "store"
        return cls(root, db.connect(root / "kennel.db"))

    @staticmethod
    def exists(home: KennelHome) -> bool:
        """Whether ``home`` has a store yet (``open`` would create one: a lookup must not)."""
        return (home.root / "store" / "kennel.db").is_file()

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- blobs ----------------------------------------------------------------------------
    def register_blob(self, digest: str, *, kind: str, file_name: str, source: str) -> BlobInfo:
        """Record a blob already placed by BlobStore.admit (idempotent)."""
        size = self.blobs.path(digest).stat().st_size
        with db.transaction(self.conn):
            self.conn.execute(
                "INSERT OR IGNORE INTO blobs VALUES (?, ?, ?, ?, ?, ?)",
                (digest, size, kind, file_name, source, now()),
            )
        return self.blob(digest)

    def blob(self, digest: str) -> BlobInfo:
        row = self.conn.execute("SELECT * FROM blobs WHERE digest = ?", (digest,)).fetchone()
        if row is None:
            raise NotInStoreError(
                f"No blob sha256:{digest[:12]}… in the store.", hint="`kennel ls` lists what the store holds."
            )
        return BlobInfo(**dict(row))

    def find_blob(self, prefix: str) -> BlobInfo:
        rows = self.conn.execute(
            "SELECT * FROM blobs WHERE digest LIKE ?", (prefix.lower() + "%",)
        ).fetchall()
        if len(rows) != 1 or len(prefix) < 8:
            raise NotInStoreError(
                f"sha256:{prefix} matches {len(rows)} blobs in the store.",
                hint="Give at least 8 hex digits that match exactly one blob.",
            )
        return BlobInfo(**dict(rows[0]))

    # ---- models, versions, tags -----------------------------------------------------------
    def models(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM models ORDER BY name")]

    def catalog_name(self, name: str) -> str | None:
        row = self.conn.execute("SELECT catalog_name FROM models WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def live_models(self) -> list[str]:
        """Models with at least one version not removed: the ones a user can still use."""
        rows = self.conn.execute(
            "SELECT DISTINCT model FROM versions WHERE removed_at IS NULL ORDER BY model"
        )
        return [r[0] for r in rows]

    def _require_model(self, name: str) -> None:
        if self.conn.execute("SELECT 1 FROM models WHERE name = ?", (name,)).fetchone() is None:
            known = self.live_models()
            hint = (
                f"Models in the store: {', '.join(known[:10])}."
                if known
                else "The store is empty: `kennel pull NAME` or `kennel import FILE.gguf`."
            )
            raise NotInStoreError(f"No model {name!r} in the store.", hint=hint)

    def tags(self, name: str) -> dict[str, int]:
        rows = self.conn.execute("SELECT tag, version FROM tags WHERE model = ? ORDER BY tag", (name,))
        return {r[0]: r[1] for r in rows}

    def versions(self, name: str, *, include_removed: bool = False) -> list[VersionInfo]:
        self._require_model(name)
        tags = self.tags(name)
        rows = self.conn.execute(
            "SELECT * FROM versions WHERE model = ? ORDER BY version", (name,)
        ).fetchall()
        out = [self._version(r, tags) for r in rows]
        return out if include_removed else [v for v in out if not v.removed]

    def _version(self, row: sqlite3.Row, tags: dict[str, int]) -> VersionInfo:
        return VersionInfo(
            model=row["model"],
            version=row["version"],
            profile=Profile.from_yaml(row["profile"]),
            created_at=row["created_at"],
            actor=row["actor"],
            message=row["message"],
            removed=row["removed_at"] is not None,
            tags=tuple(t for t, v in tags.items() if v == row["version"]),
        )

    def version(self, name: str, version: int) -> VersionInfo:
        self._require_model(name)
        row = self.conn.execute(
            "SELECT * FROM versions WHERE model = ? AND version = ?", (name, version)
        ).fetchone()
        if row is None:
            raise NotInStoreError(f"{name} has no version {version}.", hint=f"See `kennel history {name}`.")
        return self._version(row, self.tags(name))

    def resolve(self, ref: Ref) -> VersionInfo:
        """The live version a reference points at (a bare name means its `latest` tag)."""
        self._require_model(ref.name)
        if ref.version is not None:
            v = self.version(ref.name, ref.version)
        else:
            tag = ref.tag or DEFAULT_TAG
            tags = self.tags(ref.name)
            if tag not in tags:
                raise NotInStoreError(
                    f"{ref.name} has no tag {tag!r}.",
                    hint=f"Tags: {', '.join(tags) or 'none'}; or give NAME@VERSION.",
                )
            v = self.version(ref.name, tags[tag])
        if v.removed:
            raise NotInStoreError(
                f"{ref.name}@{v.version} was removed.", hint=f"See `kennel history {ref.name}`."
            )
        return v

    def add_version(
        self,
        name: str,
        profile: Profile,
        *,
        action: str,
        actor: str | None = None,
        message: str = "",
        tags: Iterable[str] = (DEFAULT_TAG,),
        catalog_name: str | None = None,
        lineage: Mapping[str, Any] | None = None,
    ) -> VersionInfo:
        """A new immutable version of ``name`` (created if new); ``tags`` move to it. ``lineage``
        (what a fine-tuned version was made from, JSON-able) is kept with it, in the same transaction."""
        name = check_name(name)
        tags = [check_name(t, what="tag") for t in tags]
        who = actor or os_actor()
        for digest, _, _ in profile.blobs():
            self.blob(digest)  # every blob must be admitted before a version may use it
        text = profile.to_yaml()
        with db.transaction(self.conn):
            same = self.conn.execute(
                "SELECT version FROM versions WHERE model = ? AND profile = ? AND removed_at IS NULL",
                (name, text),
            ).fetchone()
            # pulling or importing the same file again: reuse, move the tags (a trained version is
            # always new: its lineage is its own)
            if same is not None and lineage is None:
                for tag in tags:
                    if self.tags(name).get(tag) != same[0]:
                        self._move_tag(name, tag, same[0], who, "tag", message)
                return self.version(name, same[0])
            self.conn.execute("INSERT OR IGNORE INTO models VALUES (?, ?, ?)", (name, now(), catalog_name))
            row = self.conn.execute("SELECT MAX(version) FROM versions WHERE model = ?", (name,)).fetchone()
            number = (row[0] or 0) + 1
            previous = self._latest_profile(name)
            self.conn.execute(
                "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (name, number, profile.to_yaml(), now(), who, message),
            )
            for digest, role, pos in profile.blobs():
                self.conn.execute(
                    "INSERT INTO version_blobs VALUES (?, ?, ?, ?, ?)", (name, number, digest, role, pos)
                )
            if lineage is not None:
                self.conn.execute(
                    "INSERT INTO lineage VALUES (?, ?, ?)",
                    (name, number, json.dumps(lineage, sort_keys=True, default=str)),
                )
            detail = diff_profiles(
                previous,
                profile,
                label_a=f"{name}@{number - 1}" if previous else "/dev/null",
                label_b=f"{name}@{number}",
            )
            self._audit(who, action, name, None, None, number, detail, message)
            for tag in tags:
                self._move_tag(name, tag, number, who, "tag", message)
        return self.version(name, number)

    def lineage(self, name: str, version: int) -> dict[str, Any] | None:
        """What a fine-tuned version was made from (None for a version that was not trained)."""
        row = self.conn.execute(
            "SELECT doc FROM lineage WHERE model = ? AND version = ?", (name, version)
        ).fetchone()
        if row is None:
            return None
        doc: dict[str, Any] = json.loads(row[0])
        return doc

    def _latest_profile(self, name: str) -> Profile | None:
        row = self.conn.execute(
            "SELECT profile FROM versions WHERE model = ? AND removed_at IS NULL "
            "ORDER BY version DESC LIMIT 1",
            (name,),
        ).fetchone()
        return None if row is None else Profile.from_yaml(row[0])

    def _move_tag(
        self, name: str, tag: str, version: int, actor: str, action: str, message: str
    ) -> int | None:
        before = self.tags(name).get(tag)
        self.conn.execute(
            "INSERT INTO tags VALUES (?, ?, ?, ?) "
            "ON CONFLICT(model, tag) DO UPDATE SET version = ?, updated_at = ?",
            (name, tag, version, now(), version, now()),
        )
        self._audit(actor, action, name, tag, before, version, "", message)
        return before

    def set_tag(
        self, ref: Ref, tag: str, *, actor: str | None = None, message: str = ""
    ) -> tuple[int | None, int]:
        """Point ``tag`` at the version ``ref`` names; returns (version before, version after)."""
        tag = check_name(tag, what="tag")
        target = self.resolve(ref)
        with db.transaction(self.conn):
            before = self._move_tag(ref.name, tag, target.version, actor or os_actor(), "tag", message)
        return before, target.version

    def remove_tag(self, name: str, tag: str, *, actor: str | None = None, message: str = "") -> int:
        tags = self.tags(name)
        if tag not in tags:
            raise NotInStoreError(f"{name} has no tag {tag!r}.", hint=f"Tags: {', '.join(tags) or 'none'}.")
        with db.transaction(self.conn):
            self.conn.execute("DELETE FROM tags WHERE model = ? AND tag = ?", (name, tag))
            self._audit(actor or os_actor(), "untag", name, tag, tags[tag], None, "", message)
        return tags[tag]

    def rollback(
        self,
        name: str,
        *,
        tag: str = DEFAULT_TAG,
        to: int | None = None,
        actor: str | None = None,
        message: str = "",
    ) -> tuple[int, int]:
        """Move ``tag`` back: to version ``to``, or to the live version before the one it names."""
        self._require_model(name)
        tags = self.tags(name)
        if tag not in tags:
            raise NotInStoreError(
                f"{name} has no tag {tag!r} to roll back.", hint=f"Tags: {', '.join(tags) or 'none'}."
            )
        current = tags[tag]
        live = [v.version for v in self.versions(name)]
        if to is None:
            older = [v for v in live if v < current]
            if not older:
                raise StoreError(
                    f"{name}:{tag} is at version {current}, the oldest there is; nothing to roll back to.",
                    hint=f"See `kennel history {name}`.",
                )
            to = older[-1]
        elif to not in live:
            raise NotInStoreError(
                f"{name} has no live version {to}.", hint=f"Live versions: {', '.join(map(str, live))}."
            )
        with db.transaction(self.conn):
            self._move_tag(name, tag, to, actor or os_actor(), "rollback", message)
        return current, to

    def history(self, name: str) -> list[AuditEntry]:
        self._require_model(name)
        rows = self.conn.execute("SELECT * FROM audit WHERE model = ? ORDER BY id", (name,)).fetchall()
        return [AuditEntry(**dict(r)) for r in rows]

    def audit_all(self, limit: int = 1000) -> list[AuditEntry]:
        rows = self.conn.execute("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [AuditEntry(**dict(r)) for r in reversed(rows)]

    def diff(self, name: str, a: int, b: int) -> str:
        va, vb = self.version(name, a), self.version(name, b)
        return diff_profiles(va.profile, vb.profile, label_a=f"{name}@{a}", label_b=f"{name}@{b}")

    def _audit(
        self,
        actor: str,
        action: str,
        model: str | None,
        tag: str | None,
        before: int | None,
        after: int | None,
        detail: str,
        message: str,
    ) -> None:
        self.conn.execute(
            "INSERT INTO audit "
            "(at, actor, action, model, tag, version_before, version_after, detail, message) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (now(), actor, action, model, tag, before, after, detail, message),
        )

    # ---- what uses what -------------------------------------------------------------------
    def referenced_digests(self) -> set[str]:
        """Blobs a live version uses (every tag points at a live version)."""
        rows = self.conn.execute(
            "SELECT DISTINCT vb.digest FROM version_blobs vb JOIN versions v "
            "ON v.model = vb.model AND v.version = vb.version WHERE v.removed_at IS NULL"
        )
        return {r[0] for r in rows}

    def blobs_of(self, name: str, versions: Iterable[int]) -> set[str]:
        out: set[str] = set()
        for v in versions:
            out |= {d for d, _, _ in self.version(name, v).profile.blobs()}
        return out

    def mark_removed(
        self,
        name: str,
        versions: list[int],
        *,
        drop_tags: list[str],
        actor: str | None,
        message: str,
        detail: str,
    ) -> None:
        who = actor or os_actor()
        with db.transaction(self.conn):
            for tag in drop_tags:
                before = self.tags(name).get(tag)
                self.conn.execute("DELETE FROM tags WHERE model = ? AND tag = ?", (name, tag))
                self._audit(who, "untag", name, tag, before, None, "", message)
            for v in versions:
                self.conn.execute(
                    "UPDATE versions SET removed_at = ? WHERE model = ? AND version = ?", (now(), name, v)
                )
                self._audit(who, "rm", name, None, v, None, detail, message)

    def forget_blobs(self, digests: Iterable[str]) -> None:
        """Drop blob rows no live version uses (the files are removed by the caller after)."""
        live = self.referenced_digests()
        with db.transaction(self.conn):
            for d in digests:
                if d in live:
                    raise InUseError(f"Blob {d[:12]}… is still used by a version.")
                self.conn.execute("DELETE FROM version_blobs WHERE digest = ?", (d,))
                self.conn.execute("DELETE FROM blobs WHERE digest = ?", (d,))

    def audit_event(
        self, action: str, *, detail: str, actor: str | None = None, model: str | None = None
    ) -> None:
        with db.transaction(self.conn):
            self._audit(actor or os_actor(), action, model, None, None, None, detail, "")


def live_ref(home: KennelHome, text: str) -> Ref | None:
    """``text`` as a reference to a model the store holds, or None: no store yet, not a store name
    (a path, a URL, a hub repo), or no live model by that name. Its tag or version is not checked."""
    if not Store.exists(home):
        return None
    try:
        ref = parse_ref(text)
    except InvalidNameError:
        return None
    with Store.open(home) as store:
        return ref if ref.name in store.live_models() else None
