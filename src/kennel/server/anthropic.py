"""Anthropic's Messages API (POST /v1/messages): the body validated at the edge and turned into
kennel's one internal ``Request``; the answer rendered as a message, or streamed as Anthropic's
events (message_start, content_block_start/delta/stop, message_delta, message_stop). Errors are
in Anthropic's shape (``http_errors`` picks it by the path); the key may come as ``x-api-key``.

Reasoning comes back as ``thinking`` blocks (without a signature: nothing here signs them), tool
calls as ``tool_use`` blocks whose ``input`` is an object. Beyond Anthropic's fields kennel takes
its own ``seed``, ``logit_bias`` and ``keep_alive``, as the OpenAI endpoints do.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import Field, StrictBool, field_validator, model_validator

from kennel.engines.base import Answer, Delta, Message, Tool, ToolCall
from kennel.engines.base import Request as InternalRequest
from kennel.errors import InvalidRequestError
from kennel.server.auth import Key, check_key
from kennel.server.blocks import Added, Block, BlockEvent, Blocks, Opened, answer_blocks, arguments_object
from kennel.server.generation import Framing, Generation
from kennel.server.protocol import (
    _FUNCTION_NAME,
    MAX_TOKENS_LIMIT,
    bias_pairs,
    check_logit_bias,
    check_tools,
    json_format,
    merge_sampling,
)
from kennel.server.protocol import _Body as Body
from kennel.store.profile import Sampling as ProfileSampling

router = APIRouter()
EVENTS = Framing(named=True, done=None, dialect="anthropic")  # an error is event "error" in its shape
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


BLOCK_TYPES = ("text", "thinking", "redacted_thinking", "tool_use", "tool_result")


def _known_blocks(value: Any) -> Any:
    """Said before the fields are checked, so the error names what is wrong (an image block),
    not the first type a union could not take."""
    for i, block in enumerate(value if isinstance(value, list) else ()):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in BLOCK_TYPES:
            raise ValueError(
                f"item {i}: content blocks of type {kind!r} are not supported: kennel serves text models "
                "(text, thinking, tool_use and tool_result blocks)"
            )
    return value


class _Block(Body):
    type: str


class ContentBlock(_Block):
    """One block of a message: text, thinking, tool_use or tool_result (fields by type)."""

    text: str | None = None
    thinking: str | None = None
    id: str | None = Field(default=None, max_length=256)
    name: str | None = Field(default=None, max_length=64)
    input: dict[str, Any] | None = None
    tool_use_id: str | None = Field(default=None, max_length=256)
    content: str | list[_TextPart] | None = None
    is_error: bool = False

    _blocks = field_validator("content", mode="before")(_known_blocks)

    @model_validator(mode="after")
    def _fields(self) -> ContentBlock:
        need = {"text": ["text"], "tool_use": ["id", "name"], "tool_result": ["tool_use_id"]}.get(
            self.type, []
        )
        missing = [f for f in need if getattr(self, f) is None]
        if missing:
            raise ValueError(f"a {self.type} block needs {', '.join(missing)}")
        return self

    def result_text(self) -> str:
        text = (
            self.content
            if isinstance(self.content, str)
            else "".join(p.text or "" for p in self.content or () if p.type == "text")
        )
        return f"Error: {text}" if self.is_error else text  # the model must see that the tool failed


class _TextPart(_Block):
    text: str | None = None


ContentBlock.model_rebuild()


class AnthropicMessage(Body):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]

    _blocks = field_validator("content", mode="before")(_known_blocks)


class ToolSpec(Body):
    name: str
    description: str = Field(default="", max_length=8192)
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    type: str | None = None

    @model_validator(mode="after")
    def _custom(self) -> ToolSpec:
        if self.type not in (None, "custom"):
            raise ValueError(f"tool type {self.type!r}: kennel runs no server tools; give custom tools")
        if not _FUNCTION_NAME.match(self.name):
            raise ValueError("a tool name is 1 to 64 letters, digits, '_', '-', '.' or ':'")
        return self


class ToolChoice(Body):
    type: Literal["auto", "any", "tool", "none"] = "auto"
    name: str | None = None
    disable_parallel_tool_use: bool = False


class OutputFormat(Body):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(Body):
    format: OutputFormat | None = None  # structured output: the answer follows this JSON schema
    effort: str | None = None  # a model thinks as its template says: not acted on


class MessagesRequest(Body):
    model: str = Field(min_length=1, max_length=256)
    max_tokens: int = Field(ge=1, le=MAX_TOKENS_LIMIT)
    messages: list[AnthropicMessage] = Field(min_length=1, max_length=10_000)
    system: str | list[ContentBlock] | None = None
    stop_sequences: list[str] | None = Field(default=None, max_length=16)
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    stream: StrictBool = False
    tools: list[ToolSpec] | None = Field(default=None, max_length=128)
    tool_choice: ToolChoice | None = None
    metadata: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None  # a model reasons or not by its template: not acted on
    output_config: OutputConfig | None = None

    _blocks = field_validator("system", mode="before")(_known_blocks)
    # kennel's own, as on its OpenAI endpoints
    seed: int | None = None
    logit_bias: dict[str, float] | None = None
    keep_alive: str | float | None = None

    _bias = field_validator("logit_bias")(check_logit_bias)

    @model_validator(mode="after")
    def _tools(self) -> MessagesRequest:
        choice = self.tool_choice
        check_tools(
            [t.name for t in self.tools or ()],
            named=choice.name if choice is not None and choice.type == "tool" else None,
            required="any" if choice is not None and choice.type == "any" else None,
            output_format=json_format(
                "output_config.format",
                self.output_config.format.type if self.output_config and self.output_config.format else None,
            ),
        )
        return self

    def system_text(self) -> str:
        if isinstance(self.system, list):
            return "\n\n".join(b.text or "" for b in self.system if b.type == "text")
        return self.system or ""

    def to_request(self, defaults: ProfileSampling) -> InternalRequest:
        choice = self.tool_choice or ToolChoice()
        mode = {"auto": "auto", "any": "required", "none": "none", "tool": choice.name or "auto"}[choice.type]
        system = self.system_text()
        fmt = self.output_config.format if self.output_config else None
        return InternalRequest(
            sampling=merge_sampling(
                defaults,
                temperature=self.temperature,
                top_p=self.top_p,
                top_k=self.top_k,
                seed=self.seed,
                stop=self.stop_sequences,
                max_tokens=self.max_tokens,
                logit_bias=bias_pairs(self.logit_bias),
                json_schema=json.dumps(fmt.schema_) if fmt else None,
            ),
            messages=(*((Message("system", system),) if system else ()), *_messages(self.messages)),
            tools=tuple(Tool(t.name, t.description, json.dumps(t.input_schema)) for t in self.tools or ()),
            tool_choice=mode,
            parallel_tool_calls=not choice.disable_parallel_tool_use,
        )

    def guard_input(self) -> list[tuple[str, str | None]]:
        """One entry per message, at its index in ``messages`` (the guard's verdict names it so);
        a user turn carrying tool_result blocks is a ``tool`` one. The system prompt, trusted and
        not one of the messages, comes last so it shifts no index."""
        out: list[tuple[str, str | None]] = [_guard_entry(m) for m in self.messages]
        return [*out, ("system", self.system_text())]


def _guard_entry(m: AnthropicMessage) -> tuple[str, str]:
    if isinstance(m.content, str):
        return (m.role, m.content)
    role = "tool" if any(b.type == "tool_result" for b in m.content) else m.role
    texts = (b.result_text() if b.type == "tool_result" else b.text or b.thinking or "" for b in m.content)
    return (role, "\n".join(t for t in texts if t))


def _messages(messages: list[AnthropicMessage]) -> list[Message]:
    """Anthropic's turns as kennel's messages: a user turn's tool_result blocks become tool
    messages (before its text, as Anthropic orders them), an assistant turn's tool_use blocks its
    tool calls and its thinking blocks its reasoning."""
    out: list[Message] = []
    for m in messages:
        if isinstance(m.content, str):
            out.append(Message(m.role, m.content))
            continue
        blocks = m.content
        text = "".join(b.text or "" for b in blocks if b.type == "text")
        if m.role == "user":
            out += [
                Message("tool", b.result_text(), tool_call_id=b.tool_use_id)
                for b in blocks
                if b.type == "tool_result"
            ]
            if text or not any(b.type == "tool_result" for b in blocks):
                out.append(Message("user", text))
            continue
        calls = tuple(
            ToolCall(id=b.id or "", name=b.name or "", arguments=json.dumps(b.input or {}))
            for b in blocks
            if b.type == "tool_use"
        )
        reasoning = "".join(b.thinking or "" for b in blocks if b.type == "thinking") or None
        out.append(
            Message("assistant", text or (None if calls else ""), tool_calls=calls, reasoning=reasoning)
        )
    return out


# ---- answers ----------------------------------------------------------------------------------
def usage(a: Answer) -> dict[str, Any]:
    return {
        "input_tokens": a.prompt_tokens,
        "output_tokens": a.completion_tokens,
        "cache_read_input_tokens": a.cached_tokens,
        "cache_creation_input_tokens": 0,
    }


def _block(b: Block, text: str, *, whole: bool) -> dict[str, Any]:
    """A content block: whole, or as content_block_start opens it (empty)."""
    if b.kind == "text":
        return {"type": "text", "text": text if whole else ""}
    if b.kind == "reasoning":
        return {"type": "thinking", "thinking": text if whole else "", "signature": ""}
    return {
        "type": "tool_use",
        "id": b.call_id,
        "name": b.name,
        "input": arguments_object(text) if whole else {},
    }


def message_body(rid: str, model: str, a: Answer) -> dict[str, Any]:
    return {
        "id": rid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [_block(b, text, whole=True) for b, text in answer_blocks(a, "toolu_")],
        "stop_reason": STOP_REASONS.get(a.finish_reason or "stop", "end_turn"),
        # llama.cpp does not say which stop sequence ended an answer: end_turn stands for both
        "stop_sequence": None,
        "usage": usage(a),
    }


@dataclass
class MessageEvents:
    """Anthropic's stream events for one answer."""

    id: str
    model: str
    blocks: Blocks = field(default_factory=lambda: Blocks("toolu_"))

    def start(self, first: Delta) -> dict[str, Any]:
        message = {
            **message_body(self.id, self.model, Answer(prompt_tokens=first.prompt_tokens)),
            "content": [],
        }
        return {"type": "message_start", "message": {**message, "stop_reason": None}}

    def piece(self, d: Delta) -> list[dict[str, Any]]:
        return [self._event(e) for e in self.blocks.feed(d)]

    def end(self, a: Answer) -> list[dict[str, Any]]:
        out = [self._event(e) for e in self.blocks.close()]
        stop = STOP_REASONS.get(a.finish_reason or "stop", "end_turn")
        out.append(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": usage(a),
            }
        )
        out.append({"type": "message_stop"})
        return out

    def _event(self, e: BlockEvent) -> dict[str, Any]:
        i = e.block.index
        if isinstance(e, Opened):
            return {
                "type": "content_block_start",
                "index": i,
                "content_block": _block(e.block, "", whole=False),
            }
        if isinstance(e, Added):
            kind = e.block.kind
            delta = (
                {"type": "text_delta", "text": e.text}
                if kind == "text"
                else {"type": "thinking_delta", "thinking": e.text}
                if kind == "reasoning"
                else {"type": "input_json_delta", "partial_json": e.text}
            )
            return {"type": "content_block_delta", "index": i, "delta": delta}
        return {"type": "content_block_stop", "index": i}


# ---- the endpoint -----------------------------------------------------------------------------
@router.post("/v1/messages", response_model=None)
async def messages(body: MessagesRequest, request: Request, key: Key) -> Any:
    check_key(request, key, body.model)
    g = Generation(
        request, model=body.model, endpoint="messages", key=key, keep_alive=body.keep_alive, id_prefix="msg"
    )
    try:
        internal = body.to_request(g.profile_defaults())
    except ValueError as exc:
        raise InvalidRequestError(str(exc)) from exc
    internal = replace(internal, messages=g.with_system(internal.messages))
    await g.check_guard(body.guard_input())
    first, rest = await g.open(internal)
    if not body.stream:
        answer = await g.collect(first, rest)
        g.log_content(body.model_dump(include={"system", "messages"}, exclude_none=True))
        return JSONResponse(message_body(g.id, body.model, answer), headers=g.headers())
    out = MessageEvents(g.id, body.model)

    async def events() -> AsyncIterator[dict[str, Any]]:
        yield out.start(first)
        async for d in g.pieces(first, rest):
            for e in out.piece(d):
                yield e
        for e in out.end(g.answer):
            yield e

    return g.stream(events(), EVENTS)
