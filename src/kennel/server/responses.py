"""OpenAI's Responses API (POST /v1/responses), stateless: text in (a string or a list of input
items), text and function calls out, whole or streamed as its typed events. ``instructions`` is
the system message; errors are OpenAI's envelope, as on the other /v1 endpoints.

Nothing is stored: ``store`` is answered false and ``previous_response_id``, ``conversation`` and
``background`` are refused, so a client sends the whole conversation each time (its earlier
outputs and the function call outputs are input items). Beyond OpenAI's fields kennel takes its
own ``seed``, ``top_k``, ``logit_bias`` and ``keep_alive``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import Field, StrictBool, field_validator, model_validator

from kennel.engines.base import Answer, Delta, Message, Tool, ToolCall
from kennel.engines.base import Request as InternalRequest
from kennel.errors import InvalidRequestError, KennelError
from kennel.server.auth import Key, check_key
from kennel.server.blocks import Added, Block, BlockEvent, Blocks, Opened, answer_blocks
from kennel.server.generation import Framing, Generation
from kennel.server.http_errors import kennel_error_body
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
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def _error_event(exc: KennelError) -> dict[str, Any]:
    """A failure mid-stream, as the Responses API's ``error`` event."""
    e = kennel_error_body(exc)["error"]
    return {"type": "error", "code": e["code"], "message": e["message"], "param": None}


EVENTS = Framing(named=True, done=None, error_body=_error_event)


class FunctionTool(Body):
    type: str = "function"
    name: str = ""  # checked below, after the type: a built-in tool has none
    description: str | None = Field(default=None, max_length=8192)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @model_validator(mode="after")
    def _function(self) -> FunctionTool:
        if self.type != "function":
            raise ValueError(f"tool type {self.type!r}: kennel runs no built-in tools; give function tools")
        if not _FUNCTION_NAME.match(self.name):
            raise ValueError("a function name is 1 to 64 letters, digits, '_', '-', '.' or ':'")
        return self


class NamedFunction(Body):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64)


class TextFormat(Body):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextOptions(Body):
    format: TextFormat | None = None


