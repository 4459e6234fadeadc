"""What a new user and an attacker found (issue 15), each pinned by a test: oversize bodies, made-up
model names in metrics, readiness, client mistakes that were 500s, the request log of refused
requests, keys on /metrics and /kennel/ps, half-sent requests, system prompts."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

from kennel.engines.base import Delta, LoadPlan, Memory, Message, Sampling
from kennel.server.keys import KeyStore
from kennel.server.pool import ModelSpec
from kennel.settings import KennelHome
from kennel.store.profile import Profile
from tests.server.fakes import FakeEngineBase
from tests.server.serverkit import running_server

pytestmark = pytest.mark.timeout(120)


class Echo(FakeEngineBase):
    """Answers with what it was sent: the system prompt it got, then the last message."""

    seen: ClassVar[list[list[Message]]] = []

    async def _say(self, text: str) -> AsyncIterator[Delta]:
        await asyncio.sleep(0)
        yield Delta(text)
        yield Delta(finish_reason="stop", prompt_tokens=1, completion_tokens=1)

    def chat(self, messages: Sequence[Message], sampling: Sampling) -> AsyncIterator[Delta]:
        Echo.seen.append(list(messages))
        return self._say(messages[-1].content or "")

    def complete(self, prompt: str, sampling: Sampling) -> AsyncIterator[Delta]:
        return self._say(prompt)


def _spec(
    name: str, *, system: str | None = None, policy: str = "prepend", pinned: bool = False
) -> ModelSpec:
    profile = (
        Profile(base=("0" * 64,), base_file="x.gguf", system=system, system_policy=policy) if system else None
    )  # type: ignore[arg-type]
    return ModelSpec(
        name=name,
        plan=LoadPlan(model=Path("/none.gguf"), context=256),
        memory=Memory(ram=1),
        profile=profile,
        pinned=pinned,
        n_vocab=500,
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    specs = [
        _spec("m"),
        _spec("desk", system="You are the clinic desk."),
        _spec("strict", system="Rules.", policy="forbid"),
        _spec("open", system="Be brief.", policy="replace"),
    ]
    with running_server(
        specs,
        KennelHome(tmp_path / "h"),
        engine_factory=Echo,
        budget=Memory(ram=1 << 30),
        guard="off",
        max_body_mib=1,
        body_timeout=1.0,
    ) as url:
        yield url


def _chat(url: str, content: str, model: str = "m", **extra: object) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=30)


def test_an_oversize_body_is_refused_before_it_is_read(server: str) -> None:
    r = _chat(server, "x" * (1 << 20))
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert "--max-body" in r.json()["error"]["message"]
    t0 = time.monotonic()
    assert httpx.get(server + "/healthz").status_code == 200 and time.monotonic() - t0 < 5
    # within the body cap but far over the model's context: refused by its length, before tokenizing
    r = _chat(server, "word " * 20_000)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert "characters" in r.json()["error"]["message"]


def test_a_body_sent_too_slowly_gets_408(server: str) -> None:
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{")
        s.settimeout(10)
        reply = s.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 408") and "request_timeout" in reply


def test_half_sent_headers_are_closed(server: str) -> None:
    from kennel.server.connections import GuardedHttp

    GuardedHttp.header_timeout = 0.5  # the server's default is 10 s
    try:
        host, port = server.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the blank line never comes
            s.settimeout(10)
            assert s.recv(4096) == b""  # closed by the server
    finally:
        GuardedHttp.header_timeout = 10.0


def test_only_served_models_become_metric_labels(server: str) -> None:
    for i in range(20):
        assert (
            httpx.post(server + "/v1/embeddings", json={"model": f"made-up-{i}", "input": "x"}).status_code
            == 404
        )
        assert _chat(server, "hi", model=f"invented-{i}").status_code == 404
    text = httpx.get(server + "/metrics").text
    assert "made-up" not in text and "invented" not in text
    assert re.search(r'kennel_requests_total\{endpoint="embeddings",model="unknown",status="404"\} 20', text)


def test_client_mistakes_are_400_not_500(server: str) -> None:
    raw = '{"model": "m", "messages": [{"role": "user", "content": "\\ud800x"}]}'
    r = httpx.post(server + "/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "unpaired surrogate" in r.json()["error"]["message"]
    for bad in ("-1", "500", "100000"):
        r = _chat(server, "hi", logit_bias={bad: 5})
        assert r.status_code == 400 and f"token id {bad}" in r.json()["error"]["message"]
    assert _chat(server, "hi", logit_bias={"499": 5}).status_code == 200
    r = httpx.post(
        server + "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] is None


def test_a_wrong_path_or_method_has_a_stable_code_too(server: str) -> None:
    wrong = httpx.get(server + "/v1/chat/completions")
    assert wrong.status_code == 405 and wrong.json()["error"] == {
        "message": "Method Not Allowed",
        "type": "invalid_request_error",
        "param": None,
        "code": "method_not_allowed",
    }
    nowhere = httpx.post(server + "/v1/chat/complete", json={})
    assert nowhere.status_code == 404 and nowhere.json()["error"]["code"] == "unknown_path"
    said = httpx.get(server + "/v1/messages")  # Anthropic's path: Anthropic's envelope
    assert said.status_code == 405 and said.json()["type"] == "error"


def test_readiness_is_about_the_server_not_the_first_model(server: str) -> None:
    r = httpx.get(server + "/readyz")
    assert r.status_code == 200 and r.json() == {"status": "ready"}  # nothing loaded yet, nothing pinned


def test_system_prompt_policies(server: str) -> None:
    Echo.seen.clear()
    two = [{"role": "system", "content": "Answer in Vietnamese."}, {"role": "user", "content": "hi"}]
    assert (
        httpx.post(server + "/v1/chat/completions", json={"model": "desk", "messages": two}).status_code
        == 200
    )
    assert Echo.seen[-1][0] == Message("system", "You are the clinic desk.\n\nAnswer in Vietnamese.")
    assert _chat(server, "hi", model="desk").status_code == 200
    assert Echo.seen[-1][0] == Message("system", "You are the clinic desk.")
    assert (
        httpx.post(server + "/v1/chat/completions", json={"model": "open", "messages": two}).status_code
        == 200
    )
    assert Echo.seen[-1][0] == Message("system", "Answer in Vietnamese.")
    r = httpx.post(server + "/v1/chat/completions", json={"model": "strict", "messages": two})
    assert r.status_code == 400 and "keeps its own system prompt" in r.json()["error"]["message"]


def test_every_request_is_logged_with_its_outcome(server: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kennel.requests")
    httpx.post(
        server + "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]}
    )
    httpx.post(server + "/v1/embeddings", json={"model": "m", "input": "x"})  # a chat model
    httpx.post(server + "/v1/embeddings", json={"model": "nope", "input": "x"})
    httpx.post(server + "/v1/chat/completions", content=b"{")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.getMessage().startswith("{")]
    assert [(d["endpoint"], d["status"]) for d in lines] == [
        ("chat", 200),
        ("embeddings", 400),
        ("embeddings", 404),
        ("chat", 400),  # a body that is not JSON: refused before the route, logged by the front
    ]
    assert all("x" not in json.dumps(d) for d in lines)  # metadata only, never the prompt


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    home = KennelHome(tmp_path / "keyed")
    with KeyStore.open(home) as keys:
        _, everything = keys.create("ops")
        _, one_model = keys.create("kiosk", models=["m"])
    with running_server(
        [_spec("m"), _spec("secret-model")],
        home,
        engine_factory=Echo,
        budget=Memory(ram=1 << 30),
        guard="off",
    ) as url:
        yield url, {"ops": everything, "kiosk": one_model}


def test_keys_guard_metrics_and_ps_and_failures_are_logged(
    keyed: tuple[str, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    url, secrets = keyed
    caplog.set_level(logging.INFO, logger="kennel.requests")

    def get(path: str, key: str | None = None) -> httpx.Response:
        return httpx.get(url + path, headers={"Authorization": f"Bearer {key}"} if key else {})

    assert get("/metrics").status_code == 401
    assert get("/metrics", secrets["ops"]).status_code == 200
    assert get("/readyz").json() == {"status": "ready"}  # says nothing else, to anyone
    assert [m["model"] for m in get("/kennel/ps", secrets["kiosk"]).json()["models"]] == ["m"]
    assert {m["model"] for m in get("/kennel/ps", secrets["ops"]).json()["models"]} == {"m", "secret-model"}
    assert (
        httpx.post(
            url + "/v1/chat/completions",
            headers={"Authorization": "Bearer kn-guess"},
            json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
        ).status_code
        == 401
    )
    # the key without "Bearer": said so, not "missing"
    bare = httpx.get(url + "/kennel/ps", headers={"Authorization": secrets["ops"]})
    assert bare.status_code == 401 and "must be 'Bearer' and the key" in bare.json()["error"]["message"]
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.getMessage().startswith("{")]
    guess = [d for d in lines if d.get("auth") == "invalid"]
    assert guess and guess[0]["status"] == 401 and guess[0]["endpoint"] == "chat"
    assert [d["auth"] for d in lines if d.get("endpoint") == "/kennel/ps" and d["status"] == 401] == [
        "malformed"
    ]
    assert any(d["endpoint"] == "/metrics" for d in lines) is False  # not an API path: scrapes are not logged


def test_metrics_can_be_public(tmp_path: Path) -> None:
    home = KennelHome(tmp_path / "pub")
    with KeyStore.open(home) as keys:
        keys.create("ops")
    with running_server(
        [_spec("m")], home, engine_factory=Echo, budget=Memory(ram=1 << 30), metrics_public=True
    ) as url:
        assert httpx.get(url + "/metrics").status_code == 200
