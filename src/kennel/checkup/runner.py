"""Run a suite against an OpenAI-compatible endpoint, one prompt at a time, streaming.

Each prompt is a streamed chat completion (``stream_options.include_usage`` for the token count),
so the time to the first token is measured as a client sees it. Prompts run one after another,
never together, so their timings compare across runs. A connection or HTTP error is a failed
prompt with ``error`` set, never an exception: a checkup exists to report a broken server.

Timings: ``ttft_ms`` is from sending the request to the first piece of answer text (or
reasoning); ``latency_ms`` to the end of the stream; ``tokens_per_s`` is the decode rate,
(output tokens - 1) over the time from the first token to the end (output tokens over the whole
latency when there is only one token). ``output_tokens`` is the server's usage count, else the
number of content chunks (one token each on llama.cpp-based servers).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from kennel.checkup.assertions import Response, Score, score
from kennel.checkup.suite import PromptCase, Suite
from kennel.errors import InvalidOptionError, StoreError
from kennel.settings import KennelHome

DEFAULT_URL = "http://127.0.0.1:8484"
DEFAULT_TIMEOUT = 300.0


@dataclass(frozen=True)
class Target:
    """Where the prompts go: an OpenAI-compatible base URL (ending in /v1) and the model name."""

    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)  # a secret: never in a log line or trace
    model_version: str = ""  # for a kennel store model: "<sha256 of the base GGUF, 12 hex>@<version>"

    @property
    def chat_url(self) -> str:
        return self.base_url + "/chat/completions"

    @property
    def label(self) -> str:
        """The base URL without any credentials in it, for results and messages."""
        parts = urlsplit(self.base_url)
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, host, parts.path, "", ""))


def endpoint_base(url: str) -> str:
    """The /v1 base of a URL given as http://host:port, .../v1 or .../v1/chat/completions."""
    u = url.strip().rstrip("/")
    if not u.startswith(("http://", "https://")):
        raise InvalidOptionError(
            f"{url!r} is not an http(s) URL.", hint="For example http://127.0.0.1:8484/v1."
        )
    u = u.removesuffix("/chat/completions")
    return u if u.endswith("/v1") else u + "/v1"


def store_model_version(home: KennelHome, model: str) -> str:
    """``<base blob sha256, 12 hex>@<version>`` of the store version MODEL[:TAG|@V] names, or ""
    for anything else (not in the store, a path, no store at all). Looked up now: if the tag moved
    after the server loaded the model, this is the version the tag names now."""
    from kennel.store.names import parse_ref
    from kennel.store.registry import Store

    if not Store.exists(home):
        return ""
    try:
        ref = parse_ref(model)
        with Store.open(home) as store:
            v = store.resolve(ref)
    except StoreError:  # not a store name, not in it, or the store cannot be read: no version
        return ""
    return f"{v.profile.base[0][:12]}@{v.version}"


def local_target(
    model: str, *, home: KennelHome, api_key: str | None = None, env: Mapping[str, str] | None = None
) -> Target:
    """MODEL as served by the local kennel server (KENNEL_URL, default http://127.0.0.1:8484)."""
    url = (os.environ if env is None else env).get("KENNEL_URL") or DEFAULT_URL
    return Target(endpoint_base(url), model, api_key, store_model_version(home, model))


def _auth(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def url_target(
    url: str,
    *,
    model: str | None = None,
    api_key: str | None = None,
    client: httpx.Client | None = None,
    timeout: float = 30.0,
) -> Target:
    """Any OpenAI-compatible endpoint. Without ``model``: the one model its /models lists (a
    server listing several is a usage error); if it cannot be asked, "" (the prompts will then
    fail with the server's own error)."""
    base = endpoint_base(url)
    if model:
        return Target(base, model, api_key)
    try:
        with _client(client) as c:
            r = c.get(base + "/models", headers=_auth(api_key), timeout=timeout)
            r.raise_for_status()
            ids = [str(m["id"]) for m in r.json().get("data", [])]
    except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError):
        return Target(base, "", api_key)
    if len(ids) != 1:
        raise InvalidOptionError(
            f"{Target(base, '').label} serves {len(ids)} models{': ' + ', '.join(ids[:10]) if ids else ''}.",
            hint="Pick one with --model NAME.",
        )
    return Target(base, ids[0], api_key)


