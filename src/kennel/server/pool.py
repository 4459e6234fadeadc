"""The model pool: which models are loaded, who waits for which, and what memory they hold.

A load is checked against a memory budget (from the hardware probe) with the model's fit
estimate before the engine is asked: when it would overcommit RAM or VRAM, idle unpinned models
are unloaded, least recently used first; when that is not enough the request gets a clear
error and nothing is attempted. Once loaded, a model counts with the memory its engine reports
holding, which the pool believes over the estimate (as Ollama's scheduler does).

Like Ollama's scheduler, the pool admits as many requests to a model as its engine decodes
together (``parallel``, a FIFO semaphore); the engine batches them, so a request never waits for
another to finish. Requests beyond that wait in a fair queue bounded by ``max_queue`` (counting
the running ones): a full queue is a 429 with Retry-After, a wait past ``queue_timeout`` a 503.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

from kennel.engines.base import Engine, LoadPlan, Memory
from kennel.errors import InsufficientMemoryError, ModelLoadingError, ModelNotServedError, QueueFullError
from kennel.store.profile import Profile

log = logging.getLogger("kennel.pool")

FOREVER = float("inf")


async def _quiet_unload(engine: Engine) -> None:
    with suppress(Exception):
        await engine.unload()


def _retrieved(task: asyncio.Future[Engine]) -> None:
    """A load whose waiters all left still reports its failure to nobody, quietly."""
    if not task.cancelled():
        task.exception()


@dataclass(frozen=True)
class ModelSpec:
    """A model the server may load: where it is, how to load it, what it will need."""

    name: str
    plan: LoadPlan
    memory: Memory  # the fit estimate, checked before loading
    profile: Profile | None = None
    digests: tuple[str, ...] = ()  # store blobs it uses (leased while the server runs)
    stored: tuple[str, int] | None = None  # the store version it serves (model, number), leased too
    pinned: bool = False
    keep_alive: float = 300.0  # seconds idle before unloading; FOREVER for never
    n_vocab: int = 0  # tokens in the model's vocabulary (0: unknown), to check logit_bias ids
    ctx_train: int = 0  # the context the model was trained on (0: unknown), for `kennel serve`'s warning
    engine: str = "llamacpp"  # the engine kind that runs it (kennel.engines.select)


@dataclass
class Slot:
    spec: ModelSpec
    engine: Engine | None = None
    state: str = "unloaded"  # unloaded | loading | ready | unloading
    last_used: float = 0.0
    expires_at: float = FOREVER
    waiting: int = 0
    running: int = 0
    loads: int = 0
    held: Memory | None = None  # what the loaded engine reports holding
    admit: asyncio.Semaphore = field(init=False)
    loading: asyncio.Lock = field(default_factory=asyncio.Lock)
    load_task: asyncio.Future[Engine] | None = None

    def __post_init__(self) -> None:
        # FIFO since Python 3.11: waiters are admitted in the order they came
        self.admit = asyncio.Semaphore(self.spec.plan.parallel)

    @property
    def memory(self) -> Memory:
        """What the model holds (or will): the engine's report once loaded, else the estimate."""
        return self.held if self.held is not None and self.state != "unloaded" else self.spec.memory


EngineFactory = Callable[[ModelSpec], Engine]


