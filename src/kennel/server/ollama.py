"""Ollama's API bodies: validated at the edge, turned into kennel's one internal ``Request``, and
the answer's pieces rendered back as Ollama's newline-delimited JSON. The routes are in
``ollama_routes``; pulling, deleting and copying models in ``ollama_store``.

Ollama streams unless a request says ``"stream": false``. Its ``options`` carry sampling (mapped
to kennel's) and load settings (``num_ctx``, ``num_gpu``, ``num_thread``...), which are the
server's to choose here and are ignored. Token counts and durations come in the last line, in
nanoseconds, as Ollama sends them.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field, StrictBool, field_validator

from kennel.engines.base import Answer, Delta, Message, Request, Sampling, Tool, ToolCall
from kennel.server.blocks import arguments_object, new_call_id
from kennel.server.protocol import MAX_TOKENS_LIMIT, FunctionDef, check_tools, merge_sampling
from kennel.server.protocol import _Body as Body
from kennel.store.profile import Sampling as ProfileSampling
from kennel.store.profile import SamplingFields

# the Ollama API kennel answers like: clients check the server's version before using features
# (tools came with 0.3, structured outputs with 0.5); kennel's own version is sent beside it
OLLAMA_API_VERSION = "0.12.0"
NS = 1_000_000_000


class Options(Body, SamplingFields):
    num_predict: int | None = Field(default=None, ge=-2, le=MAX_TOKENS_LIMIT)  # -1, -2: no limit
    stop: list[str] | None = Field(default=None, max_length=16)


class _Generating(Body):
    model: str = Field(min_length=1, max_length=256)
    format: Literal["", "json"] | dict[str, Any] | None = None
    options: Options | None = None
    stream: StrictBool = True
    keep_alive: str | float | None = None
    think: bool | str | None = None  # a model reasons or not by its template; accepted, not acted on

    def sampling(self, defaults: ProfileSampling) -> Sampling:
        o = self.options or Options()
        return merge_sampling(
            defaults,
            temperature=o.temperature,
            top_p=o.top_p,
            top_k=o.top_k,
            min_p=o.min_p,
            repeat_penalty=o.repeat_penalty,
            presence_penalty=o.presence_penalty,
            frequency_penalty=o.frequency_penalty,
            seed=o.seed,
            stop=o.stop,
            max_tokens=o.num_predict if o.num_predict and o.num_predict > 0 else None,
            json_schema=json.dumps(self.format) if isinstance(self.format, dict) else None,
            json_mode=self.format == "json",
        )


class OllamaFunctionCall(Body):
    name: str = Field(min_length=1, max_length=64)
    arguments: dict[str, Any] | str = Field(default_factory=dict)


class OllamaToolCall(Body):
    id: str | None = Field(default=None, max_length=256)
    function: OllamaFunctionCall


class OllamaMessage(Body):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = ""
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[OllamaToolCall] | None = Field(default=None, max_length=128)
    tool_name: str | None = Field(default=None, max_length=256)
    tool_call_id: str | None = Field(default=None, max_length=256)

    @field_validator("images")
    @classmethod
    def _no_images(cls, v: list[str] | None) -> list[str] | None:
        if v:
            raise ValueError("kennel serves text models; images are not supported")
        return v


class OllamaTool(Body):
    type: Literal["function"] = "function"
    function: FunctionDef


class ChatBody(_Generating):
    messages: list[OllamaMessage] = Field(default_factory=list, max_length=10_000)
    tools: list[OllamaTool] | None = Field(default=None, max_length=128)

    def to_request(self, defaults: ProfileSampling) -> Request:
        check_tools([t.function.name for t in self.tools or ()])
        return Request(
            sampling=self.sampling(defaults),
            messages=_messages(self.messages),
            tools=tuple(
                Tool(t.function.name, t.function.description, json.dumps(t.function.parameters))
                for t in self.tools or ()
            ),
        )

    def guard_input(self) -> list[tuple[str, str | None]]:
        return [(m.role, m.content) for m in self.messages]


def _messages(messages: list[OllamaMessage]) -> tuple[Message, ...]:
    """Ollama's messages as kennel's. Ollama's tool calls have no ids (newer clients send them):
    calls get ids here, and a tool message without one answers the next call not yet answered."""
    out: list[Message] = []
    waiting: list[str] = []  # ids of the last assistant turn's calls, not yet answered
    for m in messages:
        if m.role == "assistant":
            calls = tuple(
                ToolCall(
                    id=c.id or new_call_id("call_"),
                    name=c.function.name,
                    arguments=c.function.arguments
                    if isinstance(c.function.arguments, str)
                    else json.dumps(c.function.arguments),
                )
                for c in m.tool_calls or ()
            )
            waiting = [c.id for c in calls]
            content = None if calls and not m.content else m.content or ""
            out.append(Message("assistant", content, tool_calls=calls, reasoning=m.thinking))
        elif m.role == "tool":
            call_id = m.tool_call_id or (waiting[0] if waiting else None)
            if call_id in waiting:
                waiting.remove(call_id)
            out.append(Message("tool", m.content or "", tool_call_id=call_id, name=m.tool_name))
        else:
            out.append(Message(m.role, m.content or ""))
    return tuple(out)


class GenerateBody(_Generating):
    prompt: str | None = None
    system: str | None = None
    raw: bool = False
    suffix: str | None = None
    template: str | None = None
    context: list[int] | None = None  # an earlier answer's tokens: not kept here (see the README)
    images: list[str] | None = None

    @field_validator("suffix", "template")
    @classmethod
    def _unsupported(cls, v: str | None) -> str | None:
        if v:
            raise ValueError("kennel takes no suffix (fill-in-the-middle) or template here")
        return v

    @field_validator("images")
    @classmethod
    def _no_images(cls, v: list[str] | None) -> list[str] | None:
        if v:
            raise ValueError("kennel serves text models; images are not supported")
        return v

    def to_request(self, defaults: ProfileSampling) -> Request:
        """``raw``: the prompt as it is, a plain completion; else one user turn through the
        model's chat template, after ``system`` if given."""
        sampling = self.sampling(defaults)
        if self.raw:
            return Request(sampling=sampling, prompt=self.prompt or "")
        system = (Message("system", self.system),) if self.system else ()
        return Request(sampling=sampling, messages=(*system, Message("user", self.prompt or "")))

    def guard_input(self) -> list[tuple[str, str | None]]:
        # the prompt alone, as /v1/completions scans it: a verdict names it "message 0" on both
        # (the system text is the operator's, and trusted roles are not scanned anyway)
        return [("user", self.prompt)]


