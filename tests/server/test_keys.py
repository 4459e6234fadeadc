"""API keys and rate limits: what the server relies on to refuse a request before it costs a GPU."""

from __future__ import annotations

import contextlib
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kennel.errors import AuthError, ForbiddenError, InvalidNameError, InvalidOptionError, RateLimitError
from kennel.server.keys import ApiKey, KeyStore, hash_secret, keys_path, parse_expires
from kennel.server.ratelimit import RateLimiter
from kennel.settings import KennelHome
from kennel.store import db

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def keys(kennel_home: Path) -> Iterator[KeyStore]:
    with KeyStore.open(KennelHome(kennel_home)) as store:
        yield store


def _auth_fail(keys: KeyStore, secret: str | None, **kw: datetime) -> AuthError:
    with pytest.raises(AuthError) as info:
        keys.verify(secret, **kw)
    assert info.value.status_code == 401
    return info.value


# ---- keys ------------------------------------------------------------------------------------
def test_create_verify_and_list(keys: KeyStore) -> None:
    key, secret = keys.create("CI", models=["qwen", "llama:prod"], rpm=30)
    assert secret.startswith("kn-") and len(secret) == 3 + 43  # 32 bytes, urlsafe base64 unpadded
    assert key.name == "ci" and key.prefix == secret[:11] and key.models == ("qwen", "llama:prod")
    assert (key.rpm, key.expires_at, key.revoked_at, key.state()) == (30, None, None, "active")
    assert key.created_by and key.created_at.tzinfo is not None
    assert keys.verify(secret) == key
    other, secret2 = keys.create("alice")
    assert secret2 != secret and keys.verify(secret2) == other and other.models == ()
    assert [k.name for k in keys.list()] == ["alice", "ci"]
    assert "sha256" not in key.to_dict() and secret not in repr(key.to_dict())


