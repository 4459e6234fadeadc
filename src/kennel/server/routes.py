"""The endpoints: OpenAI's /v1 surface, health, readiness, metrics and the pool's state.

A request takes its model's turn (the pool's fair queue), then streams from the engine. For a
stream the first piece is produced before the HTTP response starts, so every error a client can
cause (unknown model, prompt too long, bad schema, full queue) is a proper status code, never a
broken stream.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import struct
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack, suppress
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette.sse import EventSourceResponse

from kennel.engines.base import Delta
from kennel.errors import ClientGoneError, InvalidRequestError, KennelError, ModelLoadError
from kennel.guard.detectors import CanaryWatch, embed_canary, make_canary
from kennel.guard.policy import Verdict
from kennel.server.app import AppState, authenticate, check_key, kennel_error_response
from kennel.server.keys import ApiKey
from kennel.server.protocol import ChatRequest, CompletionRequest, EmbeddingRequest, _Sampled
from kennel.store.profile import Sampling as ProfileSampling

router = APIRouter()
Key = Annotated[ApiKey | None, Depends(authenticate)]
T = TypeVar("T")
log = logging.getLogger("kennel.requests")


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.kennel
    return state


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    pool = _state(request).pool
    first = next(iter(pool.slots.values()), None)
    ready = (
        first is not None and first.state == "ready" and first.engine is not None and first.engine.healthy()
    )
    body = {"status": "ready" if ready else "not ready", "model": first.spec.name if first else None}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(_state(request).metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/v1/models")
async def models(request: Request, key: Key) -> dict[str, Any]:
    pool = _state(request).pool
    data = []
    for name, s in pool.slots.items():
        if key is not None and not key.allows(name):
            continue
        data.append({"id": name, "object": "model", "created": 0, "owned_by": "kennel",
                     "kennel": {"state": s.state, "embedding": s.spec.plan.embedding, "context": s.spec.plan.n_ctx}})  # fmt: skip
    return {"object": "list", "data": data}


@router.get("/kennel/ps")
async def ps(request: Request, key: Key) -> dict[str, Any]:
    """What `kennel ps` shows: loaded models, their memory and queues."""
    state = _state(request)
    now = state.pool.clock()
    rows = []
    for name, s in state.pool.slots.items():
        expires = (
            None
            if s.state != "ready" or s.expires_at == float("inf")
            else round(max(0.0, s.expires_at - now), 1)
        )
        rows.append({"model": name, "state": s.state, "ram_bytes": s.spec.memory.ram, "vram_bytes": list(s.spec.memory.vram),
                     "gpu_layers": s.spec.plan.n_gpu_layers, "context": s.spec.plan.n_ctx, "waiting": s.waiting,
                     "running": s.running, "pinned": s.spec.pinned, "unloads_in_s": expires, "loads": s.loads})  # fmt: skip
    return {
        "models": rows,
        "budget": {"ram_bytes": state.pool.budget.ram, "vram_bytes": list(state.pool.budget.vram)},
    }


def _keep_alive(value: str | int | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, int):
        return float(value)
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        return float(value[:-1]) * units[value[-1]] if value[-1] in units else float(value)
    except (ValueError, IndexError) as exc:
        raise InvalidRequestError(f"keep_alive {value!r} is not a duration like 5m, 30s or -1.") from exc


def _no_wait(request: Request) -> bool:
    return request.headers.get("x-kennel-wait", "").lower() in ("0", "false", "no")


class _Run:
    """One generation: the pool turn held, metrics and the request log written at the end."""

    def __init__(self, request: Request, body: _Sampled, endpoint: str, key: ApiKey | None) -> None:
        self.state = _state(request)
        self.body, self.endpoint, self.key = body, endpoint, key
        self.t0 = time.monotonic()
        self.stack = AsyncExitStack()
        self.prompt_tokens = self.completion_tokens = 0
        self.status = 200
        self.guard: Verdict | None = None
        self.canary: CanaryWatch | None = None
        self._leak_counted = False

    async def check_guard(self, messages: list[tuple[str, str | None]]) -> None:
        """Scan the untrusted input; count the decision; refuse it in block mode."""
        guard = self.state.guard(self.body.model, self.key)
        if guard.mode == "off":
            return
        size = sum(len(c or "") for _, c in messages)
        # ~1 µs a character: long inputs are scanned off the event loop so other requests flow
        v = self.guard = (guard.scan_messages(messages) if size < 20_000
                          else await asyncio.to_thread(guard.scan_messages, messages))  # fmt: skip
        decision = (
            "blocked" if v.blocked else "flagged" if v.flagged else "suspicious" if v.suspicious else "clean"
        )
        self.state.metrics.guard.labels(self.body.model, decision).inc()
        if v.blocked:
            self.status = 400
            self.state.metrics.requests.labels(self.body.model, self.endpoint, "400").inc()
            self._log()
            v.raise_if_blocked()

    def system_with_canary(self, system: str | None) -> str | None:
        """The profile's system prompt with a canary when the guard flags or blocks: a model that
        repeats it has leaked its instructions."""
        if system and self.state.guard(self.body.model, self.key).mode in ("flag", "block"):
            canary = make_canary()
            self.canary = CanaryWatch(canary)
            return embed_canary(system, canary)
        return system

    def _leak(self) -> bool:
        """The canary appeared: count it; True when the guard blocks (the answer stops here)."""
        if not self._leak_counted:
            self._leak_counted = True
            self.state.metrics.guard.labels(self.body.model, "canary_leak").inc()
        return self.state.guard(self.body.model, self.key).mode == "block"

    def headers(self) -> dict[str, str] | None:
        if self.guard is not None and self.guard.flagged:
            return {"X-Kennel-Guard": f"flagged; {','.join(self.guard.labels)}"}
        return None

    async def start(self, request: Request) -> Any:
        engine = await self.stack.enter_async_context(
            self.state.pool.use(
                self.body.model, wait=not _no_wait(request), keep_alive=_keep_alive(self.body.keep_alive)
            )
        )
        self.state.metrics.queue_time.labels(self.body.model).observe(time.monotonic() - self.t0)
        return engine

    def sampling(self) -> Any:
        spec = self.state.pool.slot(self.body.model).spec
        try:
            return self.body.sampling(spec.profile.parameters if spec.profile else ProfileSampling())
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from exc

    def system(self) -> str | None:
        spec = self.state.pool.slot(self.body.model).spec
        return spec.profile.system if spec.profile else None

    async def finish(self) -> None:
        await self.stack.aclose()
        m, model = self.state.metrics, self.body.model
        if self.state.alerts is not None and (self.status == 200 or self.status >= 500):
            self.state.alerts.record(model, self.status == 200)  # client mistakes (4xx) say nothing
        m.requests.labels(model, self.endpoint, str(self.status)).inc()
        m.duration.labels(model, self.endpoint).observe(time.monotonic() - self.t0)
        m.prompt_tokens.labels(model).inc(self.prompt_tokens)
        m.generation_tokens.labels(model).inc(self.completion_tokens)
        self._log()

    def _log(self) -> None:
        guard = None
        if self.guard is not None and self.guard.suspicious:
            guard = {
                "flagged": self.guard.flagged,
                "blocked": self.guard.blocked,
                "labels": list(self.guard.labels),
            }
        if self.canary is not None and self.canary.leaked:
            guard = {**(guard or {}), "canary_leak": True}
        log.info(json.dumps({"endpoint": self.endpoint, "model": self.body.model,
                             "key": self.key.name if self.key else None, "status": self.status,
                             "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                             "latency_ms": round((time.monotonic() - self.t0) * 1000), "guard": guard}))  # fmt: skip

    async def deltas(self, first: Delta, rest: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
        """All pieces, timing the gaps and counting the tokens; cut at the request timeout."""
        m = self.state.metrics.itl.labels(self.body.model)
        deadline = self.t0 + self.state.settings.request_timeout
        last = time.monotonic()
        item: Delta | None = first
        pieces = 0
        while item is not None:
            if item.finish_reason:
                self.prompt_tokens, self.completion_tokens = item.prompt_tokens, item.completion_tokens
            pieces += bool(item.text)
            if item.text and self.canary is not None and self.canary.feed(item.text) and self._leak():
                await rest.aclose()  # type: ignore[attr-defined]
                self.completion_tokens = pieces
                yield Delta(finish_reason="content_filter", completion_tokens=pieces)
                return
            yield item
            if (
                not item.finish_reason and time.monotonic() > deadline
            ):  # closing the engine's stream stops its decode
                await rest.aclose()  # type: ignore[attr-defined]
                self.completion_tokens = pieces
                yield Delta(finish_reason="length", completion_tokens=pieces)
                return
            try:
                item = await rest.__anext__()
            except StopAsyncIteration:
                item = None
            now = time.monotonic()
            if item is not None and item.text:
                m.observe(now - last)
            last = now


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """``work``, abandoned (cancelled) as soon as the client goes away: a queued request whose
    client left must not keep its place, nor a generation nobody will read."""
    task = asyncio.ensure_future(work)

    async def gone() -> None:
        while not await request.is_disconnected():
            await asyncio.sleep(0.1)

    watch = asyncio.ensure_future(gone())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if not task.done():
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        raise ClientGoneError("The client disconnected.")
    return task.result()


async def _begin(run: _Run, request: Request, make: Any) -> tuple[Delta, AsyncIterator[Delta]]:
    """Take the turn and produce the first piece; on any error release the turn and count it."""

    async def first_piece() -> tuple[Delta, AsyncIterator[Delta]]:
        engine = await run.start(request)
        stream = make(engine)
        return await stream.__anext__(), stream

    try:
        first, stream = await until_disconnect(request, first_piece())
    except BaseException as exc:  # the turn is released whatever went wrong
        run.status = int(getattr(exc, "status_code", 500)) if isinstance(exc, KennelError) else 500
        if isinstance(exc, ModelLoadError) and run.state.alerts is not None:
            run.state.alerts.load_failed(run.body.model, exc.message)
        await run.finish()
        raise
    run.state.metrics.ttft.labels(run.body.model).observe(time.monotonic() - run.t0)
    return first, stream


async def _collect(
    run: _Run, first: Delta, rest: AsyncIterator[Delta], text: list[str]
) -> tuple[list[str], str]:
    finish = "stop"
    async for d in run.deltas(first, rest):
        text.append(d.text)
        finish = d.finish_reason or finish
    return text, finish


def _log_content(run: _Run, prompt: Any, answer: str) -> None:
    if run.state.settings.log_content:
        log.info(
            json.dumps({"model": run.body.model, "prompt": prompt, "completion": answer}, ensure_ascii=False)
        )


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatRequest, request: Request, key: Key) -> Any:
    check_key(request, key, body.model)
    run = _Run(request, body, "chat", key)
    sampling = run.sampling()
    await run.check_guard([(m.role, m.text()) for m in body.messages])
    messages = body.engine_messages(run.system_with_canary(run.system()))
    first, rest = await _begin(run, request, lambda e: e.chat(messages, sampling))
    rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": body.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip

    if not body.stream:
        try:
            text, finish = await until_disconnect(request, _collect(run, first, rest, []))
        except BaseException as exc:
            run.status = int(getattr(exc, "status_code", 500))
            raise
        finally:
            await run.finish()
        _log_content(run, [m.__dict__ for m in messages], "".join(text))
        return JSONResponse(headers=run.headers(), content={"id": rid, "object": "chat.completion",
                "created": created, "model": body.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(text)},
                             "finish_reason": finish}], "usage": _usage(run)})  # fmt: skip

    async def events() -> AsyncIterator[dict[str, Any]]:
        yield chunk({"role": "assistant", "content": ""}, None)
        async for d in run.deltas(first, rest):
            if d.text:
                yield chunk({"content": d.text}, None)
            if d.finish_reason:
                yield chunk({}, d.finish_reason)
        if body.stream_options and body.stream_options.include_usage:
            yield {**chunk({}, None), "choices": [], "usage": _usage(run)}

    return _sse(run, events())


@router.post("/v1/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request, key: Key) -> Any:
    check_key(request, key, body.model)
    run = _Run(request, body, "completions", key)
    sampling = run.sampling()
    try:
        prompt = body.text()
    except ValueError as exc:
        raise InvalidRequestError(str(exc)) from exc
    await run.check_guard([("user", prompt)])
    first, rest = await _begin(run, request, lambda e: e.complete(prompt, sampling))
    rid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())

    def choice(text: str, finish: str | None) -> dict[str, Any]:
        return {"id": rid, "object": "text_completion", "created": created, "model": body.model,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}  # fmt: skip

    if not body.stream:
        try:
            text, finish = await until_disconnect(
                request, _collect(run, first, rest, [prompt] if body.echo else [])
            )
        except BaseException as exc:
            run.status = int(getattr(exc, "status_code", 500))
            raise
        finally:
            await run.finish()
        _log_content(run, prompt, "".join(text))
        return JSONResponse({**choice("".join(text), finish), "usage": _usage(run)}, headers=run.headers())

    async def events() -> AsyncIterator[dict[str, Any]]:
        async for d in run.deltas(first, rest):
            if d.text or d.finish_reason:
                yield choice(d.text, d.finish_reason)
        if body.stream_options and body.stream_options.include_usage:
            yield {**choice("", None), "choices": [], "usage": _usage(run)}

    return _sse(run, events())


def _sse(run: _Run, chunks: AsyncIterator[dict[str, Any]]) -> EventSourceResponse:
    """Server-sent events ending in [DONE]; the run (turn, metrics, log) finishes however the
    stream ends, and an engine failure mid-stream counts as a server error."""

    async def events() -> AsyncIterator[str]:
        try:
            async for c in chunks:
                yield json.dumps(c)
            yield "[DONE]"
        except Exception:
            run.status = 500
            raise
        finally:
            await run.finish()

    return EventSourceResponse(events(), ping=15, headers=run.headers())


def _usage(run: _Run) -> dict[str, int]:
    return {"prompt_tokens": run.prompt_tokens, "completion_tokens": run.completion_tokens,
            "total_tokens": run.prompt_tokens + run.completion_tokens}  # fmt: skip


@router.post("/v1/embeddings", response_model=None)
async def embeddings(body: EmbeddingRequest, request: Request, key: Key) -> Any:
    check_key(request, key, body.model)
    state = _state(request)
    t0 = time.monotonic()
    try:
        texts = body.texts()
    except ValueError as exc:
        raise InvalidRequestError(str(exc)) from exc
    status = 200
    try:
        async with state.pool.use(body.model, wait=not _no_wait(request)) as engine:
            out = await engine.embed(texts)
    except KennelError as exc:
        status = int(getattr(exc, "status_code", 400))
        return kennel_error_response(exc)
    finally:
        state.metrics.requests.labels(body.model, "embeddings", str(status)).inc()
        state.metrics.duration.labels(body.model, "embeddings").observe(time.monotonic() - t0)
    state.metrics.prompt_tokens.labels(body.model).inc(out.prompt_tokens)

    def encode(v: tuple[float, ...]) -> list[float] | str:
        if body.encoding_format == "base64":  # little-endian float32, as OpenAI sends it
            return base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()
        return list(v)

    return {"object": "list", "model": body.model,
            "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(out.vectors)],
            "usage": {"prompt_tokens": out.prompt_tokens, "total_tokens": out.prompt_tokens}}  # fmt: skip
