"""The ASGI layer in front of the routes, for what must hold before a route runs or whatever it
does: every API body read as JSON, a cap on its size (413) and on the time to send it (408), and
a request-log line for every API request, the refused ones included (a 401 names why the key
failed), so key guessing and bad clients show in the log.

It also keeps web pages out (403). A browser sends a page's cross-site POST with an ``Origin``
header and without a CORS preflight when the body is "text/plain", and a keyless loopback server
would act on it (a pull that fills the disk, a model copied). So an ``Origin`` that is not in
``cors_origins`` is refused. On a loopback bind, a ``Host`` that is not a loopback name is refused
too: that is a page on a rebound DNS name reading the answers.

The web console (``/ui``) goes through the same two checks, with one difference: its own pages
send their forms and fetches with an ``Origin`` equal to the server's own (the request's scheme
and ``Host``), which is allowed there. A cross-site form post still carries the other site's
origin and is refused before any route (or its CSRF check) runs. The console's bodies are forms:
they get the same size and time caps, and are neither rewritten as JSON nor logged here (the
chat logs its requests as the API does). Every console answer gets ``CONSOLE_HEADERS`` here."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kennel.errors import ForeignRequestError, KennelError, RequestTimeoutError, RequestTooLargeError
from kennel.server.http_errors import dialect_of, kennel_error_body, status_of_error

log = logging.getLogger("kennel.requests")
API = ("/v1/", "/rerank", "/kennel/", "/api/")
# the endpoint each model route counts its requests under (kennel_requests_total and the request
# log): one refused before its route counted it (a bad key, a model the key may not use, a rate
# limit, a body too large) is counted here under the same name, so every refusal shows
ENDPOINTS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/rerank": "rerank",
    "/rerank": "rerank",
    "/v1/messages": "messages",
    "/v1/responses": "responses",
    "/api/chat": "ollama_chat",
    "/api/generate": "ollama_generate",
    "/api/embed": "ollama_embed",
    "/api/embeddings": "ollama_embed",
    "/api/pull": "ollama_pull",
    "/api/delete": "ollama_delete",
    "/api/copy": "ollama_copy",
}
CONSOLE = "/ui"
Message = dict[str, Any]


def log_request(scope_state: dict[str, Any], fields: dict[str, Any]) -> None:
    """One line per request, metadata only; a request logs once (the front skips it then)."""
    scope_state["logged"] = True
    log.info(json.dumps(fields))


def _model_of(body: bytes | None) -> str | None:
    """The model a JSON body names, if it names one (read only for a request refused early)."""
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        return None
    model = doc.get("model") if isinstance(doc, dict) else None
    return model[:256] if isinstance(model, str) else None


def _loopback_host(host: bytes) -> bool:
    name = host.decode("latin-1").strip().lower()
    if name.startswith("["):  # [::1]:8484
        name = name[1 : name.find("]")] if "]" in name else name
    elif name.count(":") == 1:
        name = name.split(":")[0]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _is_console(path: str) -> bool:
    return path == CONSOLE or path.startswith(CONSOLE + "/")


def _same_origin(scope: Any, origin: bytes) -> bool:
    """The Origin is this server as the browser reached it: the request's own scheme and Host."""
    host = dict(scope["headers"]).get(b"host")
    if not host:
        return False
    own = f"{scope.get('scheme', 'http')}://{host.decode('latin-1')}".lower()
    return origin.decode("latin-1").lower() == own


