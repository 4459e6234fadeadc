"""The FastAPI app: state built in the lifespan, errors in OpenAI's envelope, keys checked once.

``create_app`` takes the model specs and an engine factory (constructor injection), so tests run
the real HTTP surface against a generated tiny GGUF, or against a fake engine.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kennel.errors import AuthError, KennelError, ServingError
from kennel.guard.policy import Guard
from kennel.server.alerting import ServerAlerts
from kennel.server.keys import ApiKey, KeyStore
from kennel.server.metrics import Metrics
from kennel.server.pool import EngineFactory, Memory, ModelSpec, Pool
from kennel.server.ratelimit import RateLimiter
from kennel.server.settings import ServeSettings
from kennel.settings import KennelHome

log = logging.getLogger("kennel.requests")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 429: "rate_limit_error", 500: "server_error", 503: "service_unavailable"}  # fmt: skip


@dataclass
class AppState:
    settings: ServeSettings
    pool: Pool
    metrics: Metrics
    keys: KeyStore | None  # None: no keys exist, loopback only
    limiter: RateLimiter
    started: float
    guards: dict[str, Guard] = field(default_factory=dict)  # model -> its guard (built once per mode)
    alerts: ServerAlerts | None = None

    def guard(self, model: str, key: ApiKey | None = None) -> Guard:
        """The key's own mode if it has one, else the model's, else the server's."""
        if key is not None and key.guard:
            return self.guards[f"mode:{key.guard}"]
        return self.guards.get(model) or self.guards["*"]


def _guards(settings: ServeSettings, specs: list[ModelSpec]) -> dict[str, Guard]:
    """One Guard per mode in use (compiling the phrase tables is the costly part), mapped per model
    and under "mode:<m>" for API keys with their own mode."""
    by_mode: dict[str, Guard] = {}
    classifier = None
    if settings.guard_classifier is not None:
        from kennel.guard.classifier import OnnxClassifier

        classifier = OnnxClassifier(settings.guard_classifier)

    def get(mode: str) -> Guard:
        if mode not in by_mode:
            by_mode[mode] = Guard(mode, classifier=classifier)  # type: ignore[arg-type]
        return by_mode[mode]

    out = {"*": get(settings.guard)}
    for entry, spec in zip(settings.models, specs, strict=False):
        out[spec.name] = get(entry.guard or settings.guard)
    for mode in ("off", "log", "flag", "block"):
        out[f"mode:{mode}"] = get(mode)
    return out


def error_response(status: int, message: str, *, param: str | None = None, code: str | None = None,
                   retry_after: float | None = None, type_: str | None = None) -> JSONResponse:  # fmt: skip
    body = {
        "error": {
            "message": message,
            "type": type_ or _TYPES.get(status, "server_error"),
            "param": param,
            "code": code,
        }
    }
    headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else None
    return JSONResponse(body, status_code=status, headers=headers)


