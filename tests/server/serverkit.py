"""A real kennel server on a loopback port, in a thread, serving generated tiny GGUF models."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import uvicorn

from kennel.engines.base import Memory
from kennel.engines.llamacpp import LlamaCppEngine
from kennel.engines.llamacpp_log import LoadLog
from kennel.hardware.whatif import what_if
from kennel.server.app import create_app
from kennel.server.connections import listening_sockets, uvicorn_config
from kennel.server.models import memory_budget, model_spec
from kennel.server.pool import EngineFactory, ModelSpec
from kennel.server.settings import ServeSettings
from kennel.settings import KennelHome
from tests.loopback import wait_ready

GiB = 2**30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spec_for(
    path: Path,
    home: KennelHome,
    *,
    name: str,
    ctx: int = 512,
    embedding: bool = False,
    parallel: int | None = None,
    flash_attn: bool = True,
    engine: str = "auto",
) -> ModelSpec:
    """``flash_attn=False`` where a test compares concurrent answers with solo ones: llama.cpp's
    CPU flash-attention kernel computes a batch of queries in another order than one query, so
    with it on, the last bits (and then, in a random model, the tokens) may differ."""
    hw = what_if(ram=16 * GiB, cpu_cores=2)
    spec = model_spec(
        str(path), home=home, hw=hw, name=name, ctx=ctx, parallel=parallel, threads=2, engine=engine
    )
    spec = replace(spec, plan=replace(spec.plan, flash_attn=flash_attn))
    if embedding:  # a generated llama-shape model, served as an embedding model
        spec = replace(spec, plan=replace(spec.plan, task="embed", pooling="mean"))
    return spec


@contextmanager
def running_server(
    specs: list[ModelSpec],
    home: KennelHome,
    *,
    engine_factory: EngineFactory | None = None,
    budget: Memory | None = None,
    **settings: object,
) -> Iterator[str]:
    port = free_port()
    cfg = ServeSettings(port=port, **settings)  # type: ignore[arg-type]
    load_log = LoadLog()
    app = create_app(
        cfg,
        specs,
        budget=budget or memory_budget(what_if(ram=16 * GiB, cpu_cores=2)),
        home=home,
        engine_factory=engine_factory or (lambda s: LlamaCppEngine(s.plan, name=s.name, load_log=load_log)),
    )
    server = uvicorn.Server(uvicorn_config(app, cfg, host="127.0.0.1", log_level="error"))
    # with ollama_port, one app on two sockets, as `kennel serve` runs it
    sockets = listening_sockets(cfg) if cfg.ollama_port else None
    thread = threading.Thread(target=server.run, kwargs={"sockets": sockets}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, seconds=30, path="/healthz", thread=thread)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
