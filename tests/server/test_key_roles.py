"""Key roles (admin | user): keys.db's migration keeps the keys made before roles as admins, new
keys are users unless told otherwise, the CLI and the keys file carry the role, and an admin key
may change the store where store_api is on."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from kennel.errors import InvalidOptionError, StoreApiError
from kennel.server.auth import require_store_api
from kennel.server.keyfile import FileKeyStore, HashedKey, export_document, write_keys_file
from kennel.server.keys import MIGRATIONS, KeyStore, hash_secret, keys_path, utcnow
from kennel.settings import KennelHome
from kennel.store import db
from tests.cli.test_cli import kennel


def test_keys_made_before_roles_become_admins_and_new_ones_users(kennel_home: Path) -> None:
    home = KennelHome(kennel_home)
    path = keys_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = db.connect(path, MIGRATIONS[:2])  # a keys.db of the kennel before roles
    with db.transaction(old):
        old.execute(
            "INSERT INTO keys (name, prefix, sha256, created_at, created_by) VALUES (?, ?, ?, ?, ?)",
            ("ops", "kn-abcdefgh", hash_secret("kn-old"), utcnow().isoformat(), "root"),
        )
    old.close()
    with KeyStore.open(home) as keys:
        assert keys.verify("kn-old").role == "admin"  # it could do everything yesterday
        new, secret = keys.create("ci")
        assert new.role == "user" and keys.verify(secret).is_admin is False
        boss, _ = keys.create("boss", role="admin", created_by="console:ops")
        assert boss.is_admin and boss.created_by == "console:ops" and boss.to_dict()["role"] == "admin"
        with pytest.raises(InvalidOptionError, match="role"):
            keys.create("x", role="root")
    # a row written without a role (by SQL, as a tool might) is a user: the column's default
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO keys (name, prefix, sha256, created_at, created_by)"
        " VALUES ('raw', 'kn-x', 'ab', '2026-01-01', 'me')"
    )
    conn.commit()
    assert conn.execute("SELECT role FROM keys WHERE name = 'raw'").fetchone() == ("user",)
    conn.close()


def test_the_cli_creates_and_lists_roles(kennel_home: Path) -> None:
    r = kennel("keys", "create", "boss", "--role", "admin", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["key"]["role"] == "admin"
    r = kennel("keys", "create", "joe")
    assert r.returncode == 0 and "role: user" in r.stderr
    listed = json.loads(kennel("keys", "ls", "--json").stdout)["keys"]
    assert {k["name"]: k["role"] for k in listed} == {"boss": "admin", "joe": "user"}
    table = kennel("keys", "ls").stdout
    assert "role" in table and "admin" in table and "user" in table
    bad = kennel("keys", "create", "x", "--role", "root")
    assert bad.returncode != 0 and "not a role" in bad.stderr


def test_the_keys_file_carries_the_role(tmp_path: Path, kennel_home: Path) -> None:
    with KeyStore.open(KennelHome(kennel_home)) as keys:
        _, admin = keys.create("boss", role="admin")
        _, user = keys.create("joe")
        hashed = [HashedKey(k, h) for k, h in keys.hashed()]
    path = tmp_path / "keys.json"
    write_keys_file(path, export_document(hashed, now=utcnow()))
    store = FileKeyStore.load(path)
    assert (store.verify(admin).role, store.verify(user).role) == ("admin", "user")
    # a file exported before roles: its keys could do everything, so they are admins
    doc = json.loads(path.read_text())
    for entry in doc["keys"]:
        del entry["role"]
    path.write_text(json.dumps(doc))
    assert FileKeyStore.load(path).verify(user).role == "admin"


class _Req:
    def __init__(self, store_api: bool | None) -> None:
        from types import SimpleNamespace

        settings = SimpleNamespace(store_api=store_api)
        self.app = SimpleNamespace(state=SimpleNamespace(kennel=SimpleNamespace(settings=settings)))


def test_an_admin_key_may_change_the_store_where_store_api_is_on(kennel_home: Path) -> None:
    with KeyStore.open(KennelHome(kennel_home)) as keys:
        limited_admin, _ = keys.create("boss", role="admin", models=["m"])
        limited_user, _ = keys.create("joe", models=["m"])
        open_user, _ = keys.create("ann")
    require_store_api(_Req(True), limited_admin)  # type: ignore[arg-type]
    for user in (limited_user, open_user):  # a user key for every model is still a user key
        with pytest.raises(StoreApiError, match="is a user key; it may not change the model store"):
            require_store_api(_Req(True), user)  # type: ignore[arg-type]
    for key in (limited_admin, open_user):
        with pytest.raises(StoreApiError, match="does not let API clients"):
            require_store_api(_Req(None), key)  # type: ignore[arg-type]  # off with keys by default