class Pool:
    def __init__(
        self,
        specs: list[ModelSpec],
        *,
        budget: Memory,
        engine_factory: EngineFactory,
        max_loaded: int = 4,
        max_queue: int = 16,
        queue_timeout: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.slots = {s.name: Slot(s) for s in specs}
        self.budget = budget
        self.engine_factory = engine_factory
        self.max_loaded = max_loaded
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self.clock = clock
        # told (model, reason) when a loaded engine fails on its own: the model-failure alert
        self.on_engine_failure: Callable[[str, str], None] | None = None
        self._reaping: set[asyncio.Task[list[str]]] = set()  # unloads asked for by keep_alive 0

    def slot(self, name: str) -> Slot:
        s = self.slots.get(name)
        if s is None:
            raise ModelNotServedError(
                f"The model {name!r} is not served here.",
                hint=f"Served models: {', '.join(self.slots) or 'none'} (GET /v1/models).",
            )
        return s

    def loaded(self) -> list[Slot]:
        return [s for s in self.slots.values() if s.state != "unloaded"]

    def in_use(self) -> Memory:
        total = Memory()
        for s in self.loaded():
            total = total + s.memory
        return total

    # ---- loading and evicting -------------------------------------------------------------
    async def ensure_loaded(self, slot: Slot, *, wait: bool = True) -> Engine:
        """The slot's engine, loading it if needed. The load belongs to the pool, not to the
        request that started it: a waiter that leaves (a client that hung up) neither cancels it
        for the others nor leaves a half-loaded engine behind."""
        if slot.state == "ready" and slot.engine is not None:
            return slot.engine
        if slot.state == "loading" and not wait:
            raise ModelLoadingError(f"{slot.spec.name} is loading.", hint="Retry shortly.", retry_after=5.0)
        if slot.load_task is None or slot.load_task.done():
            slot.load_task = asyncio.ensure_future(self._load(slot))
            slot.load_task.add_done_callback(_retrieved)
        return await asyncio.shield(slot.load_task)

    async def _load(self, slot: Slot) -> Engine:
        async with slot.loading:
            if slot.state == "ready" and slot.engine is not None:
                return slot.engine
            await self._make_room(slot)
            engine = self.engine_factory(slot.spec)
            engine.on_failure(functools.partial(self._engine_failed, slot.spec.name))
            slot.state = "loading"
            try:
                await engine.load()
            except BaseException:
                slot.state = "unloaded"
                # a load abandoned half-way (failed, or the server shutting down) may hold memory
                await asyncio.shield(_quiet_unload(engine))
                raise
            slot.engine, slot.state, slot.loads = engine, "ready", slot.loads + 1
            slot.held = engine.memory()
            slot.last_used = self.clock()
            return engine

    def _engine_failed(self, name: str, detail: str) -> None:
        log.error("%s: %s", name, detail)
        if self.on_engine_failure is not None:
            self.on_engine_failure(name, detail)

    async def _make_room(self, slot: Slot) -> None:
        need = slot.spec.memory
        if not need.fits_in(self.budget):
            raise InsufficientMemoryError(
                f"{slot.spec.name} needs {need.describe()}; "
                f"this server's budget is {self.budget.describe()}.",
                hint=(
                    "Serve it with a smaller quantization or context (`kennel fit`), or on a bigger machine."
                ),
            )
        while True:
            others = [s for s in self.loaded() if s is not slot]
            used = Memory()
            for s in others:
                used = used + s.memory
            if (used + need).fits_in(self.budget) and len(others) < self.max_loaded:
                return
            idle = [
                s
                for s in others
                if s.state == "ready" and not s.spec.pinned and not s.running and not s.waiting
            ]
            if not idle:
                busy = ", ".join(s.spec.name for s in others)
                raise InsufficientMemoryError(
                    f"Loading {slot.spec.name} ({need.describe()}) would overcommit memory "
                    f"and every loaded model ({busy}) is busy or pinned.",
                    hint="Retry when they are idle, unpin one, or lower max loaded models' contexts.",
                    retry_after=10.0,
                )
            await self.unload(min(idle, key=lambda s: s.last_used), only_idle=True)

    async def unload(self, slot: Slot, *, only_idle: bool = False) -> None:
        """Unload in a task of the pool's own, so a caller that is cancelled cannot leave the
        slot marked free while its engine still holds memory. ``only_idle``: not if a request
        arrived since the caller saw the slot idle (it would lose its engine mid-answer)."""
        await asyncio.shield(asyncio.ensure_future(self._unload(slot, only_idle)))

    async def _unload(self, slot: Slot, only_idle: bool = False) -> None:
        async with slot.loading:
            if slot.engine is None or (only_idle and (slot.running or slot.waiting)):
                return
            engine, slot.engine, slot.state = slot.engine, None, "unloading"  # still counted as used
            try:
                await engine.unload()
            finally:
                slot.state, slot.held = "unloaded", None

    async def reap(self) -> list[str]:
        """Unload idle models whose keep-alive has passed; returns their names."""
        now = self.clock()
        gone = []
        for s in self.loaded():
            if (
                s.state == "ready"
                and not s.running
                and not s.waiting
                and not s.spec.pinned
                and now >= s.expires_at
            ):
                await self.unload(s, only_idle=True)
                if s.engine is None:
                    gone.append(s.spec.name)
        return gone

    def _reaped(self, task: asyncio.Task[list[str]]) -> None:
        self._reaping.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("unloading after keep_alive 0 failed: %s", task.exception())

    async def expire(self, name: str) -> list[str]:
        """Unload ``name`` now if it is idle (Ollama's keep_alive 0 with nothing to generate);
        a busy model goes by the keep-alive of the requests it is running."""
        slot = self.slot(name)
        slot.expires_at = self.clock()
        return await self.reap()

    async def close(self) -> None:
        for task in list(self._reaping):
            with suppress(Exception):
                await task
        for s in self.loaded():
            await self.unload(s)

    # ---- using a model --------------------------------------------------------------------
    @asynccontextmanager
    async def use(
        self, name: str, *, wait: bool = True, keep_alive: float | None = None
    ) -> AsyncIterator[Engine]:
        """Admission to this model (FIFO, ``parallel`` at once), loading it if needed; the caller
        runs one request."""
        slot = self.slot(name)
        if slot.waiting + slot.running >= self.max_queue:
            raise QueueFullError(
                f"{name} has {slot.waiting + slot.running} requests queued or running (the limit).",
                hint="Retry after a few seconds.",
                retry_after=2.0,
            )
        slot.waiting += 1
        try:
            engine = await self.ensure_loaded(slot, wait=wait)
            try:
                await asyncio.wait_for(slot.admit.acquire(), timeout=self.queue_timeout)
            except TimeoutError as exc:
                raise ModelLoadingError(
                    f"{name} stayed busy for {self.queue_timeout:.0f} s.",
                    hint="The server is overloaded; retry later.",
                    retry_after=10.0,
                ) from exc
        finally:
            slot.waiting -= 1
        slot.running += 1
        try:
            if slot.engine is None:  # unloaded while we waited: load again
                engine = await self.ensure_loaded(slot)
            yield engine
        finally:
            slot.running -= 1
            slot.last_used = self.clock()
            ka = slot.spec.keep_alive if keep_alive is None else keep_alive
            slot.expires_at = slot.last_used + ka if ka >= 0 else FOREVER
            slot.admit.release()
            if ka == 0:  # Ollama's "unload after this request": now, not at the reaper's next round
                task = asyncio.ensure_future(self.reap())
                self._reaping.add(task)
                task.add_done_callback(self._reaped)
