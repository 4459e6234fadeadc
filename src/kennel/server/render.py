"""OpenAI response bodies from kennel's ``Delta`` pieces: streamed chunks and whole answers, for
chat (content, reasoning_content, tool_calls, logprobs) and legacy text completions."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kennel.engines.base import Answer, Delta, TokenLogprob, ToolCallDelta


def usage(a: Answer) -> dict[str, Any]:
    return {
        "prompt_tokens": a.prompt_tokens,
        "completion_tokens": a.completion_tokens,
        "total_tokens": a.prompt_tokens + a.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": a.cached_tokens},
    }


def _token(t: TokenLogprob) -> dict[str, Any]:
    return {
        "token": t.token,
        "logprob": t.logprob,
        "bytes": list(t.bytes) if t.bytes is not None else None,
        "top_logprobs": [
            {"token": a.token, "logprob": a.logprob, "bytes": list(a.bytes) if a.bytes is not None else None}
            for a in t.top
        ],
    }


def chat_logprobs(tokens: Sequence[TokenLogprob]) -> dict[str, Any] | None:
    return {"content": [_token(t) for t in tokens]} if tokens else None


def legacy_logprobs(tokens: Sequence[TokenLogprob], offset: int = 0) -> dict[str, Any] | None:
    """The /v1/completions shape: parallel lists, and alternatives as {token: logprob}."""
    if not tokens:
        return None
    offsets, at = [], offset
    for t in tokens:
        offsets.append(at)
        at += len(t.token)
    return {
        "tokens": [t.token for t in tokens],
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": [{a.token: a.logprob for a in t.top} for t in tokens],
        "text_offset": offsets,
    }


def _tool_call_delta(c: ToolCallDelta) -> dict[str, Any]:
    out: dict[str, Any] = {"index": c.index}
    if c.id:
        out["id"], out["type"] = c.id, "function"
    fn: dict[str, Any] = {"arguments": c.arguments}
    if c.name:
        fn["name"] = c.name
    out["function"] = fn
    return out


@dataclass
class ChatChunks:
    """``chat.completion.chunk`` bodies for one streamed answer."""

    id: str
    model: str
    created: int = field(default_factory=lambda: int(time.time()))

    def _chunk(
        self, delta: dict[str, Any], finish: str | None, logprobs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }

    def first(self) -> dict[str, Any]:
        return self._chunk({"role": "assistant", "content": ""}, None)

    def piece(self, d: Delta) -> dict[str, Any] | None:
        delta: dict[str, Any] = {}
        if d.reasoning:
            delta["reasoning_content"] = d.reasoning
        if d.text:
            delta["content"] = d.text
        if d.tool_calls:
            delta["tool_calls"] = [_tool_call_delta(c) for c in d.tool_calls]
        if not delta and not d.logprobs:
            return None
        return self._chunk(delta, None, chat_logprobs(d.logprobs))

    def last(self, finish: str) -> dict[str, Any]:
        return self._chunk({}, finish)

    def usage(self, a: Answer) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage(a),
        }


def chat_answer(rid: str, model: str, a: Answer) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": a.text if a.text or not a.tool_calls else None}
    if a.reasoning:
        message["reasoning_content"] = a.reasoning
    if a.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in a.tool_calls
        ]
    return {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": chat_logprobs(a.logprobs),
                "finish_reason": a.finish_reason or "stop",
            }
        ],
        "usage": usage(a),
    }


@dataclass
class TextChunks:
    """``text_completion`` bodies for one streamed answer."""

    id: str
    model: str
    created: int = field(default_factory=lambda: int(time.time()))
    offset: int = 0

    def _body(self, text: str, finish: str | None, logprobs: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}],
        }

    def piece(self, d: Delta) -> dict[str, Any] | None:
        if not d.text and not d.logprobs:
            return None
        body = self._body(d.text, None, legacy_logprobs(d.logprobs, self.offset))
        self.offset += len(d.text)
        return body

    def last(self, finish: str) -> dict[str, Any]:
        return self._body("", finish, None)

    def usage(self, a: Answer) -> dict[str, Any]:
        return {**self._body("", None, None), "choices": [], "usage": usage(a)}


def text_answer(rid: str, model: str, a: Answer, *, echo: str = "") -> dict[str, Any]:
    return {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "text": echo + a.text,
                "logprobs": legacy_logprobs(a.logprobs, len(echo)),
                "finish_reason": a.finish_reason or "stop",
            }
        ],
        "usage": usage(a),
    }