class Front:
    def __init__(
        self,
        app: Any,
        *,
        max_body: int,
        body_timeout: float,
        origins: tuple[str, ...] = (),
        loopback: bool = False,
    ) -> None:
        self.app = app
        self.state = app.state  # create_app's callers reach app.state through the front
        self.max_body = max_body
        self.body_timeout = body_timeout
        self.origins = origins  # the CORS origins the operator allowed; "*" allows any
        self.loopback = loopback

    def _foreign(self, scope: Any, *, console: bool = False) -> ForeignRequestError | None:
        headers = dict(scope["headers"])
        origin = headers.get(b"origin")
        if (
            origin is not None
            and "*" not in self.origins
            and origin.decode("latin-1") not in self.origins
            and not (console and _same_origin(scope, origin))
        ):
            if console:  # cors_origins is for API clients; the console is not used from other sites
                host = headers.get(b"host", b"").decode("latin-1")
                return ForeignRequestError(
                    "The web console only accepts requests from its own pages, not from another site.",
                    hint="Open the console at the server's own address"
                    + (f" ({scope.get('scheme', 'http')}://{host}/ui)" if host else " (/ui)")
                    + " and use it from there.",
                )
            return ForeignRequestError(
                "Requests from web pages are refused unless their origin is allowed.",
                hint="Add the page's origin to cors_origins in the serve config.",
            )
        if self.loopback and not _loopback_host(headers.get(b"host", b"localhost")):
            return ForeignRequestError(
                "This server listens on loopback only and answers only loopback names.",
                hint="Use http://127.0.0.1 or http://localhost; to serve a network, bind --host with keys.",
            )
        return None

    async def __call__(self, scope: Any, receive: Callable[[], Awaitable[Message]], send: Any) -> None:
        if scope["type"] == "http" and _is_console(scope["path"]):
            send = _with_console_headers(send)
            if (foreign := self._foreign(scope, console=True)) is not None:
                await self._refuse(send, foreign, scope["path"])
                return
            if scope["method"] == "POST":  # a form: the same size and time caps as an API body
                try:
                    form = await self._read_body(scope, receive, time.monotonic())
                except (RequestTimeoutError, RequestTooLargeError) as exc:
                    await self._refuse(send, exc, scope["path"])
                    return
                if form is None:
                    return
                receive = _replay(form, receive)
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http" or not scope["path"].startswith(API):
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})
        t0 = time.monotonic()
        started: dict[str, int] = {}
        body: bytes | None = None

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                started["status"] = message["status"]
            await send(message)

        if (foreign := self._foreign(scope)) is not None:
            await self._refuse(sending, foreign, scope["path"])
            self._log(scope, started, t0, body)
            return

        if scope["method"] in ("POST", "DELETE"):  # Ollama's /api/delete sends a body too
            # curl -d sends a form Content-Type; every API body is JSON
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
            # Read here, whole, rather than in the route: the framework turns any failure while
            # parsing into a vague 400, and a slow or huge body must be a 408 or a 413.
            try:
                body = await self._read_body(scope, receive, t0)
            except (RequestTimeoutError, RequestTooLargeError) as exc:
                await self._refuse(sending, exc, scope["path"])
                self._log(scope, started, t0, body)
                return
            if body is None:  # the client left while sending
                self._log(scope, started, t0, body)
                return
            receive = _replay(body, receive)
        try:
            await self.app(scope, receive, sending)
        finally:
            self._log(scope, started, t0, body)

    def _too_large(self) -> RequestTooLargeError:
        return RequestTooLargeError(
            f"The request body is over {self.max_body >> 20} MiB, more than any prompt this server takes.",
            hint="Send less text, or raise the server's --max-body.",
        )

    async def _read_body(
        self, scope: Any, receive: Callable[[], Awaitable[Message]], t0: float
    ) -> bytes | None:
        """The whole body, or None if the client disconnected; over the cap (refused unread
        when Content-Length says so) or slower than the time limit raises."""
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if length.isdigit() and int(length) > self.max_body:
            raise self._too_large()
        parts: list[bytes] = []
        got = 0
        while True:
            left = t0 + self.body_timeout - time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(left, 0.001))
            except TimeoutError as exc:
                raise RequestTimeoutError(
                    f"The request body did not arrive within {self.body_timeout:g} s.",
                    hint="Send the whole body at once; a client that stalls mid-body is cut off.",
                ) from exc
            if message["type"] == "http.disconnect":
                return None
            part = message.get("body", b"")
            got += len(part)
            if got > self.max_body:
                raise self._too_large()
            parts.append(part)
            if not message.get("more_body", False):
                return b"".join(parts)

    async def _refuse(self, send: Any, exc: KennelError, path: str) -> None:
        body = json.dumps(kennel_error_body(exc, dialect_of(path))).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status_of_error(exc),
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _log(self, scope: Any, started: dict[str, int], t0: float, body: bytes | None) -> None:
        """The request's line, unless its route wrote one (and counted it); a model route's
        request is counted here then, under the model it named if that model is served."""
        state = scope["state"]
        if state.get("logged"):
            return
        endpoint, model = ENDPOINTS.get(scope["path"]), _model_of(body)
        status = started.get("status", 499)
        fields: dict[str, Any] = {
            "endpoint": endpoint or scope["path"],
            **({"model": model} if model else {}),
            "key": state.get("key"),
            "status": status,
            "latency_ms": round((time.monotonic() - t0) * 1000),
        }
        if state.get("auth_failure"):
            fields["auth"] = state["auth_failure"]
        log.info(json.dumps(fields))
        kennel = getattr(self.state, "kennel", None)
        if endpoint is not None and kennel is not None:
            m = kennel.metrics
            m.requests.labels(m.model_label(model or ""), endpoint, str(status)).inc()


# Every console answer, its static files and the framework's own 404/405/422 included: no framing
# (a framed promote or revoke button could be clicked for the user by another site), no MIME
# sniffing, nothing loaded from or sent to another host, no console URL in another site's Referer.
CONSOLE_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)


def _with_console_headers(send: Any) -> Any:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            have = {k.lower() for k, _ in message.get("headers", [])}
            extra = [(k, v) for k, v in CONSOLE_HEADERS if k not in have]
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return sending


def _replay(body: bytes, receive: Callable[[], Awaitable[Message]]) -> Callable[[], Awaitable[Message]]:
    """The body already read, once; then the client's own messages (a disconnect, for streams)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay
