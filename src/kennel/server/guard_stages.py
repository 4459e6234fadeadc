"""The guard's second stage as the server builds it: a classifier from a folder or the store, or a
guard model or an embedding model served by this server's own pool (never over HTTP to itself).

The guard and embedding models go through ``Pool.use`` like any request: they are admitted, loaded
on demand and unloaded when idle, and a guard request cancelled at its budget leaves the engine
through the generator's ``aclose`` (the engine aborts the generation there).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kennel.engines.base import Message, Request, Sampling
from kennel.guard.llm import Ask, GuardModelStage
from kennel.guard.similarity import DEFAULT_THRESHOLD, Embed, SimilarityStage, shipped_examples, user_examples
from kennel.guard.stages import ClassifierStage, Stage
from kennel.server.pool import Pool
from kennel.server.settings import ServeSettings
from kennel.settings import KennelHome

# enough for "Safety: Unsafe\nCategories: Jailbreak" or "unsafe\nS14"; greedy, so repeatable
_GUARD_SAMPLING = Sampling(temperature=0.0, top_k=1, top_p=1.0, min_p=0.0, max_tokens=32, seed=0)


def build_stage(settings: ServeSettings, pool: Pool, home: KennelHome | None) -> Stage | None:
    threshold = settings.guard_stage_threshold
    if settings.guard_classifier is not None:
        from kennel.guard.classifier import OnnxClassifier

        folder = classifier_folder(settings.guard_classifier, home)
        return ClassifierStage(OnnxClassifier(folder), threshold=threshold or 0.5)
    if settings.guard_model:
        return GuardModelStage(pool_ask(pool, settings.guard_model), threshold=threshold or 0.5)
    if settings.guard_embedding_model:
        examples = [*shipped_examples(), *(user_examples(home) if home is not None else [])]
        return SimilarityStage(
            pool_embed(pool, settings.guard_embedding_model),
            examples,
            threshold=threshold or DEFAULT_THRESHOLD,
        )
    return None


def classifier_folder(ref: Path, home: KennelHome | None) -> Path:
    """A folder as given, else a store name (`kennel pull prompt-guard-2-86m`) as its folder."""
    if ref.expanduser().is_dir() or home is None or ref.is_absolute() or str(ref).startswith((".", "~")):
        return ref.expanduser()
    from kennel.server.models import stored_path

    return stored_path(str(ref), home)


def pool_ask(pool: Pool, model: str) -> Ask:
    async def ask(turns: Sequence[tuple[str, str]]) -> str:
        request = Request(sampling=_GUARD_SAMPLING, messages=tuple(Message(r, t) for r, t in turns))
        parts: list[str] = []
        async with pool.use(model) as engine:
            pieces = engine.generate(request, f"guard-{uuid.uuid4().hex[:16]}")
            try:
                async for d in pieces:
                    parts.append(d.text)
            finally:
                close = getattr(pieces, "aclose", None)
                if close is not None:
                    await close()
        return "".join(parts)

    return ask


def pool_embed(pool: Pool, model: str) -> Embed:
    """An embedding call cannot be stopped once the engine has it (it runs in the engine's
    thread). So the call owns its admission to the model: a guard past its budget stops waiting,
    but a call already admitted keeps its slot until the engine is done, and the pool's admission
    (``parallel`` at once, ``max_queue`` waiting) still bounds the work a flood can leave behind.
    One cancelled while still waiting for a slot is dropped."""
    running: set[asyncio.Task[Sequence[Sequence[float]]]] = set()

    async def embed(texts: Sequence[str]) -> Sequence[Sequence[float]]:
        admitted = asyncio.Event()

        async def call() -> Sequence[Sequence[float]]:
            async with pool.use(model) as engine:
                admitted.set()
                return (await engine.embed(list(texts))).vectors

        task = asyncio.ensure_future(call())
        running.add(task)
        task.add_done_callback(_forget(running))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not admitted.is_set():
                task.cancel()
            raise

    return embed


def _forget(running: set[asyncio.Task[Sequence[Sequence[float]]]]) -> Any:
    def done(task: asyncio.Task[Sequence[Sequence[float]]]) -> None:
        running.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a late failure of an abandoned call is not an error

    return done