class _Borrowed:
    """A caller's client, used without closing it."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def __enter__(self) -> httpx.Client:
        return self.client

    def __exit__(self, *exc: object) -> None:
        pass


def _client(client: httpx.Client | None) -> httpx.Client | _Borrowed:
    return httpx.Client() if client is None else _Borrowed(client)


# ---- one prompt -----------------------------------------------------------------------------
def request_body(prompt: PromptCase, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [m.model_dump() for m in prompt.messages],
        "temperature": prompt.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if prompt.max_tokens is not None:
        body["max_tokens"] = prompt.max_tokens
    if prompt.seed is not None:
        body["seed"] = prompt.seed
    return body


def error_message(r: httpx.Response) -> str:
    """What an HTTP error answer says, in whichever API's envelope, at most 300 characters."""
    try:
        doc = r.json()
    except ValueError:
        return r.text.strip()[:300] or r.reason_phrase
    if isinstance(doc, dict):
        err = doc.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
        if isinstance(err, str):
            return err[:300]
        if doc.get("detail"):
            return str(doc["detail"])[:300]
    return json.dumps(doc)[:300]


class _Answer:
    """What has come back so far: text pieces, token counts and their times."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.pieces: list[str] = []
        self.chunks = 0
        self.usage_tokens: int | None = None
        self.first: float | None = None
        self.error: str | None = None

    def take(self, doc: Any, now: float) -> None:
        if not isinstance(doc, dict):
            return
        if doc.get("error"):
            err = doc["error"]
            self.error = str(err.get("message", err) if isinstance(err, dict) else err)[:300]
            return
        for choice in doc.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            part = choice.get("delta") or choice.get("message") or {}
            content = part.get("content") or ""
            thought = part.get("reasoning_content") or part.get("reasoning") or ""
            if content or thought:
                self.first = now if self.first is None else self.first
                self.chunks += 1
            if content:
                self.pieces.append(str(content))
        usage = doc.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            self.usage_tokens = usage["completion_tokens"]

    def response(self, end: float, error: str | None) -> Response:
        error = error or self.error
        tokens = self.usage_tokens if self.usage_tokens is not None else self.chunks
        latency = (end - self.t0) * 1000
        ttft = None if self.first is None else (self.first - self.t0) * 1000
        speed = None
        if ttft is not None and tokens >= 2 and latency > ttft:
            speed = (tokens - 1) / ((latency - ttft) / 1000)
        elif tokens >= 1 and latency > 0:
            speed = tokens / (latency / 1000)
        return Response(
            text="".join(self.pieces),
            ttft_ms=ttft,
            # a request that failed before any answer took no "latency" (0 ms for a refused
            # connection): counted, it would drag the report's p50 down in an outage
            latency_ms=None if error is not None and self.first is None else latency,
            output_tokens=tokens if error is None or tokens else None,
            tokens_per_s=speed,
            error=error,
        )


def _timeout(seconds: float) -> httpx.Timeout:
    """``seconds`` between bytes; a host that does not answer at all is given up on sooner."""
    return httpx.Timeout(seconds, connect=min(seconds, 30.0))


def ask(
    client: httpx.Client,
    target: Target,
    prompt: PromptCase,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    clock: Callable[[], float] = time.perf_counter,
) -> Response:
    """One streamed chat completion, measured; failures come back as ``Response.error``."""
    headers = {"Accept": "text/event-stream", **_auth(target.api_key)}
    t0 = clock()
    answer = _Answer(t0)
    error: str | None = None
    try:
        with client.stream(
            "POST",
            target.chat_url,
            json=request_body(prompt, target.model),
            headers=headers,
            timeout=_timeout(timeout),
        ) as r:
            if r.status_code >= 400:
                r.read()
                error = f"HTTP {r.status_code}: {error_message(r)}"
            elif "text/event-stream" not in r.headers.get("content-type", ""):
                r.read()  # a server that ignores stream=true: the whole answer at once
                answer.take(r.json(), clock())
            else:
                for line in r.iter_lines():
                    if clock() - t0 > timeout:
                        error = f"timed out after {timeout:g} s"
                        break
                    if not line.startswith("data:"):
                        continue  # comments (": ping"), event names, blank separators
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    answer.take(json.loads(data), clock())
    except httpx.TimeoutException:
        error = f"timed out after {timeout:g} s"
    except httpx.ConnectError as exc:
        error = f"{UNREACHABLE} {target.label}: {exc}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    except ValueError as exc:  # a chunk or body that is not JSON
        error = f"malformed response from {target.label}: {exc}"
    return answer.response(clock(), error)


UNREACHABLE = "cannot connect to"  # how a prompt's error starts when nothing answered at all


def unreachable(run: RunResult) -> bool:
    """Nothing answered any prompt: the server is down or the URL wrong, not the model worse."""
    return bool(run.results) and all((r.error or "").startswith(UNREACHABLE) for r in run.results)


def warm_up(client: httpx.Client, target: Target, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """One token, not measured: a server that loads models on first use (kennel serve does)
    must not charge the load to the first prompt. A refused key stops the run here, before
    anything is recorded: it is the caller's mistake, not the model's regression. Other failures
    are left to the real prompts."""
    body = {"model": target.model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    try:
        r = client.post(target.chat_url, json=body, headers=_auth(target.api_key), timeout=_timeout(timeout))
    except httpx.HTTPError:
        return
    if r.status_code in (401, 403):
        raise InvalidOptionError(
            f"{target.label} refused the request (HTTP {r.status_code}: {error_message(r)}); "
            "nothing was recorded.",
            hint="Give an API key that may use this model: --key KEY (or KENNEL_API_KEY).",
        )


# ---- a suite --------------------------------------------------------------------------------
def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_run_id() -> str:
    """Sortable by time, unique: 20260131T120000Z-1a2b3c."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class PromptResult:
    prompt_id: str
    ts: str  # when the prompt was sent (UTC, ISO 8601)
    response: Response
    score: Score

    @property
    def passed(self) -> bool:
        return self.score.passed

    @property
    def error(self) -> str | None:
        return self.response.error

    @property
    def failed_assertions(self) -> tuple[str, ...]:
        return tuple(o.describe() for o in self.score.failed)

    def summary(self) -> str:
        """Why it failed, in one line ("" when it passed)."""
        if self.passed:
            return ""
        return self.error or "; ".join(self.failed_assertions) or "below the pass threshold"


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    started_at: str
    suite: str
    target: str  # the endpoint's base URL, without credentials
    model: str
    model_version: str


@dataclass(frozen=True)
class RunResult:
    info: RunInfo
    results: tuple[PromptResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> tuple[PromptResult, ...]:
        return tuple(r for r in self.results if not r.passed)


def run_suite(
    suite: Suite,
    target: Target,
    *,
    client: httpx.Client | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    warmup: bool = True,
    on_result: Callable[[RunInfo, PromptResult], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> RunResult:
    """Every prompt of ``suite``, in order; ``on_result`` is called after each (to record it at
    once, so a crash mid-run loses nothing already measured)."""
    info = RunInfo(
        run_id=new_run_id(),
        started_at=utcnow(),
        suite=suite.name,
        target=target.label,
        model=target.model,
        model_version=target.model_version,
    )
    results: list[PromptResult] = []
    with _client(client) as c:
        if warmup:
            warm_up(c, target, timeout=timeout)
        for prompt in suite.prompts:
            ts = utcnow()
            response = ask(c, target, prompt, timeout=timeout, clock=clock)
            result = PromptResult(
                prompt.id,
                ts,
                response,
                score(prompt.assertions(), response, threshold=suite.threshold_for(prompt)),
            )
            results.append(result)
            if on_result is not None:
                on_result(info, result)
    return RunResult(info, tuple(results))
