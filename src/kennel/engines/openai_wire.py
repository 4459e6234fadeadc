"""kennel's internal request in the OpenAI wire format engines speak, and their streamed chunks
back as ``Delta`` pieces.

llama.cpp's server core (in process through xllamacpp), an external llama-server and vLLM all
take OpenAI-shaped bodies and stream OpenAI chunks, so this one translation serves every engine.
Engines always stream, even for a client that wants one JSON answer: only a stream can be
stopped between tokens when the client goes away.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from kennel.engines.base import (
    Delta,
    Embeddings,
    FinishReason,
    Message,
    Ranked,
    Ranking,
    Request,
    Sampling,
    Task,
    TokenLogprob,
    ToolCallDelta,
    TopLogprob,
)
from kennel.errors import ContextLengthError, EngineError, InvalidRequestError, KennelError, ModelLoadingError

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
}


def _message(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.name is not None:
        out["name"] = m.name
    if m.reasoning:
        out["reasoning_content"] = m.reasoning
    return out


def sampling_fields(s: Sampling, *, chat: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "temperature": s.temperature,
        "top_p": s.top_p,
        "top_k": s.top_k,
        "min_p": s.min_p,
        "repeat_penalty": s.repeat_penalty,
        "presence_penalty": s.presence_penalty,
        "frequency_penalty": s.frequency_penalty,
    }
    if s.seed is not None:
        body["seed"] = s.seed
    if s.stop:
        body["stop"] = list(s.stop)
    if s.max_tokens is not None:
        body["max_tokens"] = s.max_tokens
    if s.logit_bias:
        body["logit_bias"] = [[tok, bias] for tok, bias in s.logit_bias]
    if s.json_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": json.loads(s.json_schema)},  # vLLM needs a name
        }
    elif s.json_mode:
        body["response_format"] = {"type": "json_object"}
    if s.logprobs:
        # llama.cpp reports nothing with zero alternatives; ask for one and drop it when rendering
        if chat:
            body["logprobs"], body["top_logprobs"] = True, max(1, s.top_logprobs)
        else:
            body["logprobs"] = max(1, s.top_logprobs)
    return body


def request_body(request: Request) -> dict[str, Any]:
    """The streamed OpenAI body for ``request`` (chat or text completion)."""
    body: dict[str, Any] = {
        **sampling_fields(request.sampling, chat=request.is_chat),
        "stream": True,
        "stream_options": {"include_usage": True},
        # a chunk per prompt batch too, so a long prompt can be abandoned between batches
        "return_progress": True,
    }
    if not request.is_chat:
        body["prompt"] = request.prompt
        return body
    body["messages"] = [_message(m) for m in request.messages]
    tools = request.tools
    choice = request.tool_choice
    if tools and choice not in ("auto", "none", "required"):
        # one named function: offer only that one, and require a call
        tools = tuple(t for t in tools if t.name == choice)
        choice = "required"
    if tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": json.loads(t.parameters),
                },
            }
            for t in tools
        ]
        body["tool_choice"] = choice
        body["parallel_tool_calls"] = request.parallel_tool_calls
    return body


def engine_error(err: Mapping[str, Any]) -> KennelError:
    """An engine's error object as kennel's error (status from the engine's own type)."""
    message = str(err.get("message") or "the engine failed")
    kind = str(err.get("type") or "")
    code = int(err.get("code") or 500)
    if kind == "exceed_context_size_error":
        n, ctx = err.get("n_prompt_tokens"), err.get("n_ctx")
        return ContextLengthError(
            f"The prompt is {n} tokens, more than this model's context of {ctx} tokens per request "
            "(prompt and answer together)."
            if n and ctx
            else message,
            hint="Shorten the prompt or the history, or serve the model with a larger context (--ctx).",
        )
    if "maximum context length" in message or "longer than the maximum model length" in message:
        return ContextLengthError(  # vLLM's words for the same refusal
            message,
            hint="Shorten the prompt or the history, or serve the model with a larger context (--ctx).",
        )
    if code == 503 or kind == "unavailable_error":
        return ModelLoadingError(message, hint="Retry shortly.", retry_after=5.0)
    if 400 <= code < 500 or kind in ("invalid_request_error", "not_supported_error"):
        return InvalidRequestError(message)
    return EngineError(f"The engine failed: {message}", hint="See the server log; retry the request.")


def _logprobs(choice: Mapping[str, Any], keep_top: int) -> tuple[TokenLogprob, ...]:
    lp = choice.get("logprobs")
    if not isinstance(lp, Mapping):
        return ()
    out = []
    for t in lp.get("content") or ():
        top = tuple(
            TopLogprob(str(a.get("token", "")), float(a.get("logprob", 0.0)), _bytes(a.get("bytes")))
            for a in (t.get("top_logprobs") or ())[:keep_top]
        )
        out.append(
            TokenLogprob(str(t.get("token", "")), float(t.get("logprob", 0.0)), _bytes(t.get("bytes")), top)
        )
    return tuple(out)


def _bytes(value: Any) -> tuple[int, ...] | None:
    return tuple(int(b) for b in value) if isinstance(value, list) else None


class ChunkReader:
    """Stateful for one request: ``feed`` turns a chunk into the Delta a client may see now (or
    None); ``finish`` gives the last Delta, with the reason and the token counts, which arrive in
    separate chunks."""

    def __init__(self, *, top_logprobs: int = 0) -> None:
        self.finish_reason: FinishReason | None = None
        self.usage: Mapping[str, Any] | None = None
        self.keep_top = top_logprobs
        self.prompt_tokens = 0  # known from the prompt progress before the answer ends
        self._told = False

    def feed(self, chunk: Mapping[str, Any]) -> Delta | None:
        if "error" in chunk:
            err = chunk["error"]
            raise engine_error(err if isinstance(err, Mapping) else {"message": str(err)})
        if isinstance(chunk.get("usage"), Mapping):
            self.usage = chunk["usage"]
        progress = chunk.get("prompt_progress")
        if isinstance(progress, Mapping) and progress.get("total"):
            self.prompt_tokens = int(progress["total"])
        choices = chunk.get("choices") or ()
        if not choices:
            return None
        choice = choices[0]
        if choice.get("finish_reason"):
            self.finish_reason = _FINISH.get(str(choice["finish_reason"]), "stop")
        text, reasoning, calls = "", "", tuple[ToolCallDelta, ...]()
        delta = choice.get("delta")
        if isinstance(delta, Mapping):  # chat
            text = delta.get("content") or ""
            reasoning = delta.get("reasoning_content") or ""
            calls = tuple(
                ToolCallDelta(
                    index=int(c.get("index", 0)),
                    id=c.get("id") or None,
                    name=(c.get("function") or {}).get("name") or None,
                    arguments=(c.get("function") or {}).get("arguments") or "",
                )
                for c in delta.get("tool_calls") or ()
            )
        else:  # text completion
            text = choice.get("text") or ""
        d = Delta(text=text, reasoning=reasoning, tool_calls=calls, logprobs=_logprobs(choice, self.keep_top))
        if d.empty:
            return None
        if not self._told and self.prompt_tokens:  # counted even if the answer is cut short
            self._told = True
            return replace(d, prompt_tokens=self.prompt_tokens)
        return d

    def finish(self) -> Delta:
        u = self.usage or {}
        details = u.get("prompt_tokens_details") or {}
        return Delta(
            finish_reason=self.finish_reason or "stop",
            prompt_tokens=int(u.get("prompt_tokens") or 0),
            completion_tokens=int(u.get("completion_tokens") or 0),
            cached_tokens=int(details.get("cached_tokens") or 0),
        )


_TASKS = {"generate": "a text-generation", "embed": "an embedding", "rerank": "a reranking"}


def wrong_task(name: str, task: Task, what: str) -> InvalidRequestError:
    """A request for something this model is not for (chat to a reranker, embeddings from a chat model)."""
    return InvalidRequestError(
        f"{name} is {_TASKS[task]} model; it does not do {what}.",
        hint="Pick a model for this endpoint (GET /v1/models lists what each one does).",
    )


def embeddings_of(doc: Mapping[str, Any]) -> Embeddings:
    """An OpenAI /v1/embeddings answer, vectors in the order of the inputs."""
    data = sorted(doc["data"], key=lambda d: int(d["index"]))
    vectors = tuple(tuple(float(v) for v in d["embedding"]) for d in data)
    return Embeddings(vectors=vectors, prompt_tokens=int((doc.get("usage") or {}).get("prompt_tokens", 0)))


def ranking_of(doc: Mapping[str, Any]) -> Ranking:
    """A /v1/rerank answer (llama-server's and Jina's shape, vLLM's too), best first."""
    ranked = sorted(
        (Ranked(int(x["index"]), float(x["relevance_score"])) for x in doc["results"]), key=lambda x: -x.score
    )
    usage = doc.get("usage") or {}
    return Ranking(
        results=tuple(ranked), prompt_tokens=int(usage.get("prompt_tokens") or usage.get("total_tokens") or 0)
    )
