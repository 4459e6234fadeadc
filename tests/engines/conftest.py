"""The engine kinds the conformance suite runs against, and the generated models it loads.

Every engine kind kennel can serve with is listed in ``ENGINES``; each suite test runs once per
kind. A kind takes a ``LoadPlan`` and returns an ``Engine``; the suite only uses the contract.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from kennel.engines.base import Answer, Delta, Engine, LoadPlan, Request
from kennel.engines.llama_server import LlamaServerEngine
from kennel.engines.llamacpp import LlamaCppEngine
from kennel.engines.llamacpp_log import LoadLog
from tests.conftest import ModelFactory
from tests.engines.templates import THINKING, TOOLS

EngineKind = Callable[[LoadPlan], Engine]


def _llamacpp(plan: LoadPlan) -> Engine:
    return LlamaCppEngine(plan, name=f"conformance-{plan.task}", load_log=LoadLog())


def _llama_server(plan: LoadPlan) -> Engine:
    return LlamaServerEngine(plan, name=f"conformance-{plan.task}")


ENGINES: dict[str, EngineKind] = {"llamacpp": _llamacpp, "llama-server": _llama_server}

VOCAB = 512
TOOL_CALL, THINK_END = VOCAB - 4, VOCAB - 1  # the tag tokens at the end of the synthetic vocabulary
EOS = 2


@dataclass
class Loaded:
    """An engine loaded on a loop of its own thread, driven synchronously by the tests."""

    engine: Engine
    loop: asyncio.AbstractEventLoop
    plan: LoadPlan

    def run(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    def ask(self, request: Request, request_id: str = "r") -> tuple[list[Delta], Answer]:
        async def go() -> tuple[list[Delta], Answer]:
            pieces, answer = [], Answer()
            async for d in self.engine.generate(request, request_id):
                pieces.append(d)
                answer.add(d)
            return pieces, answer

        return self.run(go())  # type: ignore[no-any-return]


@pytest.fixture(scope="module", params=list(ENGINES))
def kind(request: pytest.FixtureRequest) -> EngineKind:
    return ENGINES[request.param]


def _loaded(kind: EngineKind, plan: LoadPlan) -> Iterator[Loaded]:
    loop = asyncio.new_event_loop()
    import threading

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    engine = kind(plan)
    loaded = Loaded(engine, loop, plan)
    loaded.run(engine.load())
    try:
        yield loaded
    finally:
        loaded.run(engine.unload())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


def _plan(path: Path, **kw: object) -> LoadPlan:
    # flash attention off: llama.cpp's CPU kernel computes a batch of queries in another order
    # than a single query, so with it on concurrent answers may differ from solo ones in the
    # last bits, and a random model's tokens with them
    base = LoadPlan(
        model=path, context=512, parallel=4, threads=2, flash_attn=False, prompt_cache_bytes=32 << 20
    )
    return replace(base, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def chat(kind: EngineKind, make_model: ModelFactory) -> Iterator[Loaded]:
    """A chat model whose template knows tools."""
    path, _ = make_model(n_vocab=VOCAB, chat_template=TOOLS)
    yield from _loaded(kind, _plan(path, context=2048))


@pytest.fixture(scope="module")
def thinker(kind: EngineKind, make_model: ModelFactory) -> Iterator[Loaded]:
    """A chat model whose answers open with <think>."""
    path, _ = make_model(n_vocab=VOCAB, chat_template=THINKING)
    yield from _loaded(kind, _plan(path, parallel=1))


@pytest.fixture(scope="module")
def embedder(kind: EngineKind, make_model: ModelFactory) -> Iterator[Loaded]:
    path, _ = make_model(n_vocab=VOCAB, pooling=1)
    yield from _loaded(kind, _plan(path, task="embed", parallel=2))


@pytest.fixture(scope="module")
def reranker(kind: EngineKind, make_model: ModelFactory) -> Iterator[Loaded]:
    path, _ = make_model(n_vocab=VOCAB, pooling=4)
    # one document at a time, as kennel serves rerankers (server/models.py says why)
    yield from _loaded(kind, _plan(path, task="rerank", parallel=1))
