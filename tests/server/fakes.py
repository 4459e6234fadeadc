"""The parts every fake engine in the tests shares: instant load, healthy, the Engine contract's
``generate`` dispatched to ``chat`` / ``complete`` hooks that subclasses write."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from kennel.engines.base import (
    Capabilities,
    Delta,
    Embeddings,
    FailureHook,
    Memory,
    Message,
    Ranked,
    Ranking,
    Request,
    Sampling,
)
from kennel.server.pool import ModelSpec


class FakeEngineBase:
    """Subclasses add ``chat`` and ``complete``; loading and unloading cost nothing."""

    def __init__(self, spec: ModelSpec) -> None:
        self.capabilities = Capabilities(embeddings=True, rerank=True)
        self.context = spec.plan.context
        self.parallel = spec.plan.parallel
        self.aborted: list[str] = []

    async def load(self) -> None:
        pass

    async def unload(self) -> None:
        pass

    def healthy(self) -> bool:
        return True

    def on_failure(self, hook: FailureHook) -> None:
        self.failure_hook = hook

    async def native_metrics(self) -> str:
        return ""

    def memory(self) -> Memory | None:
        return None

    def generate(self, request: Request, request_id: str) -> AsyncIterator[Delta]:
        if request.prompt is not None:
            return self.complete(request.prompt, request.sampling)
        return self.chat(list(request.messages), request.sampling)

    def chat(self, messages: Sequence[Message], sampling: Sampling) -> AsyncIterator[Delta]:
        raise NotImplementedError

    def complete(self, prompt: str, sampling: Sampling) -> AsyncIterator[Delta]:
        raise NotImplementedError

    async def busy(self) -> int:
        return 0

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        return Embeddings(((0.0,),), 1)

    async def rerank(self, query: str, documents: Sequence[str]) -> Ranking:
        return Ranking(tuple(Ranked(i, 1.0 / (i + 1)) for i in range(len(documents))), len(documents))
