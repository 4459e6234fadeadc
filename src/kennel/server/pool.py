"""The model pool: which models are loaded, who waits for which, and what memory they hold.

A load is checked against a memory budget (from the hardware probe) with the model's fit
estimate before llama.cpp is asked: when it would overcommit RAM or VRAM, idle unpinned models
are unloaded, least recently used first; when that is not enough the request gets a clear
error and nothing is attempted. Each model has a FIFO queue (asyncio.Lock is fair) bounded by
``max_queue``; a full queue is a 429 with Retry-After, a wait past ``queue_timeout`` a 503.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

from kennel.engines.base import Engine, LoadPlan
from kennel.errors import InsufficientMemoryError, ModelLoadingError, ModelNotServedError, QueueFullError
from kennel.store.profile import Profile
from kennel.units import fmt_bytes

FOREVER = float("inf")


async def _quiet_unload(engine: Engine) -> None:
    with suppress(Exception):
        await engine.unload()


@dataclass(frozen=True)
class Memory:
    ram: int = 0
    vram: tuple[int, ...] = ()  # per GPU, in the order of the hardware profile

    def __add__(self, other: Memory) -> Memory:
        n = max(len(self.vram), len(other.vram))
        a = self.vram + (0,) * (n - len(self.vram))
        b = other.vram + (0,) * (n - len(other.vram))
        return Memory(self.ram + other.ram, tuple(x + y for x, y in zip(a, b, strict=True)))

    def fits_in(self, budget: Memory) -> bool:
        if self.ram > budget.ram:
            return False
        return all(not v or (i < len(budget.vram) and v <= budget.vram[i]) for i, v in enumerate(self.vram))

    def describe(self) -> str:
        gpu = ", ".join(fmt_bytes(v) for v in self.vram if v)
        return f"{fmt_bytes(self.ram)} RAM" + (f" + {gpu} VRAM" if gpu else "")


@dataclass(frozen=True)
class ModelSpec:
    """A model the server may load: where it is, how to load it, what it will need."""

    name: str
    plan: LoadPlan
    memory: Memory
    profile: Profile | None = None
    digests: tuple[str, ...] = ()  # store blobs it uses (leased while loaded)
    pinned: bool = False
    keep_alive: float = 300.0  # seconds idle before unloading; FOREVER for never


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
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)
    loading: asyncio.Lock = field(default_factory=asyncio.Lock)


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
        on_change: Callable[[set[str]], None] | None = None,
    ) -> None:
        self.slots = {s.name: Slot(s) for s in specs}
        self.budget = budget
        self.engine_factory = engine_factory
        self.max_loaded = max_loaded
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self.clock = clock
        self.on_change = on_change

    def slot(self, name: str) -> Slot:
        s = self.slots.get(name)
        if s is None:
            raise ModelNotServedError(f"The model {name!r} is not served here.",
                                      hint=f"Served models: {', '.join(self.slots) or 'none'} (GET /v1/models).")  # fmt: skip
        return s

    def loaded(self) -> list[Slot]:
        return [s for s in self.slots.values() if s.state != "unloaded"]

    def in_use(self) -> Memory:
        total = Memory()
        for s in self.loaded():
            total = total + s.spec.memory
        return total

    # ---- loading and evicting -------------------------------------------------------------
    async def ensure_loaded(self, slot: Slot, *, wait: bool = True) -> Engine:
        if slot.state == "ready" and slot.engine is not None:
            return slot.engine
        if slot.state == "loading" and not wait:
            raise ModelLoadingError(f"{slot.spec.name} is loading.", hint="Retry shortly.", retry_after=5.0)
        async with slot.loading:
            if slot.state == "ready" and slot.engine is not None:
                return slot.engine
            await self._make_room(slot)
            slot.state = "loading"
            engine = self.engine_factory(slot.spec)
            try:
                await engine.load()
            except BaseException:
                # a load abandoned half-way (cancelled, failed) may still hold memory and a thread
                await asyncio.shield(_quiet_unload(engine))
                slot.state = "unloaded"
                raise
            slot.engine, slot.state, slot.loads = engine, "ready", slot.loads + 1
            slot.last_used = self.clock()
            self._changed()
            return engine

    async def _make_room(self, slot: Slot) -> None:
        need = slot.spec.memory
        if not need.fits_in(self.budget):
            raise InsufficientMemoryError(
                f"{slot.spec.name} needs {need.describe()}; this server's budget is {self.budget.describe()}.",
                hint="Serve it with a smaller quantization or context (`kennel fit`), or on a bigger machine.",
            )
        while True:
            others = [s for s in self.loaded() if s is not slot]
            used = Memory()
            for s in others:
                used = used + s.spec.memory
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
                    f"Loading {slot.spec.name} ({need.describe()}) would overcommit memory and every loaded model "
                    f"({busy}) is busy or pinned.",
                    hint="Retry when they are idle, unpin one, or lower max loaded models' contexts.",
                    retry_after=10.0,
                )
            await self.unload(min(idle, key=lambda s: s.last_used))

    async def unload(self, slot: Slot) -> None:
        async with slot.loading:
            if slot.engine is None:
                return
            engine, slot.engine, slot.state = slot.engine, None, "unloading"  # still counted as used
            try:
                await engine.unload()
            finally:
                slot.state = "unloaded"
                self._changed()

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
                await self.unload(s)
                gone.append(s.spec.name)
        return gone

    async def close(self) -> None:
        for s in self.loaded():
            await self.unload(s)

    def _changed(self) -> None:
        if self.on_change:
            self.on_change({d for s in self.loaded() for d in s.spec.digests})

    # ---- using a model --------------------------------------------------------------------
    @asynccontextmanager
    async def use(
        self, name: str, *, wait: bool = True, keep_alive: float | None = None
    ) -> AsyncIterator[Engine]:
        """Wait for this model's turn (FIFO), loading it if needed; the caller runs one request."""
        slot = self.slot(name)
        if slot.waiting + slot.running >= self.max_queue:
            raise QueueFullError(f"{name} has {slot.waiting + slot.running} requests queued or running (the limit).",
                                 hint="Retry after a few seconds.", retry_after=2.0)  # fmt: skip
        slot.waiting += 1
        try:
            engine = await self.ensure_loaded(slot, wait=wait)
            try:
                await asyncio.wait_for(slot.turn.acquire(), timeout=self.queue_timeout)
            except TimeoutError as exc:
                raise ModelLoadingError(f"{name} stayed busy for {self.queue_timeout:.0f} s.",
                                        hint="The server is overloaded; retry later.", retry_after=10.0) from exc  # fmt: skip
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
            slot.turn.release()
