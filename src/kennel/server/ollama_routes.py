"""Ollama's endpoints (/api/*), on the server's port and, with ``ollama_port``, on Ollama's.

Generations go through ``Generation`` like OpenAI's (keys, guard, queue, metrics, request log),
embeddings through ``one_shot``; only the bodies and the framing are Ollama's (``ollama``). The
model store behind /api/pull, /api/delete and /api/copy is in ``ollama_store``. A model is named
as the server serves it, with Ollama's ``:latest`` allowed, or by its Ollama library name when
the server serves that catalog model (``qwen2.5:7b`` for qwen2.5-7b).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import replace
from importlib.metadata import version as package_version
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from sse_starlette.sse import EventSourceResponse

from kennel.catalog.ollama_names import ollama_to_catalog
from kennel.engines.base import Engine
from kennel.errors import InvalidRequestError, KennelError, ServingError
from kennel.server import ollama_store
from kennel.server.auth import Key, check_key, require_store_api
from kennel.server.front import log_request
from kennel.server.generation import (
    Framing,
    Generation,
    keep_alive_seconds,
    one_shot,
    status_of,
    until_disconnect,
)
from kennel.server.keys import ApiKey
from kennel.server.model_facts import ModelFacts, read_facts
from kennel.server.ollama import (
    NS,
    OLLAMA_API_VERSION,
    ChatBody,
    CopyBody,
    EmbedBody,
    EmbeddingsBody,
    GenerateBody,
    ModelBody,
    PullBody,
    chat_answer,
    chat_last,
    chat_line,
    generate_answer,
    generate_line,
    iso,
    now_iso,
)
from kennel.server.pool import FOREVER
from kennel.server.state import AppState
from kennel.settings import KennelHome

router = APIRouter()
LINES = Framing(ndjson=True, done=None, dialect="ollama")
# Ollama's "forever" (keep_alive -1) is its longest duration from now: the year 2318
FOREVER_S = (1 << 63) / NS


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.kennel
    return state


def served(state: AppState, name: str) -> str:
    """The served model an Ollama client means; the name as given when none (a 404 follows)."""
    slots = state.pool.slots
    base = name.removesuffix(":latest")
    if name in slots or base in slots:
        return name if name in slots else base
    o = ollama_to_catalog(name)
    return o.catalog if o is not None and o.catalog in slots else name


def _invalid(exc: ValueError) -> InvalidRequestError:
    return InvalidRequestError(str(exc))


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def root() -> PlainTextResponse:
    """Ollama's clients check that the server is up here before anything else."""
    return PlainTextResponse("kennel is running (Ollama API at /api)")


@router.get("/api/version")
async def api_version() -> dict[str, str]:
    return {"version": OLLAMA_API_VERSION, "kennel": package_version("kennel")}


# ---- generating -------------------------------------------------------------------------------
@router.post("/api/chat", response_model=None)
async def chat(body: ChatBody, request: Request, key: Key) -> Any:
    model = served(_state(request), body.model)
    check_key(request, key, model)
    if not body.messages:
        return await _load_or_unload(request, model, body.keep_alive, chat=True, name=body.model)
    g = Generation(request, model=model, endpoint="ollama_chat", key=key, keep_alive=body.keep_alive)
    try:
        internal = body.to_request(g.profile_defaults())
    except ValueError as exc:
        raise _invalid(exc) from exc
    internal = replace(internal, messages=g.with_system(internal.messages))
    await g.check_guard(body.guard_input())
    first, rest = await g.open(internal)
    if not body.stream:
        answer = await g.collect(first, rest)
        g.log_content([m.model_dump(exclude_none=True) for m in body.messages])
        return JSONResponse(
            chat_answer(body.model, answer, t0=g.t0, first_at=g.first_at), headers=g.headers()
        )

    async def lines() -> AsyncIterator[dict[str, Any]]:
        async for d in g.pieces(first, rest):
            if (line := chat_line(body.model, d)) is not None:
                yield line
        for line in chat_last(body.model, g.answer, t0=g.t0, first_at=g.first_at):
            yield line

    return g.stream(lines(), LINES)


@router.post("/api/generate", response_model=None)
async def generate(body: GenerateBody, request: Request, key: Key) -> Any:
    model = served(_state(request), body.model)
    check_key(request, key, model)
    if not body.prompt and not body.system:
        return await _load_or_unload(request, model, body.keep_alive, chat=False, name=body.model)
    g = Generation(request, model=model, endpoint="ollama_generate", key=key, keep_alive=body.keep_alive)
    internal = body.to_request(g.profile_defaults())
    if internal.is_chat:
        internal = replace(internal, messages=g.with_system(internal.messages))
    await g.check_guard(body.guard_input())
    first, rest = await g.open(internal)
    if not body.stream:
        answer = await g.collect(first, rest)
        g.log_content(body.prompt)
        whole = generate_answer(body.model, answer, t0=g.t0, first_at=g.first_at, whole=True)
        return JSONResponse(whole, headers=g.headers())

    async def lines() -> AsyncIterator[dict[str, Any]]:
        async for d in g.pieces(first, rest):
            if (line := generate_line(body.model, d)) is not None:
                yield line
        yield generate_answer(body.model, g.answer, t0=g.t0, first_at=g.first_at, whole=False)

    return g.stream(lines(), LINES)


