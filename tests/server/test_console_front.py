"""The front and the web console: the console's own pages post with an Origin equal to the
server's (allowed there), a cross-site form post is refused before any route runs, and the API
keeps refusing every Origin outside cors_origins."""

from __future__ import annotations

from pathlib import Path

from kennel.server.keys import KeyStore
from kennel.settings import KennelHome
from tests.console.apptest import BASE, console_client, csrf_of, sign_in


def test_same_origin_console_posts_pass_and_cross_site_ones_are_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with KeyStore.open(KennelHome(home)) as keys:
        _, secret = keys.create("boss", role="admin")
    with console_client(home) as client:
        sign_in(client, secret)
        token = csrf_of(client.get("/ui/chat").text)
        form = {"name": "made", "role": "user", "csrf_token": token}
        # a forged form on another site, sent with the victim's cookie and even a right token
        for origin in ("http://evil.example", "http://127.0.0.1:9999", "https://127.0.0.1:8484", "null"):
            r = client.post("/ui/keys", data={**form, "name": "forged"}, headers={"Origin": origin})
            assert r.status_code == 403 and "only accepts requests from its own pages" in r.text, origin
            # cors_origins is the API's; the console is to be opened at the server's own address
            assert "cors_origins" not in r.text and "http://127.0.0.1:8484/ui" in r.text, origin
        r = client.post("/ui/keys", data=form, headers={"Origin": BASE})
        assert r.status_code == 200 and "Created the key made" in r.text
        # the console's own pages on a rebound DNS name: the Host check of a loopback bind holds
        r = client.get("/ui/", headers={"Host": "evil.example:8484"})
        assert r.status_code == 403 and "loopback names" in r.text
        r = client.post(
            "/ui/keys",
            data={**form, "name": "rebound"},
            headers={"Host": "evil.example:8484", "Origin": "http://evil.example:8484"},
        )
        assert r.status_code == 403
        # the API does not take the same-origin exception: its callers are not the console's pages
        r = client.post(
            "/v1/chat/completions",
            json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Origin": BASE, "Authorization": f"Bearer {secret}"},
        )
        assert r.status_code == 403 and "cors_origins" in r.text
    with KeyStore.open(KennelHome(home)) as keys:
        assert {k.name for k in keys.list()} == {"boss", "made"}


def test_cors_origins_still_apply_to_the_console(tmp_path: Path) -> None:
    with console_client(tmp_path / "home", cors_origins=["http://app.example"]) as client:
        assert client.get("/ui/", headers={"Origin": "http://app.example"}).status_code == 200
        assert client.get("/ui/", headers={"Origin": "http://other.example"}).status_code == 403


def test_console_forms_have_the_body_cap(tmp_path: Path) -> None:
    with console_client(tmp_path / "home", max_body_mib=1) as client:
        token = csrf_of(client.get("/ui/chat").text)
        big = {"csrf_token": token, "model": "tiny", "message": "x" * (2 << 20)}
        assert client.post("/ui/chat", data=big).status_code == 413
        ok = {"csrf_token": token, "model": "tiny", "message": "hi"}
        assert client.post("/ui/chat", data=ok).status_code == 200