def test_wrong_and_missing_keys_say_nothing_about_which_keys_exist(keys: KeyStore) -> None:
    _, secret = keys.create("ci", expires=NOW + timedelta(days=1), now=NOW)
    keys.create("old")
    _, old_secret = keys.create("gone")
    keys.revoke("gone")
    assert _auth_fail(keys, None).reason == "missing"
    assert _auth_fail(keys, "").reason == "missing"
    wrong = _auth_fail(keys, secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    revoked = _auth_fail(keys, old_secret)
    expired = _auth_fail(keys, secret, now=NOW + timedelta(days=1))
    assert (wrong.reason, revoked.reason, expired.reason) == ("invalid", "revoked", "expired")
    # the caller sees one message and hint for all three; no key name appears
    assert str(wrong) == str(revoked) == str(expired)
    for name in ("ci", "old", "gone"):
        assert repr(name) not in str(wrong)
    assert _auth_fail(keys, "kn-" + "x" * 43).reason == "invalid"
    assert keys.verify(secret, now=NOW + timedelta(hours=23)).name == "ci"


def test_expiry(keys: KeyStore) -> None:
    key, secret = keys.create("temp", expires=NOW + timedelta(hours=12), now=NOW)
    assert key.expires_at == NOW + timedelta(hours=12)
    assert key.state(NOW) == "active" and key.state(NOW + timedelta(hours=12)) == "expired"
    assert keys.verify(secret, now=NOW).name == "temp"
    assert _auth_fail(keys, secret).reason == "expired"  # the real clock is past 2026-05-01T12:00
    assert [k.state() for k in keys.list()] == ["expired"]  # listed (not revoked), marked expired
    with pytest.raises(InvalidOptionError, match="in the past"):
        keys.create("late", expires=NOW - timedelta(seconds=1), now=NOW)
    with pytest.raises(InvalidOptionError, match="aware"):
        keys.create("naive", expires=datetime(2099, 1, 1))


def test_revoke(keys: KeyStore) -> None:
    _, secret = keys.create("ci")
    revoked = keys.revoke("ci", now=NOW)
    assert revoked.revoked_at == NOW and revoked.state() == "revoked"
    assert _auth_fail(keys, secret).reason == "revoked"
    assert keys.list() == [] and [k.name for k in keys.list(include_revoked=True)] == ["ci"]
    with pytest.raises(InvalidOptionError, match="The API key 'ci' is revoked"):
        keys.revoke("ci")
    with pytest.raises(InvalidOptionError, match="No API key named 'cj'"):
        keys.revoke("cj")
    # the name is free again; the new secret works and the old one stays refused
    _, new_secret = keys.create("ci")
    assert keys.verify(new_secret).name == "ci"
    assert _auth_fail(keys, secret).reason == "revoked"
    assert [k.state() for k in keys.list(include_revoked=True)] == ["revoked", "active"]


def test_duplicate_and_bad_names(keys: KeyStore) -> None:
    keys.create("ci")
    with pytest.raises(InvalidOptionError, match="already exists"):
        keys.create("CI")
    for bad in ("../x", "a;b", "", "a/b", "..", "x" * 200, "$(id)"):
        with pytest.raises(InvalidNameError):
            keys.create(bad)
    with pytest.raises(InvalidNameError):
        keys.create("ok", models=["qwen;rm -rf"])
    with pytest.raises(InvalidOptionError, match="at least 1"):
        keys.create("zero", rpm=0)
    assert [k.name for k in keys.list()] == ["ci"]


def test_model_allow_list(keys: KeyStore) -> None:
    key, _ = keys.create("ci", models=["qwen,llama:prod", "mistral@3", "QWEN"])
    assert key.models == ("qwen", "llama:prod", "mistral@3")
    for ok in ("qwen", "Qwen", "qwen:latest", "qwen@7", "llama:prod", "mistral@3"):
        key.check_model(ok)
    for no in ("llama", "llama:latest", "llama@2", "mistral", "mistral@4", "gemma", "../qwen", "hf.co/a/b"):
        assert not key.allows(no)
        with pytest.raises(ForbiddenError) as info:
            key.check_model(no)
        assert info.value.status_code == 403
    everything, _ = keys.create("all")
    assert everything.allows("anything") and everything.allows("hf.co/x/y")
    latest, _ = keys.create("latest", models=["llama:latest"])
    assert latest.allows("llama") and not latest.allows("llama:prod")


def test_only_the_hash_is_stored(keys: KeyStore, kennel_home: Path) -> None:
    _, secret = keys.create("ci")
    keys.close()
    path = keys_path(KennelHome(kennel_home))
    data = b"".join(p.read_bytes() for p in path.parent.glob("keys.db*"))
    assert hash_secret(secret).encode() in data
    assert secret.encode() not in data and secret[11:].encode() not in data
    assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0
    with KeyStore.open(KennelHome(kennel_home)) as again:  # reopening applies no migration twice
        assert again.verify(secret).name == "ci"
        assert [r[0] for r in again.conn.execute("SELECT name FROM migrations")] == [
            "001_keys",
            "002_guard",
            "003_role",
        ]


def test_keys_db_from_a_newer_kennel_is_refused(keys: KeyStore, kennel_home: Path) -> None:
    keys.conn.execute("INSERT INTO migrations VALUES ('999_future', datetime('now'))")
    keys.close()
    with pytest.raises(Exception, match="newer kennel"):
        KeyStore.open(KennelHome(kennel_home))


def test_store_migrations_default_is_unchanged(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "store.db")
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM migrations ORDER BY name")]
        assert names == [name for name, _ in db.MIGRATIONS]
        assert db.migrate(conn) == []
    finally:
        conn.close()


def test_parse_expires() -> None:
    assert parse_expires("30d", now=NOW) == NOW + timedelta(days=30)
    assert parse_expires("12h", now=NOW) == NOW + timedelta(hours=12)
    assert parse_expires("90m", now=NOW) == NOW + timedelta(minutes=90)
    assert parse_expires("2w", now=NOW) == NOW + timedelta(weeks=2)
    assert parse_expires("2027-01-31", now=NOW) == datetime(2027, 1, 31, tzinfo=UTC)
    assert parse_expires("2027-01-31T10:00", now=NOW) == datetime(2027, 1, 31, 10, tzinfo=UTC)
    assert parse_expires("2027-01-31T10:00+02:00", now=NOW) == datetime(2027, 1, 31, 8, tzinfo=UTC)
    assert parse_expires("30d", now=NOW).tzinfo is not None
    for bad in ("0d", "soon", "30", "-1d", "2026-04-30", "2027-13-01", "99999999999w", ""):
        with pytest.raises(InvalidOptionError):
            parse_expires(bad, now=NOW)


def test_api_key_is_a_frozen_value() -> None:
    key = ApiKey("a", "kn-abcdefgh", (), None, None, NOW, "me", None)
    with pytest.raises(AttributeError):
        key.name = "b"  # type: ignore[misc]
    assert key.to_dict(NOW)["state"] == "active" and key.allows("anything")


# ---- rate limits -----------------------------------------------------------------------------
def _limited(limiter: RateLimiter, name: str, rpm: int, now: float) -> float:
    with pytest.raises(RateLimitError) as info:
        limiter.check(name, rpm, now)
    assert info.value.status_code == 429
    return info.value.retry_after


def test_sliding_window_and_retry_after() -> None:
    rl = RateLimiter()
    for t in (0.0, 10.0, 20.0):
        rl.check("ci", 3, t)
    assert rl.remaining("ci", 3, 30.0) == 0
    assert _limited(rl, "ci", 3, 30.0) == pytest.approx(30.0)  # the request at 0 leaves at 60
    assert _limited(rl, "ci", 3, 59.5) == pytest.approx(0.5)  # refused requests are not counted
    rl.check("ci", 3, 60.0)  # 0 has left the window
    assert _limited(rl, "ci", 3, 61.0) == pytest.approx(9.0)  # now 10 must leave
    # no fixed-minute boundary to exploit: 3 at 59 s, then none before 119 s
    rl2 = RateLimiter()
    for _ in range(3):
        rl2.check("k", 3, 59.0)
    assert _limited(rl2, "k", 3, 61.0) == pytest.approx(58.0)
    rl2.check("k", 3, 119.0)


def test_keys_are_independent_and_unlimited_is_free() -> None:
    rl = RateLimiter()
    rl.check("a", 1, 0.0)
    rl.check("b", 1, 0.0)
    _limited(rl, "a", 1, 1.0)
    for i in range(1000):
        rl.check("free", None, float(i))
    assert rl.remaining("free", None, 0.0) is None and len(rl) == 2  # unlimited keys keep no log
    with pytest.raises(ValueError):
        rl.check("a", 0, 2.0)


def test_lowered_limit_waits_for_enough_requests_to_leave() -> None:
    rl = RateLimiter()
    for t in range(5):
        rl.check("k", 10, float(t))
    assert _limited(rl, "k", 2, 5.0) == pytest.approx(3 + 60 - 5.0)  # 4 of 5 must leave: up to t=3


def test_memory_is_bounded() -> None:
    rl = RateLimiter()
    for i in range(500):
        rl.check(f"key{i}", 5, 0.0)
    assert len(rl) == 500
    rl.check("late", 5, 61.0)  # a sweep drops every log whose requests all left the window
    assert len(rl) == 1
    for t in range(10_000):  # a busy key's log never grows past its limit
        with contextlib.suppress(RateLimitError):
            rl.check("busy", 5, 100.0 + t * 0.001)
    assert rl.remaining("busy", 5, 110.0) == 0 and len(rl._logs["busy"]) == 5
    assert rl.remaining("busy", 5, 200.0) == 5 and "busy" not in rl._logs  # emptied log is dropped
