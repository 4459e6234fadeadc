"""A real kennel server on a loopback port, in a thread, serving generated tiny GGUF models."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import uvicorn

from kennel.engines.llamacpp import LlamaCppEngine
from kennel.hardware.whatif import what_if
from kennel.server.app import create_app
from kennel.server.models import memory_budget, model_spec
from kennel.server.pool import EngineFactory, Memory, ModelSpec
from kennel.server.settings import ServeSettings
from kennel.settings import KennelHome

GiB = 2**30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spec_for(
    path: Path, home: KennelHome, *, name: str, ctx: int = 512, embedding: bool = False
) -> ModelSpec:
    spec = model_spec(str(path), home=home, hw=what_if(ram=16 * GiB, cpu_cores=2), name=name, ctx=ctx)
    return replace(
        spec, plan=replace(spec.plan, embedding=embedding, pooling=1 if embedding else -1, n_threads=2)
    )


@contextmanager
def running_server(specs: list[ModelSpec], home: KennelHome, *, engine_factory: EngineFactory | None = None,
                   budget: Memory | None = None, **settings: object) -> Iterator[str]:  # fmt: skip
    port = free_port()
    cfg = ServeSettings(port=port, **settings)  # type: ignore[arg-type]
    app = create_app(cfg, specs, budget=budget or memory_budget(what_if(ram=16 * GiB, cpu_cores=2)), home=home,
                     engine_factory=engine_factory or (lambda s: LlamaCppEngine(s.plan, name=s.name)))  # fmt: skip
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
