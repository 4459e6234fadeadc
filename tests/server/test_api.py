"""The OpenAI-compatible API as clients meet it: the official `openai` client against a real
server on loopback, serving generated tiny GGUF models through llama.cpp."""

from __future__ import annotations

import json
import random
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from kennel.server.keys import KeyStore
from kennel.settings import KennelHome
from tests.server.serverkit import running_server, spec_for

pytestmark = [pytest.mark.llama, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def server(make_model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:  # type: ignore[no-untyped-def]
    home = KennelHome(tmp_path_factory.mktemp("serve-home"))
    path, _ = make_model(n_vocab=512)
    specs = [
        spec_for(path, home, name="tiny", ctx=256, flash_attn=False),
        spec_for(path, home, name="embed", ctx=256, embedding=True),
    ]
    with running_server(specs, home, max_queue=8) as url:
        yield url


@pytest.fixture
def client(server: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0) as c:
        yield c


def test_chat_streaming_and_not(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=8, seed=3
    )
    assert r.choices[0].finish_reason in ("length", "stop") and r.usage is not None
    assert r.usage.completion_tokens <= 8 and r.usage.prompt_tokens > 0
    text = r.choices[0].message.content
    stream = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=8,
        seed=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            pieces.append(c.delta.content or "")
            finish = c.finish_reason or finish
    assert "".join(pieces) == text  # same seed, same answer, streamed or not
    assert (
        usage is not None
        and usage.completion_tokens == r.usage.completion_tokens
        and finish == r.choices[0].finish_reason
    )


def test_completions_and_stop(client: openai.OpenAI) -> None:
    r = client.completions.create(model="tiny", prompt="Once upon", max_tokens=6, temperature=0)
    assert r.usage is not None and r.usage.completion_tokens <= 6
    text = r.choices[0].text
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model="tiny", prompt="Once upon", max_tokens=6, temperature=0, stream=True
        )
        if c.choices
    )
    assert streamed == text
    # a whole vocabulary word after the start (stray byte tokens come out as U+FFFD and match nothing)
    words = [m.group() for m in re.finditer(r" t\d+", text) if m.start() > 0]
    assert words, f"the model's answer has no word to stop at: {text!r}"
    cut = client.completions.create(
        model="tiny", prompt="Once upon", max_tokens=6, temperature=0, stop=[words[0]]
    )
    assert cut.choices[0].text == text[: text.index(words[0])] and cut.choices[0].finish_reason == "stop"


def test_json_schema_output(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"enum": ["yes", "no"]}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    r = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "ok?"}],
        max_tokens=60,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
    )
    doc = json.loads(r.choices[0].message.content or "")
    assert doc["answer"] in ("yes", "no")


def test_embeddings_and_models(client: openai.OpenAI) -> None:
    e = client.embeddings.create(model="embed", input=["hello", "world"])
    assert len(e.data) == 2 and len(e.data[0].embedding) == 64 and e.usage.prompt_tokens > 0
    ids = {m.id for m in client.models.list()}
    assert ids == {"tiny", "embed"}
    with pytest.raises(openai.BadRequestError, match="does not do embeddings"):
        client.embeddings.create(model="tiny", input="x")


def test_errors_are_openai_envelopes(client: openai.OpenAI, server: str) -> None:
    with pytest.raises(openai.NotFoundError, match="not served"):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="context") as exc:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "word " * 400}])
    assert "tokens" in str(exc.value)
    with pytest.raises(openai.BadRequestError, match="schema"):
        client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "x"}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "a", "schema": {"type": "object", "$ref": "#/nowhere"}},
            },
        )
    r = httpx.post(server + "/v1/chat/completions", json={"model": "tiny", "messages": []})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_readyz_metrics_and_ps(server: str, client: openai.OpenAI) -> None:
    client.completions.create(model="tiny", prompt="a", max_tokens=2)
    assert httpx.get(server + "/readyz").status_code == 200  # the first model is loaded and warm
    text = httpx.get(server + "/metrics").text
    for name in (
        "kennel_requests_total",
        "kennel_time_to_first_token_seconds_bucket",
        "kennel_inter_token_latency_seconds",
        "kennel_request_duration_seconds",
        "kennel_prompt_tokens_total",
        "kennel_generation_tokens_total",
        "kennel_requests_waiting",
        "kennel_requests_running",
        "kennel_model_loaded",
        "kennel_model_memory_bytes",
    ):
        assert name in text, name
    assert 'kennel_requests_total{endpoint="completions",model="tiny",status="200"}' in text
    # the engine's own metrics follow, labelled with the model, and the whole text still parses
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(text)}
    engine = [f for name, f in families.items() if name.startswith("llamacpp:")]
    labelled = {s.labels.get("model") for f in engine for s in f.samples}
    assert "tiny" in labelled and labelled <= {"tiny", "embed"}  # the loaded models, nothing else
    predicted = families["llamacpp:tokens_predicted"].samples
    assert any(s.labels["model"] == "tiny" and s.value > 0 for s in predicted)
    ps = httpx.get(server + "/kennel/ps").json()
    tiny = next(m for m in ps["models"] if m["model"] == "tiny")
    assert tiny["state"] == "ready" and tiny["ram_bytes"] > 0 and tiny["running"] == 0


