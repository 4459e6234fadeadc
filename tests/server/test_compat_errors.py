"""The Ollama, Anthropic and Responses layers under API keys and failures, each answering in its
own clients' error shape: wrong keys (Anthropic's ``x-api-key`` and Ollama's bearer accepted),
the model store kept to unrestricted keys, a body over the limit, and an engine failing
mid-stream. A fake engine: no llama.cpp, each test runs in well under a second."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import anthropic
import httpx
import ollama
import openai
import pytest

from kennel.engines.base import Delta, LoadPlan, Memory, Message, Sampling
from kennel.errors import EngineError
from kennel.server.keys import KeyStore
from kennel.server.pool import ModelSpec
from kennel.settings import KennelHome
from tests.cli.test_cli import kennel
from tests.server.fakes import FakeEngineBase
from tests.server.serverkit import running_server

pytestmark = pytest.mark.timeout(120)


class Failing(FakeEngineBase):
    """Says a word, then fails: the status line is gone by then."""

    async def _say(self) -> AsyncIterator[Delta]:
        yield Delta("word ", prompt_tokens=3)
        await asyncio.sleep(0)
        raise EngineError("The engine fell over.")

    def chat(self, messages: Sequence[Message], sampling: Sampling) -> AsyncIterator[Delta]:
        return self._say()

    def complete(self, prompt: str, sampling: Sampling) -> AsyncIterator[Delta]:
        return self._say()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    home = KennelHome(tmp_path_factory.mktemp("compat-keys"))
    with KeyStore.open(home) as ks:
        secrets = {"all": ks.create("all")[1], "some": ks.create("some", models=["m"])[1]}
    spec = ModelSpec(name="m", plan=LoadPlan(model=Path("/none.gguf"), context=256), memory=Memory(ram=1))
    with running_server(
        [spec], home, engine_factory=Failing, budget=Memory(ram=1 << 30), max_body_mib=1
    ) as url:
        yield url, secrets


HI = [{"role": "user", "content": "hi"}]


def test_a_wrong_key_in_each_apis_shape(
    keyed: tuple[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, secrets = keyed
    with anthropic.Anthropic(base_url=url, api_key="kn-wrong", max_retries=0) as a:
        with pytest.raises(anthropic.AuthenticationError) as info:
            a.messages.create(model="m", max_tokens=2, messages=HI)  # type: ignore[arg-type]
        assert info.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    with ollama.Client(host=url, headers={"Authorization": "Bearer kn-wrong"}) as o:
        with pytest.raises(ollama.ResponseError) as oinfo:
            o.list()
        assert oinfo.value.status_code == 401 and oinfo.value.error.startswith("Invalid API key.")
    with openai.OpenAI(base_url=url + "/v1", api_key="kn-wrong", max_retries=0) as c:
        with pytest.raises(openai.AuthenticationError) as einfo:
            c.responses.create(model="m", input="hi")
        assert einfo.value.code == "invalid_api_key"

    # the right key: as x-api-key (Anthropic's clients), as a bearer token (Ollama's, from OLLAMA_API_KEY)
    r = httpx.get(url + "/api/tags", headers={"x-api-key": secrets["some"]})
    assert r.status_code == 200 and [m["name"] for m in r.json()["models"]] == ["m"]
    monkeypatch.setenv("OLLAMA_API_KEY", secrets["all"])
    with ollama.Client(host=url) as o:
        assert [m.model for m in o.list().models] == ["m"]


STORE_CALLS = (
    ("POST", "/api/pull", {"model": "llama3.2:1b"}),
    ("DELETE", "/api/delete", {"model": "m"}),
    ("POST", "/api/copy", {"source": "m", "destination": "n"}),
)


def test_the_store_api_is_off_with_keys_unless_the_operator_turns_it_on(
    keyed: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, secrets = keyed
    for name in ("all", "some"):  # an ordinary key does not add or remove models for everyone
        for method, path, body in STORE_CALLS:
            r = httpx.request(method, url + path, json=body, headers={"x-api-key": secrets[name]})
            assert r.status_code == 403, path
            assert "does not let API clients change its model store" in r.json()["error"], path
    # store_api: true lets an admin key do it, and still not a user key, even one for every model
    home = KennelHome(tmp_path / "home")
    with KeyStore.open(home) as ks:
        on = {"all": ks.create("all")[1], "some": ks.create("some", models=["m"])[1]}
        on["boss"] = ks.create("boss", role="admin")[1]
    spec = ModelSpec(name="m", plan=LoadPlan(model=Path("/none.gguf"), context=256), memory=Memory(ram=1))
    with running_server(
        [spec], home, engine_factory=Failing, budget=Memory(ram=1 << 30), store_api=True
    ) as u:
        for user in ("all", "some"):
            for method, path, body in STORE_CALLS:
                r = httpx.request(
                    method, u + path, json=body, headers={"Authorization": f"Bearer {on[user]}"}
                )
                assert r.status_code == 403 and "is a user key" in r.json()["error"], path
        r = httpx.request(
            "DELETE", u + "/api/delete", json={"model": "gone"}, headers={"x-api-key": on["boss"]}
        )
        assert r.status_code == 404 and "No model 'gone' in the store" in r.json()["error"]


def test_web_pages_and_rebound_names_are_refused(keyed: tuple[str, dict[str, str]]) -> None:
    """A page's cross-site POST (no preflight for text/plain) and a page on a rebound DNS name
    never reach a route, on every API's paths."""
    url, secrets = keyed
    key = {"x-api-key": secrets["all"]}
    for path in ("/api/pull", "/v1/chat/completions", "/v1/messages"):
        page = {**key, "Origin": "http://evil.example", "Content-Type": "text/plain"}
        r = httpx.post(url + path, content=b'{"model": "m"}', headers=page)
        assert r.status_code == 403 and "web pages" in r.text, path
        r = httpx.post(url + path, json={"model": "m"}, headers={**key, "Host": "evil.example:8484"})
        assert r.status_code == 403 and "loopback names" in r.text, path
    assert httpx.get(url + "/api/tags", headers={**key, "Host": "localhost"}).status_code == 200


