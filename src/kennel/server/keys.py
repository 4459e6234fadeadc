"""API keys for the HTTP server, kept in KENNEL_HOME/keys.db.

A key is 32 random bytes shown once as ``kn-<urlsafe base64>``; the database keeps only its sha256
and a short prefix for people to tell keys apart. A fast hash is enough here: the secret has 256
bits of entropy, so there is nothing to brute-force that a slow password hash would protect.
Rows are never deleted: revoking marks ``revoked_at`` so ``kennel keys ls --all`` keeps the record,
and the name becomes free for a new key.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import json
import re
import secrets
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

from kennel.errors import AuthError, ForbiddenError, InvalidNameError, InvalidOptionError, home_not_writable
from kennel.settings import KennelHome
from kennel.store import db
from kennel.store.names import DEFAULT_TAG, Ref, check_name, parse_ref
from kennel.store.registry import os_actor

SECRET_PREFIX = "kn-"
PREFIX_CHARS = len(SECRET_PREFIX) + 8  # "kn-" and 48 bits of the secret: enough to tell keys apart

MIGRATIONS: db.Migrations = (
    (
        "001_keys",
        """
        CREATE TABLE keys (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            prefix TEXT NOT NULL,              -- the first characters of the secret, for display
            sha256 TEXT NOT NULL UNIQUE,       -- hex digest of the whole secret
            models TEXT NOT NULL DEFAULT '[]', -- JSON list of allowed model refs, empty = all
            rpm INTEGER,                       -- requests per minute, NULL = unlimited
            expires_at TEXT,                   -- ISO UTC, NULL = never
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL,          -- OS user who ran `kennel keys create`
            revoked_at TEXT
        );
        CREATE UNIQUE INDEX keys_live_name ON keys(name) WHERE revoked_at IS NULL;
        """,
    ),
    (
        "002_guard",  # the prompt-injection guard mode of a key; NULL: the model's
        """
        ALTER TABLE keys ADD COLUMN guard TEXT
        """,
    ),
    (
        # admin | user. Keys made before roles could do everything (the store API with
        # store_api: true, every model), so they become admins: nobody is locked out of what they
        # did yesterday. Keys made from now on are users unless `--role admin` says otherwise.
        "003_role",
        """
        ALTER TABLE keys ADD COLUMN role TEXT NOT NULL DEFAULT 'user';
        UPDATE keys SET role = 'admin'
        """,
    ),
)

ROLES = ("admin", "user")
DEFAULT_ROLE = "user"

_INVALID = "Invalid API key."
_INVALID_HINT = (
    "Check the key you send as 'Authorization: Bearer kn-…' (or as x-api-key); "
    "the server's operator can issue one with `kennel keys create`."
)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds")


def _dt(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _ref_allows(entry: Ref, ref: Ref) -> bool:
    """A bare name allows every tag and version of that model; NAME:TAG and NAME@N only themselves
    (a request for a bare NAME means its `latest` tag)."""
    if entry.name != ref.name:
        return False
    if entry.version is not None:
        return ref.version == entry.version
    if entry.tag is not None:
        return ref.version is None and (ref.tag or DEFAULT_TAG) == entry.tag
    return True


@dataclass(frozen=True)
class ApiKey:
    """One key as the server and `kennel keys ls` see it: never the secret, never its hash."""

    name: str
    prefix: str
    models: tuple[str, ...]  # allowed model refs (NAME, NAME:TAG, NAME@N); empty = all
    rpm: int | None  # requests per minute; None = unlimited
    expires_at: datetime | None  # aware UTC; None = never
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    guard: str | None = None  # off | log | flag | block; None: the model's or server's mode
    role: str = DEFAULT_ROLE  # admin: may change things (the console's admin pages, the store API)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and (now or utcnow()) >= self.expires_at

    def state(self, now: datetime | None = None) -> str:
        """revoked | expired | active."""
        if self.revoked:
            return "revoked"
        return "expired" if self.expired(now) else "active"

    def allows(self, model: str) -> bool:
        """Whether this key may use ``model`` (a ref as a request names it)."""
        if not self.models:
            return True
        try:
            ref = parse_ref(model)
        except InvalidNameError:
            return False
        return any(_ref_allows(parse_ref(entry), ref) for entry in self.models)

    def check_model(self, model: str) -> None:
        """ForbiddenError (403) unless this key may use ``model``."""
        if not self.allows(model):
            raise ForbiddenError(
                f"The API key {self.name!r} may not use the model {model!r}.",
                hint=f"This key may use: {', '.join(self.models)}.",
            )

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        return {
            "name": self.name,
            "prefix": self.prefix,
            "models": list(self.models),
            "rpm": self.rpm,
            "expires_at": None if self.expires_at is None else _iso(self.expires_at),
            "created_at": _iso(self.created_at),
            "created_by": self.created_by,
            "revoked_at": None if self.revoked_at is None else _iso(self.revoked_at),
            "guard": self.guard,
            "role": self.role,
            "state": self.state(now),
        }


class KeySource(Protocol):
    """Where a server finds its API keys: keys.db (KeyStore) or a read-only keys file written by
    `kennel keys export` (keyfile.FileKeyStore). auth.py and state.py see only this."""

    def verify(self, secret: str | None, *, now: datetime | None = None) -> ApiKey: ...

    def list(self, include_revoked: bool = False) -> builtins.list[ApiKey]: ...

    def close(self) -> None: ...


T = TypeVar("T")


def match_secret(secret: str | None, hashed: Sequence[tuple[str, T]]) -> T:
    """The item whose hex sha256 is the secret's, else AuthError (401) with one message for every
    failure, so a caller learns nothing about which keys exist.

    The digest is compared with every stored one by hmac.compare_digest and the loop never stops
    early, so the time taken does not depend on whether or where a key matched.
    """
    if not secret:
        raise AuthError(
            "Missing API key.",
            reason="missing",
            hint="Send it as 'Authorization: Bearer kn-…' or as x-api-key "
            "(create one with `kennel keys create NAME`).",
        )
    digest = hash_secret(secret).encode()
    match: tuple[T] | None = None
    for sha256, item in hashed:
        if hmac.compare_digest(digest, sha256.encode()):
            match = (item,)
    if match is None:
        raise AuthError(_INVALID, hint=_INVALID_HINT, reason="invalid")
    return match[0]


def check_usable(key: ApiKey, now: datetime | None = None) -> ApiKey:
    """The key itself unless it is revoked or expired (then the same AuthError as a wrong key)."""
    if key.revoked:
        raise AuthError(_INVALID, hint=_INVALID_HINT, reason="revoked")
    if key.expired(now):
        raise AuthError(_INVALID, hint=_INVALID_HINT, reason="expired")
    return key


def _key(row: sqlite3.Row) -> ApiKey:
    created = _dt(row["created_at"])
    assert created is not None  # NOT NULL in the schema
    return ApiKey(
        name=row["name"],
        prefix=row["prefix"],
        models=tuple(json.loads(row["models"])),
        rpm=row["rpm"],
        expires_at=_dt(row["expires_at"]),
        created_at=created,
        created_by=row["created_by"],
        revoked_at=_dt(row["revoked_at"]),
        guard=row["guard"],
        role=row["role"],
    )


def normalize_models(models: Iterable[str]) -> tuple[str, ...]:
    """Each entry checked like a model ref (NAME, NAME:TAG, NAME@N), lower-cased, de-duplicated;
    comma-separated entries are split, so ``--models a,b`` and ``--model a --model b`` agree."""
    out: dict[str, None] = {}
    for item in models:
        for part in item.split(","):
            if part.strip():
                out[str(parse_ref(part))] = None
    return tuple(out)


_RELATIVE = re.compile(r"^(\d+)\s*([mhdw])$")
_UNIT = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_expires(text: str, *, now: datetime | None = None) -> datetime:
    """``30d``, ``12h``, ``90m``, ``2w`` from now, or an ISO date (the key expires as that day
    begins, UTC) or date-time (UTC unless it names a zone). Always an aware UTC datetime in the
    future, else InvalidOptionError."""
    now = now or utcnow()
    s = text.strip().lower()
    hint = "Use a duration like 30d, 12h, 90m or 2w, or a date like 2027-01-31."
    if m := _RELATIVE.match(s):
        n = int(m.group(1))
        if n == 0:
            raise InvalidOptionError(f"--expires {text!r} would expire the key at once.", hint=hint)
        try:
            return now + timedelta(**{_UNIT[m.group(2)]: n})
        except OverflowError:
            raise InvalidOptionError(f"--expires {text!r} is too far ahead.", hint=hint) from None
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", s):
            when = datetime.combine(date.fromisoformat(s), datetime.min.time(), UTC)
        else:
            when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidOptionError(f"--expires {text!r} is neither a duration nor a date.", hint=hint) from None
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    if when <= now:
        raise InvalidOptionError(f"--expires {text!r} is in the past ({_iso(when)}).", hint=hint)
    return when


def keys_path(home: KennelHome) -> Path:
    return home.root / "keys.db"


class KeyStore:
    """API keys in KENNEL_HOME/keys.db. Open with ``KeyStore.open(home)``; close when done.

    The sqlite3 connection belongs to the thread that opened the store (sqlite3's default), so a
    server calls it from its event loop, or opens one store per thread. Every ``verify`` reads the
    database, so a key revoked from the CLI is refused by a running server on its next request.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn

    @classmethod
    def open(cls, home: KennelHome) -> KeyStore:
        path = keys_path(home)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # created owner-only before SQLite writes a byte; SQLite gives its -wal/-shm files the same mode
            path.touch(mode=0o600, exist_ok=True)
        except OSError as exc:
            raise home_not_writable(path, exc.strerror or exc) from exc
        return cls(path, db.connect(path, MIGRATIONS))

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(
        self,
        name: str,
        *,
        models: Iterable[str] = (),
        rpm: int | None = None,
        expires: datetime | None = None,
        guard: str | None = None,
        role: str = DEFAULT_ROLE,
        created_by: str | None = None,
        now: datetime | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key and its secret. The secret is not kept: show it to the user now, once."""
        name = check_name(name, what="key name")
        allowed = normalize_models(models)
        now = now or utcnow()
        if rpm is not None and rpm < 1:
            raise InvalidOptionError(
                f"--rpm {rpm} is not a limit: it must be at least 1.", hint="Leave --rpm out for no limit."
            )
        if expires is not None:
            if expires.tzinfo is None:
                raise InvalidOptionError("The expiry must be a time-zone-aware datetime.")
            if expires <= now:
                raise InvalidOptionError(
                    f"The expiry {_iso(expires)} is in the past.",
                    hint="Use a duration like 30d, or a future date.",
                )
        if guard is not None and guard not in ("off", "log", "flag", "block"):
            raise InvalidOptionError(f"--guard {guard!r} is not a mode.", hint="Use off, log, flag or block.")
        if role not in ROLES:
            raise InvalidOptionError(f"--role {role!r} is not a role.", hint="Use admin or user.")
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        row = (
            name,
            secret[:PREFIX_CHARS],
            hash_secret(secret),
            json.dumps(list(allowed)),
            rpm,
            None if expires is None else _iso(expires),
            _iso(now),
            created_by or os_actor(),
            guard,
            role,
        )
        try:
            with db.transaction(self.conn):
                self.conn.execute(
                    "INSERT INTO keys"
                    " (name, prefix, sha256, models, rpm, expires_at, created_at, created_by, guard, role)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
        except sqlite3.IntegrityError:  # keys_live_name: another key by that name is not revoked
            raise InvalidOptionError(
                f"An API key named {name!r} already exists.",
                hint=f"Pick another name, or revoke it first: kennel keys revoke {name}",
            ) from None
        return self._live(name), secret

    def _live(self, name: str) -> ApiKey:
        row = self.conn.execute(
            "SELECT * FROM keys WHERE name = ? AND revoked_at IS NULL", (name,)
        ).fetchone()
        if row is None:
            if self.conn.execute("SELECT 1 FROM keys WHERE name = ?", (name,)).fetchone():
                raise InvalidOptionError(
                    f"The API key {name!r} is revoked.",
                    hint=f"Make a new one: kennel keys create {name} (`kennel keys ls --all` lists "
                    "revoked ones).",
                )
            raise InvalidOptionError(f"No API key named {name!r}.", hint="`kennel keys ls` lists the keys.")
        return _key(row)

    def get(self, name: str) -> ApiKey:
        """The key by that name that is not revoked (it may have expired)."""
        return self._live(check_name(name, what="key name"))

    def list(self, include_revoked: bool = False) -> builtins.list[ApiKey]:
        where = "" if include_revoked else " WHERE revoked_at IS NULL"
        return [_key(r) for r in self.conn.execute(f"SELECT * FROM keys{where} ORDER BY name, id")]

    def revoke(self, name: str, *, now: datetime | None = None) -> ApiKey:
        """Mark the key revoked; the server refuses it from its next request on."""
        key = self.get(name)
        with db.transaction(self.conn):
            self.conn.execute(
                "UPDATE keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (_iso(now or utcnow()), key.name),
            )
        row = self.conn.execute(
            "SELECT * FROM keys WHERE name = ? AND revoked_at IS NOT NULL ORDER BY id DESC", (key.name,)
        ).fetchone()
        return _key(row)

    def verify(self, secret: str | None, *, now: datetime | None = None) -> ApiKey:
        """The key this secret belongs to, if it is neither revoked nor expired; else AuthError (401)
        with one message for every failure (see ``match_secret``)."""
        rows = self.conn.execute("SELECT * FROM keys").fetchall()
        row = match_secret(secret, [(r["sha256"], r) for r in rows])
        return check_usable(_key(row), now)

    def hashed(self, *, now: datetime | None = None) -> builtins.list[tuple[ApiKey, str]]:
        """Every active key (neither revoked nor expired) with the hex sha256 of its secret, for
        `kennel keys export`; nothing else reads the hashes out of the database."""
        rows = self.conn.execute("SELECT * FROM keys WHERE revoked_at IS NULL ORDER BY name, id")
        pairs = [(_key(r), str(r["sha256"])) for r in rows]
        return [(key, sha256) for key, sha256 in pairs if not key.expired(now)]
