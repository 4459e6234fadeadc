"""The embedded engine: llama.cpp's own server core in process, through xllamacpp.

llama.cpp's server core does what a team service needs and kennel does not rewrite: continuous
batching over ``parallel`` slots (a new request joins the running batch between decode steps),
prompt-cache reuse (a shared system prompt or the earlier turns of a chat are not computed
again), the GGUF's own chat template with tool-call and reasoning parsing, grammars for JSON
schemas, embeddings and reranking.

Its Python entry points block the calling thread until an answer ends and hand each streamed
chunk to a callback on that thread. So each request runs on one of the engine's threads, and the
callback passes the chunk to the event loop, which turns it into a ``Delta``; returning True from
the callback (after ``abort`` or when the consumer left) stops the request, which frees its slot
at the next decode step. Requests always stream inside, with a chunk per prompt batch as well,
so even a long prompt can be abandoned between batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kennel.engines.base import (
    Delta,
    Embeddings,
    FailureHook,
    LoadPlan,
    Memory,
    Ranking,
    Request,
    capabilities_for,
)
from kennel.engines.llamacpp_log import LlamaBuffers, LoadLog
from kennel.engines.llamacpp_params import VERBOSITY_BUFFERS, VERBOSITY_QUIET, common_params, xllamacpp
from kennel.engines.openai_wire import (
    ChunkReader,
    embeddings_of,
    engine_error,
    ranking_of,
    request_body,
    wrong_task,
)
from kennel.errors import EngineError, InvalidRequestError, ModelLoadError

Item = bytes | BaseException | None  # a chunk as llama.cpp sent it, an error, or the end
_ENDED = b""  # the answer ended without being stopped
UNLOAD_WAIT = 60.0  # seconds an unload waits for requests to notice they were stopped
log = logging.getLogger("kennel.engine")
_PROCESSING = re.compile(r"^llamacpp:requests_processing\s+(\S+)", re.M)  # llama.cpp's busy slots


class LlamaCppEngine:
    def __init__(self, plan: LoadPlan, *, name: str, load_log: LoadLog | None = None) -> None:
        self.plan = plan
        self.name = name
        self.context = plan.context
        self.parallel = plan.parallel
        self.capabilities = capabilities_for(plan.task)
        self._load_log = load_log
        self._server: Any = None
        self._memory: Memory | None = None
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        # a request holds a thread until its answer ends; aborted ones may need one more step
        self._threads = ThreadPoolExecutor(
            max_workers=2 * plan.parallel + 2, thread_name_prefix=f"llama-{name}"
        )
        self._stops: dict[str, threading.Event] = {}
        self._jobs: set[Future[None]] = set()
        self._loading: Future[None] | None = None
        self._inbox: _Inbox | None = None

    # ---- lifecycle ------------------------------------------------------------------------
    async def load(self) -> None:
        # the load goes on in its thread if the caller is cancelled; unload waits for it
        self._loading = self._threads.submit(self._load)
        await asyncio.wrap_future(self._loading)

    def _load(self) -> None:
        try:
            x = xllamacpp()
        except ImportError as exc:
            raise ModelLoadError(
                "xllamacpp (llama.cpp) is not installed.", hint="Run scripts/install.sh."
            ) from exc
        self._folder = tempfile.TemporaryDirectory(prefix="kennel-llama-")  # 0700: the listener's socket
        log = self._load_log if self._load_log is not None and self._load_log.can_quiet else None
        params = common_params(
            self.plan,
            socket=Path(self._folder.name) / "llama.sock",
            api_key=secrets.token_urlsafe(32),
            verbosity=VERBOSITY_BUFFERS if log else VERBOSITY_QUIET,
        )
        failed: Exception | None = None
        lines: list[str] = []
        with log.capture() if log else contextlib.nullcontext(lines) as captured:
            try:
                self._server = x.Server(params)
            except (RuntimeError, ValueError) as exc:
                failed = exc
        if failed is not None:  # what llama.cpp said is known once the capture has ended
            self._folder.cleanup()
            said = " ".join(ln.strip() for ln in captured if " E " in ln)[-300:]
            raise ModelLoadError(
                f"llama.cpp could not load {self.name} ({self.plan.model.name})"
                + (f": {said}" if said else "."),
                hint="Check the file with `kennel fit PATH`; a GPU build may need `kennel doctor`.",
            ) from failed
        buffers = LlamaBuffers.from_log("".join(captured))
        if buffers.found:
            self._memory = buffers.memory() + Memory(ram=self.plan.prompt_cache_bytes)
        self._ready()

    def _ready(self) -> None:
        """One real request through llama.cpp's loop: the first decode pays for lazy
        initialisation here rather than in a user's request, and from now on the loop is running
        (destroying a Server whose loop has not started yet can hang)."""
        s = self._server
        if self.plan.task == "embed":
            r = s.handle_embeddings({"input": ["warm up"]})
        elif self.plan.task == "rerank":
            r = s.handle_rerank({"query": "warm up", "documents": ["warm up"]})
        else:
            r = s.handle_completions({"prompt": "Hi", "n_predict": 1, "cache_prompt": False})
        if isinstance(r, dict) and "error" in r:
            self._close()
            raise ModelLoadError(f"{self.name} loaded but could not answer: {r['error']}.")

    async def unload(self) -> None:
        for stop in self._stops.values():
            stop.set()
        pending = [asyncio.wrap_future(j) for j in [*self._jobs, *([self._loading] if self._loading else [])]]
        if pending:  # a request ends at its next decode step or prompt batch; a load when it is done
            _, late = await asyncio.wait(pending, timeout=UNLOAD_WAIT)
            if late:
                log.warning(
                    "%s: %d request(s) still inside llama.cpp after %.0f s; unloading anyway",
                    self.name,
                    len(late),
                    UNLOAD_WAIT,
                )
        await asyncio.get_running_loop().run_in_executor(self._threads, self._close)
        self._threads.shutdown(wait=False)

    def _close(self) -> None:
        server, self._server = self._server, None
        del server  # the last reference: llama.cpp stops its loop and frees the model here
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    def healthy(self) -> bool:
        return self._server is not None

    def on_failure(self, hook: FailureHook) -> None:
        """Never called: in process, llama.cpp failing on its own takes kennel down with it."""

    def memory(self) -> Memory | None:
        return self._memory

    # ---- requests -------------------------------------------------------------------------
    def _check(self, what: str, able: bool) -> Any:
        if self._server is None:
            raise EngineError(f"{self.name} is not loaded.", hint="Retry; the server reloads it.")
        if not able:
            raise wrong_task(self.name, self.plan.task, what)
        return self._server

    async def generate(self, request: Request, request_id: str) -> AsyncIterator[Delta]:
        server = self._check("chat or completions", self.capabilities.chat)
        if request_id in self._stops:
            raise InvalidRequestError(f"Request id {request_id!r} is already running.")
        payload = json.dumps(request_body(request)).encode()
        handle = server.handle_chat_completions if request.is_chat else server.handle_completions
        loop = asyncio.get_running_loop()
        if self._inbox is None or self._inbox.loop is not loop:
            self._inbox = _Inbox(loop)
        queue: asyncio.Queue[Item] = asyncio.Queue()
        stop = threading.Event()
        self._stops[request_id] = stop
        job = self._threads.submit(_run, handle, payload, stop, self._inbox.putter(queue))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        reader = ChunkReader(top_logprobs=request.sampling.top_logprobs)
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                # parsed here, on the event loop, not while the engine thread holds the GIL
                if item is _ENDED:
                    yield reader.finish()
                elif (delta := reader.feed(json.loads(item))) is not None:
                    yield delta
        finally:
            stop.set()  # the client left, the caller closed us, or the answer ended: free the slot
            self._stops.pop(request_id, None)

    async def abort(self, request_id: str) -> None:
        stop = self._stops.get(request_id)
        if stop is not None:
            stop.set()

    async def busy(self) -> int:
        m = _PROCESSING.search(await self.native_metrics())
        return int(float(m.group(1))) if m else 0

    async def native_metrics(self) -> str:
        server = self._check("metrics", True)
        text = await asyncio.get_running_loop().run_in_executor(self._threads, server.handle_metrics)
        return text.decode() if isinstance(text, bytes) else str(text)

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        server = self._check("embeddings", self.capabilities.embeddings)
        return embeddings_of(
            await self._call(server.handle_embeddings, {"input": list(texts), "encoding_format": "float"})
        )

    async def rerank(self, query: str, documents: Sequence[str]) -> Ranking:
        server = self._check("reranking", self.capabilities.rerank)
        return ranking_of(
            await self._call(server.handle_rerank, {"query": query, "documents": list(documents)})
        )

    async def _call(self, fn: Callable[[dict[str, Any]], Any], body: dict[str, Any]) -> dict[str, Any]:
        r = await asyncio.get_running_loop().run_in_executor(self._threads, fn, body)
        if not isinstance(r, dict):
            raise EngineError(f"{self.name} gave an answer kennel cannot read.")
        if "error" in r:
            raise engine_error(r["error"] if isinstance(r["error"], dict) else {"message": str(r["error"])})
        if "code" in r and "message" in r and "data" not in r and "results" not in r:
            raise engine_error(r)
        return r


class _Inbox:
    """Pieces from the engine's threads to one event loop. A decode step yields a piece for every
    running request at about the same moment; they share one wake-up of the loop instead of one
    each, which leaves more of a busy CPU to llama.cpp."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._items: list[tuple[asyncio.Queue[Item], Item]] = []

    def putter(self, queue: asyncio.Queue[Item]) -> Callable[[Item], None]:
        def put(item: Item) -> None:
            with self._lock:
                self._items.append((queue, item))
                if len(self._items) > 1:
                    return  # a wake-up is already on its way
            with contextlib.suppress(RuntimeError):  # the loop is gone (the caller's asyncio.run ended)
                self.loop.call_soon_threadsafe(self._deliver)

        return put

    def _deliver(self) -> None:
        with self._lock:
            items, self._items = self._items, []
        for queue, item in items:
            queue.put_nowait(item)


def _run(
    handle: Callable[[bytes, Callable[[bytes], bool]], None],
    payload: bytes,
    stop: threading.Event,
    put: Callable[[Item], None],
) -> None:
    """On an engine thread: one request, from the body to the last chunk. Each chunk is handed
    on as it came: the less this thread does while it holds the GIL, the less the engine threads
    of the other requests wait for it."""

    def on_chunk(data: bytes) -> bool:
        if stop.is_set():
            return True  # llama.cpp cancels the request and frees its slot
        put(data)
        return False

    try:
        handle(payload, on_chunk)
        if not stop.is_set():
            put(_ENDED)
    except ValueError as exc:  # llama.cpp's std::invalid_argument: the request is at fault
        put(InvalidRequestError(f"llama.cpp refused the request: {exc}"))
    except BaseException as exc:  # handed to the consumer, which raises it on the event loop
        put(EngineError(f"llama.cpp failed: {exc}") if isinstance(exc, RuntimeError) else exc)
    finally:
        put(None)
