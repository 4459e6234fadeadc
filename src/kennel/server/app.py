"""The FastAPI app: state built in the lifespan, errors in each client's shape (``http_errors``),
keys checked once (``auth``), endpoints in ``routes`` (OpenAI's) and in the compatibility layers,
each a thin translation onto the same generation path: ``ollama_routes``, ``anthropic`` and
``responses``.

``create_app`` takes the model specs and an engine factory (constructor injection), so tests run
the real HTTP surface against a generated tiny GGUF, or against a fake engine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from kennel.console import routes as console_routes
from kennel.console import sampler as console_sampler
from kennel.console.state import ConsoleState
from kennel.engines.base import Memory
from kennel.server import anthropic, ollama_routes, responses, routes
from kennel.server.alerting import ServerAlerts
from kennel.server.front import Front
from kennel.server.http_errors import install_error_handlers
from kennel.server.keyfile import FileKeyStore, install_sighup, open_key_source
from kennel.server.metrics import CheckupOutcome, Metrics
from kennel.server.pool import EngineFactory, ModelSpec, Pool
from kennel.server.ratelimit import RateLimiter
from kennel.server.settings import ServeSettings
from kennel.server.state import AppState, build_guards
from kennel.settings import KennelHome

if TYPE_CHECKING:
    from kennel.checkup.runner import RunResult
    from kennel.guard.policy import Guard


def create_app(
    settings: ServeSettings,
    specs: list[ModelSpec],
    *,
    budget: Memory,
    engine_factory: EngineFactory,
    home: KennelHome | None = None,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        kennel_home = home or KennelHome.from_env()
        keys = open_key_source(settings.keys_file, kennel_home, poll=settings.keys_file_poll)
        # every configured model's blobs are leased while the server runs, loaded or not: a model
        # removed before its first request would fail that request
        lease = _lease_writer(kennel_home)
        lease(specs)
        pool = Pool(
            specs,
            budget=budget,
            engine_factory=engine_factory,
            max_loaded=settings.max_loaded,
            max_queue=settings.max_queue,
            queue_timeout=settings.queue_timeout,
        )
        alerts = None
        if settings.alerts.notify:
            from kennel.checkup.channels import parse_channel

            channels = [parse_channel(c) for c in settings.alerts.notify]
            alerts = ServerAlerts(channels, threshold=settings.alerts.threshold, home=kennel_home)
            pool.on_engine_failure = alerts.engine_failed
        app.state.kennel = AppState(
            settings,
            pool,
            Metrics(pool),
            keys,
            RateLimiter(),
            time.monotonic(),
            build_guards(settings, specs, pool=pool, home=kennel_home),
            alerts,
            home=kennel_home,
        )
        app.state.console = ConsoleState.build()
        for entry, spec in zip(settings.models, specs, strict=False):
            if entry.preload or spec.pinned:
                await pool.ensure_loaded(pool.slot(spec.name))
        console = app.state.console
        tasks = [
            asyncio.create_task(_reap(pool)),
            # the console's last hour of tokens/s and TTFT, from the same counters as /metrics
            asyncio.create_task(console_sampler.run(app.state.kennel.metrics, console.samples)),
            *_scheduled_checkups(settings, specs, kennel_home, app.state.kennel.metrics),
        ]
        stop_hup = None
        if isinstance(keys, FileKeyStore):  # keys.db is read on every request; a file only here
            tasks.append(asyncio.create_task(keys.watch()))
            stop_hup = install_sighup(keys.reload_soon)
        try:
            yield
        finally:
            if stop_hup is not None:
                stop_hup()
            for task in tasks:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
            await pool.close()
            keys.close()
            _close_guard_stages(app.state.kennel.guards.values())
            if alerts is not None:
                await alerts.drain()
            lease(())

    app = FastAPI(title="kennel", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "x-api-key", "anthropic-version"],
        )
    app.include_router(routes.router)
    app.include_router(ollama_routes.router)
    app.include_router(anthropic.router)
    app.include_router(responses.router)
    console_routes.install(app)  # the web console at /ui
    return Front(  # type: ignore[return-value]
        app,
        max_body=settings.max_body_mib << 20,
        body_timeout=settings.body_timeout,
        origins=tuple(settings.cors_origins),
        loopback=settings.is_loopback(),
    )


def _scheduled_checkups(
    settings: ServeSettings, specs: list[ModelSpec], home: KennelHome, metrics: Metrics
) -> list[asyncio.Task[None]]:
    from kennel.checkup.scheduler import Scheduled, run_forever

    def on_run(job: Scheduled, run: RunResult | None) -> None:
        suite = run.info.suite if run else (job.suite.stem if job.suite else "default")
        metrics.record_checkup(CheckupOutcome.of(job.model, suite, run))

    host = "127.0.0.1" if settings.is_loopback() or settings.host in ("0.0.0.0", "::") else settings.host
    base = f"http://{host}:{settings.port}/v1"
    tasks = []
    for entry in settings.checkups:
        job = Scheduled(
            cron=entry.cron,
            model=entry.model or specs[0].name,
            suite=entry.suite,
            notify=tuple(entry.notify),
            fail_threshold=entry.fail_threshold,
            api_key=entry.key,
        )
        tasks.append(asyncio.create_task(run_forever(job, base, home, on_run)))
    return tasks


def _close_guard_stages(guards: Iterable[Guard]) -> None:
    """The classifier stage's worker threads end with the server (one stage, shared by the guards)."""
    for stage in {id(g.stage): g.stage for g in guards if g.stage is not None}.values():
        close = getattr(stage, "close", None)
        if close is not None:
            close()


async def _reap(pool: Pool) -> None:
    while True:
        await asyncio.sleep(5.0)
        await pool.reap()


def _lease_writer(home: KennelHome) -> Callable[[Sequence[ModelSpec]], None]:
    """Tell `kennel rm` which store versions this server serves and which blobs it reads."""
    from kennel.store.maintenance import write_lease

    def write(served: Sequence[ModelSpec]) -> None:
        digests = {d for s in served for d in s.digests}
        versions = [s.stored for s in served if s.stored is not None]
        write_lease(home.root / "store", "server", digests, holder="kennel serve", versions=versions)

    return write