def test_concurrent_streams_never_corrupt_each_other(client: openai.OpenAI) -> None:
    """Eight clients at once get exactly what each would get alone (same seed, same answer)."""
    prompts = [f"story {i}" for i in range(8)]

    def ask(p: str) -> str:
        s = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": p}], max_tokens=12, seed=7, stream=True
        )
        return "".join(c.choices[0].delta.content or "" for c in s if c.choices)

    alone = {p: ask(p) for p in prompts[:3]}
    results: dict[str, str] = {}
    threads = [threading.Thread(target=lambda p=p: results.__setitem__(p, ask(p))) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 8 and all(results[p] == alone[p] for p in alone)


def test_client_that_disconnects_frees_its_place(server: str, client: openai.OpenAI) -> None:
    with httpx.stream(
        "POST",
        server + "/v1/chat/completions",
        timeout=30,
        json={
            "model": "tiny",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 200,
            "stream": True,
        },
    ) as r:
        next(r.iter_lines())
    r2 = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "again"}], max_tokens=2
    )
    assert r2.choices[0].message.content is not None
    ps = httpx.get(server + "/kennel/ps").json()
    assert all(m["running"] == 0 and m["waiting"] == 0 for m in ps["models"])


def test_hundreds_of_malformed_requests_then_a_good_one(server: str, client: openai.OpenAI) -> None:
    rng = random.Random(0)
    good = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    bodies: list[bytes] = [
        b"",
        b"{",
        b"null",
        b"[]",
        b"\xff\xfe\x00",
        b'{"model": 5}',
        b'{"model": "tiny", "messages": "x"}',
    ]
    mutations = [
        ("max_tokens", -5),
        ("max_tokens", 10**9),
        ("max_tokens", "many"),
        ("temperature", 9),
        ("messages", []),
        ("messages", [{"role": "wizard", "content": "x"}]),
        ("messages", [{"content": "x"}]),
        ("model", ""),
        ("stop", [str(i) for i in range(40)]),
        ("logit_bias", {"abc": 1}),
        ("n", 3),
        ("top_p", -1),
        ("response_format", {"type": "json_schema"}),
        ("stream", "yes"),
        ("seed", "x"),
    ]
    for _ in range(300):
        if rng.random() < 0.3:
            body = (
                rng.choice(bodies)
                if rng.random() < 0.5
                else bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
            )
        else:
            k, v = rng.choice(mutations)
            body = json.dumps({**good, k: v}).encode()
        path = rng.choice(["/v1/chat/completions", "/v1/completions", "/v1/embeddings"])
        r = httpx.post(server + path, content=body, headers={"Content-Type": "application/json"}, timeout=30)
        assert 400 <= r.status_code < 500, (r.status_code, body, r.text)
        assert set(r.json()["error"]) >= {"message", "type"}
    r = client.chat.completions.create(**good)  # type: ignore[call-overload]
    assert r.choices[0].message.content is not None


@pytest.fixture
def keyed_server(make_model, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:  # type: ignore[no-untyped-def]
    home = KennelHome(tmp_path / "keyed")
    path, _ = make_model(n_vocab=512)
    with KeyStore.open(home) as ks:
        secrets = {
            "all": ks.create("all")[1],
            "other": ks.create("other", models=["something-else"])[1],
            "slow": ks.create("slow", rpm=1)[1],
            "gone": ks.create("gone")[1],
        }
        ks.revoke("gone")
    with running_server([spec_for(path, home, name="tiny", ctx=128)], home) as url:
        yield url, secrets


def test_api_keys(keyed_server: tuple[str, dict[str, str]]) -> None:
    url, secrets = keyed_server
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}

    def post(key: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=30)

    assert post(None).status_code == 401
    assert post("kn-wrong").status_code == 401
    assert post(secrets["gone"]).status_code == 401
    assert post(secrets["other"]).status_code == 403
    assert post(secrets["all"]).status_code == 200
    assert post(secrets["slow"]).status_code == 200
    limited = post(secrets["slow"])
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    with openai.OpenAI(base_url=url + "/v1", api_key=secrets["all"], max_retries=0) as c:
        assert [m.id for m in c.models.list()] == ["tiny"]


def test_request_timeout_cuts_a_long_generation(make_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    home = KennelHome(tmp_path / "timeout")
    path, _ = make_model(n_vocab=512)
    with (
        running_server([spec_for(path, home, name="tiny", ctx=512)], home, request_timeout=0.005) as url,
        openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as c,
    ):
        r = c.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "go"}], max_tokens=400
        )
        assert (
            r.choices[0].finish_reason == "length" and r.usage is not None and r.usage.completion_tokens < 400
        )
        again = c.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "go"}], max_tokens=2
        )
        assert again.choices[0].message.content is not None  # the model was freed