def test_a_body_over_the_limit(keyed: tuple[str, dict[str, str]]) -> None:
    url, secrets = keyed
    big = b'{"model": "m", "x": "' + b"a" * (2 << 20) + b'"}'
    key = {"Authorization": f"Bearer {secrets['all']}"}
    shapes = {
        "/api/chat": lambda j: set(j) == {"error"},
        "/v1/messages": lambda j: j["type"] == "error" and j["error"]["type"] == "request_too_large",
        "/v1/responses": lambda j: j["error"]["code"] == "request_too_large",
    }
    for path, shaped in shapes.items():
        r = httpx.post(url + path, content=big, headers=key)
        assert r.status_code == 413 and shaped(r.json()), (path, r.text)


def _failures(url: str, key: str, endpoint: str, model: str = "m", status: int = 500) -> float:
    text = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {key}"}).text
    found = re.search(
        rf'^kennel_requests_total\{{endpoint="{endpoint}",model="{model}",status="{status}"\}} (\S+)$',
        text,
        re.M,
    )
    return float(found.group(1)) if found else 0.0


def test_refusals_before_the_route_are_counted_under_its_endpoint(keyed: tuple[str, dict[str, str]]) -> None:
    """A wrong key, a model the key may not use, an unknown model, a store call with the store
    off: each shows in kennel_requests_total, a made-up model name as "unknown"."""
    url, secrets = keyed
    admin = secrets["all"]
    cases = (  # path, key, body, endpoint, model label, status
        ("/v1/chat/completions", "kn-wrong", {"model": "m"}, "chat", "m", 401),
        ("/api/chat", "kn-wrong", {"model": "m"}, "ollama_chat", "m", 401),
        (
            "/v1/messages",
            secrets["some"],
            {"model": "made-up", "max_tokens": 1, "messages": HI},
            "messages",
            "unknown",
            403,
        ),
        ("/v1/chat/completions", admin, {"model": "made-up", "messages": HI}, "chat", "unknown", 404),
        ("/api/pull", admin, {"model": "llama3.2:1b"}, "ollama_pull", "unknown", 403),
    )
    before = [_failures(url, admin, e, m, s) for _, _, _, e, m, s in cases]
    for path, key, body, *_ in cases:
        httpx.post(url + path, json=body, headers={"Authorization": f"Bearer {key}"})
    after = [_failures(url, admin, e, m, s) for _, _, _, e, m, s in cases]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1.0] * len(cases)


def test_a_failure_mid_stream_in_each_apis_shape(keyed: tuple[str, dict[str, str]]) -> None:
    url, secrets = keyed
    key = secrets["all"]
    before = {e: _failures(url, key, e) for e in ("messages", "ollama_chat", "responses")}
    with (
        anthropic.Anthropic(base_url=url, api_key=key, max_retries=0) as a,
        pytest.raises(anthropic.APIStatusError, match="fell over"),
    ):
        list(a.messages.create(model="m", max_tokens=5, messages=HI, stream=True))  # type: ignore[arg-type]
    with (
        ollama.Client(host=url, headers={"Authorization": f"Bearer {key}"}) as o,
        pytest.raises(ollama.ResponseError, match="fell over"),
    ):
        list(o.chat(model="m", messages=HI, stream=True))
    with openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0) as c:
        events = list(c.responses.create(model="m", input="hi", stream=True))
        assert events[-1].type == "error" and "fell over" in events[-1].message  # type: ignore[union-attr]
        assert events[-1].code == "engine_error"  # type: ignore[union-attr]
    assert {e: _failures(url, key, e) for e in before} == {e: n + 1 for e, n in before.items()}


def test_kennel_ps_says_what_a_keyed_server_answered(keyed: tuple[str, dict[str, str]]) -> None:
    url, secrets = keyed
    for key, hint in (("kn-wrong", "KENNEL_API_KEY was refused"), ("", "Set KENNEL_API_KEY")):
        r = kennel("ps", "--url", url, env={"KENNEL_API_KEY": key})
        said = " ".join(r.stderr.split())
        assert r.returncode == 2 and "answered HTTP 401: " in said and hint in said, r.stderr
        assert '{"error"' not in said  # the message, not the envelope
    ok = kennel("ps", "--url", url.removeprefix("http://"), "--json", env={"KENNEL_API_KEY": secrets["all"]})
    assert ok.returncode == 0 and json.loads(ok.stdout)["models"][0]["model"] == "m"
