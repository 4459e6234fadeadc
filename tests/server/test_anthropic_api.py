"""Anthropic's Messages API through the official ``anthropic`` client against a real kennel server
on a generated model: system and multi-turn messages, max_tokens and stop_sequences, streaming
with Anthropic's event types, a forced tool use whose input follows the tool's schema, the
tool_result sent back, and errors in Anthropic's shape."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from kennel.checkup.assertions import schema_error
from kennel.settings import KennelHome
from tests.engines.conftest import EOS, TOOL_CALL, VOCAB
from tests.engines.templates import TOOLS
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
TOOLS_ARG: list[Any] = [{"name": "get_weather", "description": "Forecast", "input_schema": WEATHER}]
# as in test_api_features: a bias on <tool_call> stands in for a model trained to call tools
CALLING = {str(EOS): 100, str(TOOL_CALL): 50}
# no end and no byte tokens (half a character would not match a stop sequence): words only
NO_END = {str(t): -100 for t in (EOS, *range(3, 259))}


@pytest.fixture(scope="module")
def server(make_model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:  # type: ignore[no-untyped-def]
    home = KennelHome(tmp_path_factory.mktemp("anthropic-home"))
    tools, _ = make_model(n_vocab=VOCAB, chat_template=TOOLS)
    with running_server([spec_for(tools, home, name="tools", ctx=2048, flash_attn=False)], home) as url:
        yield url


@pytest.fixture
def client(server: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server, api_key="unused", max_retries=0) as c:
        yield c


def test_messages_with_system_and_turns(client: anthropic.Anthropic) -> None:
    r = client.messages.create(
        model="tools",
        max_tokens=6,
        system="You are terse.",
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": [{"type": "text", "text": "and now?"}]},
        ],
        extra_body={"seed": 3},
    )
    assert r.type == "message" and r.role == "assistant" and r.model == "tools"
    assert r.stop_reason in ("end_turn", "max_tokens") and r.usage.input_tokens > 10
    assert 0 < r.usage.output_tokens <= 6 and [b.type for b in r.content] in (["text"], [])


def test_max_tokens_and_stop_sequences(client: anthropic.Anthropic) -> None:
    # this SDK no longer sends temperature; older clients do, and kennel takes it
    ask: dict[str, Any] = dict(model="tools", messages=[{"role": "user", "content": "go"}])
    greedy = {"logit_bias": NO_END, "temperature": 0}
    r = client.messages.create(**ask, max_tokens=4, extra_body=greedy)
    assert r.stop_reason == "max_tokens" and r.usage.output_tokens == 4
    text = r.content[0].text  # type: ignore[union-attr]
    word = text.split()[-1]
    cut = client.messages.create(**ask, max_tokens=4, stop_sequences=[word], extra_body=greedy)
    assert cut.stop_reason == "end_turn" and word not in cut.content[0].text  # type: ignore[union-attr]


def test_structured_output(client: anthropic.Anthropic) -> None:
    r = client.messages.create(
        model="tools",
        max_tokens=100,
        messages=[{"role": "user", "content": "Weather?"}],
        output_config={"format": {"type": "json_schema", "schema": WEATHER}},
        extra_body={"temperature": 0},
    )
    assert schema_error(json.loads(r.content[0].text), WEATHER) is None  # type: ignore[union-attr]


def test_streaming_events(client: anthropic.Anthropic) -> None:
    ask: dict[str, Any] = dict(
        model="tools", max_tokens=8, messages=[{"role": "user", "content": "hi"}], extra_body={"seed": 5}
    )
    whole = client.messages.create(**ask)
    events = list(client.messages.create(**ask, stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds[1:-2] == [
        "content_block_start",
        *["content_block_delta"] * (len(kinds) - 5),
        "content_block_stop",
    ]
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")  # type: ignore[union-attr]
    assert text == whole.content[0].text  # type: ignore[union-attr]
    last = events[-2]
    assert (
        last.delta.stop_reason == whole.stop_reason and last.usage.output_tokens == whole.usage.output_tokens
    )  # type: ignore[union-attr]
    with client.messages.stream(**ask) as s:  # the SDK's own accumulator agrees
        assert s.get_final_message().content[0].text == text  # type: ignore[union-attr]


def test_a_forced_tool_use_follows_the_schema_and_its_result_goes_back(client: anthropic.Anthropic) -> None:
    ask: dict[str, Any] = dict(
        model="tools",
        max_tokens=200,
        messages=[{"role": "user", "content": "Weather in Hue?"}],
        tools=TOOLS_ARG,
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        extra_body={"logit_bias": CALLING, "seed": 4},
    )
    r = client.messages.create(**ask)
    assert r.stop_reason == "tool_use"
    (use,) = [b for b in r.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.id and schema_error(use.input, WEATHER) is None

    with client.messages.stream(**ask) as s:
        streamed = s.get_final_message()
    (again,) = [b for b in streamed.content if b.type == "tool_use"]
    assert again.input == use.input and streamed.stop_reason == "tool_use"

    back = client.messages.create(
        model="tools",
        max_tokens=5,
        tools=TOOLS_ARG,
        messages=[
            {"role": "user", "content": "Weather in Hue?"},
            {"role": "assistant", "content": [use.model_dump()]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": use.id, "content": '{"forecast": "rain"}'}
                ],
            },
        ],
    )
    assert back.stop_reason in ("end_turn", "max_tokens") and back.usage.input_tokens > r.usage.input_tokens


def test_errors_in_anthropics_shape(client: anthropic.Anthropic, server: str) -> None:
    with pytest.raises(anthropic.NotFoundError) as nf:
        client.messages.create(model="claude-nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert nf.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": nf.value.body["error"]["message"]},
    }  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(
            model="tools",
            max_tokens=5,
            messages=[
                {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "x"}}]}
            ],
        )
    assert "not supported" in str(bad.value) and bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError, match="tool_choice 'any' forces a tool call"):
        client.messages.create(
            model="tools",
            max_tokens=5,
            messages=[{"role": "user", "content": "x"}],
            tools=TOOLS_ARG,
            tool_choice={"type": "any"},
            output_config={"format": {"type": "json_schema", "schema": WEATHER}},
        )
    r = httpx.post(
        server + "/v1/messages", json={"model": "tools", "messages": [{"role": "user", "content": "x"}]}
    )
    assert (
        r.status_code == 400 and r.json()["type"] == "error" and "max_tokens" in r.json()["error"]["message"]
    )
    r = httpx.post(server + "/v1/messages/count_tokens", json={})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_counted_in_metrics(client: anthropic.Anthropic, server: str) -> None:
    def count() -> float:
        text = httpx.get(server + "/metrics").text
        found = re.search(
            r'^kennel_requests_total\{endpoint="messages",model="tools",status="200"\} (\S+)$', text, re.M
        )
        return float(found.group(1)) if found else 0.0

    before = count()
    client.messages.create(model="tools", max_tokens=2, messages=[{"role": "user", "content": "x"}])
    assert count() == before + 1
    assert json.loads(httpx.get(server + "/kennel/ps").text)["models"][0]["running"] == 0
