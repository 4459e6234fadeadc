"""API keys from a read-only keys file, so several `kennel serve` replicas (pods, compose services)
agree on keys without sharing a SQLite file.

`kennel keys export -o PATH` writes the hashes of the active keys of keys.db (never a secret) as
one JSON document; `kennel serve --keys-file PATH` verifies requests against it exactly as it would
against keys.db, and never writes it. The file is re-read when it changes: its (inode, device,
mtime, size) is compared about once a second by one background task, following symlinks, because
Kubernetes updates a mounted Secret by swapping a ``..data`` symlink and leaves the link's own
mtime alone. SIGHUP re-reads it at once. A file that turns unreadable or invalid keeps the keys
read before, with one error in the log per bad version of the file.

    {"kennel_keys": 1, "exported_at": "...",
     "keys": [{"name", "prefix", "sha256", "models", "rpm", "expires_at", "guard", "role",
               "created_at", "created_by"}]}

A key without "role" (a file exported before keys had roles) is an admin, as keys.db's migration
makes the keys of that time: those keys could do everything.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import os
import signal
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from kennel.errors import InvalidNameError, InvalidOptionError, KennelError, validation_text
from kennel.server.keys import ApiKey, KeySource, KeyStore, check_usable, match_secret, normalize_models
from kennel.settings import KennelHome
from kennel.store.names import check_name

FORMAT = 1  # "kennel_keys": bumped only for a change an older kennel must refuse
POLL_SECONDS = 1.0
MAX_BYTES = 16 << 20  # far above any real key list; a wrong path to a huge file fails fast

log = logging.getLogger("kennel.keys")

Signature = tuple[int, int, int, int]  # st_ino, st_dev, st_mtime_ns, st_size of the file itself


@dataclass(frozen=True)
class HashedKey:
    """A key as the keys file holds it: the key and the hex sha256 of its secret."""

    key: ApiKey
    sha256: str


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds")


def export_document(keys: Sequence[HashedKey], *, now: datetime) -> dict[str, Any]:
    return {
        "kennel_keys": FORMAT,
        "exported_at": _iso(now),
        "keys": [
            {
                "name": h.key.name,
                "prefix": h.key.prefix,
                "sha256": h.sha256,
                "models": list(h.key.models),
                "rpm": h.key.rpm,
                "expires_at": None if h.key.expires_at is None else _iso(h.key.expires_at),
                "guard": h.key.guard,
                "role": h.key.role,
                "created_at": _iso(h.key.created_at),
                "created_by": h.key.created_by,
            }
            for h in keys
        ],
    }


def write_keys_file(path: Path, doc: dict[str, Any]) -> None:
    """Write aside in the same folder, then rename over ``path``: a server re-reading the file
    sees the old version or the new one, never half of one. Owner-only, like keys.db."""
    text = json.dumps(doc, indent=2) + "\n"
    hint = "Choose a file in a folder you can write, e.g. -o ./kennel-keys.json."
    folder = path.parent
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    except OSError as exc:
        raise InvalidOptionError(
            f"Cannot write the keys file {path}: {exc.strerror or exc}.", hint=hint
        ) from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise InvalidOptionError(
            f"Cannot write the keys file {path}: {exc.strerror or exc}.", hint=hint
        ) from exc


class _Entry(BaseModel):
    # extra="forbid": a misspelt "expires" would otherwise give a key that never expires
    model_config = ConfigDict(extra="forbid")

    name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    prefix: str = ""
    models: list[str] = Field(default_factory=list)
    rpm: int | None = Field(default=None, ge=1)
    expires_at: AwareDatetime | None = None
    guard: Literal["off", "log", "flag", "block"] | None = None
    role: Literal["admin", "user"] = "admin"  # absent: exported before roles, when every key could do all
    created_at: AwareDatetime | None = None
    created_by: str = ""


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kennel_keys: Literal[1]
    exported_at: AwareDatetime | None = None
    keys: list[_Entry]


def _invalid(path: Path, problem: str) -> InvalidOptionError:
    return InvalidOptionError(
        f"The keys file {path} is not valid: {problem}.",
        hint=f"Write it with `kennel keys export -o {path}` where keys.db is, rather than by hand.",
    )


def parse_keys_file(text: str, path: Path) -> tuple[HashedKey, ...]:
    """The keys a keys file holds, else InvalidOptionError naming the file and what is wrong."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise _invalid(path, f"not JSON ({exc})") from None
    if isinstance(raw, dict) and isinstance(raw.get("kennel_keys"), int) and raw["kennel_keys"] > FORMAT:
        raise InvalidOptionError(
            f"The keys file {path} was written by a newer kennel (format {raw['kennel_keys']}).",
            hint="Upgrade kennel here, or export the file with this kennel's version.",
        )
    try:
        doc = _Document.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(validation_text(e) for e in exc.errors())
        raise _invalid(path, problems) from None
    out: dict[str, HashedKey] = {}
    digests: set[str] = set()
    fallback = doc.exported_at or datetime.fromtimestamp(0, UTC)
    for i, e in enumerate(doc.keys):
        try:
            name = check_name(e.name, what="key name")
            models = normalize_models(e.models)
        except InvalidNameError as exc:
            raise _invalid(path, f"keys.{i}: {exc.message}") from None
        if name in out or e.sha256 in digests:
            raise _invalid(path, f"keys.{i}: a second key named {name!r} or with the same sha256")
        digests.add(e.sha256)
        key = ApiKey(
            name=name,
            prefix=e.prefix,
            models=models,
            rpm=e.rpm,
            expires_at=None if e.expires_at is None else e.expires_at.astimezone(UTC),
            created_at=(e.created_at or fallback).astimezone(UTC),
            created_by=e.created_by,
            revoked_at=None,  # a revoked key is left out of the file, which refuses it the same way
            guard=e.guard,
            role=e.role,
        )
        out[name] = HashedKey(key, e.sha256)
    return tuple(out.values())


