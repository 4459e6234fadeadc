"""API keys from a read-only keys file (`kennel keys export`, `kennel serve --keys-file`): the same
verdicts as keys.db, reloads on change (a Kubernetes symlink swap too) and on SIGHUP, a bad file
that keeps the keys held, and two replicas that agree on a revoked key."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from kennel.cli.serve import _check_security
from kennel.engines.base import Memory
from kennel.errors import AuthError, ForbiddenError, InvalidOptionError
from kennel.server.keyfile import (
    FileKeyStore,
    HashedKey,
    export_document,
    install_sighup,
    open_key_source,
    write_keys_file,
)
from kennel.server.keys import KeyStore, hash_secret, utcnow
from kennel.server.settings import ModelEntry, ServeSettings
from kennel.settings import KennelHome
from tests.loopback import wait_ready
from tests.server.serverkit import free_port, running_server
from tests.server.test_hardening import Echo, _spec

pytestmark = pytest.mark.timeout(120)

KENNEL = [sys.executable, "-m", "kennel.cli.main"]


@pytest.fixture
def keys(kennel_home: Path) -> Iterator[KeyStore]:
    with KeyStore.open(KennelHome(kennel_home)) as store:
        yield store


def export(keys: KeyStore, path: Path) -> None:
    now = utcnow()
    write_keys_file(path, export_document([HashedKey(k, h) for k, h in keys.hashed(now=now)], now=now))


def reason(store: FileKeyStore | KeyStore, secret: str | None, **kw: Any) -> str:
    with pytest.raises(AuthError) as info:
        store.verify(secret, **kw)
    assert info.value.status_code == 401
    return info.value.reason


def check(store: FileKeyStore, *, force: bool = False) -> bool:
    return asyncio.run(store.check(force=force))


# ---- the file and its store ------------------------------------------------------------------
def test_export_holds_hashes_only_and_verifies_like_keys_db(keys: KeyStore, tmp_path: Path) -> None:
    ci, ci_secret = keys.create("ci", models=["qwen", "llama:prod"], rpm=30, guard="block")
    _, ops_secret = keys.create("ops", expires=utcnow() + timedelta(days=1))
    _, gone_secret = keys.create("gone")
    keys.revoke("gone")
    path = tmp_path / "keys.json"
    export(keys, path)
    text = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for secret in (ci_secret, ops_secret, gone_secret):
        assert secret not in text and secret[11:] not in text
    doc = json.loads(text)
    assert doc["kennel_keys"] == 1 and doc["exported_at"]
    assert [k["name"] for k in doc["keys"]] == ["ci", "ops"]  # the revoked key is left out
    assert doc["keys"][0]["sha256"] == hash_secret(ci_secret)
    assert set(doc["keys"][0]) == {
        *(
            "name",
            "prefix",
            "sha256",
            "models",
            "rpm",
            "expires_at",
            "guard",
            "role",
            "created_at",
            "created_by",
        )
    }
    assert not list(tmp_path.glob(".keys.json.*"))  # no temporary file left behind

    store = FileKeyStore.load(path)
    assert store.verify(ci_secret) == keys.verify(ci_secret) == ci
    assert store.verify(ops_secret) == keys.verify(ops_secret)
    assert [k.name for k in store.list()] == ["ci", "ops"]
    # every refusal is the 401 keys.db gives, with the same words; a revoked key is simply unknown
    attempts: tuple[str | None, ...] = (None, "", "kn-wrong", gone_secret)
    for attempt in attempts:
        with pytest.raises(AuthError) as from_file:
            store.verify(attempt)
        with pytest.raises(AuthError) as from_db:
            keys.verify(attempt)
        assert str(from_file.value) == str(from_db.value)
    assert reason(store, gone_secret) == "invalid" and reason(store, None) == "missing"
    key = store.verify(ci_secret)
    assert key.guard == "block" and key.rpm == 30 and key.allows("llama:prod") and not key.allows("llama")
    with pytest.raises(ForbiddenError):
        key.check_model("gemma")


def test_expired_key_is_refused_and_not_exported(keys: KeyStore, tmp_path: Path) -> None:
    _, secret = keys.create("temp", expires=utcnow() + timedelta(hours=1))
    path = tmp_path / "keys.json"
    export(keys, path)
    store = FileKeyStore.load(path)
    assert store.verify(secret).name == "temp"
    assert reason(store, secret, now=utcnow() + timedelta(hours=2)) == "expired"
    later = utcnow() + timedelta(hours=2)
    assert keys.hashed(now=later) == []  # an export after it expired leaves it out


def test_revoked_key_is_refused_after_re_export(keys: KeyStore, tmp_path: Path) -> None:
    _, keep = keys.create("keep")
    _, drop = keys.create("drop")
    path = tmp_path / "keys.json"
    export(keys, path)
    store = FileKeyStore.load(path)
    assert store.verify(drop).name == "drop"
    assert check(store) is False  # unchanged: nothing re-read
    keys.revoke("drop")
    export(keys, path)
    assert check(store) is True
    assert reason(store, drop) == "invalid" and store.verify(keep).name == "keep"
    assert check(store) is False


def test_bad_file_keeps_previous_keys_and_is_logged_once(
    keys: KeyStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, secret = keys.create("ci")
    path = tmp_path / "keys.json"
    export(keys, path)
    store = FileKeyStore.load(path)
    caplog.set_level(logging.INFO, logger="kennel.keys")

    def errors() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]

    path.write_text('{"kennel_keys": 1, "keys": [')  # cut short, as a careless copy leaves it
    for _ in range(3):
        assert check(store) is False
    assert store.verify(secret).name == "ci"
    assert len(errors()) == 1
    assert (
        str(path) in errors()[0] and "kennel keys export -o" in errors()[0] and "Keeping the 1" in errors()[0]
    )

    path.unlink()  # gone: a state of its own, reported once too
    for _ in range(3):
        assert check(store) is False
    assert len(errors()) == 2 and "Cannot read the keys file" in errors()[1]
    assert store.verify(secret).name == "ci"

    path.write_text(json.dumps({"kennel_keys": 1, "keys": [{"name": "x", "sha256": "nothex"}]}))
    assert check(store) is False and len(errors()) == 3 and "sha256" in errors()[2]
    assert check(store, force=True) is False and len(errors()) == 4  # SIGHUP: the operator asked

    export(keys, path)  # fixed: taken at once, and said so
    assert check(store) is True and store.verify(secret).name == "ci"
    assert any("reloaded" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)


def test_kubernetes_symlink_swap_is_detected(keys: KeyStore, tmp_path: Path) -> None:
    """A mounted Secret: keys.json -> ..data/keys.json, ..data -> ..<timestamp>/. An update writes a
    new timestamped folder and renames a new ..data link over the old one; the file the server was
    given, a link, never changes. Here the new file has the old one's size and mtime too, so only
    the inode tells them apart."""
    _, old = keys.create("ci")
    mount = tmp_path / "secret"
    first, second = mount / "..2026_01_01", mount / "..2026_01_02"
    first.mkdir(parents=True)
    second.mkdir()
    export(keys, first / "keys.json")
    (mount / "..data").symlink_to(first.name)
    (mount / "keys.json").symlink_to("..data/keys.json")
    path = mount / "keys.json"
    store = FileKeyStore.load(path)
    assert store.verify(old).name == "ci"

    doc = json.loads((first / "keys.json").read_text())
    new = "kn-another-secret"
    doc["keys"][0]["sha256"] = hash_secret(new)  # same length, so the same size
    (second / "keys.json").write_text(json.dumps(doc, indent=2) + "\n")
    st = (first / "keys.json").stat()
    os.utime(second / "keys.json", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (second / "keys.json").stat().st_size == st.st_size
    (mount / "..data_tmp").symlink_to(second.name)
    os.replace(mount / "..data_tmp", mount / "..data")

    assert check(store) is True
    assert store.verify(new).name == "ci" and reason(store, old) == "invalid"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("not json", "not JSON"),
        ("[]", "not valid"),
        ('{"kennel_keys": 2, "keys": []}', "newer kennel"),
        ('{"kennel_keys": 1}', "keys"),
        (
            '{"kennel_keys": 1, "keys": [{"name": "a", "sha256": "' + "a" * 64 + '", "expires": "2030"}]}',
            "expires",
        ),
        ('{"kennel_keys": 1, "keys": [{"name": "../a", "sha256": "' + "a" * 64 + '"}]}', "key name"),
        ('{"kennel_keys": 1, "keys": [{"name": "a", "sha256": "' + "a" * 64 + '", "rpm": 0}]}', "rpm"),
        (
            '{"kennel_keys": 1, "keys": [{"name": "a", "sha256": "' + "a" * 64 + '", "models": ["a;b"]}]}',
            "model",
        ),
        (
            '{"kennel_keys": 1, "keys": [{"name": "a", "sha256": "' + "a" * 64 + '"}, '
            '{"name": "b", "sha256": "' + "a" * 64 + '"}]}',
            "same sha256",
        ),
    ],
)
def test_a_bad_file_at_start_names_the_file_and_the_fix(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(content)
    with pytest.raises(InvalidOptionError) as info:
        FileKeyStore.load(path)
    assert expected in str(info.value) and str(path) in str(info.value)
    assert info.value.hint and ("kennel keys export -o" in info.value.hint or "Upgrade" in info.value.hint)


def test_a_missing_file_at_start_and_a_minimal_one(tmp_path: Path, kennel_home: Path) -> None:
    with pytest.raises(InvalidOptionError, match="Cannot read the keys file") as info:
        open_key_source(tmp_path / "nope.json", KennelHome(kennel_home))
    assert f"kennel keys export -o {tmp_path / 'nope.json'}" in str(info.value)
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"kennel_keys": 1, "keys": [{"name": "Hand", "sha256": hash_secret("kn-x")}]}))
    store = open_key_source(path, KennelHome(kennel_home))
    key = store.verify("kn-x")
    assert (key.name, key.models, key.rpm, key.expires_at, key.guard) == ("hand", (), None, None, None)
    assert not (kennel_home / "keys.db").exists()  # a keys file never creates keys.db


# ---- reloading on a schedule and on SIGHUP ---------------------------------------------------
async def _until(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()


def test_watch_reloads_on_change_and_on_request(keys: KeyStore, tmp_path: Path) -> None:
    _, secret = keys.create("ci")
    path = tmp_path / "keys.json"
    export(keys, path)

    def works(store: FileKeyStore) -> bool:
        try:
            store.verify(secret)
        except AuthError:
            return False
        return True

    async def scenario() -> None:
        polled = FileKeyStore.load(path, poll=0.05)
        on_hup_only = FileKeyStore.load(path, poll=0)
        tasks = [asyncio.create_task(polled.watch()), asyncio.create_task(on_hup_only.watch())]
        try:
            keys.revoke("ci")
            export(keys, path)
            assert await _until(lambda: not works(polled))
            await asyncio.sleep(0.3)
            assert works(on_hup_only)  # polls nothing: only told
            on_hup_only.reload_soon()
            assert await _until(lambda: not works(on_hup_only))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(scenario())


def test_sighup_handler_is_installed_and_removed() -> None:
    async def scenario() -> None:
        got = asyncio.Event()
        remove = install_sighup(got.set)
        try:
            os.kill(os.getpid(), signal.SIGHUP)
            await asyncio.wait_for(got.wait(), 5)
        finally:
            remove()
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL

    asyncio.run(scenario())


# ---- the server ------------------------------------------------------------------------------
def test_server_uses_the_file_and_keys_in_use_means_the_same(keys: KeyStore, tmp_path: Path) -> None:
    _, everything = keys.create("ops")
    _, kiosk = keys.create("kiosk", models=["m"])
    path = tmp_path / "keys.json"
    export(keys, path)
    before = path.read_bytes()
    home = KennelHome(tmp_path / "replica")
    with running_server(
        [_spec("m"), _spec("other")], home, engine_factory=Echo, budget=Memory(ram=1 << 30), keys_file=path
    ) as url:

        def chat(key: str | None, model: str) -> int:
            body = {"model": model, "messages": [{"role": "user", "content": "x"}]}
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            return httpx.post(url + "/v1/chat/completions", json=body, headers=headers).status_code

        assert (chat(None, "m"), chat("kn-guess", "m")) == (401, 401)
        assert (chat(everything, "other"), chat(kiosk, "m"), chat(kiosk, "other")) == (200, 200, 403)
    assert path.read_bytes() == before and not (home.root / "keys.db").exists()

    # a network bind needs keys: a keys file with some counts as keys.db with some; an empty one does not
    network = {"host": "0.0.0.0", "models": [ModelEntry(model="m")]}
    _check_security(ServeSettings(**network, keys_file=path), home)  # type: ignore[arg-type]
    empty = tmp_path / "empty.json"
    write_keys_file(empty, export_document([], now=utcnow()))
    with pytest.raises(InvalidOptionError, match="without API keys") as info:
        _check_security(ServeSettings(**network, keys_file=empty), home)  # type: ignore[arg-type]
    assert f"kennel keys export -o {empty}" in str(info.value)
    _check_security(ServeSettings(**network, keys_file=empty, insecure=True), home)  # type: ignore[arg-type]
    _check_security(ServeSettings(models=[ModelEntry(model="m")], keys_file=empty), home)  # loopback
    assert not (home.root / "keys.db").exists()


def test_serve_refuses_a_bad_keys_file_before_anything_loads(make_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, _ = make_model()
    bad = tmp_path / "keys.json"
    bad.write_text("{")
    r = subprocess.run(
        [*KENNEL, "serve", "--model", str(model), "--keys-file", str(bad), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and str(bad) in r.stderr and "kennel keys export -o" in r.stderr
    assert "Traceback" not in r.stderr and "kennel serve on" not in r.stderr


# ---- the acceptance test: two replicas, one keys file ----------------------------------------
def _start(
    model: Path, keys_file: Path, home: Path, log: IO[bytes], **env: str
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    argv = [*KENNEL, "serve", "--model", str(model), "--port", str(port), "--keys-file", str(keys_file)]
    proc = subprocess.Popen(argv, stdout=log, stderr=log, env={**os.environ, "KENNEL_HOME": str(home), **env})
    return proc, f"http://127.0.0.1:{port}"


def _status(url: str, secret: str | None) -> int:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    return httpx.get(url + "/v1/models", headers=headers, timeout=10).status_code


def _until_status(url: str, secret: str, want: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _status(url, secret) == want:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_replicas_share_one_keys_file(make_model, kennel_home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Two `kennel serve` started with the same --keys-file accept the same key, and both refuse a
    revoked one once the file is rewritten: the first by noticing the change, the second (told to
    poll nothing) on SIGHUP."""
    model, _ = make_model()
    with KeyStore.open(KennelHome(kennel_home)) as keys:
        _, alice = keys.create("alice")
        _, bob = keys.create("bob")
    keys_file = tmp_path / "keys.json"

    def export_cli() -> None:
        r = subprocess.run(
            [*KENNEL, "keys", "export", "-o", str(keys_file)], capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 0, r.stderr
        assert r.stdout == "" and "--keys-file" in r.stderr

    export_cli()
    homes = [tmp_path / "replica-a", tmp_path / "replica-b"]
    logs = [open(tmp_path / "a.log", "wb"), open(tmp_path / "b.log", "wb")]  # noqa: SIM115
    a, url_a = _start(model, keys_file, homes[0], logs[0])
    b, url_b = _start(model, keys_file, homes[1], logs[1], KENNEL_KEYS_FILE_POLL="0")
    try:
        for proc, url, log in ((a, url_a, "a.log"), (b, url_b, "b.log")):
            wait_ready(url, path="/healthz", proc=proc, log=(tmp_path / log).read_text)
        for url in (url_a, url_b):
            assert (_status(url, alice), _status(url, bob)) == (200, 200)
            assert (_status(url, None), _status(url, "kn-wrong")) == (401, 401)

        with KeyStore.open(KennelHome(kennel_home)) as keys:
            keys.revoke("bob")
        export_cli()
        written = time.monotonic()
        exported = keys_file.read_bytes()

        assert _until_status(url_a, bob, 401), "replica A never noticed the new file"
        assert _status(url_a, alice) == 200
        time.sleep(max(0.0, written + 2.0 - time.monotonic()))
        assert _status(url_b, bob) == 200  # B watches nothing: it waits to be told
        os.kill(b.pid, signal.SIGHUP)
        assert _until_status(url_b, bob, 401), "replica B did not reload on SIGHUP"
        assert _status(url_b, alice) == 200 and b.poll() is None

        for proc in (a, b):  # Ctrl-C still stops a server
            proc.send_signal(signal.SIGINT)
        for proc in (a, b):
            proc.wait(timeout=30)
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        for f in logs:
            f.close()
    out_a, out_b = ((tmp_path / n).read_text() for n in ("a.log", "b.log"))
    assert "API keys reloaded" in out_a and "API keys reloaded" in out_b, (out_a, out_b)
    assert "Traceback" not in out_a + out_b
    assert keys_file.read_bytes() == exported  # read-only: neither server wrote it
    assert not any((home / "keys.db").exists() for home in homes)
