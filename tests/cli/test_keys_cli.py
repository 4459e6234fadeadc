"""`kennel keys` as an operator meets it: create (the secret shown once), ls, revoke, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kennel.server.keys import KeyStore
from kennel.settings import KennelHome
from tests.cli.test_cli import _bad, kennel


def _json(*args: str) -> dict[str, Any]:
    r = kennel("keys", *args, "--json")
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    doc: dict[str, Any] = json.loads(r.stdout)
    return doc


def test_create_ls_revoke(kennel_home: Path) -> None:
    r = kennel(
        "keys",
        "create",
        "ci",
        "--models",
        "qwen,llama:prod",
        "--model",
        "gemma",
        "--rpm",
        "60",
        "--expires",
        "30d",
    )
    assert r.returncode == 0, r.stderr
    secret = r.stdout.strip()
    assert secret.startswith("kn-") and r.stdout == secret + "\n"  # stdout is the secret alone
    assert "cannot be shown again" in r.stderr and secret not in r.stderr
    assert "kennel keys revoke ci`" in r.stderr  # the command to run names the key
    with KeyStore.open(KennelHome(kennel_home)) as keys:
        assert keys.verify(secret).name == "ci"

    created = _json("create", "alice")
    assert created["schema"] == "kennel.keys.create/v1"
    assert created["secret"].startswith("kn-") and created["key"]["state"] == "active"

    doc = _json("ls")
    assert doc["schema"] == "kennel.keys.ls/v1"
    ci = next(k for k in doc["keys"] if k["name"] == "ci")
    assert ci["models"] == ["gemma", "qwen", "llama:prod"] and ci["rpm"] == 60
    assert ci["prefix"] == secret[:11] and ci["expires_at"] and ci["state"] == "active"
    assert [k["name"] for k in doc["keys"]] == ["alice", "ci"]
    # neither the secrets nor their hashes are ever printed again
    for out in (json.dumps(doc), kennel("keys", "ls").stdout, kennel("keys", "ls", "--all").stdout):
        assert secret not in out and created["secret"] not in out and "sha256" not in out
    table = kennel("keys", "ls").stdout
    assert "ci" in table and secret[:11] in table and "active" in table

    revoked = _json("revoke", "ci")
    assert revoked["key"]["state"] == "revoked" and revoked["key"]["revoked_at"]
    assert [k["name"] for k in _json("ls")["keys"]] == ["alice"]
    assert {k["name"]: k["state"] for k in _json("ls", "--all")["keys"]} == {
        "alice": "active",
        "ci": "revoked",
    }
    assert "revoked" in kennel("keys", "ls", "--all").stdout
    assert "The API key 'ci' is revoked" in _bad("keys", "revoke", "ci")


def test_empty_ls() -> None:
    r = kennel("keys", "ls")
    assert r.returncode == 0 and "No API keys" in r.stdout
    assert _json("ls")["keys"] == []


def test_bad_input() -> None:
    assert "not a valid key name" in _bad("keys", "create", "../x")
    assert "not a valid key name" in _bad("keys", "create", "a;b")
    assert "not a valid model name" in _bad("keys", "create", "ci", "--models", "qwen,a;b")
    assert "--expires" in _bad("keys", "create", "ci", "--expires", "soon")
    assert "in the past" in _bad("keys", "create", "ci", "--expires", "2001-01-01")
    assert "--rpm 0" in _bad("keys", "create", "ci", "--rpm", "0")
    assert "not a valid key name" in _bad("keys", "revoke", "../x")
    assert kennel("keys", "create", "ci").returncode == 0
    assert "already exists" in _bad("keys", "create", "ci")
    assert len(_json("ls")["keys"]) == 1


def test_export(kennel_home: Path, tmp_path: Path) -> None:
    """The hashes of the active keys, to stdout or atomically to an owner-only file, never a secret."""
    secrets = {name: kennel("keys", "create", name).stdout.strip() for name in ("alice", "bob", "gone")}
    assert kennel("keys", "revoke", "gone").returncode == 0
    r = kennel("keys", "export")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["kennel_keys"] == 1 and [k["name"] for k in doc["keys"]] == ["alice", "bob"]
    assert "Wrote 2 API keys" in r.stderr and "kennel serve --keys-file" in r.stderr and "Secret" in r.stderr
    for secret in secrets.values():
        assert secret not in r.stdout + r.stderr

    path = tmp_path / "out" / "keys.json"
    path.parent.mkdir()
    summary = _json("export", "-o", str(path))
    assert summary["schema"] == "kennel.keys.export/v1" and summary["keys"] == ["alice", "bob"]
    assert json.loads(path.read_text())["keys"] == doc["keys"]
    assert path.stat().st_mode & 0o777 == 0o600 and [p.name for p in path.parent.iterdir()] == ["keys.json"]
    plain = kennel("keys", "export", "-o", str(path))
    assert plain.returncode == 0 and plain.stdout == "" and f"--keys-file {path}" in plain.stderr

    assert "Cannot write the keys file" in _bad("keys", "export", "-o", str(tmp_path / "no" / "keys.json"))
