"""What a team's clients need beyond plain chat, through the real server and the official openai
client: tool calls (streamed and whole, and the results sent back), logprobs, reasoning kept
apart from the answer, /v1/rerank, and hang-ups recorded as 499 with the tokens actually sent."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from kennel.checkup.assertions import schema_error
from kennel.settings import KennelHome
from tests.engines.conftest import EOS, TOOL_CALL, VOCAB
from tests.engines.templates import THINKING, TOOLS
from tests.server.serverkit import running_server, spec_for

pytestmark = [pytest.mark.llama, pytest.mark.timeout(300)]

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"enum": ["Hanoi", "Hue"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 5},
    },
    "required": ["city", "days"],
}
TOOLS_ARG = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Forecast", "parameters": WEATHER},
    }
]
# a random model never decides to call a tool: a bias on the <tool_call> token stands in for a
# trained one, and a stronger one on end-of-text (forbidden by the grammar until a call is made)
CALLING = {str(EOS): 100, str(TOOL_CALL): 50}
WORDS_ONLY = {str(b): -100 for b in range(3, 259)}  # no byte tokens: one logprob per token


@pytest.fixture(scope="module")
def server(make_model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:  # type: ignore[no-untyped-def]
    home = KennelHome(tmp_path_factory.mktemp("features-home"))
    tools, _ = make_model(n_vocab=VOCAB, chat_template=TOOLS)
    think, _ = make_model(n_vocab=VOCAB, chat_template=THINKING)
    rank, _ = make_model(n_vocab=VOCAB, pooling=4)
    specs = [
        spec_for(tools, home, name="tools", ctx=2048, flash_attn=False, parallel=2),
        spec_for(think, home, name="think", ctx=256, parallel=1),
        spec_for(rank, home, name="rank", ctx=256, parallel=4),
    ]
    # a reranker is served one document at a time whatever was asked (server/models.py says why)
    assert specs[2].plan.parallel == 1
    with running_server(specs, home, max_queue=8) as url:
        yield url


@pytest.fixture
def client(server: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0) as c:
        yield c


def test_tool_calls_whole_and_streamed_then_the_result_sent_back(client: openai.OpenAI) -> None:
    ask = dict(
        model="tools",
        messages=[{"role": "user", "content": "Weather in Hue?"}],
        tools=TOOLS_ARG,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
        logit_bias=CALLING,
        seed=4,
        max_tokens=200,
    )
    r = client.chat.completions.create(**ask)  # type: ignore[call-overload]
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    assert schema_error(json.loads(call.function.arguments), WEATHER) is None

    names, args, finish = [], "", None
    for chunk in client.chat.completions.create(**ask, stream=True):  # type: ignore[call-overload]
        for c in chunk.choices:
            for tc in c.delta.tool_calls or []:
                assert tc.index == 0
                names += [tc.function.name] if tc.function and tc.function.name else []
                args += tc.function.arguments or "" if tc.function else ""
            finish = c.finish_reason or finish
    assert names == ["get_weather"] and args == call.function.arguments and finish == "tool_calls"

    back = client.chat.completions.create(
        model="tools",
        max_tokens=5,
        tools=TOOLS_ARG,  # type: ignore[arg-type]
        messages=[
            {"role": "user", "content": "Weather in Hue?"},
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": '{"forecast": "rain"}'},
        ],  # type: ignore[list-item]
    )
    assert back.choices[0].finish_reason in ("length", "stop")


def test_tool_choice_must_name_a_given_tool(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="not in tools"):
        client.chat.completions.create(
            model="tools",
            messages=[{"role": "user", "content": "x"}],
            tools=TOOLS_ARG,  # type: ignore[arg-type]
            tool_choice={"type": "function", "function": {"name": "launch_rocket"}},
        )


def test_a_forced_tool_call_and_a_json_format_are_refused_together(client: openai.OpenAI) -> None:
    """llama.cpp holds an answer to one grammar: the format's would win and drop the forced call
    without a word, so the request is refused; with tool_choice auto the format applies."""
    ask = {
        "model": "tools",
        "messages": [{"role": "user", "content": "x"}],
        "tools": TOOLS_ARG,
        "max_tokens": 8,
    }
    named = {"type": "function", "function": {"name": "get_weather"}}
    with pytest.raises(openai.BadRequestError, match="tool_choice 'required' forces a tool call") as info:
        client.chat.completions.create(**ask, tool_choice="required", response_format={"type": "json_object"})
    said = info.value.body["message"]  # type: ignore[index]
    assert said.startswith("tool_choice 'required' forces")  # without pydantic's "Value error, "
    assert said.endswith("drop response_format json_object, or let tool_choice be auto")
    weather = {"type": "json_schema", "json_schema": {"name": "w", "schema": WEATHER}}
    with pytest.raises(openai.BadRequestError, match="'get_weather' forces a tool call"):
        client.chat.completions.create(**ask, tool_choice=named, response_format=weather)
    r = client.chat.completions.create(
        **{**ask, "max_tokens": 60},
        tool_choice="auto",
        response_format={"type": "json_object"},
        temperature=0,
    )
    assert isinstance(json.loads(r.choices[0].message.content or ""), dict)


def test_logprobs_chat_and_completions(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="tools",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=4,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
        logit_bias=WORDS_ONLY,
    )
    lp = r.choices[0].logprobs
    assert lp is not None and lp.content is not None and len(lp.content) == 4 and r.usage is not None
    assert "".join(t.token for t in lp.content) == r.choices[0].message.content
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in lp.content)
    c = client.completions.create(
        model="tools", prompt="Once", max_tokens=3, temperature=0, logprobs=2, logit_bias=WORDS_ONLY
    )
    legacy = c.choices[0].logprobs
    assert legacy is not None and legacy.tokens is not None and len(legacy.tokens) == 3
    assert legacy.top_logprobs is not None and all(len(t) <= 2 for t in legacy.top_logprobs)
    assert legacy.text_offset == [0, len(legacy.tokens[0]), len(legacy.tokens[0]) + len(legacy.tokens[1])]


def test_reasoning_content_is_kept_apart(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="think", messages=[{"role": "user", "content": "hi"}], max_tokens=8, seed=2
    )
    msg = r.choices[0].message
    assert (msg.model_extra or {}).get("reasoning_content") and not msg.content
    streamed = ""
    for chunk in client.chat.completions.create(
        model="think", messages=[{"role": "user", "content": "hi"}], max_tokens=8, seed=2, stream=True
    ):
        for c in chunk.choices:
            streamed += (c.delta.model_extra or {}).get("reasoning_content") or ""
            assert not c.delta.content
    assert streamed == msg.model_extra["reasoning_content"]  # type: ignore[index]


def test_rerank(server: str) -> None:
    docs = ["the clinic opens at 8", "parking is behind", "the clinic opens at 8", "we speak Vietnamese"]
    r = httpx.post(
        server + "/v1/rerank",
        json={
            "model": "rank",
            "query": "opening hours",
            "documents": docs,
            "top_n": 3,
            "return_documents": True,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    scores = [x["relevance_score"] for x in body["results"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True) and body["usage"]["prompt_tokens"] > 0
    assert all(x["document"]["text"] == docs[x["index"]] for x in body["results"])
    wrong = httpx.post(server + "/v1/rerank", json={"model": "tools", "query": "q", "documents": ["d"]})
    assert wrong.status_code == 400 and "does not do reranking" in wrong.json()["error"]["message"]
    assert (
        httpx.post(server + "/rerank", json={"model": "rank", "query": "q", "documents": []}).status_code
        == 400
    )


def _count(server: str, status: str) -> float:
    text = httpx.get(server + "/metrics").text
    total = 0.0
    for m in re.finditer(r"^kennel_requests_total\{([^}]*)\} (\S+)$", text, re.M):
        if 'model="tools"' in m.group(1) and f'status="{status}"' in m.group(1):
            total += float(m.group(2))
    return total


def _generated(server: str) -> float:
    m = re.search(
        r'^kennel_generation_tokens_total\{model="tools"\} (\S+)$', httpx.get(server + "/metrics").text, re.M
    )
    return float(m.group(1)) if m else 0.0


def test_a_client_that_hangs_up_is_a_499_with_the_tokens_it_got(
    server: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="kennel.requests")
    before_499, before_200, tokens = _count(server, "499"), _count(server, "200"), _generated(server)
    body = {
        "model": "tools",
        "messages": [{"role": "user", "content": "talk"}],
        "max_tokens": 1500,
        "logit_bias": {str(EOS): -100},  # a random model may end early: this one never does
        "stream": True,
    }
    got = 0
    with httpx.stream("POST", server + "/v1/chat/completions", json=body, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: {") and '"content"' in line and '"content": ""' not in line:
                got += 1
                if got == 3:
                    break  # hang up
    for _ in range(100):  # the server notices at its next write
        if _count(server, "499") > before_499:
            break
        time.sleep(0.05)
    assert _count(server, "499") == before_499 + 1 and _count(server, "200") == before_200
    sent = _generated(server) - tokens
    assert got <= sent < 1500  # what was sent before the hang-up, not a whole answer, not zero
    logged = [json.loads(r.getMessage()) for r in caplog.records if r.getMessage().startswith('{"endpoint"')]
    assert any(d["status"] == 499 and d["completion_tokens"] == sent for d in logged)

    # a client that will not wait for a whole answer: it hangs up once its request is running (a
    # client timeout would race this tiny model, which writes 1,500 tokens in a third of a second)
    raw = json.dumps({**body, "stream": False}).encode()
    head = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"{head}Content-Length: {len(raw)}\r\n\r\n".encode() + raw)
        for _ in range(1000):
            if httpx.get(server + "/kennel/ps").json()["models"][0]["running"] == 1:
                break
            time.sleep(0.005)
    for _ in range(100):
        if _count(server, "499") > before_499 + 1:
            break
        time.sleep(0.05)
    assert _count(server, "499") == before_499 + 2
    assert httpx.get(server + "/kennel/ps").json()["models"][0]["running"] == 0
