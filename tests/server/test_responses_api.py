"""OpenAI's Responses API through the official ``openai`` client against a real kennel server on a
generated model: text in and out with instructions, streamed and not, a forced function call
whose arguments follow the schema and its output sent back, structured text, and errors in
OpenAI's envelope (stored state is refused: kennel keeps no responses)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import openai
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
TOOL: Any = {"type": "function", "name": "get_weather", "description": "Forecast", "parameters": WEATHER}
CALLING = {str(EOS): 100, str(TOOL_CALL): 50}  # as in test_api_features


@pytest.fixture(scope="module")
def server(make_model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:  # type: ignore[no-untyped-def]
    home = KennelHome(tmp_path_factory.mktemp("responses-home"))
    tools, _ = make_model(n_vocab=VOCAB, chat_template=TOOLS)
    with running_server([spec_for(tools, home, name="tools", ctx=2048, flash_attn=False)], home) as url:
        yield url


@pytest.fixture
def client(server: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0) as c:
        yield c


def test_text_in_and_out_with_instructions(client: openai.OpenAI) -> None:
    bare = client.responses.create(model="tools", input="hi", max_output_tokens=6, extra_body={"seed": 3})
    r = client.responses.create(
        model="tools",
        input="hi",
        instructions="Answer in French.",
        max_output_tokens=6,
        extra_body={"seed": 3},
    )
    assert r.object == "response" and r.status in ("completed", "incomplete") and r.model == "tools"
    assert r.output[0].type == "message" and r.output_text == r.output[0].content[0].text  # type: ignore[union-attr]
    assert r.usage is not None and bare.usage is not None and r.usage.input_tokens > bare.usage.input_tokens
    assert r.instructions == "Answer in French." and r.store is False
    if r.status == "incomplete":
        assert r.incomplete_details is not None and r.incomplete_details.reason == "max_output_tokens"
    items = client.responses.create(
        model="tools",
        input=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "hello"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "again"}]},
        ],
        max_output_tokens=4,
    )
    assert items.usage is not None and items.usage.input_tokens > bare.usage.input_tokens


def test_streaming_events(client: openai.OpenAI) -> None:
    ask: dict[str, Any] = dict(model="tools", input="hi", max_output_tokens=8, extra_body={"seed": 5})
    whole = client.responses.create(**ask)
    events = list(client.responses.create(**ask, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        f"response.{'completed' if whole.status == 'completed' else 'incomplete'}",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")  # type: ignore[union-attr]
    assert deltas == whole.output_text
    assert events[-1].response.output_text == whole.output_text  # type: ignore[union-attr]
    with client.responses.stream(**ask) as s:  # the SDK's own accumulator agrees
        last = list(s)[-1]
    assert last.type == kinds[-1] and last.response.output_text == whole.output_text  # type: ignore[union-attr]


def test_a_forced_function_call_and_its_output(client: openai.OpenAI) -> None:
    ask: dict[str, Any] = dict(
        model="tools",
        input="Weather in Hue?",
        tools=[TOOL],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
        max_output_tokens=200,
        extra_body={"logit_bias": CALLING, "seed": 4},
    )
    r = client.responses.create(**ask)
    (call,) = [o for o in r.output if o.type == "function_call"]
    assert (
        call.name == "get_weather"
        and call.call_id
        and schema_error(json.loads(call.arguments), WEATHER) is None
    )

    events = list(client.responses.create(**ask, stream=True))
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")  # type: ignore[union-attr]
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert args == call.arguments and len(done) == 1 and done[0].arguments == args  # type: ignore[union-attr]

    back = client.responses.create(
        model="tools",
        tools=[TOOL],
        max_output_tokens=5,
        input=[
            {"role": "user", "content": "Weather in Hue?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": '{"forecast": "rain"}'},
        ],
    )
    assert back.status in ("completed", "incomplete") and back.usage and r.usage
    assert back.usage.input_tokens > r.usage.input_tokens


def test_structured_text(client: openai.OpenAI) -> None:
    r = client.responses.create(
        model="tools",
        input="Weather?",
        max_output_tokens=100,
        temperature=0,
        text={"format": {"type": "json_schema", "name": "weather", "schema": WEATHER}},
    )
    assert schema_error(json.loads(r.output_text), WEATHER) is None


def test_errors_in_openais_envelope(client: openai.OpenAI, server: str) -> None:
    with pytest.raises(openai.NotFoundError) as nf:
        client.responses.create(model="nope", input="x")
    assert nf.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError, match="keeps no responses"):
        client.responses.create(model="tools", input="x", previous_response_id="resp_123")
    with pytest.raises(openai.BadRequestError, match="not supported"):
        client.responses.create(
            model="tools", input=[{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]
        )
    with pytest.raises(openai.BadRequestError, match="built-in tools"):
        client.responses.create(model="tools", input="x", tools=[{"type": "web_search"}])
    with pytest.raises(
        openai.BadRequestError, match=r"drop text\.format json_object, or let tool_choice be auto"
    ):
        client.responses.create(
            model="tools",
            input="x",
            tools=[{"type": "function", "name": "get_weather", "parameters": WEATHER}],
            tool_choice="required",
            text={"format": {"type": "json_object"}},
        )
    r = httpx.post(server + "/v1/responses", json={"model": "tools"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"


def test_counted_in_metrics(client: openai.OpenAI, server: str) -> None:
    def count() -> float:
        text = httpx.get(server + "/metrics").text
        pattern = r'^kennel_requests_total\{endpoint="responses",model="tools",status="200"\} (\S+)$'
        found = re.search(pattern, text, re.M)
        return float(found.group(1)) if found else 0.0

    before = count()
    list(client.responses.create(model="tools", input="x", max_output_tokens=2, stream=True))
    assert count() == before + 1
