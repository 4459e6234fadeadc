"""OpenAI request bodies, validated at the edge and turned into kennel's one internal ``Request``.
Unknown fields are accepted and ignored (clients send many), but known fields of the wrong type
or out of range are a 400."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from kennel.engines.base import Message, Request, Sampling, Tool, ToolCall
from kennel.store.profile import Sampling as ProfileSampling
from kennel.store.profile import SamplingFields

MAX_TOKENS_LIMIT = 1 << 20
_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def check_tools(
    names: list[str],
    *,
    named: str | None = None,
    required: str | None = None,
    output_format: str | None = None,
) -> None:
    """One rule for every API's tools: names are unique, a named choice is among them, and a
    choice that requires a call (``required`` says how the API spells it) has tools to call and
    no JSON output format (``output_format``: the field that asks for one) against it. llama.cpp
    holds an answer to one grammar, the format's, and would drop the call without a word; the
    rule holds for every engine, so a request means the same whichever engine serves it."""
    if len(set(names)) != len(names):
        raise ValueError("tools: two functions share a name")
    if named is not None and named not in names:
        raise ValueError(f"tool_choice names {named!r}, which is not in tools")
    if required is not None and not names:
        raise ValueError(f"tool_choice {required!r} needs tools")
    forced = named if named is not None else required
    if forced is not None and output_format is not None:
        raise ValueError(
            f"tool_choice {forced!r} forces a tool call, which {output_format} would forbid (the "
            f"answer follows one grammar): drop {output_format}, or let tool_choice be auto"
        )


def json_format(field: str, kind: str | None) -> str | None:
    """How an error names a request's JSON output format (``response_format json_object``), or
    None for plain text."""
    return f"{field} {kind}" if kind in ("json_object", "json_schema") else None


def bias_pairs(v: dict[str, float] | None) -> tuple[tuple[int, float], ...]:
    """logit_bias as checked by ``check_logit_bias``, as the engine takes it."""
    return tuple((int(k), float(b)) for k, b in (v or {}).items())


def check_logit_bias(v: dict[str, float] | None) -> dict[str, float] | None:
    """One rule for every API that takes logit_bias: token ids (as strings) to [-100, 100]."""
    for k, b in (v or {}).items():
        if not k.lstrip("-").isdigit() or not -100 <= b <= 100:
            raise ValueError("logit_bias maps token ids (as strings) to values in [-100, 100]")
    return v


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        """JSON may escape half a UTF-16 pair ("\\ud800"); such text is no Unicode at all and
        would fail far from here (the guard, the engine) as a server error."""
        _check_unicode(data, "")
        return data


class StreamOptions(_Body):
    include_usage: bool = False


class JsonSchemaFormat(_Body):
    name: str = "response"
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: JsonSchemaFormat | None = None


def _check_unicode(value: Any, at: str) -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"{at or 'body'}: text with an unpaired surrogate ({value[exc.start]!r}); send valid Unicode"
            ) from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_unicode(k, at)
            _check_unicode(v, f"{at}.{k}" if at else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_unicode(v, f"{at}.{i}")


def merge_sampling(
    defaults: ProfileSampling,
    *,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    min_p: float | None = None,
    repeat_penalty: float | None = None,
    presence_penalty: float | None = None,
    frequency_penalty: float | None = None,
    seed: int | None = None,
    stop: str | Sequence[str] | None = None,
    max_tokens: int | None = None,
    logit_bias: tuple[tuple[int, float], ...] = (),
    json_schema: str | None = None,
    json_mode: bool = False,
    logprobs: bool = False,
    top_logprobs: int = 0,
) -> Sampling:
    """What a request asks for (None: not set) over the model's profile defaults over the
    engine's. Shared by the server and `kennel run`, so a model answers alike in both."""
    base = Sampling()

    def pick(name: str, mine: Any) -> Any:
        if mine is not None:
            return mine
        return getattr(defaults, name) if getattr(defaults, name) is not None else getattr(base, name)

    stops = stop if stop is not None else list(defaults.stop or ())
    return Sampling(
        temperature=pick("temperature", temperature),
        top_p=pick("top_p", top_p),
        top_k=pick("top_k", top_k),
        min_p=pick("min_p", min_p),
        repeat_penalty=pick("repeat_penalty", repeat_penalty),
        presence_penalty=pick("presence_penalty", presence_penalty),
        frequency_penalty=pick("frequency_penalty", frequency_penalty),
        seed=pick("seed", seed),
        stop=tuple([stops] if isinstance(stops, str) else stops),
        max_tokens=max_tokens or defaults.max_tokens,
        logit_bias=logit_bias,
        json_schema=json_schema,
        json_mode=json_mode,
        logprobs=logprobs,
        top_logprobs=top_logprobs,
    )


