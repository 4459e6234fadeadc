"""Sessions, CSRF and roles over HTTP (the app in process, a fake engine): what the browser tests
rely on, including the cases a browser cannot easily show (expiry, a revoked key, the cookie's
flags over https, the open console)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from kennel.console.session import SESSION_COOKIE
from kennel.server.keys import KeyStore
from kennel.settings import KennelHome
from tests.console.apptest import BASE, console_client, csrf_of, sign_in


def _keys(home: Path) -> dict[str, str]:
    with KeyStore.open(KennelHome(home)) as keys:
        return {"admin": keys.create("boss", role="admin")[1], "user": keys.create("joe")[1]}


def _cookie_header(response: object) -> str:
    headers = response.headers  # type: ignore[attr-defined]
    return str(next(v for v in headers.get_list("set-cookie") if v.startswith(SESSION_COOKIE + "=")))


def test_pages_ask_for_a_key_and_a_good_one_opens_a_session(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kennel.requests")
    home = tmp_path / "home"
    secrets = _keys(home)
    with console_client(home) as client:
        r = client.get("/ui/chat?x=1", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/ui/signin?next=%2Fui%2Fchat%3Fx%3D1"
        flags = _cookie_header(r).lower()  # a visitor's session (for the sign-in form's token)
        page = client.get("/ui/signin")
        before = client.cookies[SESSION_COOKIE]
        assert "httponly" in flags and "samesite=strict" in flags and "path=/ui" in flags
        assert "secure" not in flags  # plain http on loopback
        token = csrf_of(page.text)
        bad = {"key": secrets["admin"][:-1] + "x", "csrf_token": token, "next": "/ui/chat"}
        r = client.post("/ui/signin", data=bad, follow_redirects=False)
        assert r.status_code == 401 and "That key was not accepted" in r.text
        logged = [json.loads(m) for m in caplog.messages if '"/ui/signin"' in m]
        assert logged == [{"endpoint": "/ui/signin", "key": None, "status": 401, "auth": "invalid"}]
        good = {**bad, "key": secrets["admin"]}
        r = client.post("/ui/signin", data=good, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/ui/chat"
        assert client.cookies[SESSION_COOKIE] != before  # a new session id at sign-in
        assert "Signed in as boss (admin)" in client.get("/ui/").text
        # sign-out: the session is gone, and the old id with it
        old = client.cookies[SESSION_COOKIE]
        token = csrf_of(client.get("/ui/").text)
        assert (
            client.post("/ui/signout", data={"csrf_token": token}, follow_redirects=False).status_code == 303
        )
        client.cookies.set(SESSION_COOKIE, old, path="/ui")
        assert client.get("/ui/", follow_redirects=False).status_code == 303


def test_sign_in_needs_the_forms_csrf_token(tmp_path: Path) -> None:
    home = tmp_path / "home"
    secrets = _keys(home)
    with console_client(home) as client:
        client.get("/ui/signin")
        for token in (None, "", "forged"):
            form = {"key": secrets["admin"], "next": "/ui/"}
            if token is not None:
                form["csrf_token"] = token
            r = client.post("/ui/signin", data=form, follow_redirects=False)
            assert r.status_code == 403 and "did not come from this console" in r.text
        assert client.get("/ui/", follow_redirects=False).status_code == 303  # not signed in


def test_every_post_checks_csrf_and_the_header_works_too(tmp_path: Path) -> None:
    home = tmp_path / "home"
    secrets = _keys(home)
    with console_client(home) as client:
        sign_in(client, secrets["admin"])
        token = csrf_of(client.get("/ui/chat").text)
        for path, form in (
            ("/ui/chat", {"model": "tiny", "message": "hi"}),
            ("/ui/keys", {"name": "x"}),
            ("/ui/keys/joe/revoke", {}),
            ("/ui/signout", {}),
        ):
            assert client.post(path, data={**form, "csrf_token": "nope"}).status_code == 403, path
            assert client.post(path, data=form).status_code == 403, path
        r = client.post("/ui/chat", data={"model": "tiny", "message": "hi"}, headers={"X-CSRF-Token": token})
        assert r.status_code == 200 and "Hello from the fake engine." in r.text
        # another session's token is no good here
        with console_client(home) as other:
            sign_in(other, secrets["admin"])
            theirs = csrf_of(other.get("/ui/chat").text)
        assert (
            client.post("/ui/chat", data={"model": "tiny", "message": "hi", "csrf_token": theirs}).status_code
            == 403
        )
    with KeyStore.open(KennelHome(home)) as keys:
        assert {k.name for k in keys.list()} == {"boss", "joe"}  # nothing was created or revoked


def test_a_user_key_sees_status_and_chat_but_not_the_admin_pages(tmp_path: Path) -> None:
    home = tmp_path / "home"
    secrets = _keys(home)
    with console_client(home) as client:
        sign_in(client, secrets["user"])
        overview = client.get("/ui/")
        assert overview.status_code == 200 and 'href="/ui/keys"' not in overview.text
        token = csrf_of(client.get("/ui/chat").text)
        assert (
            client.post("/ui/chat", data={"model": "tiny", "message": "hi", "csrf_token": token}).status_code
            == 200
        )
        assert client.get("/ui/keys").status_code == 403
        r = client.post("/ui/keys", data={"name": "mine", "role": "admin", "csrf_token": token})
        assert r.status_code == 403 and "for administrators" in r.text
        assert client.post("/ui/keys/boss/revoke", data={"csrf_token": token}).status_code == 403
    with KeyStore.open(KennelHome(home)) as keys:
        assert [k.name for k in keys.list()] == ["boss", "joe"]


def test_revoking_a_key_ends_its_sessions(tmp_path: Path) -> None:
    home = tmp_path / "home"
    secrets = _keys(home)
    with console_client(home) as client:
        sign_in(client, secrets["user"])
        assert client.get("/ui/", follow_redirects=False).status_code == 200
        with KeyStore.open(KennelHome(home)) as keys:
            keys.revoke("joe")
        r = client.get("/ui/", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/signin")


def test_sessions_expire(tmp_path: Path) -> None:
    home = tmp_path / "home"
    secrets = _keys(home)
    with console_client(home) as client:
        sign_in(client, secrets["admin"])
        store = client.app.state.console.sessions  # type: ignore[attr-defined]
        session = store.get(client.cookies[SESSION_COOKIE])
        assert session is not None and session.expires - store.now() > 11 * 3600
        session.expires = store.now() - 1
        assert client.get("/ui/", follow_redirects=False).status_code == 303
        assert store.get(session.id) is None


def test_the_cookie_is_secure_over_https(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _keys(home)
    with console_client(home, base_url=BASE.replace("http://", "https://")) as client:
        flags = _cookie_header(client.get("/ui/signin")).lower()
        assert "secure" in flags and "httponly" in flags


def test_without_keys_on_loopback_the_console_is_open(tmp_path: Path) -> None:
    with console_client(tmp_path / "home") as client:
        r = client.get("/ui/")
        assert r.status_code == 200 and "Sign out" not in r.text  # nobody to sign out
        assert client.get("/ui/keys").status_code == 200  # the local user is an admin
        token = csrf_of(client.get("/ui/chat").text)
        assert (
            client.post("/ui/chat", data={"model": "tiny", "message": "hi"}).status_code == 403
        )  # CSRF still
        r = client.post("/ui/keys", data={"name": "first", "role": "admin", "csrf_token": token})
        assert r.status_code == 200 and "Created the key first" in r.text
        # now there is a key: the console asks for it like the API does
        assert client.get("/ui/", follow_redirects=False).status_code == 303


def test_a_keyless_server_on_a_network_keeps_its_console_shut(tmp_path: Path) -> None:
    with console_client(tmp_path / "home", host="0.0.0.0", insecure=True) as client:
        r = client.get("/ui/", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/signin")


def test_next_never_leaves_the_console(tmp_path: Path) -> None:
    home = tmp_path / "home"
    secrets = _keys(home)
    with console_client(home) as client:
        token = csrf_of(client.get("/ui/signin").text)
        for target in ("//evil.example/", "https://evil.example/", "/v1/models", "/ui\\@evil"):
            form = {"key": secrets["user"], "csrf_token": token, "next": target}
            r = client.post("/ui/signin", data=form, follow_redirects=False)
            assert r.headers["location"] == "/ui/", target
            token = csrf_of(client.get("/ui/chat").text)


def test_pages_carry_their_security_headers(tmp_path: Path) -> None:
    with console_client(tmp_path / "home") as client:
        r = client.get("/ui/")
        assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store"
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        static = client.get("/ui/static/console.js")
        assert static.status_code == 200 and "EventSource" not in static.text  # fetch + ReadableStream


def test_the_first_key_made_in_the_open_console_is_an_admin_by_default(tmp_path: Path) -> None:
    """Once a key exists the console asks for one: a first key made as a user would lock its maker
    out of the admin pages, so the form offers admin first, and user once an admin exists."""

    with console_client(tmp_path / "home") as client:
        page = client.get("/ui/keys").text
        assert 'value="admin" selected' in page and "This is the first key" in page
    with KeyStore.open(KennelHome(tmp_path / "home")) as keys:
        secret = keys.create("boss", role="admin")[1]
    with console_client(tmp_path / "home") as client:
        sign_in(client, secret)
        page = client.get("/ui/keys").text
        assert 'value="user" selected' in page and "This is the first key" not in page