class EmbedBody(Body):
    model: str = Field(min_length=1, max_length=256)
    input: str | list[str] = Field(min_length=1)
    truncate: bool = True
    options: dict[str, Any] | None = None
    keep_alive: str | float | None = None
    dimensions: int | None = None

    @field_validator("dimensions")
    @classmethod
    def _no_dimensions(cls, v: int | None) -> int | None:
        if v is not None:
            raise ValueError("kennel returns the model's own dimensions; dimensions is not supported")
        return v

    def texts(self) -> list[str]:
        items = [self.input] if isinstance(self.input, str) else self.input
        if not items or len(items) > 2048 or any(not t for t in items):
            raise ValueError("input must be 1 to 2048 non-empty strings")
        return items


class EmbeddingsBody(Body):
    model: str = Field(min_length=1, max_length=256)
    prompt: str = Field(min_length=1)
    options: dict[str, Any] | None = None
    keep_alive: str | float | None = None


class ModelBody(Body):
    model: str = Field(default="", max_length=512)
    name: str = Field(default="", max_length=512)  # older clients' spelling of ``model``

    @property
    def ref(self) -> str:
        return self.model or self.name


class PullBody(ModelBody):
    stream: StrictBool = True
    insecure: bool = False


class CopyBody(Body):
    source: str = Field(min_length=1, max_length=512)
    destination: str = Field(min_length=1, max_length=512)


# ---- answers ----------------------------------------------------------------------------------
def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat().replace("+00:00", "Z")


_DONE_REASONS = {"stop": "stop", "length": "length", "tool_calls": "stop", "content_filter": "stop"}


def tool_calls(a: Answer) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "function": {"index": i, "name": c.name, "arguments": arguments_object(c.arguments)}}
        for i, c in enumerate(a.tool_calls)
    ]


def stats(a: Answer, *, t0: float, first_at: float | None) -> dict[str, Any]:
    """The last line's counts and times, in nanoseconds. The load is part of the wait for the
    first token here: kennel does not time it apart."""
    now = time.monotonic()
    first = first_at or now
    return {
        "done": True,
        "done_reason": _DONE_REASONS.get(a.finish_reason or "stop", "stop"),
        "total_duration": int((now - t0) * NS),
        "load_duration": 0,
        "prompt_eval_count": a.prompt_tokens,
        "prompt_eval_duration": int((first - t0) * NS),
        "eval_count": a.completion_tokens,
        "eval_duration": int((now - first) * NS),
    }


def chat_line(model: str, d: Delta) -> dict[str, Any] | None:
    """A streamed piece of /api/chat. Tool calls are sent whole, at the end (``chat_last``):
    Ollama's arguments are an object, which has no pieces."""
    if not d.text and not d.reasoning:
        return None
    message: dict[str, Any] = {"role": "assistant", "content": d.text}
    if d.reasoning:
        message["thinking"] = d.reasoning
    return {"model": model, "created_at": now_iso(), "message": message, "done": False}


def chat_last(model: str, a: Answer, *, t0: float, first_at: float | None) -> list[dict[str, Any]]:
    lines = []
    if a.tool_calls:
        message = {"role": "assistant", "content": "", "tool_calls": tool_calls(a)}
        lines.append({"model": model, "created_at": now_iso(), "message": message, "done": False})
    message = {"role": "assistant", "content": ""}
    lines.append(
        {"model": model, "created_at": now_iso(), "message": message, **stats(a, t0=t0, first_at=first_at)}
    )
    return lines


def chat_answer(model: str, a: Answer, *, t0: float, first_at: float | None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": a.text}
    if a.reasoning:
        message["thinking"] = a.reasoning
    if a.tool_calls:
        message["tool_calls"] = tool_calls(a)
    return {"model": model, "created_at": now_iso(), "message": message, **stats(a, t0=t0, first_at=first_at)}


def generate_line(model: str, d: Delta) -> dict[str, Any] | None:
    if not d.text and not d.reasoning:
        return None
    line: dict[str, Any] = {"model": model, "created_at": now_iso(), "response": d.text, "done": False}
    if d.reasoning:
        line["thinking"] = d.reasoning
    return line


def generate_answer(
    model: str, a: Answer, *, t0: float, first_at: float | None, whole: bool
) -> dict[str, Any]:
    """The last line of /api/generate, with the whole text when it is the only one."""
    out: dict[str, Any] = {"model": model, "created_at": now_iso(), "response": a.text if whole else ""}
    if whole and a.reasoning:
        out["thinking"] = a.reasoning
    return {**out, **stats(a, t0=t0, first_at=first_at)}