class _Sampled(_Body, SamplingFields):
    model: str = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    stop: str | list[str] | None = None
    logit_bias: dict[str, float] | None = None
    n: int = Field(default=1, ge=1, le=1)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    keep_alive: str | int | None = None  # Ollama's: "5m", seconds, 0 unloads after, -1 forever

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 16:
            raise ValueError("at most 16 stop sequences")
        return v

    _bias = field_validator("logit_bias")(check_logit_bias)

    def _logprobs(self) -> tuple[bool, int]:
        return False, 0

    def sampling(self, defaults: ProfileSampling) -> Sampling:
        """Request values over the model's profile defaults over the engine's."""
        schema, json_mode = None, False
        if self.response_format and self.response_format.type == "json_schema":
            if self.response_format.json_schema is None:
                raise ValueError("response_format json_schema needs a json_schema object")
            schema = json.dumps(self.response_format.json_schema.schema_)
        elif self.response_format and self.response_format.type == "json_object":
            json_mode = True
        logprobs, top = self._logprobs()
        return merge_sampling(
            defaults,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            seed=self.seed,
            stop=self.stop,
            max_tokens=self.max_completion_tokens or self.max_tokens,
            logit_bias=bias_pairs(self.logit_bias),
            json_schema=schema,
            json_mode=json_mode,
            logprobs=logprobs,
            top_logprobs=top,
        )


class FunctionCall(_Body):
    name: str = Field(min_length=1, max_length=64)
    arguments: str | dict[str, Any] = "{}"

    def text(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


class ChatToolCall(_Body):
    id: str = Field(default="", max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Body):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[ChatToolCall] | None = Field(default=None, max_length=128)
    tool_call_id: str | None = Field(default=None, max_length=256)
    name: str | None = Field(default=None, max_length=256)
    reasoning_content: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: keep the text ones
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""

    def to_message(self) -> Message:
        calls = tuple(
            ToolCall(id=c.id, name=c.function.name, arguments=c.function.text())
            for c in self.tool_calls or ()
        )
        content = None if calls and self.content is None else self.text()
        return Message(
            role="system" if self.role == "developer" else self.role,
            content=content,
            tool_calls=calls,
            tool_call_id=self.tool_call_id,
            name=self.name,
            reasoning=self.reasoning_content,
        )


class FunctionDef(_Body):
    name: str
    description: str = Field(default="", max_length=8192)
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _FUNCTION_NAME.match(v):
            raise ValueError("a function name is 1 to 64 letters, digits, '_', '-', '.' or ':'")
        return v


class ToolDef(_Body):
    type: Literal["function"] = "function"
    function: FunctionDef


class NamedFunction(_Body):
    name: str = Field(min_length=1, max_length=64)


class NamedToolChoice(_Body):
    type: Literal["function"] = "function"
    function: NamedFunction


class ChatRequest(_Sampled):
    messages: list[ChatMessage] = Field(min_length=1, max_length=10_000)
    tools: list[ToolDef] | None = Field(default=None, max_length=128)
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True
    logprobs: StrictBool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    @model_validator(mode="after")
    def _tools(self) -> ChatRequest:
        choice = self.tool_choice
        check_tools(
            [t.function.name for t in self.tools or ()],
            named=choice.function.name if isinstance(choice, NamedToolChoice) else None,
            required="required" if choice == "required" else None,
            output_format=json_format(
                "response_format", self.response_format.type if self.response_format else None
            ),
        )
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    def _logprobs(self) -> tuple[bool, int]:
        return self.logprobs, self.top_logprobs or 0

    def to_request(self, defaults: ProfileSampling) -> Request:
        choice = self.tool_choice
        return Request(
            sampling=self.sampling(defaults),
            messages=tuple(m.to_message() for m in self.messages),
            tools=tuple(
                Tool(t.function.name, t.function.description, json.dumps(t.function.parameters))
                for t in self.tools or ()
            ),
            tool_choice=choice.function.name if isinstance(choice, NamedToolChoice) else choice or "auto",
            parallel_tool_calls=self.parallel_tool_calls,
        )


class CompletionRequest(_Sampled):
    prompt: str | list[str] = Field(min_length=1)
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=5)  # the legacy API: alternatives per token

    def text(self) -> str:
        if isinstance(self.prompt, list):
            if len(self.prompt) != 1:
                raise ValueError("kennel takes one prompt per request")
            return self.prompt[0]
        return self.prompt

    def _logprobs(self) -> tuple[bool, int]:
        return self.logprobs is not None, self.logprobs or 0

    def to_request(self, defaults: ProfileSampling) -> Request:
        return Request(sampling=self.sampling(defaults), prompt=self.text())


class EmbeddingRequest(_Body):
    model: str = Field(min_length=1, max_length=256)
    input: str | list[str] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"  # the openai client asks for base64

    def texts(self) -> list[str]:
        items = [self.input] if isinstance(self.input, str) else self.input
        if not items or len(items) > 2048 or any(not t for t in items):
            raise ValueError("input must be 1 to 2048 non-empty strings")
        return items


class RerankRequest(_Body):
    """The shape llama-server, Jina and Cohere take: a query and documents to order by relevance."""

    model: str = Field(min_length=1, max_length=256)
    query: str = Field(min_length=1)
    documents: list[str | dict[str, Any]] = Field(min_length=1, max_length=1000)
    top_n: int | None = Field(default=None, ge=1)
    return_documents: bool = False

    def texts(self) -> list[str]:
        out = [d if isinstance(d, str) else str(d.get("text", "")) for d in self.documents]
        if any(not t for t in out):
            raise ValueError("documents must be non-empty strings (or objects with a text field)")
        return out