class ResponsesRequest(Body):
    model: str = Field(min_length=1, max_length=256)
    input: str | list[dict[str, Any]] = Field(min_length=1)
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stream: StrictBool = False
    tools: list[FunctionTool] | None = Field(default=None, max_length=128)
    tool_choice: Literal["auto", "none", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool = True
    text: TextOptions | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None  # nothing is stored here, whatever it says
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    background: bool | None = None
    # kennel's own, as on its other endpoints
    seed: int | None = None
    top_k: int | None = Field(default=None, ge=0)
    logit_bias: dict[str, float] | None = None
    keep_alive: str | float | None = None

    @field_validator("previous_response_id", "conversation")
    @classmethod
    def _stateless(cls, v: Any) -> Any:
        if v:
            raise ValueError("kennel keeps no responses: send the whole conversation as input items instead")
        return v

    @field_validator("background")
    @classmethod
    def _foreground(cls, v: bool | None) -> bool | None:
        if v:
            raise ValueError("background responses are not supported: kennel answers while you wait")
        return v

    _bias = field_validator("logit_bias")(check_logit_bias)

    @model_validator(mode="after")
    def _tools(self) -> ResponsesRequest:
        choice = self.tool_choice
        check_tools(
            [t.name for t in self.tools or ()],
            named=choice.name if isinstance(choice, NamedFunction) else None,
            required="required" if choice == "required" else None,
            output_format=json_format(
                "text.format", self.text.format.type if self.text and self.text.format else None
            ),
        )
        return self

    def guard_input(self) -> list[tuple[str, str | None]]:
        """One entry per input item, at its index in ``input`` (the guard's verdict names it so):
        a function call's output is a ``tool`` entry; calls and reasoning carry no text to scan.
        Run after ``to_request``, which checks the items."""
        if isinstance(self.input, str):
            return [("user", self.input)]
        out: list[tuple[str, str | None]] = []
        for i, item in enumerate(self.input):
            kind = item.get("type", "message")
            if kind == "message":
                out.append((str(item.get("role")), _content_text(item.get("content"), f"input.{i}")))
            elif kind == "function_call_output":
                output = item.get("output", "")
                out.append(
                    ("tool", output if isinstance(output, str) else _content_text(output, f"input.{i}"))
                )
            else:
                out.append(("assistant", None))
        return out

    def to_request(self, defaults: ProfileSampling) -> InternalRequest:
        fmt = self.text.format if self.text and self.text.format else TextFormat()
        if fmt.type == "json_schema" and fmt.schema_ is None:
            raise ValueError("text.format json_schema needs a schema")
        choice = self.tool_choice
        system = (Message("system", self.instructions),) if self.instructions else ()
        return InternalRequest(
            sampling=merge_sampling(
                defaults,
                temperature=self.temperature,
                top_p=self.top_p,
                top_k=self.top_k,
                seed=self.seed,
                max_tokens=self.max_output_tokens,
                logit_bias=bias_pairs(self.logit_bias),
                json_schema=json.dumps(fmt.schema_) if fmt.type == "json_schema" else None,
                json_mode=fmt.type == "json_object",
            ),
            messages=(*system, *_messages(self.input)),
            tools=tuple(
                Tool(
                    t.name,
                    t.description or "",
                    json.dumps(t.parameters or {"type": "object", "properties": {}}),
                )
                for t in self.tools or ()
            ),
            tool_choice=choice.name if isinstance(choice, NamedFunction) else choice or "auto",
            parallel_tool_calls=self.parallel_tool_calls,
        )


def _content_text(content: Any, at: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ValueError(f"{at}.content: a string or a list of parts")
    text = ""
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in ("input_text", "output_text", "text"):
            raise ValueError(
                f"{at}.content.{j}: parts of type {kind!r} are not supported (kennel serves text)"
            )
        text += str(part.get("text", ""))
    return text


def _messages(items: str | list[dict[str, Any]]) -> list[Message]:
    """Input items as kennel's messages; consecutive function calls make one assistant turn."""
    if isinstance(items, str):
        return [Message("user", items)]
    out: list[Message] = []
    for i, item in enumerate(items):
        kind = item.get("type", "message")
        at = f"input.{i}"
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise ValueError(f"{at}.role: user, assistant, system or developer")
            out.append(
                Message("system" if role == "developer" else role, _content_text(item.get("content"), at))
            )
        elif kind == "function_call":
            call = ToolCall(
                str(item.get("call_id", "")), str(item.get("name", "")), str(item.get("arguments", "{}"))
            )
            last = out[-1] if out else None
            if last is not None and last.role == "assistant" and last.tool_calls:
                out[-1] = replace(last, tool_calls=(*last.tool_calls, call))
            else:
                out.append(Message("assistant", None, tool_calls=(call,)))
        elif kind == "function_call_output":
            output = item.get("output", "")
            text = output if isinstance(output, str) else _content_text(output, at)
            out.append(Message("tool", text, tool_call_id=str(item.get("call_id", ""))))
        elif kind == "reasoning":
            continue  # the model's earlier reasoning: templates drop it from the history anyway
        else:
            raise ValueError(f"{at}: input items of type {kind!r} are not supported")
    return out


# ---- answers ----------------------------------------------------------------------------------
_ITEM_PREFIX = {"text": "msg", "reasoning": "rs", "tool": "fc"}  # OpenAI's id prefixes per item


def _item_id(b: Block, rid: str) -> str:
    return f"{_ITEM_PREFIX[b.kind]}_{rid.rsplit('-', 1)[-1]}_{b.index}"


def _item(b: Block, text: str, rid: str, status: str) -> dict[str, Any]:
    """An output item: whole (``status`` completed) or as it is announced (in_progress, empty)."""
    item_id = _item_id(b, rid)
    if b.kind == "text":
        parts = (
            [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
            if status != "in_progress"
            else []
        )
        return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": parts}
    if b.kind == "reasoning":
        parts = [{"type": "reasoning_text", "text": text}] if status != "in_progress" else []
        return {"type": "reasoning", "id": item_id, "status": status, "summary": [], "content": parts}
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": b.call_id,
        "name": b.name,
        "arguments": text,
        "status": status,
    }


@dataclass(frozen=True)
class Echo:
    """What the request said, which every response repeats."""

    body: ResponsesRequest
    created_at: int = field(default_factory=lambda: int(time.time()))

    def response(
        self, rid: str, status: str, output: list[dict[str, Any]], a: Answer | None
    ) -> dict[str, Any]:
        b = self.body
        reason = _INCOMPLETE.get(a.finish_reason or "") if a else None
        return {
            "id": rid,
            "object": "response",
            "created_at": self.created_at,
            "status": "incomplete" if reason and status == "completed" else status,
            "incomplete_details": {"reason": reason} if reason else None,
            "error": None,
            "model": b.model,
            "instructions": b.instructions,
            "output": output,
            "parallel_tool_calls": b.parallel_tool_calls,
            "tool_choice": b.tool_choice.model_dump()
            if isinstance(b.tool_choice, NamedFunction)
            else b.tool_choice or "auto",
            "tools": [t.model_dump(exclude_none=True) for t in b.tools or ()],
            "temperature": b.temperature,
            "top_p": b.top_p,
            "max_output_tokens": b.max_output_tokens,
            "text": {
                "format": (b.text.format if b.text and b.text.format else TextFormat()).model_dump(
                    by_alias=True, exclude_none=True
                )
            },
            "metadata": b.metadata or {},
            "store": False,
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "truncation": "disabled",
            "usage": usage(a) if a else None,
        }


def usage(a: Answer) -> dict[str, Any]:
    return {
        "input_tokens": a.prompt_tokens,
        "input_tokens_details": {"cached_tokens": a.cached_tokens},
        "output_tokens": a.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},  # llama.cpp does not count them apart
        "total_tokens": a.prompt_tokens + a.completion_tokens,
    }


def response_body(rid: str, echo: Echo, a: Answer) -> dict[str, Any]:
    items = [_item(b, text, rid, "completed") for b, text in answer_blocks(a, "call_")]
    return echo.response(rid, "completed", items, a)


@dataclass
class ResponseEvents:
    """The Responses API's events for one streamed answer, numbered in order."""

    id: str
    echo: Echo
    blocks: Blocks = field(default_factory=lambda: Blocks("call_"))
    seq: int = 0
    done: list[dict[str, Any]] = field(default_factory=list)  # output items finished so far

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.seq += 1
        return {"type": f"response.{kind}", "sequence_number": self.seq - 1, **fields}

    def start(self) -> list[dict[str, Any]]:
        r = self.echo.response(self.id, "in_progress", [], None)
        return [self._event("created", response=r), self._event("in_progress", response=r)]

    def piece(self, d: Delta) -> list[dict[str, Any]]:
        return [e for be in self.blocks.feed(d) for e in self._block(be)]

    def end(self, a: Answer) -> list[dict[str, Any]]:
        out = [e for be in self.blocks.close() for e in self._block(be)]
        r = self.echo.response(self.id, "completed", self.done, a)
        out.append(self._event("incomplete" if r["status"] == "incomplete" else "completed", response=r))
        return out

    def _block(self, e: BlockEvent) -> list[dict[str, Any]]:
        b = e.block
        at = {"item_id": _item_id(b, self.id), "output_index": b.index}
        if isinstance(e, Opened):
            out = [
                self._event(
                    "output_item.added", output_index=b.index, item=_item(b, "", self.id, "in_progress")
                )
            ]
            if b.kind == "text":
                part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                out.append(self._event("content_part.added", **at, content_index=0, part=part))
            return out
        if isinstance(e, Added):
            if b.kind == "tool":
                return [self._event("function_call_arguments.delta", **at, delta=e.text)]
            kind = "output_text" if b.kind == "text" else "reasoning_text"
            extra: dict[str, Any] = {"logprobs": []} if b.kind == "text" else {}
            return [self._event(f"{kind}.delta", **at, content_index=0, delta=e.text, **extra)]
        item = _item(b, e.text, self.id, "completed")
        self.done.append(item)
        if b.kind == "tool":
            out = [self._event("function_call_arguments.done", **at, name=b.name, arguments=e.text)]
        elif b.kind == "text":
            part = item["content"][0]
            out = [
                self._event("output_text.done", **at, content_index=0, text=e.text, logprobs=[]),
                self._event("content_part.done", **at, content_index=0, part=part),
            ]
        else:
            out = [self._event("reasoning_text.done", **at, content_index=0, text=e.text)]
        return [*out, self._event("output_item.done", output_index=b.index, item=item)]


# ---- the endpoint -----------------------------------------------------------------------------
@router.post("/v1/responses", response_model=None)
async def responses(body: ResponsesRequest, request: Request, key: Key) -> Any:
    check_key(request, key, body.model)
    g = Generation(
        request, model=body.model, endpoint="responses", key=key, keep_alive=body.keep_alive, id_prefix="resp"
    )
    try:
        internal = body.to_request(g.profile_defaults())
    except ValueError as exc:
        raise InvalidRequestError(str(exc)) from exc
    internal = replace(internal, messages=g.with_system(internal.messages))
    await g.check_guard(body.guard_input())
    echo = Echo(body)
    first, rest = await g.open(internal)
    if not body.stream:
        answer = await g.collect(first, rest)
        g.log_content(body.input)
        return JSONResponse(response_body(g.id, echo, answer), headers=g.headers())
    out = ResponseEvents(g.id, echo)

    async def events() -> AsyncIterator[dict[str, Any]]:
        for e in out.start():
            yield e
        async for d in g.pieces(first, rest):
            for e in out.piece(d):
                yield e
        for e in out.end(g.answer):
            yield e

    return g.stream(events(), EVENTS)
