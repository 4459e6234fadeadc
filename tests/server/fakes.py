"""The parts every fake engine in the tests shares: instant load, healthy, word-count tokens."""

from __future__ import annotations

from collections.abc import Sequence

from kennel.engines.base import Capabilities, Embeddings
from kennel.server.pool import ModelSpec


class FakeEngineBase:
    """Subclasses add ``chat`` and ``complete``; loading and unloading cost nothing."""

    def __init__(self, spec: ModelSpec) -> None:
        self.capabilities = Capabilities()
        self.n_ctx = spec.plan.n_ctx

    async def load(self) -> None:
        pass

    async def unload(self) -> None:
        pass

    def healthy(self) -> bool:
        return True

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        return Embeddings(((0.0,),), 1)
