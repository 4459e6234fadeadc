"""Ollama's model management on kennel's store: /api/pull is `kennel pull` with Ollama's progress
lines, /api/delete is `kennel rm`, /api/copy is `kennel tag` (a new name gets a version of its
own that shares the blobs). Names are Ollama's (``qwen2.5:7b`` means the catalog's qwen2.5-7b,
``hf.co/OWNER/REPO:QUANT`` the hub) or the store's own (NAME, NAME:TAG, NAME@V).

Every store call blocks (SQLite, disk, the hub): each runs in a worker thread with a store
connection of its own. A pull reports progress from its thread through the event loop; a client
that leaves stops the download at its next chunk, and the partial file is kept for the next pull.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kennel.catalog.ollama_names import ollama_to_catalog
from kennel.catalog.resolve import parse_hub_ref
from kennel.errors import ClientGoneError, InvalidNameError, NotInStoreError
from kennel.settings import KennelHome
from kennel.store.maintenance import execute_rm, plan_rm
from kennel.store.names import DEFAULT_TAG, parse_ref
from kennel.store.pull import PullTarget, plan_pull, pull
from kennel.store.registry import Store

DEFAULT_QUANT = "Q4_K_M"  # what Ollama's library tags without a quantization hold
PROGRESS_EVERY = 0.25  # seconds between progress lines for one file
ACTOR = "ollama-api"  # who the store's audit log says did it, when no API key says who


def actor_of(key_name: str | None) -> str:
    """Who the audit log names for a change through the Ollama API: the key, when keys are in use."""
    return f"{ACTOR}:{key_name}" if key_name else ACTOR


def plan(name: str) -> PullTarget:
    """What ``name`` pulls (blocking: asks the hub)."""
    text = name.strip()
    if text.lower().startswith(("hf.co/", "huggingface.co/", "https://")):
        repo, _ = parse_hub_ref(text)
        if repo is not None:
            return plan_pull(text.removesuffix(":latest"))
    o = ollama_to_catalog(text)
    if o is not None:
        return plan_pull(f"{o.catalog}:{o.quant or DEFAULT_QUANT}")
    return plan_pull(text, default_quant=lambda _: DEFAULT_QUANT)  # the catalog's own spelling


@dataclass
class _Progress:
    """Progress lines from the pulling thread, a few a second per file, to the event loop."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[dict[str, Any] | None]
    digests: dict[str, str]  # file path in the repo -> sha256:HEX (Ollama names layers by digest)
    stop: threading.Event
    last: tuple[str, float] = ("", 0.0)

    def __call__(self, path: str, done: int, total: int) -> None:
        if self.stop.is_set():  # the client left: end the download here (the partial file stays)
            raise ClientGoneError("The client disconnected; the download stops and resumes next time.")
        now = time.monotonic()
        if path == self.last[0] and now - self.last[1] < PROGRESS_EVERY and done < total:
            return
        self.last = (path, now)
        digest = self.digests[path]
        line = {"status": f"pulling {digest[7:19]}", "digest": digest, "total": total, "completed": done}
        self.loop.call_soon_threadsafe(self.queue.put_nowait, line)


async def pull_lines(
    home: KennelHome, target: PullTarget, actor: str = ACTOR
) -> AsyncGenerator[dict[str, Any], None]:
    """Ollama's pull progress: the manifest, each file's bytes, the check, success. Errors are
    raised (the caller sends them in Ollama's shape)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    digests = {
        f.path: f"sha256:{f.sha256 or hashlib.sha256(f'{target.repo}/{f.path}'.encode()).hexdigest()}"
        for f in target.files
    }
    progress = _Progress(loop, queue, digests, threading.Event())

    def run() -> None:
        with Store.open(home) as store:
            pull(
                store,
                target,
                actor=actor,
                message=f"pulled through the Ollama API: hf.co/{target.repo}",
                progress=progress,
            )

    def finished(task: asyncio.Future[None]) -> None:
        if not task.cancelled():
            task.exception()  # read here: when the client has left, nobody else will
        queue.put_nowait(None)  # after every line the thread sent: they were queued before

    # a thread of its own: a download holds it for minutes, and the loop's default threads serve
    # the keys-file watcher, long guard scans and the other store calls meanwhile
    own = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kennel-pull")
    task = asyncio.ensure_future(loop.run_in_executor(own, run))
    task.add_done_callback(finished)
    own.shutdown(wait=False)  # the thread ends with the download
    try:
        yield {"status": "pulling manifest"}
        while (line := await queue.get()) is not None:
            yield line
        await task
    finally:
        progress.stop.set()
    # each file was checked against its sha256 as it landed; these are the stages clients show
    yield {"status": "verifying sha256 digest"}
    yield {"status": "writing manifest"}
    yield {"status": "success"}


def store_ref(store: Store, name: str) -> str:
    """An Ollama name as a reference to a model in the store: the store's own name (NAME:latest
    is the whole model, as in Ollama), else the catalog entry an Ollama name means."""
    text = name.strip()
    live = set(store.live_models())
    base = text.removesuffix(":latest")
    try:
        if parse_ref(base).name in live:
            return base
    except InvalidNameError:
        pass
    o = ollama_to_catalog(text)
    if o is not None and o.catalog in live:
        quant = o.quant.lower() if o.quant else None
        return f"{o.catalog}:{quant}" if quant and quant in store.tags(o.catalog) else o.catalog
    raise NotInStoreError(
        f"No model {name!r} in the store.", hint="GET /api/tags, or `kennel ls`, lists them."
    )


def delete(home: KennelHome, name: str, actor: str = ACTOR) -> str:
    """Remove the version ``name`` names (a bare name: its ``latest``) with every tag on it, as
    `ollama rm` removes what one name pulled; refused while a server has it loaded. Other
    versions and their tags (a fine-tuned candidate, `prod` elsewhere) stay: the whole model goes
    only by `kennel rm NAME` on the server."""
    with Store.open(home) as store:
        ref = parse_ref(store_ref(store, name))
        version = store.resolve(ref).version
        on_it = [t for t, v in store.tags(ref.name).items() if v == version]
        # each tag's removal drops the version with the last tag that names it
        for target in [f"{ref.name}:{t}" for t in on_it] or [f"{ref.name}@{version}"]:
            execute_rm(store, plan_rm(store, target), actor=actor, message="deleted through the Ollama API")
        return f"{ref.name}@{version}"


def copy(home: KennelHome, source: str, destination: str, actor: str = ACTOR) -> str:
    """``destination`` names the same version as ``source``: a tag of the same model, or a new
    model whose version shares the blobs."""
    with Store.open(home) as store:
        version = store.resolve(parse_ref(store_ref(store, source)))
        dest = parse_ref(destination.strip())
        if dest.version is not None:
            raise InvalidNameError(
                f"{destination!r}: a copy is named NAME or NAME:TAG; versions are numbered by the store."
            )
        tag = dest.tag or DEFAULT_TAG
        why = f"copied from {source} through the Ollama API"
        if dest.name == version.model:
            store.set_tag(parse_ref(f"{version.model}@{version.version}"), tag, actor=actor, message=why)
        else:
            store.add_version(
                dest.name, version.profile, action="copy", actor=actor, message=why, tags=(tag,)
            )
        return f"{dest.name}:{tag}"
