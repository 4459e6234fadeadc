"""The model pool with a fake engine: loading, LRU eviction under a memory budget, pinning,
FIFO queues and back-pressure, keep-alive. No llama.cpp: each test runs in milliseconds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest

from kennel.engines.base import (
    Capabilities,
    Delta,
    Embeddings,
    Engine,
    FailureHook,
    LoadPlan,
    Memory,
    Message,
    Ranking,
    Request,
)
from kennel.errors import InsufficientMemoryError, ModelLoadingError, ModelNotServedError, QueueFullError
from kennel.server.pool import FOREVER, ModelSpec, Pool

GiB = 2**30
HI = [Message("user", "hi")]


class FakeEngine:
    """Implements the Engine protocol; records its lifecycle in the factory's log. ``load`` and
    each request may wait on an event, so a test can hold a model loading or a request running."""

    capabilities = Capabilities()

    def __init__(self, spec: ModelSpec, factory: Factory) -> None:
        self.spec, self.name, self.factory = spec, spec.name, factory
        self.context, self.parallel = spec.plan.context, spec.plan.parallel
        self.loaded = False

    async def load(self) -> None:
        f = self.factory
        f.log.append(("load", self.name))
        f.holding[self.name] = self.spec.memory.ram  # a real engine holds memory from here on
        f.peak_ram = max(f.peak_ram, sum(f.holding.values()))
        if gate := f.load_gates.get(self.name):
            await gate.wait()
        self.loaded = True

    async def unload(self) -> None:
        self.factory.log.append(("unload", self.name))
        if gate := self.factory.unload_gates.get(self.name):
            await gate.wait()
        self.factory.holding.pop(self.name, None)
        self.loaded = False

    def healthy(self) -> bool:
        return self.loaded

    def on_failure(self, hook: FailureHook) -> None:
        self.failure_hook = hook

    async def native_metrics(self) -> str:
        return ""

    def memory(self) -> Memory | None:
        return self.factory.reported.get(self.name)

    def generate(self, request: Request, request_id: str) -> AsyncIterator[Delta]:
        return self._stream(len(request.messages) or len((request.prompt or "").split()))

    async def busy(self) -> int:
        return 0

    async def abort(self, request_id: str) -> None:
        pass

    async def rerank(self, query: str, documents: Sequence[str]) -> Ranking:
        return Ranking((), 0)

    async def _stream(self, prompt_tokens: int) -> AsyncIterator[Delta]:
        if gate := self.factory.run_gates.get(self.name):
            await gate.wait()
        yield Delta("hel")
        yield Delta("lo")
        yield Delta(finish_reason="stop", prompt_tokens=prompt_tokens, completion_tokens=2)

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        return Embeddings(vectors=tuple((0.0,) for _ in texts), prompt_tokens=len(texts))


class Factory:
    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []
        self.load_gates: dict[str, asyncio.Event] = {}
        self.run_gates: dict[str, asyncio.Event] = {}
        self.unload_gates: dict[str, asyncio.Event] = {}
        self.holding: dict[str, int] = {}  # RAM of engines loading or loaded and not yet unloaded
        self.peak_ram = 0
        self.reported: dict[str, Memory] = {}  # what each engine says it holds once loaded

    def __call__(self, spec: ModelSpec) -> Engine:
        return FakeEngine(spec, self)

    def loads(self, name: str) -> int:
        return self.log.count(("load", name))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def spec(
    name: str, ram_gib: float = 1, *, vram_gib: tuple[float, ...] = (), parallel: int = 1, **kw: object
) -> ModelSpec:
    memory = Memory(ram=int(ram_gib * GiB), vram=tuple(int(v * GiB) for v in vram_gib))
    plan = LoadPlan(model=Path(f"/models/{name}.gguf"), context=256, parallel=parallel)
    return ModelSpec(name=name, plan=plan, memory=memory, digests=(f"sha-{name}",), **kw)  # type: ignore[arg-type]


def make_pool(*specs: ModelSpec, ram_gib: float = 10, **kw: object) -> tuple[Pool, Factory]:
    factory = Factory()
    pool = Pool(list(specs), budget=Memory(ram=int(ram_gib * GiB)), engine_factory=factory, **kw)  # type: ignore[arg-type]
    return pool, factory


async def ask(pool: Pool, name: str, **kw: object) -> str:
    async with pool.use(name, **kw) as engine:  # type: ignore[arg-type]
        return "".join([d.text async for d in engine.generate(Request(messages=tuple(HI)), "r")])


def run(test: Callable[[], Awaitable[None]]) -> None:
    # the pool's asyncio locks belong to the loop they were first used on: one loop per test
    asyncio.run(asyncio.wait_for(test(), timeout=10))


async def settle() -> None:
    """Let every task that can make progress do so."""
    for _ in range(20):
        await asyncio.sleep(0)


def test_loads_on_first_use_and_reuses_the_engine() -> None:
    async def go() -> None:
        pool, f = make_pool(spec("a"))
        slot = pool.slot("a")
        assert slot.state == "unloaded" and f.log == []
        assert await ask(pool, "a") == "hello"
        assert slot.state == "ready" and slot.loads == 1 and f.log == [("load", "a")]
        assert await ask(pool, "a") == "hello"
        assert f.loads("a") == 1 and slot.running == slot.waiting == 0
        with pytest.raises(ModelNotServedError, match="not served"):
            await ask(pool, "nope")
        await pool.close()
        assert f.log[-1] == ("unload", "a") and pool.loaded() == []

    run(go)


def test_evicts_the_least_recently_used_idle_model() -> None:
    async def go() -> None:
        clock = Clock()
        pool, f = make_pool(spec("a", 4), spec("b", 4), spec("c", 4), ram_gib=10, clock=clock)
        for t, name in enumerate(["a", "b", "a"]):  # b is now the least recently used
            clock.now = float(t)
            await ask(pool, name)
        assert f.log == [("load", "a"), ("load", "b")]
        clock.now = 5.0
        await ask(pool, "c")
        assert f.log[2:] == [("unload", "b"), ("load", "c")]
        assert {s.spec.name for s in pool.loaded()} == {"a", "c"}
        assert pool.in_use() == Memory(ram=8 * GiB)

    run(go)


def test_pinned_models_are_never_evicted_and_the_load_is_not_attempted() -> None:
    async def go() -> None:
        pool, f = make_pool(spec("a", 6, pinned=True), spec("b", 6), ram_gib=10)
        await ask(pool, "a")
        with pytest.raises(InsufficientMemoryError, match="busy or pinned") as info:
            await ask(pool, "b")
        assert info.value.retry_after == 10.0
        assert f.log == [("load", "a")]  # b never attempted, a untouched
        assert pool.slot("a").state == "ready" and pool.slot("b").state == "unloaded"
        assert pool.slot("b").waiting == 0

    run(go)


def test_a_model_bigger_than_the_whole_budget_is_refused_without_loading() -> None:
    async def go() -> None:
        pool, f = make_pool(spec("a", 2), spec("huge", 12), spec("gpu1", 1, vram_gib=(0, 4)), ram_gib=10)
        await ask(pool, "a")
        with pytest.raises(InsufficientMemoryError, match="budget is"):
            await ask(pool, "huge")
        with pytest.raises(InsufficientMemoryError):  # VRAM on a GPU the budget does not have
            await ask(pool, "gpu1")
        assert f.log == [("load", "a")]  # nothing evicted for a load that could never fit

    run(go)


def test_busy_models_are_not_evicted() -> None:
    async def go() -> None:
        pool, f = make_pool(spec("a", 6), spec("b", 6), ram_gib=10)
        f.run_gates["a"] = gate = asyncio.Event()
        running = asyncio.create_task(ask(pool, "a"))
        queued = asyncio.create_task(ask(pool, "a"))
        await settle()
        slot = pool.slot("a")
        assert (slot.running, slot.waiting) == (1, 1)
        with pytest.raises(InsufficientMemoryError, match="busy"):
            await ask(pool, "b")
        gate.set()
        assert await running == await queued == "hello"
        assert f.log == [("load", "a")]
        await ask(pool, "b")  # idle now: evicted
        assert f.log[1:] == [("unload", "a"), ("load", "b")]

    run(go)


def test_max_loaded_is_honoured() -> None:
    async def go() -> None:
        clock = Clock()
        pool, f = make_pool(spec("a"), spec("b"), spec("c"), ram_gib=100, max_loaded=2, clock=clock)
        for t, name in enumerate(["a", "b", "c"]):
            clock.now = float(t)
            await ask(pool, name)
        assert [s.spec.name for s in pool.loaded()] == ["b", "c"]
        assert ("unload", "a") in f.log

    run(go)


@pytest.mark.parametrize("loaded", [False, True])
def test_the_queue_is_first_come_first_served(loaded: bool) -> None:
    async def go() -> None:
        pool, f = make_pool(spec("a"))
        if loaded:  # the first request holds the turn while the others queue
            await ask(pool, "a")
            f.run_gates["a"] = gate = asyncio.Event()
        else:  # everyone arrives while the model loads
            f.load_gates["a"] = gate = asyncio.Event()
        order: list[int] = []

        async def request(i: int) -> None:
            async with pool.use("a") as engine:
                order.append(i)
                async for _ in engine.generate(Request(messages=tuple(HI)), "r"):
                    await asyncio.sleep(0)  # give later arrivals every chance to cut in

        tasks = []
        for i in range(5):
            tasks.append(asyncio.create_task(request(i)))
            await asyncio.sleep(0)
        await settle()
        assert pool.slot("a").waiting + pool.slot("a").running == 5
        gate.set()
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2, 3, 4]
        assert f.loads("a") == 1

    run(go)


def test_parallel_requests_run_together_and_the_rest_queue_in_order() -> None:
    """The engine decodes ``parallel`` sequences at once: that many requests are admitted
    together, none waits for another to finish, and later ones queue first come, first served."""

    async def go() -> None:
        pool, f = make_pool(spec("a", parallel=3))
        await ask(pool, "a")
        f.run_gates["a"] = gate = asyncio.Event()
        admitted: list[int] = []

        async def request(i: int) -> None:
            async with pool.use("a") as engine:
                admitted.append(i)
                async for _ in engine.generate(Request(messages=tuple(HI)), f"r{i}"):
                    await asyncio.sleep(0)

        tasks = []
        for i in range(5):
            tasks.append(asyncio.create_task(request(i)))
            await asyncio.sleep(0)
        await settle()
        slot = pool.slot("a")
        assert admitted == [0, 1, 2] and slot.running == 3 and slot.waiting == 2
        gate.set()
        await asyncio.gather(*tasks)
        assert admitted == [0, 1, 2, 3, 4] and slot.running == slot.waiting == 0

    run(go)


def test_the_memory_an_engine_reports_replaces_the_estimate() -> None:
    """Like Ollama's scheduler: once loaded, a model counts with what its engine says it holds,
    so an estimate that was too low cannot overcommit the budget."""

    async def go() -> None:
        pool, f = make_pool(spec("a", 2), spec("b", 2), ram_gib=6)
        f.reported["a"] = Memory(ram=5 * GiB)  # the estimate said 2
        await ask(pool, "a")
        assert pool.in_use() == Memory(ram=5 * GiB) and pool.slot("a").held == Memory(ram=5 * GiB)
        await ask(pool, "b")  # 5 + 2 > 6: a, idle, makes room
        assert [s.spec.name for s in pool.loaded()] == ["b"]
        assert pool.slot("a").memory == Memory(ram=2 * GiB)  # unloaded: back to the estimate

    run(go)


def test_a_full_queue_is_refused_with_retry_after() -> None:
    async def go() -> None:
        pool, f = make_pool(spec("a"), max_queue=2)
        f.run_gates["a"] = gate = asyncio.Event()
        tasks = [asyncio.create_task(ask(pool, "a")) for _ in range(2)]
        await settle()
        with pytest.raises(QueueFullError) as info:
            await ask(pool, "a")
        assert info.value.retry_after == 2.0 and info.value.status_code == 429
        gate.set()
        assert await asyncio.gather(*tasks) == ["hello", "hello"]
        assert await ask(pool, "a") == "hello"  # room again

    run(go)


def test_no_wait_while_loading_is_refused() -> None:
    async def go() -> None:
        pool, f = make_pool(spec("a"))
        f.load_gates["a"] = gate = asyncio.Event()
        first = asyncio.create_task(ask(pool, "a"))
        await settle()
        assert pool.slot("a").state == "loading"
        with pytest.raises(ModelLoadingError, match="loading") as info:
            await ask(pool, "a", wait=False)
        assert info.value.retry_after is not None and info.value.status_code == 503
        assert pool.slot("a").waiting == 1  # the refused one left no trace
        gate.set()
        assert await first == "hello"
        assert await ask(pool, "a", wait=False) == "hello"  # ready: no waiting involved

    run(go)


def test_a_request_waiting_past_the_queue_timeout_gets_503() -> None:
    async def go() -> None:
        pool, f = make_pool(spec("a"), queue_timeout=0.05)
        f.run_gates["a"] = gate = asyncio.Event()
        running = asyncio.create_task(ask(pool, "a"))
        await settle()
        with pytest.raises(ModelLoadingError, match="busy"):
            await ask(pool, "a")
        assert pool.slot("a").waiting == 0
        gate.set()
        await running

    run(go)


def test_keep_alive_and_reap() -> None:
    async def go() -> None:
        clock = Clock()
        pool, f = make_pool(spec("a", keep_alive=300.0), spec("b", keep_alive=FOREVER), clock=clock)
        await ask(pool, "a")
        await ask(pool, "b")
        clock.now = 299.0
        assert await pool.reap() == []
        clock.now = 300.0
        assert await pool.reap() == ["a"]
        assert f.log[-1] == ("unload", "a") and pool.slot("a").state == "unloaded"

        await ask(pool, "a", keep_alive=10.0)  # the request's keep-alive over the model's
        clock.now = 309.0
        assert await pool.reap() == []
        clock.now = 310.0
        assert await pool.reap() == ["a"]

        await ask(pool, "a", keep_alive=0.0)  # unload as soon as the reaper runs
        assert await pool.reap() == ["a"]

        await ask(pool, "a", keep_alive=-1)  # never
        clock.now = 1e12
        assert await pool.reap() == []  # neither a (request said -1) nor b (FOREVER)
        assert {s.spec.name for s in pool.loaded()} == {"a", "b"}

    run(go)


def test_keep_alive_zero_unloads_at_once_and_expire() -> None:
    """Ollama's keep_alive 0: the model goes when its last request ends, not at the next reap;
    one that another request still uses stays until that one ends."""

    async def go() -> None:
        clock = Clock()
        pool, f = make_pool(spec("a"), spec("p", pinned=True), clock=clock)
        await ask(pool, "a", keep_alive=0.0)
        await settle()
        assert pool.slot("a").state == "unloaded" and f.log[-1] == ("unload", "a")

        f.run_gates["a"] = gate = asyncio.Event()
        busy = asyncio.create_task(ask(pool, "a"))
        await settle()
        assert await pool.expire("a") == [] and pool.slot("a").state == "ready"  # busy: stays
        gate.set()
        await busy
        assert await pool.expire("a") == ["a"]
        await ask(pool, "p")
        assert await pool.expire("p") == [] and pool.slot("p").state == "ready"  # pinned
        await pool.close()

    run(go)


def test_a_request_that_arrives_while_the_reaper_unloads_keeps_its_engine() -> None:
    """The reaper saw the model idle; a request came in before its unload ran: the unload is
    dropped, and the request answers (it does not lose its engine mid-answer)."""

    async def go() -> None:
        clock = Clock()
        pool, f = make_pool(spec("a", keep_alive=1.0), clock=clock)
        await ask(pool, "a")
        clock.now = 100.0
        f.run_gates["a"] = gate = asyncio.Event()
        reaping = asyncio.ensure_future(pool.reap())  # runs up to the unload it schedules
        busy = asyncio.create_task(ask(pool, "a"))  # admitted before that unload starts
        assert await reaping == [] and pool.slot("a").state == "ready"
        gate.set()
        await busy
        assert ("unload", "a") not in f.log
        clock.now = 200.0
        assert await pool.reap() == ["a"]

    run(go)


def test_reap_spares_busy_and_pinned_models() -> None:
    async def go() -> None:
        clock = Clock()
        pool, f = make_pool(spec("a", keep_alive=1.0), spec("p", keep_alive=1.0, pinned=True), clock=clock)
        await ask(pool, "p")
        await ask(pool, "a")
        f.run_gates["a"] = gate = asyncio.Event()
        busy = asyncio.create_task(ask(pool, "a"))
        await settle()
        clock.now = 100.0
        assert await pool.reap() == []
        gate.set()
        await busy  # its keep-alive counts from when it finished
        clock.now = 101.0
        assert await pool.reap() == ["a"]
        assert pool.slot("p").state == "ready"

    run(go)


def test_a_request_cancelled_while_waiting_frees_its_place() -> None:
    async def go() -> None:
        pool, f = make_pool(spec("a"), max_queue=2)
        f.run_gates["a"] = gate = asyncio.Event()
        order: list[str] = []

        async def request(tag: str) -> None:
            async with pool.use("a") as engine:
                order.append(tag)
                async for _ in engine.generate(Request(messages=tuple(HI)), "r"):
                    pass

        running = asyncio.create_task(request("first"))
        doomed = asyncio.create_task(request("doomed"))
        await settle()
        slot = pool.slot("a")
        assert (slot.running, slot.waiting) == (1, 1)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert slot.waiting == 0
        nxt = asyncio.create_task(request("next"))  # the queue (max 2) has room again
        await settle()
        assert slot.waiting == 1
        gate.set()
        await asyncio.gather(running, nxt)
        assert order == ["first", "next"]
        assert (slot.running, slot.waiting) == (0, 0) and not slot.admit.locked()

    run(go)


# ---- abandoned loads and unloads in progress ------------------------------------------------


def test_a_load_cancelled_midway_leaves_no_engine_behind() -> None:
    async def go() -> None:
        pool, f = make_pool(spec("a"))
        f.load_gates["a"] = asyncio.Event()
        request = asyncio.create_task(ask(pool, "a"))
        await settle()
        request.cancel()  # e.g. the server shutting down during a load
        with pytest.raises(asyncio.CancelledError):
            await request
        # the pool says nothing is loaded, so nothing may still hold memory
        assert {s.spec.name for s in pool.loaded()} == set(f.holding)

    run(go)


def test_memory_is_not_reused_before_an_unload_finishes() -> None:
    async def go() -> None:
        pool, f = make_pool(spec("c", 6), spec("x", 6), spec("y", 6), ram_gib=10)
        await ask(pool, "c")
        f.unload_gates["c"] = freed = asyncio.Event()
        x = asyncio.create_task(ask(pool, "x"))  # evicts c, whose unload takes a while
        await settle()
        y = asyncio.create_task(ask(pool, "y"))  # arrives while c still holds its 6 GiB
        await settle()
        freed.set()
        await asyncio.gather(x, y, return_exceptions=True)
        assert f.peak_ram <= 10 * GiB

    run(go)