def _signature(st: os.stat_result) -> Signature:
    return (st.st_ino, st.st_dev, st.st_mtime_ns, st.st_size)


def read_keys_file(path: Path) -> tuple[tuple[HashedKey, ...], Signature]:
    """The file's keys and the signature of the very file they were read from (fstat of the open
    file, so a swap between a stat and the read cannot pair new keys with an old signature)."""
    try:
        with open(path, "rb") as f:  # follows symlinks, as Kubernetes' ..data links need
            signature = _signature(os.fstat(f.fileno()))
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise InvalidOptionError(
            f"Cannot read the keys file {path}: {exc.strerror or exc}.",
            hint=f"Check the path and its permissions, or write one with `kennel keys export -o {path}`.",
        ) from exc
    if len(data) > MAX_BYTES:
        raise _invalid(path, f"larger than {MAX_BYTES >> 20} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid(path, "not UTF-8 text") from None
    return parse_keys_file(text, path), signature


def _probe(path: Path) -> Signature | str:
    """The file's signature now, or why it cannot be had (itself a state: a missing file is
    reported once, not once a second)."""
    try:
        return _signature(os.stat(path))
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"


class FileKeyStore:
    """API keys read from a keys file; never writes it. ``verify`` and ``list`` read memory only:
    the file is re-read by ``watch`` (a task on the serving loop), never by a request.

    Build with ``FileKeyStore.load(path)``, which fails with the file's name and what to do when
    it cannot be read or is not a keys file: at start a bad file is an error, later it is logged
    and the keys read before stay in force.
    """

    def __init__(
        self, path: Path, keys: tuple[HashedKey, ...], signature: Signature, *, poll: float = POLL_SECONDS
    ) -> None:
        self.path = path
        self.poll = poll  # seconds between checks; 0: only on SIGHUP
        self._keys = keys
        self._seen: Signature | str = signature  # the file's last state acted on, good or bad
        self._wake = asyncio.Event()

    @classmethod
    def load(cls, path: Path, *, poll: float = POLL_SECONDS) -> FileKeyStore:
        keys, signature = read_keys_file(path)
        return cls(path, keys, signature, poll=poll)

    def verify(self, secret: str | None, *, now: datetime | None = None) -> ApiKey:
        """Like KeyStore.verify: one AuthError for a missing, unknown, revoked (absent) or expired key."""
        hashed = self._keys  # one snapshot: a reload mid-call cannot mix two versions
        key = match_secret(secret, [(h.sha256, h.key) for h in hashed])
        return check_usable(key, now)

    def list(self, include_revoked: bool = False) -> builtins.list[ApiKey]:
        return [h.key for h in self._keys]  # the file holds no revoked keys

    def close(self) -> None:
        pass  # nothing held open between reads

    def reload_soon(self) -> None:
        """Ask ``watch`` to re-read the file now, changed or not (the SIGHUP handler)."""
        self._wake.set()

    async def check(self, *, force: bool = False) -> bool:
        """Re-read the file if it changed since it was last read, or when ``force``; True when new
        keys were taken. A bad file keeps the keys held and is logged once per state of the file
        (every time when forced: the operator asked)."""
        state = await asyncio.to_thread(_probe, self.path)  # a stat can block on a network volume
        if state == self._seen and not force:
            return False
        self._seen = state
        try:
            keys, signature = await asyncio.to_thread(read_keys_file, self.path)
        except KennelError as exc:
            log.error("%s Keeping the %d API keys read before.", exc, len(self._keys))
            return False
        self._keys, self._seen = keys, signature
        log.info("API keys reloaded from %s: %d key%s.", self.path, len(keys), "" if len(keys) == 1 else "s")
        return True

    async def watch(self) -> None:
        """Check the file every ``poll`` seconds and whenever ``reload_soon`` is called, until
        cancelled. One task does every read, so two reloads never race."""
        while True:
            forced = await self._sleep()
            try:
                await self.check(force=forced)
            except Exception:  # a bug here must not stop later reloads; the keys held stay in force
                log.exception("Checking the keys file %s failed.", self.path)

    async def _sleep(self) -> bool:
        """True when woken by ``reload_soon``, False after ``poll`` seconds."""
        try:
            await asyncio.wait_for(self._wake.wait(), self.poll if self.poll > 0 else None)
        except TimeoutError:
            return False
        self._wake.clear()
        return True


def install_sighup(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` on SIGHUP, on the running loop; returns what removes the handler.

    Only SIGHUP is taken: uvicorn keeps SIGINT and SIGTERM (Ctrl-C, `kill`). Where a loop cannot
    take signals (Windows, a loop outside the main thread as in tests) this does nothing, and the
    file is still watched.
    """
    hup: int | None = getattr(signal, "SIGHUP", None)
    if hup is None:
        return lambda: None
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(hup, callback)
    except (NotImplementedError, RuntimeError, ValueError):
        return lambda: None

    def remove() -> None:
        loop.remove_signal_handler(hup)

    return remove


def open_key_source(keys_file: Path | None, home: KennelHome, *, poll: float = POLL_SECONDS) -> KeySource:
    """The keys file when one is given (keys.db is then neither read nor created), else keys.db."""
    if keys_file is not None:
        return FileKeyStore.load(keys_file, poll=poll)
    return KeyStore.open(home)
