"""The runner against a real kennel server on loopback (a scripted engine: known answers and
delays), against endpoints that are down or misbehave, and finding the model's store version."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kennel.checkup.runner import (
    Target,
    ask,
    endpoint_base,
    local_target,
    request_body,
    run_suite,
    store_model_version,
    url_target,
)
from kennel.checkup.suite import parse_suite
from kennel.errors import InvalidOptionError
from kennel.server.keys import KeyStore
from kennel.settings import KennelHome
from kennel.store.add import import_gguf
from tests.checkup.fakeserver import Script, scripted_server, suite_yaml
from tests.conftest import ModelFactory
from tests.server.serverkit import free_port
from tests.store.storekit import gguf, open_store, sha256

pytestmark = pytest.mark.timeout(120)

CAPITAL = (
    "{id: capital, prompt: 'What is the capital of France?', max_tokens: 32, seed: 1, "
    "assert: [{type: icontains, value: paris}, {type: max-latency-ms, value: 5000}]}"
)


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def server(script: Script, tmp_path: Path) -> Iterator[str]:
    with scripted_server(script, KennelHome(tmp_path / "server-home")) as url:
        yield url


def test_a_passing_prompt_is_measured(server: str, script: Script) -> None:
    script.default = "The capital of France is Paris."
    run = run_suite(parse_suite(suite_yaml(CAPITAL)), Target(server + "/v1", "fake"))
    (r,) = run.results
    assert r.passed and r.error is None and r.failed_assertions == ()
    resp = r.response
    assert resp.text == "The capital of France is Paris."
    assert resp.output_tokens == 6  # the server's usage count
    assert (
        resp.ttft_ms is not None
        and resp.latency_ms is not None
        and 0 < resp.ttft_ms <= resp.latency_ms < 5000
    )
    assert resp.tokens_per_s is not None and resp.tokens_per_s > 0
    assert (
        run.passed
        and run.info.model == "fake"
        and run.info.target == server + "/v1"
        and run.info.suite == "t"
    )
    sampling = script.requests[-1]
    assert (sampling.temperature, sampling.seed, sampling.max_tokens) == (0.0, 1, 32)


def test_wrong_answer_and_slow_answer_fail(server: str, script: Script) -> None:
    suite = parse_suite(suite_yaml(CAPITAL))
    target = Target(server + "/v1", "fake")
    script.default = "Lyon"
    (wrong,) = run_suite(suite, target).results
    assert not wrong.passed and wrong.failed_assertions == ("icontains 'paris'",) and wrong.error is None

    script.default, script.first_delay, script.delay = "Paris is the capital", 0.3, 0.1
    slow_suite = parse_suite(
        suite_yaml(
            "{id: slow, prompt: hi, assert: [{type: icontains, value: paris},"
            " {type: max-latency-ms, value: 200},"
            " {type: max-ttft-ms, value: 100}, {type: min-tokens-per-s, value: 50}]}"
        )
    )
    (slow,) = run_suite(slow_suite, target, warmup=False).results
    assert not slow.passed and slow.error is None
    assert [f.split(":")[0] for f in slow.failed_assertions] == [
        "max-latency-ms 200",
        "max-ttft-ms 100",
        "min-tokens-per-s 50",
    ]
    resp = slow.response
    assert resp.ttft_ms is not None and resp.latency_ms is not None and resp.tokens_per_s is not None
    assert resp.ttft_ms >= 300 and resp.latency_ms >= resp.ttft_ms + 300  # three more words, 0.1 s apart
    assert 0 < resp.tokens_per_s <= 3 / 0.3 + 0.5  # decode rate: (4 - 1) tokens after the first, >= 0.3 s


def test_threshold_lets_a_prompt_pass_with_a_failed_assertion(server: str) -> None:
    suite = parse_suite(
        suite_yaml(
            "{id: a, prompt: hi, assert: [{type: icontains, value: paris, weight: 3},"
            " {type: contains, value: Rome}]}",
            threshold=0.75,
        )
    )
    (r,) = run_suite(suite, Target(server + "/v1", "fake")).results
    assert r.passed and r.score.ratio == 0.75 and r.failed_assertions == ("contains 'Rome'",)


def test_http_errors_are_failed_prompts(server: str) -> None:
    suite = parse_suite(suite_yaml(CAPITAL, "{id: b, prompt: x}"))
    run = run_suite(suite, Target(server + "/v1", "nope"))
    assert [r.passed for r in run.results] == [False, False] and not run.passed
    for r in run.results:
        assert r.error is not None and r.error.startswith("HTTP 404: ") and "nope" in r.error
        assert r.response.output_tokens is None and r.response.ttft_ms is None


def test_api_keys_are_sent(script: Script, tmp_path: Path) -> None:
    home = KennelHome(tmp_path / "keyed")
    with KeyStore.open(home) as keys:
        _, secret = keys.create("checkup")
    suite = parse_suite(suite_yaml(CAPITAL))
    seen: list[str] = []
    with scripted_server(script, home) as url:
        # A refused key stops the run before anything is recorded: it is not the model's fault.
        with pytest.raises(InvalidOptionError, match=r"HTTP 401.*nothing was recorded"):
            run_suite(suite, Target(url + "/v1", "fake"), on_result=lambda i, r: seen.append(r.prompt_id))
        (allowed,) = run_suite(suite, Target(url + "/v1", "fake", api_key=secret)).results
        # Without the warm-up the refusal is the prompt's own error, as before.
        (denied,) = run_suite(suite, Target(url + "/v1", "fake"), warmup=False).results
    assert seen == [] and allowed.passed
    assert denied.error is not None and denied.error.startswith("HTTP 401")


def test_an_unreachable_endpoint_fails_every_prompt() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    suite = parse_suite(
        suite_yaml(CAPITAL, "{id: other, prompt: hi, assert: [{type: not-contains, value: x}]}")
    )
    seen: list[str] = []
    run = run_suite(suite, url_target(dead), timeout=5, on_result=lambda info, r: seen.append(r.prompt_id))
    assert seen == ["capital", "other"] and run.info.model == ""
    for r in run.results:
        assert not r.passed and r.error is not None and r.error.startswith(f"cannot connect to {dead}/v1")
        assert r.response.latency_ms is None and r.response.output_tokens is None  # no answer, no latency


def test_url_target_finds_the_one_model(script: Script, tmp_path: Path) -> None:
    with scripted_server(script, KennelHome(tmp_path / "one")) as url:
        assert url_target(url).model == "fake"
        assert url_target(url + "/v1/chat/completions", model="x", api_key="k") == Target(
            url + "/v1", "x", "k"
        )
    with (
        scripted_server(script, KennelHome(tmp_path / "two"), models=("a", "b")) as url,
        pytest.raises(InvalidOptionError, match="serves 2 models: a, b"),
    ):
        url_target(url)


def test_endpoint_urls_and_labels() -> None:
    assert endpoint_base("http://h:1") == endpoint_base("http://h:1/v1/") == "http://h:1/v1"
    assert endpoint_base("https://h/api/v1/chat/completions") == "https://h/api/v1"
    with pytest.raises(InvalidOptionError, match="not an http"):
        endpoint_base("h:8000")
    assert Target("http://user:pw@h:1/v1", "m").label == "http://h:1/v1"


def test_local_target_and_store_version(make_model: ModelFactory, tmp_path: Path, kennel_home: Path) -> None:
    home = KennelHome(kennel_home)
    assert (
        store_model_version(home, "tiny") == "" and not (kennel_home / "store").exists()
    )  # no store created
    with open_store() as s:
        v = import_gguf(s, gguf(make_model, tmp_path / "Tiny-Q8_0.gguf"), name="tiny")
    digest = sha256(tmp_path / "Tiny-Q8_0.gguf")
    assert v.version == 1 and v.profile.base[0] == digest
    assert store_model_version(home, "tiny") == store_model_version(home, "tiny@1") == f"{digest[:12]}@1"
    assert store_model_version(home, "other") == store_model_version(home, "Bad Name!") == ""
    t = local_target("tiny", home=home, api_key="k", env={})
    assert t == Target("http://127.0.0.1:8484/v1", "tiny", "k", f"{digest[:12]}@1")
    assert (
        local_target("x", home=home, env={"KENNEL_URL": "http://10.0.0.5:9000"}).base_url
        == "http://10.0.0.5:9000/v1"
    )


# ---- servers that answer differently: a mock transport ---------------------------------------
def _client(handler: httpx.MockTransport) -> httpx.Client:
    return httpx.Client(transport=handler)


def _sse(*docs: object) -> bytes:
    return "".join(f"data: {d if isinstance(d, str) else json.dumps(d)}\n\n" for d in docs).encode()


def _chunk(content: str | None = None, **delta: str) -> dict[str, object]:
    d = dict(delta, **({"content": content} if content is not None else {}))
    return {"choices": [{"index": 0, "delta": d, "finish_reason": None}]}


PROMPT = parse_suite(suite_yaml("{id: p, prompt: hi, max_tokens: 5}")).prompts[0]
TARGET = Target("http://mock/v1", "m", api_key="sk-test")


def test_no_usage_counts_chunks_and_sends_what_the_suite_says() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = _sse(
            _chunk("", role="assistant"), ": ping", _chunk("Pa"), _chunk("ris"), _chunk(None), "[DONE]"
        )
        return httpx.Response(
            200,
            content=body.replace(b"data: : ping", b": ping"),
            headers={"content-type": "text/event-stream"},
        )

    r = ask(_client(httpx.MockTransport(handler)), TARGET, PROMPT)
    assert (r.text, r.output_tokens, r.error) == ("Paris", 2, None)
    req = seen[0]
    assert req.url == "http://mock/v1/chat/completions" and req.headers["authorization"] == "Bearer sk-test"
    assert (
        json.loads(req.content)
        == request_body(PROMPT, "m")
        == {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "temperature": 0.0,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": 5,
        }
    )


def test_reasoning_counts_for_the_first_token_and_usage_wins() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = _sse(
            _chunk(reasoning_content="thinking"),
            _chunk("42"),
            {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 9}},
            "[DONE]",
        )
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream; charset=utf-8"})

    r = ask(_client(httpx.MockTransport(handler)), TARGET, PROMPT)
    assert (r.text, r.output_tokens) == ("42", 9) and r.ttft_ms is not None


def test_a_server_that_ignores_stream_true() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "choices": [{"message": {"role": "assistant", "content": "Paris"}}],
                "usage": {"completion_tokens": 2},
            },
        )

    r = ask(_client(httpx.MockTransport(handler)), TARGET, PROMPT)
    assert (r.text, r.output_tokens, r.error) == ("Paris", 2, None) and r.ttft_ms == pytest.approx(
        r.latency_ms, abs=5
    )


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (
            httpx.Response(
                200, content=b"data: {not json\n\n", headers={"content-type": "text/event-stream"}
            ),
            "malformed response from http://mock/v1",
        ),
        (
            httpx.Response(
                200,
                content=_sse(_chunk("Par"), {"error": {"message": "engine crashed"}}),
                headers={"content-type": "text/event-stream"},
            ),
            "engine crashed",
        ),
        (httpx.Response(500, text="<html>oops</html>"), "HTTP 500: <html>oops</html>"),
        (httpx.Response(429, json={"detail": "slow down"}), "HTTP 429: slow down"),
    ],
)
def test_broken_answers_are_errors(response: httpx.Response, error: str) -> None:
    r = ask(_client(httpx.MockTransport(lambda request: response)), TARGET, PROMPT)
    assert r.error is not None and r.error.startswith(error), r.error


def test_a_read_timeout_is_an_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    r = ask(_client(httpx.MockTransport(handler)), TARGET, PROMPT, timeout=2)
    assert r.error == "timed out after 2 s"
