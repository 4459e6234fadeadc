"""The endpoints: OpenAI's /v1 surface, rerank, health, readiness, metrics and the pool's state.

Each route is thin: it validates the body (``protocol``), turns it into kennel's one internal
``Request``, runs it through ``Generation`` (guard, admission, pieces, accounting) and renders
the pieces back in OpenAI's shapes (``render``).
"""

from __future__ import annotations

import base64
import dataclasses
import struct
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from kennel.engines.base import Delta
from kennel.errors import InvalidRequestError
from kennel.server.auth import Key, authenticate, check_key
from kennel.server.engine_metrics import engine_metrics
from kennel.server.generation import Generation, one_shot
from kennel.server.keys import ApiKey
from kennel.server.protocol import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    RerankRequest,
    StreamOptions,
)
from kennel.server.render import ChatChunks, TextChunks, chat_answer, text_answer
from kennel.server.state import AppState

router = APIRouter()


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.kennel
    return state


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Ready: the server takes requests (it answers only after loading its `preload` and pinned
    models) and every pinned model is warm. A model unloaded for idleness loads again on demand,
    so it does not make the server unready. Says nothing more: it answers anyone."""
    pool = _state(request).pool
    ready = all(
        s.state == "ready" and s.engine is not None and s.engine.healthy()
        for s in pool.slots.values()
        if s.spec.pinned
    )
    return JSONResponse({"status": "ready" if ready else "not ready"}, status_code=200 if ready else 503)


async def _metrics_reader(request: Request) -> ApiKey | None:
    """With API keys in use /metrics wants one (Prometheus sends it as a bearer token), unless
    the operator made it public: it names every model the server has."""
    if _state(request).settings.metrics_public:
        return None
    return await authenticate(request)


@router.get("/metrics")
async def metrics(request: Request, key: Annotated[ApiKey | None, Depends(_metrics_reader)]) -> Response:
    state = _state(request)
    # kennel's own metrics, then each loaded engine's, labelled with the model they are from
    body = state.metrics.render() + await engine_metrics(state.pool)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/v1/models")
async def models(request: Request, key: Key) -> dict[str, Any]:
    pool = _state(request).pool
    data = []
    for name, s in pool.slots.items():
        if key is not None and not key.allows(name):
            continue
        p = s.spec.plan
        data.append(
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "kennel",
                "kennel": {
                    "state": s.state,
                    "task": p.task,
                    "embedding": p.task == "embed",
                    "context": p.context,
                    "parallel": p.parallel,
                },
            }
        )
    return {"object": "list", "data": data}


@router.get("/kennel/ps")
async def ps(request: Request, key: Key) -> dict[str, Any]:
    """What `kennel ps` shows: loaded models, their memory and queues."""
    state = _state(request)
    now = state.pool.clock()
    rows = []
    for name, s in state.pool.slots.items():
        if key is not None and not key.allows(name):
            continue  # a key sees only the models it may use
        expires = (
            None
            if s.state != "ready" or s.expires_at == float("inf")
            else round(max(0.0, s.expires_at - now), 1)
        )
        mem = s.memory
        rows.append(
            {
                "model": name,
                "state": s.state,
                "ram_bytes": mem.ram,
                "vram_bytes": list(mem.vram),
                "memory_reported": s.held is not None,
                "gpu_layers": s.spec.plan.gpu_layers,
                "context": s.spec.plan.context,
                "parallel": s.spec.plan.parallel,
                "waiting": s.waiting,
                "running": s.running,
                "pinned": s.spec.pinned,
                "unloads_in_s": expires,
                "loads": s.loads,
            }
        )
    return {
        "models": rows,
        "budget": {"ram_bytes": state.pool.budget.ram, "vram_bytes": list(state.pool.budget.vram)},
    }


def _invalid(exc: ValueError) -> InvalidRequestError:
    return InvalidRequestError(str(exc))


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatRequest, request: Request, key: Key) -> Any:
    check_key(request, key, body.model)
    g = Generation(request, model=body.model, endpoint="chat", key=key, keep_alive=body.keep_alive)
    try:
        internal = body.to_request(g.profile_defaults())
    except ValueError as exc:
        raise _invalid(exc) from exc
    internal = dataclasses.replace(internal, messages=g.with_system(internal.messages))
    await g.check_guard([(m.role, m.text()) for m in body.messages])
    first, rest = await g.open(internal)
    if not body.stream:
        answer = await g.collect(first, rest)
        g.log_content([m.model_dump(exclude_none=True) for m in body.messages])
        return JSONResponse(chat_answer(g.id, body.model, answer), headers=g.headers())
    return g.stream(_chunks(g, first, rest, ChatChunks(g.id, body.model), body.stream_options))


@router.post("/v1/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request, key: Key) -> Any:
    check_key(request, key, body.model)
    g = Generation(
        request,
        model=body.model,
        endpoint="completions",
        key=key,
        keep_alive=body.keep_alive,
        id_prefix="cmpl",
    )
    try:
        internal = body.to_request(g.profile_defaults())
    except ValueError as exc:
        raise _invalid(exc) from exc
    prompt = internal.prompt or ""
    await g.check_guard([("user", prompt)])
    first, rest = await g.open(internal)
    if not body.stream:
        answer = await g.collect(first, rest)
        g.log_content(prompt)
        return JSONResponse(
            text_answer(g.id, body.model, answer, echo=prompt if body.echo else ""), headers=g.headers()
        )
    return g.stream(_chunks(g, first, rest, TextChunks(g.id, body.model), body.stream_options))


async def _chunks(
    g: Generation,
    first: Delta,
    rest: AsyncIterator[Delta],
    out: ChatChunks | TextChunks,
    options: StreamOptions | None,
) -> AsyncIterator[dict[str, Any]]:
    """OpenAI's stream of one answer: (chat's role chunk,) a chunk per piece, one with the finish
    reason, then the usage if the client asked for it."""
    if isinstance(out, ChatChunks):
        yield out.first()
    async for d in g.pieces(first, rest):
        if (c := out.piece(d)) is not None:
            yield c
        if d.finish_reason:
            yield out.last(d.finish_reason)
    if options is not None and options.include_usage:
        yield out.usage(g.answer)


@router.post("/v1/embeddings", response_model=None)
async def embeddings(body: EmbeddingRequest, request: Request, key: Key) -> Any:
    check_key(request, key, body.model)
    try:
        texts = body.texts()
    except ValueError as exc:
        raise _invalid(exc) from exc

    def encode(v: tuple[float, ...]) -> list[float] | str:
        if body.encoding_format == "base64":  # little-endian float32, as OpenAI sends it
            return base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()
        return list(v)

    async def work(engine: Any) -> tuple[dict[str, Any], int]:
        out = await engine.embed(texts)
        return {
            "object": "list",
            "model": body.model,
            "data": [
                {"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(out.vectors)
            ],
            "usage": {"prompt_tokens": out.prompt_tokens, "total_tokens": out.prompt_tokens},
        }, out.prompt_tokens

    return await one_shot(request, key, body.model, "embeddings", "embed", work)


@router.post("/v1/rerank", response_model=None)
@router.post("/rerank", response_model=None)
async def rerank(body: RerankRequest, request: Request, key: Key) -> Any:
    """Documents ordered by relevance to the query, best first (llama-server's and Jina's shape)."""
    check_key(request, key, body.model)
    try:
        docs = body.texts()
    except ValueError as exc:
        raise _invalid(exc) from exc

    async def work(engine: Any) -> tuple[dict[str, Any], int]:
        out = await engine.rerank(body.query, docs)
        results = []
        for r in out.results[: body.top_n or len(out.results)]:
            item: dict[str, Any] = {"index": r.index, "relevance_score": r.score}
            if body.return_documents:
                item["document"] = {"text": docs[r.index]}
            results.append(item)
        return {
            "object": "list",
            "model": body.model,
            "results": results,
            "usage": {"prompt_tokens": out.prompt_tokens, "total_tokens": out.prompt_tokens},
        }, out.prompt_tokens

    return await one_shot(request, key, body.model, "rerank", "rerank", work)
