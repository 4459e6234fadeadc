"""The guard's second stage as the server builds it: a classifier from a folder or the store, or a
guard model or an embedding model served by this server's own pool (never over HTTP to itself).

The guard and embedding models go through ``Pool.use`` like any request: they are admitted, loaded
on demand and unloaded when idle, and a guard request cancelled at its budget leaves the engine
through the generator's ``aclose`` (the engine aborts the generation there).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kennel.engines.base import Message, Request, Sampling
from kennel.errors import InvalidOptionError, KennelError, ModelNotFoundError, NotInStoreError
from kennel.guard.llm import ANSWER_FORMATS, Ask, GuardModelStage
from kennel.guard.similarity import DEFAULT_THRESHOLD, Embed, SimilarityStage, shipped_examples, user_examples
from kennel.guard.stages import ClassifierStage, Stage
from kennel.server.pool import ModelSpec, Pool
from kennel.server.settings import ServeSettings
from kennel.settings import KennelHome

# enough for "Safety: Unsafe\nCategories: Jailbreak" or "unsafe\nS14"; greedy, so repeatable
_GUARD_SAMPLING = Sampling(temperature=0.0, top_k=1, top_p=1.0, min_p=0.0, max_tokens=32, seed=0)


def build_stage(
    settings: ServeSettings, pool: Pool, specs: Sequence[ModelSpec], home: KennelHome | None
) -> Stage | None:
    """The stage the settings choose; a guard or embedding model is asked by the name it is
    served under (its entry may pull ``qwen3guard-0.6b`` and serve it as ``guard``)."""
    threshold = settings.guard_stage_threshold
    if settings.guard_classifier is not None:
        from kennel.guard.classifier import OnnxClassifier

        folder = classifier_folder(settings.guard_classifier, home)
        return ClassifierStage(OnnxClassifier(folder), threshold=threshold or 0.5)
    if settings.guard_model:
        name = _served_name(settings, specs, settings.guard_model)
        return GuardModelStage(pool_ask(pool, name), threshold=threshold or 0.5, model=name)
    if settings.guard_embedding_model:
        examples = [*shipped_examples(), *(user_examples(home) if home is not None else [])]
        return SimilarityStage(
            pool_embed(pool, _served_name(settings, specs, settings.guard_embedding_model)),
            examples,
            threshold=threshold or DEFAULT_THRESHOLD,
        )
    return None


def check_stage(settings: ServeSettings, specs: Sequence[ModelSpec], home: KennelHome | None) -> list[str]:
    """Before the server starts: raise (``error:`` + ``hint:``) for a second stage that cannot
    work, so no request meets it; return what deserves a warning in the banner and the log."""
    if settings.guard_classifier is not None:
        check_classifier(settings.guard_classifier, home)
        return []
    if settings.guard_model:
        spec = _served(settings, specs, settings.guard_model)
        return _check_guard_model(settings.guard_model, spec) if spec is not None else []
    if settings.guard_embedding_model:
        spec = _served(settings, specs, settings.guard_embedding_model)
        if spec is not None and spec.plan.task != "embed":
            ref = settings.guard_embedding_model
            does = "ranks documents" if spec.plan.task == "rerank" else "generates text"
            raise InvalidOptionError(
                f"--guard-embedding-model {ref} is not an embedding model ({spec.name} {does}), so the "
                "similarity stage could not compare anything with the known attacks.",
                hint="Give it an embedding model (`kennel catalog --task embedding`; `kennel pull "
                "all-minilm-l6-v2`), or a guard model with --guard-model (qwen3guard-0.6b).",
            )
        return []
    unused = [
        flag
        for field, flag in (
            ("guard_budget_ms", "--guard-budget-ms"),
            ("guard_fail", "--guard-fail"),
            ("guard_stage_threshold", "--guard-stage-threshold"),
        )
        if field in settings.model_fields_set
    ]
    if not unused:
        return []
    return [
        f"{' and '.join(unused)} do nothing without a second guard stage: the guard runs its "
        "heuristics only. Add --guard-classifier, --guard-model or --guard-embedding-model, or drop them."
    ]


def describe_guard(settings: ServeSettings) -> str:
    """The banner's line: ``Guard: log; second stage: classifier prompt-guard-2-86m within 50 ms,
    fail open``."""
    head = f"Guard: {settings.guard}"
    if settings.guard_classifier is not None:
        stage = f"classifier {settings.guard_classifier}"
    elif settings.guard_model:
        stage = f"guard model {settings.guard_model}"
    elif settings.guard_embedding_model:
        stage = f"similarity with {settings.guard_embedding_model}"
    else:
        return f"{head} (heuristics only; no second stage)"
    return f"{head}; second stage: {stage} within {settings.guard_budget_ms:g} ms, fail {settings.guard_fail}"


def check_classifier(ref: Path, home: KennelHome | None) -> Path:
    """The classifier's folder, its files and onnxruntime, checked without loading the model."""
    from kennel.catalog.entries import classifiers, find_classifier
    from kennel.guard.classifier import classifier_files, require_runtime

    try:
        folder = classifier_folder(ref, home)
    except NotInStoreError as exc:
        known = find_classifier(str(ref)) is not None
        raise ModelNotFoundError(
            f"The guard classifier {ref} is not in the store.",
            hint=f"Pull it first: `kennel pull {ref}` (it runs with onnxruntime: "
            "`pip install 'kennel[guard]'`)."
            if known
            else f"Pull one (`kennel pull {classifiers()[0].name}`; see `kennel catalog`), or give a "
            "folder holding model.onnx and tokenizer.json.",
        ) from exc
    classifier_files(folder)
    require_runtime()
    return folder


