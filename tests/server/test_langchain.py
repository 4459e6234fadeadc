"""LangChain against kennel: ``ChatOpenAI`` (over chat completions and over the Responses API) and
``ChatOllama`` each complete a request and a ``bind_tools`` call on a generated model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_ollama import ChatOllama
from langchain_openai import ChatOpenAI

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
TOOL: dict[str, Any] = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Forecast", "parameters": WEATHER},
}
CALLING = {EOS: 100, TOOL_CALL: 50}  # as in test_api_features: a model trained to call tools


@pytest.fixture(scope="module")
def server(make_model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:  # type: ignore[no-untyped-def]
    home = KennelHome(tmp_path_factory.mktemp("langchain-home"))
    tools, _ = make_model(n_vocab=VOCAB, chat_template=TOOLS)
    with running_server([spec_for(tools, home, name="tools", ctx=2048, flash_attn=False)], home) as url:
        yield url


@pytest.mark.parametrize("responses_api", [False, True], ids=["chat-completions", "responses"])
def test_chat_openai(server: str, responses_api: bool) -> None:
    def llm(max_tokens: int) -> ChatOpenAI:
        return ChatOpenAI(
            model="tools",
            base_url=server + "/v1",
            api_key="unused",  # type: ignore[arg-type]
            max_retries=0,
            max_tokens=max_tokens,  # type: ignore[call-arg]
            extra_body={"seed": 4},  # kennel's own field, on the Responses API too
            use_responses_api=responses_api,
        )

    said = llm(6).invoke("hi")
    assert isinstance(said, AIMessage) and said.usage_metadata and said.usage_metadata["output_tokens"] <= 6

    caller = llm(200).bind_tools([TOOL], tool_choice="get_weather", parallel_tool_calls=False)
    asked = caller.invoke([HumanMessage("Weather in Hue?")], extra_body={"seed": 4, "logit_bias": CALLING})
    (call,) = asked.tool_calls  # type: ignore[attr-defined]
    assert call["name"] == "get_weather" and schema_error(call["args"], WEATHER) is None

    answer = (
        llm(5)
        .bind_tools([TOOL])
        .invoke(
            [
                HumanMessage("Weather in Hue?"),
                asked,
                ToolMessage('{"forecast": "rain"}', tool_call_id=call["id"]),
            ]
        )
    )
    assert isinstance(answer, AIMessage) and not answer.tool_calls


@pytest.fixture
def chat_ollama(server: str) -> Iterator[ChatOllama]:
    llm = ChatOllama(model="tools", base_url=server, num_predict=6, seed=3)
    yield llm
    llm._client.close()  # ChatOllama never closes the ollama client it makes


def test_chat_ollama(chat_ollama: ChatOllama) -> None:
    llm = chat_ollama
    said = llm.invoke("hi")
    assert isinstance(said, AIMessage) and said.usage_metadata and said.usage_metadata["output_tokens"] <= 6
    assert said.response_metadata["done_reason"] in ("stop", "length")
    bound = llm.bind_tools([TOOL])
    with_tools = bound.invoke("Weather in Hue?")
    bare = llm.invoke("Weather in Hue?")
    assert isinstance(with_tools, AIMessage) and with_tools.usage_metadata and bare.usage_metadata
    # a random model does not call tools (Ollama's API has no tool_choice to force one), but the
    # tools reached the model's template: the prompt holds their signatures
    assert with_tools.usage_metadata["input_tokens"] > bare.usage_metadata["input_tokens"] + 20
    back = bound.invoke(
        [
            HumanMessage("Weather in Hue?"),
            AIMessage(
                "", tool_calls=[{"name": "get_weather", "args": {"city": "Hue", "days": 1}, "id": "c1"}]
            ),
            ToolMessage('{"forecast": "rain"}', tool_call_id="c1"),
        ]
    )
    assert isinstance(back, AIMessage) and back.usage_metadata
    assert back.usage_metadata["input_tokens"] > with_tools.usage_metadata["input_tokens"]
