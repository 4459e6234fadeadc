"""One generation request's life on the server, whatever protocol it came in by: the guard, its
admission to the model, the first piece before the HTTP response starts, the pieces after it
(timed, counted, watched for the canary, cut at the request timeout), then metrics and the
request log.

Status codes are the client's view: 200 for an answer that ended, 4xx/5xx for errors, and 499
(nginx's "client closed request") when the client went away first. A 499 records the tokens that
were actually sent and counts as neither a success nor a failure in the failure alerts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from fastapi import Request as HttpRequest
from sse_starlette.sse import EventSourceResponse

from kennel.engines.base import Answer, Delta, Engine, FinishReason, Message, Request
from kennel.errors import (
    ClientGoneError,
    ContextLengthError,
    EngineError,
    InvalidRequestError,
    KennelError,
    ModelLoadError,
)
from kennel.guard.detectors import CanaryWatch, embed_canary, make_canary
from kennel.guard.policy import Verdict
from kennel.server.front import log_request
from kennel.server.http_errors import Dialect, kennel_error_body, kennel_error_response, status_of_error
from kennel.server.keys import ApiKey
from kennel.server.state import AppState
from kennel.store.profile import Sampling as ProfileSampling
from kennel.units import parse_duration

T = TypeVar("T")
log = logging.getLogger("kennel.requests")
CLIENT_GONE = 499


def keep_alive_seconds(value: str | float | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise InvalidRequestError(f"keep_alive: {exc}.") from exc


def no_wait(request: HttpRequest) -> bool:
    return request.headers.get("x-kennel-wait", "").lower() in ("0", "false", "no")


def status_of(exc: BaseException) -> int:
    if isinstance(exc, KennelError):
        return status_of_error(exc)
    if isinstance(exc, asyncio.CancelledError):
        return CLIENT_GONE
    return 500


async def until_disconnect(request: HttpRequest, work: Awaitable[T]) -> T:
    """``work``, abandoned (cancelled) as soon as the client goes away: a queued request whose
    client left must not keep its place, nor a generation nobody will read. The disconnect is read
    from the ASGI receive channel (the body is already consumed), so nothing polls."""
    task = asyncio.ensure_future(work)

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watch = asyncio.ensure_future(gone())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # we were cancelled ourselves (shutdown): so is the work
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        raise
    finally:
        watch.cancel()
    if not task.done():
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        raise ClientGoneError("The client disconnected.")
    return task.result()


class Generation:
    """One generation: admission held, pieces timed and counted, metrics and the log at the end."""

    def __init__(
        self,
        http: HttpRequest,
        *,
        model: str,
        endpoint: str,
        key: ApiKey | None,
        keep_alive: str | float | None = None,
        id_prefix: str = "chatcmpl",
    ) -> None:
        self.http = http
        self.state: AppState = http.app.state.kennel
        self.model, self.endpoint, self.key = model, endpoint, key
        self.label = self.state.metrics.model_label(model)
        self.keep_alive = keep_alive_seconds(keep_alive)
        self.id = f"{id_prefix}-{uuid.uuid4().hex[:24]}"
        self.t0 = time.monotonic()
        self.first_at: float | None = None  # when the first piece came (Ollama reports the times)
        self.stack = AsyncExitStack()
        self.status = 200
        self.answer = Answer()
        self.guard: Verdict | None = None
        self.canary: CanaryWatch | None = None
        self._leak_counted = False
        self._finished = False
        self._timed_out = False  # the request timeout's timer fired (it told the engine to stop)
        # the loop keeps only a weak reference to a task: this one keeps the timer's abort alive
        self._aborting: asyncio.Future[None] | None = None

    # ---- before the model -----------------------------------------------------------------
    def profile_defaults(self) -> ProfileSampling:
        spec = self.state.pool.slot(self.model).spec
        return spec.profile.parameters if spec.profile else ProfileSampling()

    def with_system(self, messages: tuple[Message, ...]) -> tuple[Message, ...]:
        """The profile's system prompt and the client's, by the profile's ``system_policy``:
        ``prepend`` (the default) puts the profile's first and the client's after it in the same
        system message, ``replace`` lets the client's stand instead, ``forbid`` refuses a client's.
        When the guard flags or blocks, a canary goes in the system message the model follows, in
        every case: a model that repeats it has leaked its instructions."""
        profile = self.state.pool.slot(self.model).spec.profile
        system = profile.system if profile else None
        if not system:
            return messages
        policy = profile.system_policy if profile else "prepend"
        first = next((i for i, m in enumerate(messages) if m.role == "system"), None)
        if first is not None and policy == "forbid":
            raise InvalidRequestError(
                f"{self.model} keeps its own system prompt; this request may not send one.",
                hint="Drop the system message, or ask the operator (system_policy in the model's profile).",
            )
        if first is None:
            return (Message("system", self._canary(system)), *messages)
        client = messages[first]
        text = client.content or "" if policy == "replace" else f"{system.rstrip()}\n\n{client.content or ''}"
        return (*messages[:first], replace(client, content=self._canary(text)), *messages[first + 1 :])

    def _canary(self, system: str) -> str:
        if self.state.guard(self.model, self.key).mode not in ("flag", "block"):
            return system
        canary = make_canary()
        self.canary = CanaryWatch(canary)
        return embed_canary(system, canary)

    async def check_guard(self, messages: list[tuple[str, str | None]]) -> None:
        """Scan the untrusted input (heuristics, then the second stage within its budget); count
        the decision by the stage that made it; refuse it in block mode."""
        guard = self.state.guard(self.model, self.key)
        if guard.mode == "off":
            return
        v = self.guard = await guard.check(messages)
        self.state.metrics.guard.labels(self.label, v.stage, v.decision).inc()
        if v.outcome is not None and v.outcome.decision in ("timeout", "error"):
            log.warning(
                "guard stage %s %s after %.0f ms (%s); failing %s",
                v.outcome.stage,
                v.outcome.decision,
                v.outcome.seconds * 1000,
                v.outcome.detail,
                guard.fail,
            )
        if v.blocked:
            self.status = 400
            self.state.metrics.requests.labels(self.label, self.endpoint, "400").inc()
            self._log()
            self._finished = True
            v.raise_if_blocked()

    def headers(self) -> dict[str, str] | None:
        if self.guard is not None and self.guard.flagged:
            v = self.guard
            return {"X-Kennel-Guard": f"flagged; {','.join(v.labels)}; stage={v.stage}; {v.where}"}
        return None

    # ---- with the model -------------------------------------------------------------------
    async def open(self, request: Request) -> tuple[Delta, AsyncIterator[Delta]]:
        """Admission, then the first piece, before any byte of the response: every error a
        client can cause is a proper status code. On any error the admission is released and the
        request counted."""

        async def first_piece() -> tuple[Delta, AsyncIterator[Delta]]:
            engine: Engine = await self.stack.enter_async_context(
                self.state.pool.use(self.model, wait=not no_wait(self.http), keep_alive=self.keep_alive)
            )
            self.state.metrics.queue_time.labels(self.label).observe(time.monotonic() - self.t0)
            stream = engine.generate(request, self.id)
            self.stack.push_async_callback(_close, stream)  # leaving early aborts the request

            # past the request timeout the engine stops the request, even one that says nothing
            def time_out() -> None:
                self._timed_out = True
                self._aborting = asyncio.ensure_future(engine.abort(self.id))
                self._aborting.add_done_callback(_abort_failed)

            timer = asyncio.get_running_loop().call_later(
                self.t0 + self.state.settings.request_timeout - time.monotonic(), time_out
            )
            self.stack.callback(timer.cancel)
            try:
                return await stream.__anext__(), stream
            except StopAsyncIteration as exc:  # stopped before it said anything
                # the timer's own word, not the clock: a timer may fire a little early
                if self._timed_out:
                    return Delta(finish_reason="length"), stream  # the timeout: an empty answer
                raise EngineError(f"{self.model} ended the request before answering.") from exc

        try:
            require_task(self.state, self.model, "generate", "chat or completions")
            spec = self.state.pool.slot(self.model).spec
            _check_bias(request, spec.n_vocab)
            _check_length(request, spec.plan.context)
            first, stream = await until_disconnect(self.http, first_piece())
        except BaseException as exc:
            if isinstance(exc, ModelLoadError) and self.state.alerts is not None:
                self.state.alerts.load_failed(self.model, exc.message)
            await self.finish(status_of(exc))
            raise
        self.first_at = time.monotonic()
        self.state.metrics.ttft.labels(self.label).observe(self.first_at - self.t0)
        return first, stream

    async def pieces(self, first: Delta, rest: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
        """Every piece, added to ``answer`` as it is handed on; gaps timed; cut at the canary
        (block mode) or at the request timeout (the engine was told to stop; see ``open``)."""
        itl = self.state.metrics.itl.labels(self.label)
        deadline = self.t0 + self.state.settings.request_timeout
        last = time.monotonic()
        item: Delta | None = first
        while item is not None:
            text = item.text + item.reasoning
            if text and self.canary is not None and self.canary.feed(text) and self._leak():
                yield await self._cut(rest, "content_filter")
                return
            self.answer.add(item)
            yield item
            if item.finish_reason:
                return
            if time.monotonic() > deadline:
                yield await self._cut(rest, "length")
                return
            try:
                item = await rest.__anext__()
            except StopAsyncIteration as exc:  # stopped without an end: the timeout's abort?
                if not self._timed_out:
                    raise EngineError(
                        f"{self.model} stopped in the middle of its answer.",
                        hint="Retry; the server's log says why the engine stopped.",
                    ) from exc
                yield await self._cut(rest, "length")
                return
            now = time.monotonic()
            if item is not None and not item.empty:
                itl.observe(now - last)
            last = now

    async def collect(self, first: Delta, rest: AsyncIterator[Delta]) -> Answer:
        """The whole answer, for a client that wants one document; 499 if it leaves first."""

        async def drain() -> Answer:
            async for _ in self.pieces(first, rest):
                pass
            return self.answer

        try:
            answer = await until_disconnect(self.http, drain())
        except BaseException as exc:
            await self.finish(status_of(exc))
            raise
        await self.finish(200)
        return answer

    def stream(
        self, chunks: AsyncIterator[dict[str, Any]], framing: Framing | None = None
    ) -> EventSourceResponse:
        """The chunks as the protocol frames them (OpenAI's server-sent events ending in [DONE]
        unless told otherwise). The request is finished however the stream ends: a failure
        mid-stream is sent in the client's error shape (the status line is long gone) and
        recorded with its status; a client that hung up is a 499."""
        f = framing or OPENAI_SSE

        async def events() -> AsyncIterator[Any]:
            status = CLIENT_GONE  # unless the loop below runs to its end or fails
            try:
                async for c in chunks:
                    yield f.encode(c)
                if f.done is not None:
                    yield f.done
                status = 200
            except Exception as exc:
                status = status_of(exc)
                yield f.encode(f.error(exc if isinstance(exc, KennelError) else EngineError(str(exc))))
            finally:
                await self.finish(status)

        if f.ndjson:
            # sse-starlette's response sends bytes as they are, and closes a stream whose client
            # left as carefully as an event stream: Ollama's lines get the same care
            return _Events(self, events(), ping=0, headers=self.headers(), media_type="application/x-ndjson")
        return _Events(self, events(), ping=15, headers=self.headers())

    async def _cut(self, rest: AsyncIterator[Delta], reason: FinishReason) -> Delta:
        """The answer ends here, with the tokens sent so far."""
        await _close(rest)
        cut = Delta(finish_reason=reason)
        self.answer.add(cut)
        self.answer.completion_tokens = self.answer.pieces
        return cut

    def _leak(self) -> bool:
        """The canary appeared: count it; True when the guard blocks (the answer stops here)."""
        if not self._leak_counted:
            self._leak_counted = True
            self.state.metrics.guard.labels(self.label, "canary", "canary_leak").inc()
        return self.state.guard(self.model, self.key).mode == "block"

    # ---- after ----------------------------------------------------------------------------
    async def finish(self, status: int) -> None:
        """Release the admission and account for the request, once."""
        if self._finished:
            return
        self._finished = True
        self.status = status
        await self.stack.aclose()
        a, m, model = self.answer, self.state.metrics, self.label
        if a.finish_reason is None:
            a.completion_tokens = a.pieces  # the answer did not end: count what was sent
        if self.state.alerts is not None and (status == 200 or status >= 500):
            self.state.alerts.record(model, status == 200)  # 4xx and 499 say nothing about the model
        m.requests.labels(model, self.endpoint, str(status)).inc()
        m.duration.labels(model, self.endpoint).observe(time.monotonic() - self.t0)
        m.prompt_tokens.labels(model).inc(a.prompt_tokens)
        m.generation_tokens.labels(model).inc(a.completion_tokens)
        self._log()

    def _log(self) -> None:
        guard = None
        if self.guard is not None and self.guard.suspicious:
            guard = {
                "flagged": self.guard.flagged,
                "blocked": self.guard.blocked,
                "labels": list(self.guard.labels),
                "stage": self.guard.stage,
                "message": self.guard.message,
                "role": self.guard.role,
            }
        if self.canary is not None and self.canary.leaked:
            guard = {**(guard or {}), "canary_leak": True}
        log_request(
            self.http.scope.setdefault("state", {}),
            {
                "endpoint": self.endpoint,
                "model": self.model,
                "key": self.key.name if self.key else None,
                "status": self.status,
                "prompt_tokens": self.answer.prompt_tokens,
                "completion_tokens": self.answer.completion_tokens,
                "latency_ms": round((time.monotonic() - self.t0) * 1000),
                "guard": guard,
            },
        )

    def log_content(self, prompt: Any) -> None:
        if self.state.settings.log_content:
            log.info(
                json.dumps(
                    {"model": self.model, "prompt": prompt, "completion": self.answer.text},
                    ensure_ascii=False,
                )
            )


@dataclass(frozen=True)
class Framing:
    """How a protocol frames a streamed answer: server-sent events (OpenAI, Anthropic, the
    Responses API) or newline-delimited JSON (Ollama), what ends it, and the error shape a
    failure mid-stream is sent in."""

    ndjson: bool = False
    named: bool = False  # each event named by its body's "type" (Anthropic's and Responses' events)
    done: str | None = "[DONE]"  # OpenAI's last data line
    dialect: Dialect = "openai"
    error_body: Callable[[KennelError], dict[str, Any]] | None = None  # default: the dialect's

    def error(self, exc: KennelError) -> dict[str, Any]:
        return self.error_body(exc) if self.error_body else kennel_error_body(exc, self.dialect)

    def encode(self, body: dict[str, Any]) -> Any:
        text = json.dumps(body, ensure_ascii=False)
        if self.ndjson:
            return (text + "\n").encode()
        return {"event": body.get("type"), "data": text} if self.named else text


OPENAI_SSE = Framing()


class _Events(EventSourceResponse):
    """Finishes its generation even when the body never started (the client left between the
    first token and the status line), so no admission is held for nobody."""

    def __init__(self, generation: Generation, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.generation = generation

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.generation.finish(CLIENT_GONE)  # a no-op when the stream finished it


CHARS_PER_TOKEN = 32  # more than any tokenizer packs into a token, bar runs of spaces


def _check_length(request: Request, context: int) -> None:
    """A prompt far longer than the context is refused here, by its length in characters, before
    the engine tokenizes it: an exact count comes from the engine for the rest."""
    chars = len(request.prompt or "") + sum(
        len(m.content or "") + len(m.reasoning or "") for m in request.messages
    )
    if chars > CHARS_PER_TOKEN * context:
        raise ContextLengthError(
            f"The prompt has {chars:,} characters; this model's context is {context:,} tokens per request, "
            f"which never holds more than {CHARS_PER_TOKEN * context:,} characters.",
            hint="Shorten the prompt or the history, or serve the model with a larger context (--ctx).",
        )


def _check_bias(request: Request, n_vocab: int) -> None:
    """llama.cpp drops a logit_bias id it does not know and wraps a negative one around; say so."""
    for token, _ in request.sampling.logit_bias:
        if token < 0 or (n_vocab and token >= n_vocab):
            raise InvalidRequestError(
                f"logit_bias: token id {token} is not in the model's vocabulary "
                f"(ids 0 to {n_vocab - 1 if n_vocab else 'the vocabulary size - 1'}).",
                hint="Take token ids from the model's own tokenizer.",
            )


async def one_shot(
    request: HttpRequest,
    key: ApiKey | None,
    model: str,
    endpoint: str,
    task: str,
    work: Callable[[Engine], Awaitable[tuple[Any, int]]],
    *,
    keep_alive: str | float | None = None,
    dialect: Dialect = "openai",
) -> Any:
    """A request that is not a generation (embeddings, rerank): admission, the engine call
    (``work`` returns the body and the prompt tokens), the accounting."""
    state: AppState = request.app.state.kennel
    t0 = time.monotonic()
    status = 200
    tokens: dict[str, int] = {}
    try:
        require_task(state, model, task, {"embed": "embeddings", "rerank": "reranking"}.get(task, endpoint))
        ka = keep_alive_seconds(keep_alive)
        async with state.pool.use(model, wait=not no_wait(request), keep_alive=ka) as engine:
            body, tokens["prompt"] = await until_disconnect(request, work(engine))
        state.metrics.prompt_tokens.labels(model).inc(tokens["prompt"])
        return body
    except KennelError as exc:
        status = status_of(exc)
        return kennel_error_response(exc, dialect)
    except BaseException as exc:
        status = status_of(exc)
        raise
    finally:
        label = state.metrics.model_label(model)
        state.metrics.requests.labels(label, endpoint, str(status)).inc()
        state.metrics.duration.labels(label, endpoint).observe(time.monotonic() - t0)
        if (status == 200 or status >= 500) and state.alerts is not None and label != "unknown":
            state.alerts.record(model, status == 200)
        log_request(
            request.scope.setdefault("state", {}),
            {
                "endpoint": endpoint,
                "model": model,
                "key": key.name if key else None,
                "status": status,
                "prompt_tokens": tokens.get("prompt", 0),
                "latency_ms": round((time.monotonic() - t0) * 1000),
            },
        )


def require_task(state: AppState, model: str, task: str, what: str) -> None:
    """Refuse a request for the wrong kind of model before it is admitted (or loaded)."""
    plan = state.pool.slot(model).spec.plan
    if plan.task != task:
        kind = {"generate": "a text-generation", "embed": "an embedding", "rerank": "a reranking"}[plan.task]
        raise InvalidRequestError(
            f"{model} is {kind} model; it does not do {what}.",
            hint="Pick a model for this endpoint (GET /v1/models lists what each one does).",
        )


async def _close(stream: AsyncIterator[Delta]) -> None:
    aclose: Callable[[], Awaitable[None]] | None = getattr(stream, "aclose", None)
    if aclose is not None:
        with suppress(Exception):
            await aclose()


def _abort_failed(task: asyncio.Future[None]) -> None:
    """The timer's abort, once done: a failure is logged, never left for the loop to find."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("could not stop a request past its timeout: %s", exc)
