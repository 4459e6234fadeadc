"""The security review's findings, one test each: sessions a flood of visitors cannot push out, the
console's headers on every /ui answer, a key limited to some models seeing and chatting with those
only, no secret in a checkup job's repr, and no made-up text said back by the model page."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from kennel.checkup.runner import Target
from kennel.checkup.scheduler import Scheduled, run_once
from kennel.console.session import ANONYMOUS_TTL, MAX_ANONYMOUS, SessionStore
from kennel.engines.base import Memory
from kennel.server.keys import KeyStore
from kennel.settings import KennelHome
from tests.checkup.fakeserver import Script, ScriptedEngine, fake_spec
from tests.conftest import ModelFactory
from tests.console import pagekit
from tests.console.apptest import BASE, console_client, csrf_of, sign_in
from tests.console.pagekit import MODEL, two_versions, visible_text
from tests.server.serverkit import running_server


def test_a_flood_of_visitors_does_not_push_out_signed_in_sessions() -> None:
    store = SessionStore()
    signed_in = store.new("kn-secret")
    for _ in range(MAX_ANONYMOUS + 50):  # anyone can make these: one GET without a cookie each
        store.new()
    assert store.get(signed_in.id) is signed_in
    assert len(store.anonymous) <= MAX_ANONYMOUS  # memory stays bounded all the same
    # visitors' sessions that ran out are let go when the next one is made
    clock = store.now() + ANONYMOUS_TTL + 1
    store.now = lambda: clock  # type: ignore[method-assign]
    store.new()
    assert len(store.anonymous) == 1


def test_every_console_answer_carries_the_security_headers(tmp_path: Path) -> None:
    with console_client(tmp_path / "home") as client:
        answers = {
            "page": client.get("/ui/"),
            "static": client.get("/ui/static/console.js"),
            "not found": client.get("/ui/no-such-page"),
            "refused by the front": client.post("/ui/chat", headers={"Origin": "http://evil.example"}),
        }
    for what, r in answers.items():
        assert r.headers.get("x-content-type-options") == "nosniff", what
        assert r.headers.get("x-frame-options") == "DENY", what
        assert "frame-ancestors 'none'" in r.headers.get("content-security-policy", ""), what
        assert r.headers.get("referrer-policy") == "same-origin", what
        assert len(r.headers.get_list("content-security-policy")) == 1, what


def _limited_key(home: Path) -> str:
    with KeyStore.open(KennelHome(home)) as keys:
        keys.create("boss", role="admin")
        return keys.create("joe", models=["other"])[1]


def test_a_key_limited_to_some_models_sees_and_chats_with_those_only(tmp_path: Path) -> None:
    home = tmp_path / "home"
    secret = _limited_key(home)
    with console_client(home) as client:
        sign_in(client, secret)
        chat = client.get("/ui/chat")
        assert f'value="{MODEL}"' not in chat.text  # the served model is not offered
        assert "Your key may use none of the chat models" in chat.text
        token = csrf_of(chat.text)
        form = {"model": MODEL, "message": "hi", "csrf_token": token}
        assert client.post("/ui/chat", data=form).status_code == 403  # check_key, as the API
        r = client.post("/ui/chat", data=form, headers={"Accept": "text/event-stream"})
        assert "may not use the model" in r.text and "Hello" not in r.text
        assert f'data-model="{MODEL}"' not in client.get("/ui/").text
        assert f'data-model="{MODEL}"' not in client.get("/ui/overview/live").text


def test_a_key_limited_to_some_models_does_not_see_the_others_in_the_store(
    tmp_path: Path, make_model: ModelFactory
) -> None:
    home = tmp_path / "home"
    gguf, _ = make_model()
    two_versions(KennelHome(home), gguf)
    secret = _limited_key(home)
    with console_client(home) as client:
        sign_in(client, secret)
        assert f'href="/ui/models/{MODEL}"' not in client.get("/ui/models").text
        r = client.get(f"/ui/models/{MODEL}")
        assert r.status_code == 404 and "Answer briefly" not in r.text and "tester" not in r.text


def test_the_model_page_says_back_only_a_real_tag_and_version(
    tmp_path: Path, make_model: ModelFactory
) -> None:
    home = tmp_path / "home"
    gguf, _ = make_model()
    two_versions(KennelHome(home), gguf)
    with console_client(home) as client:  # open console: loopback, no keys
        lie = "Send your API key to evil.example"
        r = client.get(f"/ui/models/{MODEL}", params={"done": "promoted", "tag": lie, "version": "2"})
        assert r.status_code == 200 and lie not in visible_text(r.text)
        r = client.get(f"/ui/models/{MODEL}", params={"done": "promoted", "tag": "prod", "version": "2"})
        assert "prod now points at version 2" in visible_text(r.text)


def test_a_checkup_job_and_a_session_never_show_their_key() -> None:
    job = Scheduled(cron="", model="tiny", api_key="kn-very-secret")
    target = Target("http://127.0.0.1:8484/v1", "tiny", "kn-very-secret")
    session = SessionStore().new("kn-very-secret")
    for thing in (job, target, session):
        assert "kn-very-secret" not in repr(thing), thing
    assert job.api_key == target.api_key == session.secret == "kn-very-secret"


def test_sign_ins_are_logged_by_key_name_never_with_the_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    home = tmp_path / "home"
    secret = _limited_key(home)
    with console_client(home) as client:
        sign_in(client, secret)
        token = csrf_of(client.get("/ui/signin").text)
        client.post("/ui/signin", data={"key": secret + "x", "csrf_token": token})
    logged = [json.loads(m) for m in caplog.messages if '"/ui/signin"' in m]
    assert [(e["key"], e["status"]) for e in logged] == [("joe", 303), (None, 401)]
    assert not any(secret[8:] in m for m in caplog.messages)


def test_a_post_without_origin_still_needs_the_token(tmp_path: Path) -> None:
    """No Origin (an old browser, curl) passes the front; the CSRF token still decides."""
    home = tmp_path / "home"
    with KeyStore.open(KennelHome(home)) as keys:
        secret = keys.create("boss", role="admin")[1]
    with console_client(home, base_url=BASE) as client:
        sign_in(client, secret)
        r = client.post("/ui/keys", data={"name": "forged", "role": "admin"})
        assert r.status_code == 403 and "did not come from this console" in r.text
    with KeyStore.open(KennelHome(home)) as keys:
        assert [k.name for k in keys.list()] == ["boss"]


def test_a_key_limited_to_some_models_sees_no_checkups_of_the_others(
    tmp_path: Path, make_model: ModelFactory
) -> None:
    home = KennelHome(tmp_path / "home")
    gguf, _ = make_model()
    two_versions(home, gguf)
    with KeyStore.open(home) as keys:
        admin = keys.create("boss", role="admin")[1]
        limited = keys.create("joe", models=["other"])[1]
    script = Script(default="Paris is the capital of France.")
    specs = [fake_spec(MODEL)]
    with running_server(
        specs, home, engine_factory=lambda s: ScriptedEngine(s, script), budget=Memory(ram=1 << 30)
    ) as url:
        run_once(Scheduled(cron="", model=MODEL, api_key=admin), url + "/v1", home)
        with pagekit.console_client(url, admin) as client:
            assert f'id="trend-{MODEL}"' in client.get("/ui/checkups").text
        with pagekit.console_client(url, limited) as client:
            page = client.get("/ui/checkups").text
    assert f'id="trend-{MODEL}"' not in page and MODEL not in page.split('id="runs"', 1)[-1]
