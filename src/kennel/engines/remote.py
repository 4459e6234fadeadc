"""Engines that run as a supervised process speaking the OpenAI wire format: llama-server, vLLM.

The process is started on a loopback port with a key only kennel knows (``engines/process.py``).
Requests are proxied with the engine's own streaming and read with the same ``ChunkReader`` as
the in-process engine. Leaving a stream early (or ``abort``) closes the upstream request, which
both engines notice between tokens, freeing the sequence.

When the process dies, requests in flight end with an error, the failure hook (the server's
model-failure alert) is told once, and the process is started again with a growing pause between
tries; meanwhile requests get 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx

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
from kennel.engines.openai_wire import (
    ChunkReader,
    embeddings_of,
    engine_error,
    ranking_of,
    request_body,
    wrong_task,
)
from kennel.engines.process import LOG_KEEP, EngineProcess, free_port
from kennel.errors import EngineError, InvalidRequestError, ModelLoadError, ModelLoadingError

log = logging.getLogger("kennel.engine")
RESTART_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)  # seconds before each try; the last one repeats
PORT_TRIES = 3
_PORT_TAKEN = re.compile(r"address already in use|couldn't bind|failed to bind|bind\(\) failed", re.I)


class ProcessEngine:
    """The parts every process engine shares; a kind says how to start it (``command``), where
    it says it is healthy, which of its metrics counts running sequences, and how its request
    bodies differ from llama.cpp's."""

    kind = "process"
    health_path = "/health"
    busy_metric: re.Pattern[str] = re.compile(r"^$")
    ready_timeout = 120.0

    def __init__(self, plan: LoadPlan, *, name: str, log_dir: Path | None = None) -> None:
        self.plan = plan
        self.name = name
        # the engine's whole log, apart from kennel's: KENNEL_HOME/logs/engine-NAME.log
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
        self.log_file = log_dir / f"engine-{safe}.log" if log_dir is not None else None
        self.context = plan.context
        self.parallel = plan.parallel
        self.capabilities = capabilities_for(plan.task)
        self._key = secrets.token_hex(32)  # hex: a key starting with "-" would read as a flag
        self._port = 0
        self._process: EngineProcess | None = None
        self._client: httpx.AsyncClient | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False
        self._ready = asyncio.Event()
        self._hook: FailureHook | None = None
        self._streams: dict[str, httpx.Response] = {}
        self._aborted: set[str] = set()
        self._running: set[str] = set()  # request ids between generate() and their end
        self._memory: Memory | None = None
        self.restarts = 0

    # ---- what a kind provides -------------------------------------------------------------
    def command(self, port: int, api_key: str) -> tuple[list[str], dict[str, str] | None]:
        raise NotImplementedError

    def adjust_body(self, body: dict[str, Any], request: Request) -> dict[str, Any]:
        return body

    def measure_memory(self, process: EngineProcess) -> Memory | None:
        """What the process holds once ready: its resident memory and its children's. With a GPU
        the VRAM it holds is not known here: None, and the pool keeps the fit estimate."""
        import psutil

        if self.plan.gpu_layers:
            return None
        try:
            procs = psutil.Process(process.pid).children(recursive=True)  # below the reaper
            return Memory(ram=sum(p.memory_info().rss for p in procs))
        except (psutil.Error, TypeError):
            return None

    # ---- lifecycle ------------------------------------------------------------------------
    def on_failure(self, hook: FailureHook) -> None:
        self._hook = hook

    async def load(self) -> None:
        self._stopping = False
        await self._start()
        self._watcher = asyncio.create_task(self._watch())

    def drop_line(self, line: str) -> bool:
        """Engine log lines kennel keeps nowhere (debug output that may quote requests)."""
        return False

    async def _start(self) -> None:
        for attempt in range(PORT_TRIES):
            # the port is free when picked, and may be taken before the engine binds it
            self._port = free_port()
            argv, env = self.command(self._port, self._key)
            process = EngineProcess(
                self.name,
                argv,
                env=env,
                health_url=f"http://127.0.0.1:{self._port}{self.health_path}",
                ready_timeout=self.ready_timeout,
                log_file=self.log_file,
                drop_line=self.drop_line,
            )
            self._process = process
            try:
                await process.start()
                break
            except ModelLoadError:
                if attempt + 1 == PORT_TRIES or not _PORT_TAKEN.search(process.tail(LOG_KEEP)):
                    raise
        self._memory = self.measure_memory(process)
        self._client = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self._port}",
            headers={"Authorization": f"Bearer {self._key}"},
            # no read timeout: a long prompt is quiet until its first token; kennel's own
            # request_timeout ends a generation that runs too long
            timeout=httpx.Timeout(None, connect=5.0),
            trust_env=False,  # never through an HTTP(S)_PROXY: prompts and the key stay on loopback
        )
        self._ready.set()

    async def _watch(self) -> None:
        """Restart the process whenever it dies, until unloaded."""
        attempt = 0
        while not self._stopping:
            process = self._process
            if process is None:
                return
            code = await process.wait()
            if self._stopping:
                return
            self._ready.clear()
            # its last lines go to kennel's log, not to the alert: they may quote a request
            log.error("%s: the %s process exited (code %s): %s", self.name, self.kind, code, process.tail(4))
            if self._hook is not None:
                where = f"; its log is {self.log_file}" if self.log_file else ""
                self._hook(f"the {self.kind} process of {self.name} exited (code {code}){where}")
            await self._close_client()
            await process.stop()  # what it started (vLLM's engine core) still holds memory
            while not self._stopping:
                await asyncio.sleep(RESTART_BACKOFF[min(attempt, len(RESTART_BACKOFF) - 1)])
                attempt += 1
                if self._stopping:
                    return
                try:
                    await self._start()
                except Exception as exc:  # logged; the next try follows
                    log.error("restarting %s failed: %s", self.name, exc)
                    continue
                self.restarts += 1
                log.warning("%s: the %s process is back (restart %d)", self.name, self.kind, self.restarts)
                attempt = 0
                break

    async def unload(self) -> None:
        self._stopping = True
        self._ready.clear()
        try:
            for response in list(self._streams.values()):
                with contextlib.suppress(Exception):
                    await response.aclose()
            if self._watcher is not None:
                self._watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._watcher
            await self._close_client()
        finally:  # whatever went wrong above, the process goes
            if self._process is not None:
                await self._process.stop()
                self._process = None

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def healthy(self) -> bool:
        return self._ready.is_set() and self._process is not None and self._process.running

    def memory(self) -> Memory | None:
        return self._memory

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    # ---- requests -------------------------------------------------------------------------
    def _use(self, what: str, able: bool) -> httpx.AsyncClient:
        if not able:
            raise wrong_task(self.name, self.plan.task, what)
        if self._client is None or not self.healthy():
            raise self._restarting()
        return self._client

    def _restarting(self) -> ModelLoadingError:
        return ModelLoadingError(
            f"The {self.kind} process of {self.name} is restarting.", hint="Retry shortly.", retry_after=5.0
        )

    async def generate(self, request: Request, request_id: str) -> AsyncIterator[Delta]:
        client = self._use("chat or completions", self.capabilities.chat)
        if request_id in self._running:
            raise InvalidRequestError(f"Request id {request_id!r} is already running.")
        body = self.adjust_body(request_body(request), request)
        path = "/v1/chat/completions" if request.is_chat else "/v1/completions"
        reader = ChunkReader(top_logprobs=request.sampling.top_logprobs)
        self._aborted.discard(request_id)
        self._running.add(request_id)
        try:
            async with client.stream("POST", path, json=body) as response:
                self._streams[request_id] = response
                if request_id in self._aborted:
                    return  # aborted while the engine had not answered yet
                if response.status_code != 200:
                    raise _error_of(await response.aread(), response.status_code)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    if (delta := reader.feed(json.loads(data))) is not None:
                        yield delta
            yield reader.finish()
        except httpx.ConnectError as exc:  # died a moment ago: the watcher has not noticed yet
            raise self._restarting() from exc
        except (httpx.TransportError, httpx.StreamClosed) as exc:
            if request_id in self._aborted or self._stopping:
                return  # stopped on purpose: the stream just ends
            raise EngineError(
                f"The {self.kind} process of {self.name} stopped answering mid-request "
                f"({type(exc).__name__}).",
                hint="Retry; kennel restarts the engine.",
            ) from exc
        finally:
            self._streams.pop(request_id, None)
            self._running.discard(request_id)
            self._aborted.discard(request_id)

    async def abort(self, request_id: str) -> None:
        if request_id not in self._running:
            return
        self._aborted.add(request_id)  # seen when the engine answers, if it has not yet
        response = self._streams.get(request_id)
        if response is not None:
            with contextlib.suppress(Exception):
                await response.aclose()

    async def busy(self) -> int:
        m = self.busy_metric.search(await self.native_metrics())
        return int(float(m.group(1))) if m else 0

    async def native_metrics(self) -> str:
        r = await self._use("metrics", True).get("/metrics")
        return r.text if r.status_code == 200 else ""

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        client = self._use("embeddings", self.capabilities.embeddings)
        return embeddings_of(
            await self._post(client, "/v1/embeddings", {"input": list(texts), "encoding_format": "float"})
        )

    async def rerank(self, query: str, documents: Sequence[str]) -> Ranking:
        client = self._use("reranking", self.capabilities.rerank)
        return ranking_of(
            await self._post(client, "/v1/rerank", {"query": query, "documents": list(documents)})
        )

    async def _post(self, client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            r = await client.post(path, json=body)
        except httpx.ConnectError as exc:
            raise self._restarting() from exc
        except httpx.TransportError as exc:
            raise EngineError(
                f"The {self.kind} process of {self.name} did not answer ({type(exc).__name__}).",
                hint="Retry; kennel restarts the engine.",
            ) from exc
        if r.status_code != 200:
            raise _error_of(r.content, r.status_code)
        doc = r.json()
        if not isinstance(doc, dict):
            raise EngineError(f"{self.name} gave an answer kennel cannot read.")
        return doc


def _error_of(content: bytes, status: int) -> Exception:
    try:
        doc = json.loads(content)
    except ValueError:
        doc = None
    err: Any = doc.get("error", doc) if isinstance(doc, dict) else None
    if isinstance(err, dict):
        return engine_error({"code": status, **err})
    if isinstance(err, str):  # vLLM puts a plain message under "error" for some refusals
        return engine_error({"code": status, "message": err})
    return engine_error({"code": status, "message": content.decode("utf-8", "replace")[:300]})
