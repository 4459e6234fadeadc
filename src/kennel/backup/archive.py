"""`kennel backup` and `kennel restore`: KENNEL_HOME as one verified file.

A backup holds every database kennel keeps (the store with its versions, tags and audit log, API
keys as hashes, checkup results and alert state), copied with SQLite's online backup so a server
or a checkup writing at the same moment gets a consistent snapshot, not a torn file; the files
beside them (checkup CSV, speed calibration, the hardware probe); with ``models`` also the model
blobs. A manifest lists each entry with its size and sha256; a restore checks every one before
it writes anything, and only into an empty home.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from kennel import __version__
from kennel.errors import BundleError, InvalidOptionError, home_not_writable
from kennel.settings import KennelHome
from kennel.store.blobs import CHUNK, check_free_space

SCHEMA = "kennel.backup/v1"
DATABASES = ("store/kennel.db", "keys.db", "checkups.db", "alerts.db")
FILES = ("checkups/results.csv", "calibration.json", "hardware.json")
PRIVATE = {"keys.db"}  # owner-only, as kennel creates it
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Entry:
    path: str  # relative to KENNEL_HOME, POSIX
    kind: str  # database | file | blob
    size: int
    sha256: str


@dataclass(frozen=True)
class Summary:
    file: Path
    entries: tuple[Entry, ...]

    @property
    def size(self) -> int:
        return sum(e.size for e in self.entries)

    def count(self, kind: str) -> int:
        return sum(e.kind == kind for e in self.entries)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _snapshot(db: Path, to: Path) -> None:
    """A consistent copy of a live database (WAL or not), through SQLite's online backup API."""
    src = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30.0)
    try:
        dst = sqlite3.connect(to)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def backup(home: KennelHome, out: Path, *, models: bool = False, progress: Progress | None = None) -> Summary:
    out = out.expanduser()
    folder = out.parent if out.parent != Path() else Path.cwd()
    if not folder.is_dir():
        raise InvalidOptionError(
            f"There is no folder {folder} to write {out.name} in.",
            hint=f"Create it first (mkdir -p {folder}).",
        )
    if not home.root.is_dir():
        raise InvalidOptionError(
            f"There is nothing to back up: {home.root} does not exist.",
            hint="Set KENNEL_HOME to the folder kennel uses.",
        )
    blobs = sorted((home.root / "store" / "blobs").glob("sha256-*")) if models else []
    check_free_space(folder, sum(b.stat().st_size for b in blobs), what=str(out))
    entries: list[Entry] = []
    tmp = out.with_name(out.name + ".partial")
    with tempfile.TemporaryDirectory(prefix="kennel-backup-") as scratch, tarfile.open(tmp, "w") as tar:
        for rel in DATABASES:
            if (home.root / rel).is_file():
                copy = Path(scratch) / rel.replace("/", "_")
                _snapshot(home.root / rel, copy)
                entries.append(_add(tar, copy, rel, "database"))
        for rel in FILES:
            if (home.root / rel).is_file():
                entries.append(_add(tar, home.root / rel, rel, "file"))
        total = sum(b.stat().st_size for b in blobs)
        done = 0
        for blob in blobs:
            entries.append(_add(tar, blob, f"store/blobs/{blob.name}", "blob"))
            done += blob.stat().st_size
            if progress:
                progress("blobs", done, total)
        manifest = {
            "schema": SCHEMA,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "kennel": __version__,
            "entries": [e.__dict__ for e in entries],
        }
        raw = json.dumps(manifest, indent=2).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, out)  # a backup file is whole or absent
    return Summary(out, tuple(entries))


def _add(tar: tarfile.TarFile, path: Path, rel: str, kind: str) -> Entry:
    entry = Entry(rel, kind, path.stat().st_size, _sha256(path))
    tar.add(path, arcname=f"home/{rel}", recursive=False)
    return entry


def _manifest(tar: tarfile.TarFile, name: Path) -> list[Entry]:
    try:
        doc = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        if doc.get("schema") != SCHEMA:
            raise BundleError(
                f"{name} is a backup of another format ({doc.get('schema')!r}).",
                hint="Restore it with the kennel version that wrote it.",
            )
        entries = [Entry(**e) for e in doc["entries"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(
            f"{name} is not a kennel backup: {exc}.", hint="Give a file made by `kennel backup`."
        ) from exc
    for e in entries:
        p = PurePosixPath(e.path)
        if p.is_absolute() or ".." in p.parts or e.kind not in ("database", "file", "blob"):
            raise BundleError(f"{name} names an unsafe path: {e.path!r}.", hint="Do not restore it.")
    return entries


def restore(home: KennelHome, file: Path, *, progress: Progress | None = None) -> Summary:
    """Every entry checked against the manifest first, then written into an empty home."""
    file = file.expanduser()
    if home.root.exists() and any(home.root.iterdir()):
        raise InvalidOptionError(
            f"{home.root} is not empty; a restore only fills an empty KENNEL_HOME.",
            hint=(
                "Restore into a new folder (KENNEL_HOME=/path/to/new kennel restore FILE), then switch to it."
            ),
        )
    try:
        tar = tarfile.open(file, "r")  # noqa: SIM115 - closed by the with below
    except (OSError, tarfile.TarError) as exc:
        raise BundleError(f"{file} cannot be read as a kennel backup: {exc}.") from exc
    with tar, _staging(home) as stage:
        entries = _manifest(tar, file)
        total, done = sum(e.size for e in entries), 0
        for e in entries:
            member = tar.getmember(f"home/{e.path}")
            if not member.isfile() or member.size != e.size:
                raise BundleError(
                    f"{file}: {e.path} is not the file the manifest describes.", hint="Do not restore it."
                )
            target = stage / e.path
            target.parent.mkdir(parents=True, exist_ok=True)
            h = hashlib.sha256()
            with tar.extractfile(member) as src, target.open("wb") as dst:  # type: ignore[union-attr]
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    dst.write(chunk)
            if h.hexdigest() != e.sha256:
                raise BundleError(
                    f"{file}: {e.path} does not match its checksum; the backup is damaged.",
                    hint="Nothing was restored. Use another copy of the backup.",
                )
            if e.kind == "blob":
                target.chmod(0o444)
            elif e.path in PRIVATE:
                target.chmod(0o600)
            done += e.size
            if progress:
                progress("restore", done, total)
        for e in entries:
            if e.kind == "database":
                _check_database(stage / e.path, file)
    return Summary(file, tuple(entries))


def _check_database(path: Path, file: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
    if ok != "ok":
        raise BundleError(f"{file}: the database {path.name} fails SQLite's integrity check ({ok}).")


@contextmanager
def _staging(home: KennelHome) -> Iterator[Path]:
    """Restored files go to a folder beside the home and become the home in one rename, so a
    failed restore leaves no half-filled KENNEL_HOME behind."""
    parent = home.root.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{home.root.name}.restore-", dir=parent))
    except OSError as exc:
        raise home_not_writable(parent, exc.strerror or exc) from exc
    try:
        yield stage
    except BaseException:
        _remove_tree(stage)
        raise
    if home.root.exists():
        home.root.rmdir()  # empty, as checked
    os.replace(stage, home.root)


def _remove_tree(root: Path) -> None:
    for p in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if p.is_dir():
            p.rmdir()
        else:
            p.chmod(0o600)
            p.unlink()
    root.rmdir()