def kennel_error_response(exc: KennelError) -> JSONResponse:
    status = int(getattr(exc, "status_code", 400))
    text = exc.message + (f" {exc.hint}" if exc.hint else "")
    code = type(exc).__name__.removesuffix("Error").lower() or None
    # some errors carry their own type (prompt_injection): clients branch on it
    return error_response(status, text, code=code, retry_after=getattr(exc, "retry_after", None),
                          type_=getattr(exc, "error_type", None))  # fmt: skip


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(KennelError)
    async def _kennel(_: Request, exc: KennelError) -> JSONResponse:
        return kennel_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        msg = str(first.get("msg", "invalid request"))
        if first.get("type") == "json_invalid":
            msg = "The body is not valid JSON (or not UTF-8)."
        return error_response(400, f"{'.'.join(loc) + ': ' if loc else ''}{msg}", param=".".join(loc) or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        logging.getLogger("kennel.server").exception("internal error")
        return error_response(500, f"Internal error ({type(exc).__name__}); see the server log.")


def create_app(
    settings: ServeSettings,
    specs: list[ModelSpec],
    *,
    budget: Memory,
    engine_factory: EngineFactory,
    home: KennelHome | None = None,
) -> FastAPI:
    from kennel.server import routes

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        kennel_home = home or KennelHome.from_env()
        keys = KeyStore.open(kennel_home)
        on_change = _lease_writer(kennel_home)
        pool = Pool(specs, budget=budget, engine_factory=engine_factory, max_loaded=settings.max_loaded,
                    max_queue=settings.max_queue, queue_timeout=settings.queue_timeout, on_change=on_change)  # fmt: skip
        alerts = None
        if settings.alerts.notify:
            from kennel.checkup.alerts import parse_channel

            channels = [parse_channel(c) for c in settings.alerts.notify]
            alerts = ServerAlerts(channels, threshold=settings.alerts.threshold, home=kennel_home)
        app.state.kennel = AppState(settings, pool, Metrics(pool), keys, RateLimiter(), time.monotonic(),
                                    _guards(settings, specs), alerts)  # fmt: skip
        for entry, spec in zip(settings.models, specs, strict=False):
            if entry.preload or spec.pinned:
                await pool.ensure_loaded(pool.slot(spec.name))
        tasks = [asyncio.create_task(_reap(pool)), *_scheduled_checkups(settings, specs, kennel_home)]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
            await pool.close()
            keys.close()
            if alerts is not None:
                await alerts.drain()
            on_change(set())

    app = FastAPI(title="kennel", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    _install_error_handlers(app)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])  # fmt: skip
    app.include_router(routes.router)
    return _JsonBodies(app)  # type: ignore[return-value]


class _JsonBodies:
    """Treat every /v1 POST body as JSON whatever its Content-Type (curl -d sends a form type)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.state = app.state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].startswith("/v1/"):
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


def _scheduled_checkups(
    settings: ServeSettings, specs: list[ModelSpec], home: KennelHome
) -> list[asyncio.Task[None]]:
    from kennel.checkup.scheduler import Scheduled, run_forever

    host = "127.0.0.1" if settings.is_loopback() or settings.host in ("0.0.0.0", "::") else settings.host
    base = f"http://{host}:{settings.port}/v1"
    tasks = []
    for entry in settings.checkups:
        job = Scheduled(cron=entry.cron, model=entry.model or specs[0].name, suite=entry.suite,
                        notify=tuple(entry.notify), fail_threshold=entry.fail_threshold, api_key=entry.key)  # fmt: skip
        tasks.append(asyncio.create_task(run_forever(job, base, home)))
    return tasks


async def _reap(pool: Pool) -> None:
    while True:
        await asyncio.sleep(5.0)
        await pool.reap()


def _lease_writer(home: KennelHome) -> Callable[[set[str]], None]:
    """Tell `kennel rm` which store blobs this server has loaded."""
    from kennel.store.maintenance import write_lease

    return lambda digests: write_lease(home.root / "store", "server", digests, holder="kennel serve")


async def authenticate(request: Request) -> ApiKey | None:
    """The caller's API key, or None when the server runs without keys (loopback, none issued)."""
    state: AppState = request.app.state.kennel
    if state.keys is None or not state.keys.list():
        if not state.settings.is_loopback() and not state.settings.insecure:
            raise AuthError(
                "This server requires an API key.", hint="Ask its operator for one (`kennel keys create`)."
            )
        return None
    header = request.headers.get("authorization", "")
    secret = header[7:].strip() if header.lower().startswith("bearer ") else None
    key = state.keys.verify(secret)
    return key


def check_key(request: Request, key: ApiKey | None, model: str) -> None:
    if key is None:
        return
    key.check_model(model)
    state: AppState = request.app.state.kennel
    state.limiter.check(key.name, key.rpm, time.monotonic())


def as_serving_error(exc: Exception) -> ServingError | None:
    return exc if isinstance(exc, ServingError) else None