async def _load_or_unload(
    request: Request, model: str, keep_alive: str | float | None, *, chat: bool, name: str
) -> JSONResponse:
    """Ollama's way to load a model (a request with nothing to say) or, with keep_alive 0, to
    unload it."""
    pool = _state(request).pool
    slot = pool.slot(model)
    ka = keep_alive_seconds(keep_alive)
    if ka == 0:
        if slot.spec.pinned:
            raise InvalidRequestError(
                f"{model} is pinned by the server's operator; it stays loaded.",
                hint="Ask the operator to unpin it (pinned: false in the server config).",
            )
        await pool.expire(model)
        reason = "unload"
    else:
        async with pool.use(model, keep_alive=ka):
            pass
        reason = "load"
    said: dict[str, Any] = {"message": {"role": "assistant", "content": ""}} if chat else {"response": ""}
    return JSONResponse({"model": name, "created_at": now_iso(), **said, "done": True, "done_reason": reason})


# ---- embeddings -------------------------------------------------------------------------------
@router.post("/api/embed", response_model=None)
async def embed(body: EmbedBody, request: Request, key: Key) -> Any:
    model = served(_state(request), body.model)
    check_key(request, key, model)
    try:
        texts = body.texts()
    except ValueError as exc:
        raise _invalid(exc) from exc
    t0 = time.monotonic()

    async def work(engine: Engine) -> tuple[dict[str, Any], int]:
        out = await engine.embed(texts)
        return {
            "model": body.model,
            "embeddings": [list(v) for v in out.vectors],
            "total_duration": int((time.monotonic() - t0) * NS),
            "load_duration": 0,
            "prompt_eval_count": out.prompt_tokens,
        }, out.prompt_tokens

    return await one_shot(
        request, key, model, "ollama_embed", "embed", work, keep_alive=body.keep_alive, dialect="ollama"
    )


@router.post("/api/embeddings", response_model=None)
async def embeddings(body: EmbeddingsBody, request: Request, key: Key) -> Any:
    """Ollama's older embeddings endpoint: one prompt, one vector."""
    model = served(_state(request), body.model)
    check_key(request, key, model)

    async def work(engine: Engine) -> tuple[dict[str, Any], int]:
        out = await engine.embed([body.prompt])
        return {"embedding": list(out.vectors[0])}, out.prompt_tokens

    return await one_shot(
        request, key, model, "ollama_embed", "embed", work, keep_alive=body.keep_alive, dialect="ollama"
    )


# ---- what is served ---------------------------------------------------------------------------
async def _facts(state: AppState, name: str) -> ModelFacts:
    """Read once per model, off the event loop (a GGUF header holds the whole vocabulary)."""
    if name not in state.facts:
        state.facts[name] = await asyncio.to_thread(read_facts, state.pool.slot(name).spec)
    return state.facts[name]


def _visible(state: AppState, key: ApiKey | None) -> list[str]:
    return [n for n in state.pool.slots if key is None or key.allows(n)]


@router.get("/api/tags")
async def tags(request: Request, key: Key) -> dict[str, Any]:
    """The models this server serves (a model in the store but not served is not listed: a
    client could not use it)."""
    state = _state(request)
    models = []
    for name in _visible(state, key):
        f = await _facts(state, name)
        models.append(
            {
                "name": name,
                "model": name,
                "modified_at": iso(f.modified_at),
                "size": f.size,
                "digest": f.digest,
                "details": f.details(),
            }
        )
    return {"models": models}


@router.get("/api/ps")
async def ps(request: Request, key: Key) -> dict[str, Any]:
    state = _state(request)
    pool, now = state.pool, time.time()
    models = []
    for name in _visible(state, key):
        s = pool.slots[name]
        if s.state == "unloaded":
            continue
        f = await _facts(state, name)
        left = (
            FOREVER_S if s.expires_at == FOREVER or s.spec.pinned else max(0.0, s.expires_at - pool.clock())
        )
        models.append(
            {
                "name": name,
                "model": name,
                "size": s.memory.total,
                "digest": f.digest,
                "details": f.details(),
                "expires_at": iso(now + left),
                "size_vram": sum(s.memory.vram),
                "context_length": s.spec.plan.context,
            }
        )
    return {"models": models}


@router.post("/api/show")
async def show(body: ModelBody, request: Request, key: Key) -> dict[str, Any]:
    state = _state(request)
    model = served(state, body.ref)
    check_key(request, key, model)
    spec = state.pool.slot(model).spec
    f = await _facts(state, model)
    profile = spec.profile
    params = profile.parameters.model_dump(exclude_none=True) if profile else {}
    lines = [f"{k} {json.dumps(x)}" for k, v in params.items() for x in (v if isinstance(v, tuple) else [v])]
    if spec.plan.task == "embed":
        caps = ["embedding"]
    elif spec.plan.task == "generate":
        caps = ["completion", *(["tools"] if "tools" in f.template else [])]
        caps += ["thinking"] if "<think>" in f.template else []
    else:
        caps = []
    modelfile = [f"# Served by kennel as {model}", f"FROM {spec.plan.model}"]
    modelfile += [f'TEMPLATE """{f.template}"""'] if f.template else []
    modelfile += [f"PARAMETER {line}" for line in lines]
    # the operator's system prompt stays private (the guard's canary and system_policy rely on it)
    out: dict[str, Any] = {
        "license": "",
        "modelfile": "\n".join(modelfile) + "\n",
        "parameters": "\n".join(lines),
        "template": f.template,
        "details": f.details(),
        "model_info": {**f.info, "general.parameter_count": f.parameters},
        "capabilities": caps,
        "modified_at": iso(f.modified_at),
    }
    return out


# ---- the model store --------------------------------------------------------------------------
def _home(state: AppState) -> KennelHome:
    if state.home is None:
        raise ServingError("This server has no model store.", hint="Start it with `kennel serve`.")
    return state.home


def _account(request: Request, key: ApiKey | None, endpoint: str, model: str, status: int, t0: float) -> None:
    state = _state(request)
    state.metrics.requests.labels(state.metrics.model_label(model), endpoint, str(status)).inc()
    log_request(
        request.scope.setdefault("state", {}),
        {
            "endpoint": endpoint,
            "model": model,
            "key": key.name if key else None,
            "status": status,
            "latency_ms": round((time.monotonic() - t0) * 1000),
        },
    )


@router.post("/api/pull", response_model=None)
async def pull(body: PullBody, request: Request, key: Key) -> Any:
    require_store_api(request, key)
    state, t0 = _state(request), time.monotonic()
    home, who = _home(state), ollama_store.actor_of(key.name if key else None)
    try:
        target = await asyncio.to_thread(ollama_store.plan, body.ref)
    except KennelError as exc:
        _account(request, key, "ollama_pull", body.ref, status_of(exc), t0)
        raise
    if not body.stream:

        async def drain() -> None:
            async with aclosing(ollama_store.pull_lines(home, target, who)) as lines:
                async for _ in lines:
                    pass

        try:
            await until_disconnect(request, drain())
        except BaseException as exc:
            _account(request, key, "ollama_pull", body.ref, status_of(exc), t0)
            raise
        _account(request, key, "ollama_pull", body.ref, 200, t0)
        return {"status": "success"}

    async def lines() -> AsyncIterator[bytes]:
        status = 499  # unless the pull ends, or fails and says so
        try:
            # closed with this stream, so a client that leaves stops the download
            async with aclosing(ollama_store.pull_lines(home, target, who)) as progress:
                async for line in progress:
                    yield LINES.encode(line)
            status = 200
        except Exception as exc:
            failure = exc if isinstance(exc, KennelError) else ServingError(f"The pull failed: {exc}.")
            status = status_of(failure)
            yield LINES.encode(LINES.error(failure))
        finally:
            _account(request, key, "ollama_pull", body.ref, status, t0)

    return EventSourceResponse(lines(), ping=0, media_type="application/x-ndjson")


@router.delete("/api/delete", response_model=None)
async def delete(body: ModelBody, request: Request, key: Key) -> Response:
    require_store_api(request, key)
    state, t0 = _state(request), time.monotonic()
    try:
        await asyncio.to_thread(
            ollama_store.delete, _home(state), body.ref, ollama_store.actor_of(key.name if key else None)
        )
    except KennelError as exc:
        _account(request, key, "ollama_delete", body.ref, status_of(exc), t0)
        raise
    _account(request, key, "ollama_delete", body.ref, 200, t0)
    return Response(status_code=200)


@router.post("/api/copy", response_model=None)
async def copy(body: CopyBody, request: Request, key: Key) -> Response:
    require_store_api(request, key)
    state, t0 = _state(request), time.monotonic()
    try:
        who = ollama_store.actor_of(key.name if key else None)
        await asyncio.to_thread(ollama_store.copy, _home(state), body.source, body.destination, who)
    except KennelError as exc:
        _account(request, key, "ollama_copy", body.source, status_of(exc), t0)
        raise
    _account(request, key, "ollama_copy", body.source, 200, t0)
    return Response(status_code=200)