# names a guard model goes by (its catalog name, repo, GGUF file or general.name), lower case
# with the punctuation dropped: qwen3guard-0.6b, Qwen3Guard-Gen-4B, Llama-Guard-3-1B, llamaguard
_GUARD_NAME = re.compile(r"qwen\d*guard|llamaguard")
# what their chat templates say: Qwen3Guard asks for "Safety: ...", Llama Guard lists categories
_GUARD_TEMPLATE = re.compile(r"safety:\s*(safe|unsafe)|unsafe content categories", re.IGNORECASE)


def _served(settings: ServeSettings, specs: Sequence[ModelSpec], ref: str) -> ModelSpec | None:
    """The spec that serves ``ref``: by its served name, else by the entry that names it."""
    by_name = next((s for s in specs if s.name == ref), None)
    if by_name is not None:
        return by_name
    return next((s for e, s in zip(settings.models, specs, strict=False) if ref == e.model), None)


def _served_name(settings: ServeSettings, specs: Sequence[ModelSpec], ref: str) -> str:
    spec = _served(settings, specs, ref)
    return spec.name if spec is not None else ref  # not served: the pool says so, by that name


def _check_guard_model(ref: str, spec: ModelSpec) -> list[str]:
    from kennel.catalog.entries import find

    if spec.plan.task != "generate":
        raise InvalidOptionError(
            f"--guard-model {ref} is {'an embedding' if spec.plan.task == 'embed' else 'a reranking'} model: "
            "a guard model answers in text, with a verdict.",
            hint="Serve a guard model (`kennel pull qwen3guard-0.6b`, or llama-guard-3-1b); an "
            "embedding model goes with --guard-embedding-model.",
        )
    entry = find(ref) or find(spec.name)
    if entry is not None and "guard" not in entry.tasks:
        raise InvalidOptionError(
            f"--guard-model {ref} is {entry.title}, a model for {', '.join(entry.tasks)}, not a guard "
            f"model: it does not answer in {ANSWER_FORMATS}, so every request's second stage would fail.",
            hint="Serve a guard model: `kennel pull qwen3guard-0.6b` (or llama-guard-3-1b), then "
            "--guard-model qwen3guard-0.6b.",
        )
    if entry is not None or _looks_like_guard(ref, spec):
        return []
    return [
        f"--guard-model {ref} is not a guard model kennel knows (neither its name nor its chat "
        f"template is Qwen3Guard's or Llama Guard 3's). The llm stage reads {ANSWER_FORMATS}; any "
        "other answer fails the stage (with guard_fail closed, every request is then blocked). "
        "Serve qwen3guard-0.6b or llama-guard-3-1b unless this model answers in one of these formats."
    ]


def _looks_like_guard(ref: str, spec: ModelSpec) -> bool:
    names = [ref, spec.name, spec.plan.model.name, spec.profile.base_file if spec.profile else ""]
    template = spec.plan.chat_template or ""
    if spec.plan.model.is_file():
        from kennel.store.add import check_gguf

        try:
            meta = check_gguf(spec.plan.model).metadata
        except KennelError:  # unreadable: the engine says so at load
            meta = {}
        names += [str(meta.get("general.name", "")), str(meta.get("general.basename", ""))]
        template = template or str(meta.get("tokenizer.chat_template", ""))
    squashed = (re.sub(r"[^a-z0-9]", "", n.lower()) for n in names)
    return any(_GUARD_NAME.search(n) for n in squashed) or bool(_GUARD_TEMPLATE.search(template))


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
